//! Live updates (SPEC section 13): the per-conversation message sequence (gap-free and in
//! commit order under concurrency, assigned by record, backfill and the migration, checked
//! and repaired by verify), and the subscriptions that deliver and resume by it.

use chrono::{Duration, TimeZone, Utc};
use migration::{Migrator, MigratorTrait};
use parley_tests::{AppConfig, TestDb, on_both_engines};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use service::backfill::backfill_conversations;
use service::import::import_messages;
use service::record::{NewMessage, record_message};
use service::verify::verify_conversations;
use service::{Channel, Direction, Settings};

on_both_engines!(
    concurrent_writers_to_one_conversation_get_1_to_100_in_commit_order,
    backfill_numbers_attached_messages_after_the_live_ones,
    verify_finds_a_broken_sequence_and_repair_renumbers_it,
    the_migration_numbers_existing_messages_in_id_order,
    graphql_exposes_sequence_and_last_sequence,
);

/// A message between `a` and `b` (`a` sends when `outbound`), sent at minute `minute`.
fn sms(a: &str, b: &str, outbound: bool, body: &str, minute: i64) -> NewMessage {
    let (from, to, direction) = if outbound {
        (a, b, Direction::Outbound)
    } else {
        (b, a, Direction::Inbound)
    };
    NewMessage {
        channel: Channel::Sms,
        kind: None,
        direction,
        from: from.into(),
        to: vec![to.into()],
        body: body.into(),
        attachments: vec![],
        provider_message_id: None,
        sent_at: Some(
            Utc.with_ymd_and_hms(2024, 11, 1, 12, 0, 0).unwrap() + Duration::minutes(minute),
        ),
    }
}

/// `(message id, sequence)` of conversation `conversation_id`'s messages, in id order.
async fn numbering(t: &TestDb, conversation_id: i64) -> Vec<(i64, Option<i64>)> {
    t.db.query_all_raw(Statement::from_string(
        t.db.get_database_backend(),
        format!(
            "SELECT id, sequence FROM messages WHERE conversation_id = {conversation_id} ORDER BY id"
        ),
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.try_get::<i64>("", "id").unwrap(),
            r.try_get::<Option<i64>>("", "sequence").unwrap(),
        )
    })
    .collect()
}

async fn last_sequence(t: &TestDb, conversation_id: i64) -> i64 {
    t.db.query_one_raw(Statement::from_string(
        t.db.get_database_backend(),
        format!("SELECT last_sequence FROM conversations WHERE id = {conversation_id}"),
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get("", "last_sequence")
    .unwrap()
}

/// The conversation ids, in id order.
async fn conversation_ids(t: &TestDb) -> Vec<i64> {
    t.ids("conversations").await
}

/// Asserts that the messages of `conversation_id` are numbered exactly 1..n in id order
/// and that `last_sequence` is n; returns n.
async fn assert_numbered_in_id_order(t: &TestDb, conversation_id: i64) -> i64 {
    let rows = numbering(t, conversation_id).await;
    let sequences: Vec<Option<i64>> = rows.iter().map(|r| r.1).collect();
    let expected: Vec<Option<i64>> = (1..=rows.len() as i64).map(Some).collect();
    assert_eq!(
        sequences, expected,
        "conversation {conversation_id}: {rows:?}"
    );
    assert_eq!(last_sequence(t, conversation_id).await, rows.len() as i64);
    rows.len() as i64
}

async fn concurrent_writers_to_one_conversation_get_1_to_100_in_commit_order(t: &TestDb) {
    let s = Settings::default();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let db = t.db.clone();
            // Every spelling lands in one conversation; half of them replies.
            let m = sms(
                ["+12016661234", "(201) 666-1234", "2016661234"][i % 3],
                "+18045551234",
                i % 2 == 0,
                &format!("m{i}"),
                (i % 7) as i64,
            );
            tokio::spawn(async move { record_message(&db, &s, m).await })
        })
        .collect();
    let mut answered = Vec::new();
    for task in tasks {
        let r = task.await.unwrap().expect("every writer succeeds");
        let c = r.conversation.expect("assigned");
        // The answer carries the message's number and the conversation as of its commit.
        assert_eq!(c.last_sequence, r.message.sequence.unwrap());
        answered.push(r.message.sequence.unwrap());
    }
    answered.sort_unstable();
    assert_eq!(answered, (1..=100).collect::<Vec<i64>>());
    let ids = conversation_ids(t).await;
    assert_eq!(ids.len(), 1);
    // Ids are taken under the row lock too, so id order is the order numbers were given.
    assert_eq!(assert_numbered_in_id_order(t, ids[0]).await, 100);
    let report = verify_conversations(&t.db, &s, false, 100, |_| {})
        .await
        .unwrap();
    assert_eq!(report.drifts, vec![]);
}

async fn backfill_numbers_attached_messages_after_the_live_ones(t: &TestDb) {
    let s = Settings::default();
    // Legacy rows (unassigned, no sequence) for two pairs, and live messages for one.
    let lines: Vec<(u64, String)> = (0..30u64)
        .map(|i| {
            let contact = if i % 2 == 0 {
                "+18045550001"
            } else {
                "+18045550002"
            };
            let line = json!({ "channel": "SMS", "direction": "OUTBOUND",
                "from": "+12016661234", "to": [contact], "body": format!("legacy {i}"),
                "providerMessageId": format!("legacy-{i}") });
            (i + 1, line.to_string())
        })
        .collect();
    let imported = import_messages(&t.db, &s, lines, true, 7, |_| {})
        .await
        .unwrap();
    assert_eq!(imported.imported, 30);
    assert_eq!(t.count("messages WHERE sequence IS NOT NULL").await, 0);
    for i in 0..3 {
        let r = record_message(
            &t.db,
            &s,
            sms(
                "+12016661234",
                "+18045550001",
                true,
                &format!("live {i}"),
                i,
            ),
        )
        .await
        .unwrap();
        assert_eq!(r.message.sequence, Some(i + 1));
    }
    // Small batches: one conversation's legacy messages span several of them.
    let report = backfill_conversations(&t.db, &s, 4, false, |_| {})
        .await
        .unwrap();
    assert_eq!(report.attached, 30);
    let ids = conversation_ids(t).await;
    assert_eq!(ids.len(), 2);
    // The live messages keep 1..3 and the attached ones follow, in id order.
    let first = numbering(t, ids[0]).await;
    let sequences: Vec<i64> = first.iter().map(|r| r.1.unwrap()).collect();
    let mut live_then_legacy: Vec<(i64, i64)> = first.iter().map(|r| (r.1.unwrap(), r.0)).collect();
    live_then_legacy.sort_unstable();
    assert_eq!(
        live_then_legacy[..3]
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let legacy_ids: Vec<i64> = live_then_legacy[3..].iter().map(|r| r.1).collect();
    let mut sorted_ids = legacy_ids.clone();
    sorted_ids.sort_unstable();
    assert_eq!(
        legacy_ids, sorted_ids,
        "attached messages are numbered in id order"
    );
    let mut sorted = sequences.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=18).collect::<Vec<i64>>());
    assert_eq!(last_sequence(t, ids[0]).await, 18);
    assert_eq!(assert_numbered_in_id_order(t, ids[1]).await, 15);
    // A live message after the backfill takes the next number.
    let next = record_message(
        &t.db,
        &s,
        sms("+12016661234", "+18045550001", false, "after", 9),
    )
    .await
    .unwrap();
    assert_eq!(next.message.sequence, Some(19));
    let rerun = backfill_conversations(&t.db, &s, 4, false, |_| {})
        .await
        .unwrap();
    assert_eq!(rerun.attached, 0);
    let verify = verify_conversations(&t.db, &s, false, 100, |_| {})
        .await
        .unwrap();
    assert_eq!(verify.drifts, vec![]);
}

async fn verify_finds_a_broken_sequence_and_repair_renumbers_it(t: &TestDb) {
    let s = Settings::default();
    for (pair, n) in [
        ("+18045550001", 5),
        ("+18045550002", 4),
        ("+18045550003", 3),
    ] {
        for i in 0..n {
            record_message(&t.db, &s, sms("+12016661234", pair, i % 2 == 0, "x", i))
                .await
                .unwrap();
        }
    }
    let ids = conversation_ids(t).await;
    let clean = verify_conversations(&t.db, &s, false, 2, |_| {})
        .await
        .unwrap();
    assert_eq!(clean.drifts, vec![]);
    let second = numbering(t, ids[1]).await;
    for sql in [
        // A gap: the fourth message of the first conversation jumps to 9.
        format!(
            "UPDATE messages SET sequence = 9 WHERE conversation_id = {} AND sequence = 4",
            ids[0]
        ),
        // An unnumbered message in the second.
        format!(
            "UPDATE messages SET sequence = NULL WHERE id = {}",
            second[1].0
        ),
        // A stale last_sequence in the third.
        format!(
            "UPDATE conversations SET last_sequence = 7 WHERE id = {}",
            ids[2]
        ),
    ] {
        t.db.execute_unprepared(&sql).await.unwrap();
    }
    let found = verify_conversations(&t.db, &s, false, 2, |_| {})
        .await
        .unwrap();
    let mut drifts: Vec<_> = found
        .drifts
        .iter()
        .map(|d| {
            (
                d.conversation_id,
                d.field,
                d.stored.clone(),
                d.actual.clone(),
            )
        })
        .collect();
    drifts.sort();
    assert_eq!(
        drifts,
        [
            (
                ids[0],
                "sequence",
                "5 numbered within 1..9".to_owned(),
                "1..5".to_owned()
            ),
            (
                ids[1],
                "sequence",
                "3 numbered within 1..4".to_owned(),
                "1..4".to_owned()
            ),
            (ids[2], "last_sequence", "7".to_owned(), "3".to_owned()),
        ]
    );
    let repaired = verify_conversations(&t.db, &s, true, 2, |_| {})
        .await
        .unwrap();
    assert_eq!(repaired.repaired, 3);
    let after = verify_conversations(&t.db, &s, false, 2, |_| {})
        .await
        .unwrap();
    assert_eq!(after.drifts, vec![]);
    // The first keeps the order of its numbers: the message moved to 9 stays last, as 5.
    let first: Vec<Option<i64>> = numbering(t, ids[0]).await.iter().map(|r| r.1).collect();
    assert_eq!(first, [Some(1), Some(2), Some(3), Some(5), Some(4)]);
    assert_eq!(last_sequence(t, ids[0]).await, 5);
    // The unnumbered one goes last; the others keep their order.
    let renumbered = numbering(t, ids[1]).await;
    assert_eq!(
        renumbered,
        [
            (second[0].0, Some(1)),
            (second[1].0, Some(4)),
            (second[2].0, Some(2)),
            (second[3].0, Some(3)),
        ]
    );
    assert_eq!(last_sequence(t, ids[1]).await, 4);
    assert_eq!(assert_numbered_in_id_order(t, ids[2]).await, 3);
    let next = record_message(&t.db, &s, sms("+12016661234", "+18045550003", true, "y", 9))
        .await
        .unwrap();
    assert_eq!(next.message.sequence, Some(4));
}

async fn the_migration_numbers_existing_messages_in_id_order(t: &TestDb) {
    let s = Settings::default();
    // Interleaved writes to two conversations, sent out of order.
    for i in 0..10i64 {
        let pair = if i % 3 == 0 {
            "+18045550001"
        } else {
            "+18045550002"
        };
        record_message(
            &t.db,
            &s,
            sms("+12016661234", pair, i % 2 == 0, "x", 10 - i),
        )
        .await
        .unwrap();
    }
    // Take the sequence migration back (the columns go; with the migrations after it) and
    // apply it again over the rows.
    let later = Migrator::migrations()
        .iter()
        .rev()
        .take_while(|m| m.name() != "m20261201_000001_message_sequence")
        .count();
    Migrator::down(&t.db, Some(later as u32 + 1)).await.unwrap();
    let pending = Migrator::get_pending_migrations(&t.db).await.unwrap();
    assert_eq!(pending.len(), later + 1);
    assert_eq!(pending[0].name(), "m20261201_000001_message_sequence");
    Migrator::up(&t.db, None).await.unwrap();
    let ids = conversation_ids(t).await;
    assert_eq!(assert_numbered_in_id_order(t, ids[0]).await, 4);
    assert_eq!(assert_numbered_in_id_order(t, ids[1]).await, 6);
    let next = record_message(
        &t.db,
        &s,
        sms("+12016661234", "+18045550002", true, "y", 20),
    )
    .await
    .unwrap();
    assert_eq!(next.message.sequence, Some(7));
    // The index refuses a second message with a number already given.
    let dup =
        t.db.execute_unprepared(&format!(
            "UPDATE messages SET sequence = 1 WHERE conversation_id = {} AND sequence = 2",
            ids[1]
        ))
        .await;
    assert!(dup.is_err(), "(conversation_id, sequence) is unique");
}

async fn graphql_exposes_sequence_and_last_sequence(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let record = r#"mutation R($input: RecordMessageInput!) {
        recordMessage(input: $input) { message { sequence } conversation { id lastSequence } } }"#;
    let mut conversation = None;
    for i in 1..=3 {
        let vars = json!({ "input": { "channel": "SMS", "direction": "OUTBOUND",
            "from": "+12016661234", "to": ["+18045551234"], "body": format!("m{i}") } });
        let data = app.data(record, vars).await;
        assert_eq!(data["recordMessage"]["message"]["sequence"], i);
        assert_eq!(data["recordMessage"]["conversation"]["lastSequence"], i);
        conversation = data["recordMessage"]["conversation"]["id"]
            .as_str()
            .map(str::to_owned);
    }
    let data = app
        .data(
            "query($id: ID!) { conversation(id: $id) { lastSequence messages(first: 10) { nodes { sequence body } } } }",
            json!({ "id": conversation }),
        )
        .await;
    assert_eq!(
        data["conversation"],
        json!({ "lastSequence": 3, "messages": { "nodes": [
            { "sequence": 1, "body": "m1" }, { "sequence": 2, "body": "m2" }, { "sequence": 3, "body": "m3" }
        ] } })
    );
    // An unassigned message has no place in a conversation: 0.
    let vars = json!({ "input": { "channel": "SMS", "direction": "INBOUND",
        "from": "garbage", "to": ["+18045551234"], "body": "odd" } });
    let data = app.data(record, vars).await;
    assert_eq!(data["recordMessage"]["message"]["sequence"], 0);
    assert_eq!(
        data["recordMessage"]["conversation"],
        serde_json::Value::Null
    );
}
