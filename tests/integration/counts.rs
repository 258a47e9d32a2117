//! `totalCount` from the counters the database keeps (`conversation_counts`): exact after
//! every write path, exact under 100 concurrent creations that share one business number,
//! actually read (a corrupted counter shows), checked and rebuilt by `verify`.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use parley_tests::{TestDb, on_both_engines};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use service::backfill::backfill_conversations;
use service::counts::CountDrift;
use service::import::import_messages;
use service::normalize::Region;
use service::query::{ConversationFilter, count_conversations, counted_scope};
use service::record::{NewMessage, record_message};
use service::verify::verify_conversations;
use service::{Channel, Direction, Kind, Settings, Viewer};

on_both_engines!(
    counters_are_exact_after_record_backfill_and_import,
    total_count_reads_the_counters_and_verify_rebuilds_them,
    concurrent_conversations_of_one_business_number_are_counted_exactly,
);

const BUSINESS: &str = "+12025550100";

fn sms(from: &str, to: &[&str], minute: i64) -> NewMessage {
    NewMessage {
        channel: Channel::Sms,
        kind: Some(Kind::Sms),
        direction: Direction::Inbound,
        from: from.into(),
        to: to.iter().map(|s| (*s).into()).collect(),
        body: format!("message at minute {minute}"),
        attachments: vec![],
        provider_message_id: None,
        sent_at: Some(
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(minute),
        ),
    }
}

async fn scalar(t: &TestDb, sql: &str) -> i64 {
    let row =
        t.db.query_one_raw(Statement::from_string(t.db.get_database_backend(), sql))
            .await
            .unwrap()
            .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

fn filter(channel: Option<Channel>, participant: Option<&str>) -> ConversationFilter {
    ConversationFilter {
        channel,
        participant: participant.map(str::to_owned),
        ..ConversationFilter::default()
    }
}

async fn total(t: &TestDb, viewer: &Viewer, f: &ConversationFilter) -> u64 {
    count_conversations(&t.db, viewer, Region::default(), f)
        .await
        .unwrap()
}

/// Every counted view equals the `count(*)` of the rows it stands for.
async fn assert_counts_exact(t: &TestDb) {
    let everyone = Viewer::Everyone;
    let all = scalar(t, "SELECT count(*) AS n FROM conversations").await as u64;
    assert_eq!(total(t, &everyone, &filter(None, None)).await, all);
    for channel in [Channel::Sms, Channel::Email] {
        let n = scalar(
            t,
            &format!(
                "SELECT count(*) AS n FROM conversations WHERE channel = '{}'",
                channel.as_str()
            ),
        )
        .await as u64;
        assert_eq!(total(t, &everyone, &filter(Some(channel), None)).await, n);
    }
    for address in [
        BUSINESS,
        "+12025550111",
        "ops@example.com",
        "nobody@example.com",
    ] {
        let n = scalar(
            t,
            &format!(
                "SELECT count(*) AS n FROM conversation_participants WHERE address = '{address}'"
            ),
        )
        .await as u64;
        assert_eq!(
            total(t, &everyone, &filter(None, Some(address))).await,
            n,
            "{address}"
        );
        let inbox = Viewer::Inboxes(Arc::from(vec![address.to_owned()]));
        assert_eq!(
            total(t, &inbox, &filter(None, None)).await,
            n,
            "inbox {address}"
        );
    }
    let verified = verify_conversations(&t.db, &Settings::default(), false, 1000, |_| {})
        .await
        .unwrap();
    assert_eq!(verified.count_drifts, Vec::new());
}

async fn counters_are_exact_after_record_backfill_and_import(t: &TestDb) {
    let s = Settings::default();
    assert_counts_exact(t).await;
    // Recorded: new conversations, a second message into one of them (no new count), a group.
    for (i, customer) in ["+12025550111", "+12025550112", "+12025550113"]
        .iter()
        .enumerate()
    {
        record_message(&t.db, &s, sms(customer, &[BUSINESS], i as i64))
            .await
            .unwrap();
    }
    record_message(&t.db, &s, sms("+12025550111", &[BUSINESS], 10))
        .await
        .unwrap();
    record_message(
        &t.db,
        &s,
        sms("+12025550111", &[BUSINESS, "+12025550112"], 11),
    )
    .await
    .unwrap();
    assert_counts_exact(t).await;

    // Imported legacy rows (unassigned: counted once backfill creates their conversations),
    // and assigned imports.
    let base = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let lines = |legacy: bool| {
        (0..20u64)
            .map(move |i| {
                let line = json!({
                    "channel": "EMAIL", "direction": "INBOUND",
                    "from": format!("customer{}@example.com", i % 7),
                    "to": ["ops@example.com"], "body": format!("mail {i}"),
                    "providerMessageId": format!("{legacy}-{i}"),
                    "sentAt": (base + Duration::minutes(i as i64)).to_rfc3339(),
                });
                (i + 1, line.to_string())
            })
            .collect::<Vec<_>>()
    };
    import_messages(&t.db, &s, lines(true), true, 8, |_| {})
        .await
        .unwrap();
    assert_counts_exact(t).await;
    backfill_conversations(&t.db, &s, 3, false, |_| {})
        .await
        .unwrap();
    assert_counts_exact(t).await;
    import_messages(&t.db, &s, lines(false), false, 8, |_| {})
        .await
        .unwrap();
    assert_counts_exact(t).await;
    assert_eq!(
        scalar(
            t,
            "SELECT count(*) AS n FROM conversations WHERE channel = 'EMAIL'"
        )
        .await,
        7
    );
}

async fn total_count_reads_the_counters_and_verify_rebuilds_them(t: &TestDb) {
    let s = Settings::default();
    for i in 0..5 {
        record_message(&t.db, &s, sms(&format!("+1202555012{i}"), &[BUSINESS], i))
            .await
            .unwrap();
    }
    let everyone = Viewer::Everyone;
    assert_eq!(total(t, &everyone, &filter(None, None)).await, 5);
    // The counted views and only those read the counters.
    assert_eq!(
        counted_scope(&everyone, &filter(None, None), None).as_deref(),
        Some("all")
    );
    let since = ConversationFilter {
        active_since: Some(Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap()),
        ..ConversationFilter::default()
    };
    assert_eq!(counted_scope(&everyone, &since, None), None);
    let two = Viewer::Inboxes(Arc::from(vec![
        BUSINESS.to_owned(),
        "+12025550120".to_owned(),
    ]));
    assert_eq!(counted_scope(&two, &filter(None, None), None), None);
    // Two inboxes of one viewer in one conversation: counted once (by rows).
    assert_eq!(total(t, &two, &filter(None, None)).await, 5);

    let backend = t.db.get_database_backend();
    t.db.execute_raw(Statement::from_string(
        backend,
        // One slot (PostgreSQL spreads a scope over several).
        "UPDATE conversation_counts SET n = n + 40 WHERE scope = 'all' \
         AND slot = (SELECT min(slot) FROM conversation_counts WHERE scope = 'all')",
    ))
    .await
    .unwrap();
    t.db.execute_raw(Statement::from_string(
        backend,
        format!("DELETE FROM conversation_counts WHERE scope = 'address:{BUSINESS}'"),
    ))
    .await
    .unwrap();
    assert_eq!(total(t, &everyone, &filter(None, None)).await, 45);
    assert_eq!(total(t, &everyone, &filter(None, Some(BUSINESS))).await, 0);
    assert_eq!(total(t, &everyone, &since).await, 5);

    let found = verify_conversations(&t.db, &s, false, 100, |_| {})
        .await
        .unwrap();
    assert_eq!(
        found.count_drifts,
        vec![
            CountDrift {
                scope: format!("address:{BUSINESS}"),
                stored: 0,
                actual: 5
            },
            CountDrift {
                scope: "all".into(),
                stored: 45,
                actual: 5
            },
        ]
    );
    assert!(!found.counts_rebuilt);
    let repaired = verify_conversations(&t.db, &s, true, 100, |_| {})
        .await
        .unwrap();
    assert!(repaired.counts_rebuilt);
    assert_counts_exact(t).await;
    assert_eq!(total(t, &everyone, &filter(None, Some(BUSINESS))).await, 5);
    // After a rebuild, new conversations add to the rebuilt rows.
    record_message(&t.db, &s, sms("+12025550199", &[BUSINESS], 30))
        .await
        .unwrap();
    assert_eq!(total(t, &everyone, &filter(None, None)).await, 6);
    assert_counts_exact(t).await;
}

/// 100 first messages at once, each a new conversation with the same business number: no
/// write fails (no deadlock between the counter slots), and every count is exact.
async fn concurrent_conversations_of_one_business_number_are_counted_exactly(t: &TestDb) {
    let s = Settings::default();
    let writers = (0..100).map(|i| {
        let db = t.db.clone();
        tokio::spawn(async move {
            let customer = format!("+1202556{i:04}");
            record_message(&db, &s, sms(&customer, &[BUSINESS], i)).await
        })
    });
    for w in futures::future::join_all(writers).await {
        let recorded = w.unwrap().unwrap();
        assert!(recorded.conversation_created);
    }
    let everyone = Viewer::Everyone;
    assert_eq!(total(t, &everyone, &filter(None, None)).await, 100);
    assert_eq!(
        total(t, &everyone, &filter(None, Some(BUSINESS))).await,
        100
    );
    assert_eq!(
        total(t, &everyone, &filter(Some(Channel::Sms), None)).await,
        100
    );
    assert_counts_exact(t).await;
}
