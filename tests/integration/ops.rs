//! Operator tools on real databases: backfill (exact, idempotent, resumable, safe beside
//! live traffic), verify (finds and repairs drift) and import (exact summary).

use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use parley_tests::{Engine, TestDb, on_both_engines, run_parley};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use service::backfill::backfill_conversations;
use service::import::import_messages;
use service::record::{NewMessage, record_message};
use service::verify::verify_conversations;
use service::{Channel, Direction, Settings};

/// `pairs` participant pairs with `per_pair` legacy messages each, as JSON lines.
fn legacy_lines(pairs: u32, per_pair: u32) -> Vec<(u64, String)> {
    let base = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let mut lines = Vec::new();
    for k in 0..per_pair {
        for p in 0..pairs {
            let n = (k * pairs + p) as u64;
            let contact = format!("(804) 55{}-{:04}", 5 + p / 10_000, p % 10_000);
            let (from, to, direction) = if k % 2 == 0 {
                ("+12016661234".to_owned(), contact, "OUTBOUND")
            } else {
                (contact, "201-666-1234".to_owned(), "INBOUND")
            };
            let line = json!({
                "channel": "SMS", "direction": direction, "from": from, "to": [to],
                "body": format!("pair {p} message {k}"), "providerMessageId": format!("legacy-{n}"),
                "sentAt": (base + Duration::minutes(i64::from(k) * 10 + i64::from(p % 7))).to_rfc3339(),
            });
            lines.push((n + 1, line.to_string()));
        }
    }
    lines
}

async fn load_legacy(t: &TestDb, pairs: u32, per_pair: u32) {
    let r = import_messages(
        &t.db,
        &Settings::default(),
        legacy_lines(pairs, per_pair),
        true,
        1000,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(r.imported, u64::from(pairs * per_pair));
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
}

/// Everything a conversation's derived state is, keyed by its identity (ids differ
/// between databases).
async fn snapshot(t: &TestDb) -> Vec<String> {
    let rows = t
        .db
        .query_all_raw(Statement::from_string(
            t.db.get_database_backend(),
            "SELECT c.channel, c.participants_key, c.message_count, c.first_message_at, \
             c.last_message_at, c.snippet, m.provider_message_id, \
             (SELECT COUNT(*) FROM conversation_participants p WHERE p.conversation_id = c.id) AS np \
             FROM conversations c LEFT JOIN messages m ON m.id = c.last_message_id \
             ORDER BY c.channel, c.participants_key",
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            format!(
                "{}|{}|{}|{}|{}|{}|{:?}|{}",
                r.try_get::<String>("", "channel").unwrap(),
                r.try_get::<String>("", "participants_key").unwrap(),
                r.try_get::<i64>("", "message_count").unwrap(),
                r.try_get::<chrono::DateTime<Utc>>("", "first_message_at")
                    .unwrap(),
                r.try_get::<chrono::DateTime<Utc>>("", "last_message_at")
                    .unwrap(),
                r.try_get::<String>("", "snippet").unwrap(),
                r.try_get::<Option<String>>("", "provider_message_id")
                    .unwrap(),
                r.try_get::<i64>("", "np").unwrap(),
            )
        })
        .collect()
}

async fn fresh_like(t: &TestDb) -> TestDb {
    match t.engine {
        Engine::Sqlite => TestDb::sqlite().await,
        Engine::Postgres => TestDb::postgres().await.expect("PostgreSQL configured"),
    }
}

on_both_engines!(
    backfill_attaches_legacy_messages_exactly_and_twice_changes_nothing,
    backfill_interrupted_by_a_failing_batch_then_rerun_equals_a_clean_run,
    backfill_beside_live_traffic_leaves_no_drift,
    verify_finds_injected_drift_and_repair_removes_it,
    verify_command_exits_1_on_drift_and_0_without,
    import_reports_imported_duplicates_and_rejected_lines,
    backfill_moves_email_headers_with_their_message,
);

/// An unassigned email's headers follow it into the conversation backfill attaches it to:
/// the conversation's subject (and `In-Reply-To` threading) read them by conversation.
async fn backfill_moves_email_headers_with_their_message(t: &TestDb) {
    use service::headers::{EmailHeaders, subjects};
    use service::record::record_message_with;
    let s = Settings::default();
    let email = NewMessage {
        channel: Channel::Email,
        kind: None,
        direction: Direction::Inbound,
        from: "not an address".into(),
        to: vec!["ops@example.com".into()],
        body: "hello".into(),
        attachments: vec![],
        provider_message_id: None,
        sent_at: Some(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()),
    };
    let headers = EmailHeaders {
        subject: Some("Re: Invoice 12".into()),
        message_id: Some("<a.1@mail.example.com>".into()),
        ..Default::default()
    };
    let r = record_message_with(&t.db, &s, email, headers)
        .await
        .unwrap();
    assert!(r.conversation.is_none(), "stored unassigned");
    let id = r.message.id;
    // The operator corrects the legacy row's address, then backfills.
    t.db.execute_unprepared(&format!(
        "UPDATE messages SET from_raw = 'customer@example.com' WHERE id = {id}"
    ))
    .await
    .unwrap();
    let report = backfill_conversations(&t.db, &s, 100, false, |_| {})
        .await
        .unwrap();
    assert_eq!(report.attached, 1);
    let conversation = |sql: String| async move {
        t.db.query_one_raw(Statement::from_string(t.db.get_database_backend(), sql))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<Option<i64>>(0)
            .unwrap()
    };
    let attached = conversation(format!(
        "SELECT conversation_id FROM messages WHERE id = {id}"
    ))
    .await
    .expect("attached");
    let headers = format!("SELECT conversation_id FROM message_headers WHERE message_id = {id}");
    assert_eq!(conversation(headers.clone()).await, Some(attached));
    assert_eq!(
        subjects(&t.db, &[attached]).await.unwrap().get(&attached),
        Some(&"Invoice 12".to_owned())
    );

    // A row left behind by a backfill before this was mended is repaired by migration
    // m20261202_000006 (its `down` changes nothing).
    t.db.execute_unprepared(&format!(
        "UPDATE message_headers SET conversation_id = NULL WHERE message_id = {id}"
    ))
    .await
    .unwrap();
    {
        use migration::{Migrator, MigratorTrait};
        Migrator::down(&t.db, Some(1)).await.unwrap();
        Migrator::up(&t.db, None).await.unwrap();
    }
    assert_eq!(conversation(headers).await, Some(attached));
}

async fn backfill_attaches_legacy_messages_exactly_and_twice_changes_nothing(t: &TestDb) {
    let s = Settings::default();
    load_legacy(t, 1000, 10).await;
    assert_eq!(t.count("messages").await, 10_000);
    let dry = backfill_conversations(&t.db, &s, 1000, true, |_| {})
        .await
        .unwrap();
    assert_eq!(
        (
            dry.attached,
            dry.conversations_created,
            dry.conversations_touched
        ),
        (10_000, 1000, 1000)
    );
    assert_eq!(
        t.count("conversations").await,
        0,
        "a dry run writes nothing"
    );

    let started = Instant::now();
    let first = backfill_conversations(&t.db, &s, 1000, false, |_| {})
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "backfill {:?}: 10,000 messages over 1,000 pairs in {secs:.2} s ({:.0} messages/s, {} batches)",
        t.engine,
        10_000.0 / secs,
        first.batches
    );
    assert_eq!(first.attached, 10_000);
    assert_eq!(first.conversations_created, 1000);
    assert_eq!(
        first.conversations_touched, 1000,
        "distinct, though each spans 10 batches"
    );
    assert_eq!(first.still_unassigned, 0);
    assert_eq!(t.count("conversations").await, 1000);
    assert_eq!(t.count("conversation_participants").await, 2000);
    let unattached = t.count("messages WHERE conversation_id IS NULL").await;
    assert_eq!(unattached, 0);
    assert_eq!(t.count("conversations WHERE message_count <> 10").await, 0);
    // Activity: pair p's messages are at k*10 + p%7 minutes, k = 0..9.
    let snap = snapshot(t).await;
    assert!(
        snap.iter().all(|row| row.contains("message 9")),
        "the latest message is the snippet"
    );
    let verify = verify_conversations(&t.db, &s, false, 500, |_| {})
        .await
        .unwrap();
    assert_eq!(verify.drifts, vec![]);
    assert_eq!(verify.conversations, 1000);

    let second = backfill_conversations(&t.db, &s, 1000, false, |_| {})
        .await
        .unwrap();
    assert_eq!(
        (
            second.scanned,
            second.attached,
            second.conversations_touched
        ),
        (0, 0, 0)
    );
    assert_eq!(snapshot(t).await, snap);
}

async fn backfill_interrupted_by_a_failing_batch_then_rerun_equals_a_clean_run(t: &TestDb) {
    let s = Settings::default();
    load_legacy(t, 200, 5).await;
    // An unassignable legacy row stays unassigned, with its reason, in both runs.
    t.db.execute_unprepared(
        "INSERT INTO messages (conversation_id, channel, kind, direction, from_raw, to_raw, body, attachments, sent_at, recorded_at) \
         VALUES (NULL, 'SMS', 'SMS', 'INBOUND', 'garbage', '[\"+12016661234\"]', 'odd', '[]', '2024-01-01T00:00:00+00:00', '2024-01-01T00:00:00+00:00')",
    )
    .await
    .unwrap();
    // Make the batch that holds message 650 fail inside its transaction.
    let inject = match t.engine {
        Engine::Sqlite => vec![
            "CREATE TRIGGER fail_once BEFORE UPDATE OF conversation_id ON messages WHEN NEW.id = 650 \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        ],
        Engine::Postgres => vec![
            "CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN IF NEW.id = 650 THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER fail_once BEFORE UPDATE OF conversation_id ON messages \
             FOR EACH ROW EXECUTE FUNCTION fail_once()",
        ],
    };
    for sql in inject {
        t.db.execute_unprepared(sql).await.unwrap();
    }
    let mut batches_done = 0;
    let failed = backfill_conversations(&t.db, &s, 100, false, |r| batches_done = r.batches).await;
    assert!(failed.is_err(), "the injected failure stops the run");
    assert_eq!(batches_done, 6, "batches before the failing one committed");
    assert_eq!(
        t.count("messages WHERE conversation_id IS NULL").await,
        1001 - 600
    );
    let verify = verify_conversations(&t.db, &s, false, 500, |_| {})
        .await
        .unwrap();
    assert_eq!(
        verify.drifts,
        vec![],
        "committed batches are consistent on their own"
    );
    let drop = match t.engine {
        Engine::Sqlite => "DROP TRIGGER fail_once",
        Engine::Postgres => "DROP TRIGGER fail_once ON messages",
    };
    t.db.execute_unprepared(drop).await.unwrap();
    let rerun = backfill_conversations(&t.db, &s, 100, false, |_| {})
        .await
        .unwrap();
    assert_eq!(rerun.attached, 400);
    assert_eq!(rerun.still_unassigned, 1);

    let clean = fresh_like(t).await;
    load_legacy(&clean, 200, 5).await;
    clean
        .db
        .execute_unprepared(
            "INSERT INTO messages (conversation_id, channel, kind, direction, from_raw, to_raw, body, attachments, sent_at, recorded_at) \
             VALUES (NULL, 'SMS', 'SMS', 'INBOUND', 'garbage', '[\"+12016661234\"]', 'odd', '[]', '2024-01-01T00:00:00+00:00', '2024-01-01T00:00:00+00:00')",
        )
        .await
        .unwrap();
    backfill_conversations(&clean.db, &s, 1000, false, |_| {})
        .await
        .unwrap();
    assert_eq!(snapshot(t).await, snapshot(&clean).await);
    let reason = |db: &TestDb| {
        let db = db.db.clone();
        async move {
            db.query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT assignment_error FROM messages WHERE from_raw = 'garbage'",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get::<Option<String>>("", "assignment_error")
            .unwrap()
        }
    };
    let r = reason(t).await;
    assert!(
        r.as_deref().is_some_and(|r| r.starts_with("from:")),
        "{r:?}"
    );
    assert_eq!(r, reason(&clean).await);
    clean.cleanup().await;
}

async fn backfill_beside_live_traffic_leaves_no_drift(t: &TestDb) {
    let s = Settings::default();
    load_legacy(t, 300, 6).await;
    let db = t.db.clone();
    let live = tokio::spawn(async move {
        let mut recorded = 0;
        for i in 0..300u32 {
            let contact = format!("(804) 555-{:04}", i % 300);
            let m = NewMessage {
                channel: Channel::Sms,
                kind: None,
                direction: Direction::Inbound,
                from: contact,
                to: vec!["+12016661234".into()],
                body: format!("live {i}"),
                attachments: vec![],
                provider_message_id: Some(format!("live-{i}")),
                sent_at: Some(
                    Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap()
                        + Duration::seconds(i64::from(i)),
                ),
            };
            record_message(&db, &s, m)
                .await
                .expect("live traffic is never refused");
            recorded += 1;
        }
        recorded
    });
    let report = backfill_conversations(&t.db, &s, 50, false, |_| {})
        .await
        .unwrap();
    assert_eq!(live.await.unwrap(), 300);
    assert_eq!(report.attached, 1800);
    assert_eq!(t.count("messages WHERE conversation_id IS NULL").await, 0);
    assert_eq!(t.count("conversations").await, 300);
    assert_eq!(t.count("conversations WHERE message_count <> 7").await, 0);
    let verify = verify_conversations(&t.db, &s, false, 100, |_| {})
        .await
        .unwrap();
    assert_eq!(verify.drifts, vec![]);
    assert_eq!(
        t.count("conversations WHERE snippet NOT LIKE 'live %'")
            .await,
        0
    );
}

async fn verify_finds_injected_drift_and_repair_removes_it(t: &TestDb) {
    let s = Settings::default();
    load_legacy(t, 20, 3).await;
    backfill_conversations(&t.db, &s, 1000, false, |_| {})
        .await
        .unwrap();
    let clean = verify_conversations(&t.db, &s, false, 7, |_| {})
        .await
        .unwrap();
    assert_eq!((clean.conversations, clean.drifts.len()), (20, 0));
    let snap = snapshot(t).await;
    for sql in [
        "UPDATE conversations SET message_count = 99 WHERE id = 3",
        "UPDATE conversations SET snippet = 'stale' WHERE id = 5",
        "UPDATE conversations SET last_message_at = first_message_at, last_message_id = NULL WHERE id = 8",
    ] {
        t.db.execute_unprepared(sql).await.unwrap();
    }
    let found = verify_conversations(&t.db, &s, false, 7, |_| {})
        .await
        .unwrap();
    let mut fields: Vec<_> = found
        .drifts
        .iter()
        .map(|d| (d.conversation_id, d.field))
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            (3, "message_count"),
            (5, "snippet"),
            (8, "last_message_at"),
            (8, "last_message_id")
        ]
    );
    assert_eq!(found.drifts[0].stored, "99");
    assert_eq!(found.drifts[0].actual, "3");
    let repaired = verify_conversations(&t.db, &s, true, 7, |_| {})
        .await
        .unwrap();
    assert_eq!(repaired.repaired, 3);
    let after = verify_conversations(&t.db, &s, false, 7, |_| {})
        .await
        .unwrap();
    assert_eq!(after.drifts, vec![]);
    assert_eq!(snapshot(t).await, snap);
}

/// Runs the binary on `t` and returns its exit code and standard output.
async fn parley(t: &TestDb, args: &[&str]) -> (Option<i32>, String) {
    let out = run_parley(&t.url, args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.code() != Some(0) {
        eprintln!(
            "parley {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (out.status.code(), stdout)
}

async fn verify_command_exits_1_on_drift_and_0_without(t: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("legacy.jsonl");
    let lines: Vec<String> = legacy_lines(3, 2).into_iter().map(|(_, l)| l).collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let file = file.to_str().unwrap();
    assert_eq!(parley(t, &["import", "--legacy", file]).await.0, Some(0));
    assert_eq!(parley(t, &["backfill"]).await.0, Some(0));
    let consistent = "verify: 3 conversations checked, 0 drifted fields, \
                      0 conversations repaired, 0 messages unassigned\n";
    assert_eq!(
        parley(t, &["verify"]).await,
        (Some(0), consistent.to_owned())
    );

    let drifted = t.ids("conversations").await[1];
    t.db.execute_unprepared(&format!(
        "UPDATE conversations SET message_count = 99 WHERE id = {drifted}"
    ))
    .await
    .unwrap();
    assert_eq!(
        parley(t, &["verify"]).await,
        (
            Some(1),
            format!(
                "drift: conversation {drifted} message_count: stored \"99\", messages say \"2\"\n\
                 verify: 3 conversations checked, 1 drifted fields, 0 conversations repaired, \
                 0 messages unassigned\n\
                 run `parley verify --repair` to fix the drift\n"
            )
        )
    );
    // Repairing is success, and leaves nothing for the next run to find.
    assert_eq!(parley(t, &["verify", "--repair"]).await.0, Some(0));
    assert_eq!(
        parley(t, &["verify"]).await,
        (Some(0), consistent.to_owned())
    );
}

async fn import_reports_imported_duplicates_and_rejected_lines(t: &TestDb) {
    let s = Settings::default();
    let good = |id: &str, from: &str| {
        json!({ "channel": "SMS", "direction": "OUTBOUND", "from": from, "to": ["+18045551234"],
                "body": "hi", "providerMessageId": id })
        .to_string()
    };
    let lines = vec![
        good("a", "+12016661234"),
        good("b", "(201) 666-1234"),
        String::new(),
        good("a", "+12016661234"),
        "{ not json".to_owned(),
        json!({ "channel": "FAX", "direction": "OUTBOUND", "from": "x", "to": ["y"], "body": "" }).to_string(),
        good("c", "jane@example.com"),
        json!({ "channel": "SMS", "direction": "INBOUND", "from": "garbage", "to": ["+12016661234"], "body": "x", "providerMessageId": "d" }).to_string(),
        json!({ "channel": "SMS", "direction": "OUTBOUND", "from": "+12016661234", "to": [], "body": "x" }).to_string(),
    ];
    let numbered: Vec<(u64, String)> = lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l))
        .collect();
    let report = import_messages(&t.db, &s, numbered.clone(), false, 3, |_| {})
        .await
        .unwrap();
    assert_eq!(report.lines, 8);
    assert_eq!(report.imported, 3);
    assert_eq!(report.unassigned, 1);
    assert_eq!(report.duplicates, 1);
    let rejected: Vec<u64> = report.rejected.iter().map(|(n, _)| *n).collect();
    assert_eq!(rejected, [5, 6, 7, 9]);
    assert!(
        report.rejected[0].1.starts_with("not a message"),
        "{:?}",
        report.rejected
    );
    assert!(
        report.rejected[1].1.starts_with("channel"),
        "{:?}",
        report.rejected
    );
    assert!(
        report.rejected[2].1.starts_with("from"),
        "{:?}",
        report.rejected
    );
    assert!(
        report.rejected[3].1.starts_with("to"),
        "{:?}",
        report.rejected
    );
    assert_eq!(t.count("messages").await, 3);
    // A rerun stores nothing new.
    let again = import_messages(&t.db, &s, numbered, false, 100, |_| {})
        .await
        .unwrap();
    assert_eq!(
        (again.imported, again.duplicates, again.rejected.len()),
        (0, 4, 4)
    );
    assert_eq!(t.count("messages").await, 3);
}
