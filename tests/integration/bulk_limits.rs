//! Bulk statements stay under the engines' bind-parameter limits (SQLite 32,766,
//! PostgreSQL 65,535), however many rows a batch carries.

use chrono::{Duration, TimeZone, Utc};
use parley_tests::{TestDb, on_both_engines};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use service::Settings;
use service::backfill::{BackfillReport, backfill_conversations};
use service::import::import_messages;
use service::verify::verify_conversations;

on_both_engines!(backfill_of_a_full_batch_with_many_recipients_stays_under_the_parameter_limits);

const MESSAGES: u32 = 5000;
const RECIPIENTS: u32 = 12;

/// `MESSAGES` legacy emails, each from its own sender to `RECIPIENTS` recipients of its
/// own: as many conversations, each with `RECIPIENTS + 1` participants.
fn many_recipient_lines() -> Vec<(u64, String)> {
    let base = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    (0..MESSAGES)
        .map(|i| {
            let to: Vec<String> = (0..RECIPIENTS)
                .map(|j| format!("r{i}-{j}@b.example"))
                .collect();
            let line = json!({
                "channel": "EMAIL", "direction": "OUTBOUND", "from": format!("s{i}@a.example"),
                "to": to, "body": format!("message {i}"), "providerMessageId": format!("wide-{i}"),
                "sentAt": (base + Duration::seconds(i64::from(i))).to_rfc3339(),
            });
            (u64::from(i) + 1, line.to_string())
        })
        .collect()
}

async fn count(t: &TestDb, table: &str) -> i64 {
    let row =
        t.db.query_one_raw(Statement::from_string(
            t.db.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM {table}"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

/// One batch of 5000 messages creates 5000 conversations (7 values each in the old upsert:
/// 35,000 > SQLite's 32,766) with 65,000 participant rows (2 values each: 130,000 >
/// PostgreSQL's 65,535); the statements are split, and the result is exact.
async fn backfill_of_a_full_batch_with_many_recipients_stays_under_the_parameter_limits(
    t: &TestDb,
) {
    let s = Settings::default();
    let imported = import_messages(&t.db, &s, many_recipient_lines(), true, 2000, |_| {})
        .await
        .unwrap();
    assert_eq!(imported.imported, u64::from(MESSAGES));
    assert!(imported.rejected.is_empty(), "{:?}", imported.rejected);

    let report = backfill_conversations(&t.db, &s, 5000, false, |_| {})
        .await
        .unwrap();
    let n = u64::from(MESSAGES);
    assert_eq!(
        report,
        BackfillReport {
            dry_run: false,
            pending_at_start: n,
            scanned: n,
            attached: n,
            still_unassigned: 0,
            conversations_created: n,
            conversations_touched: n,
            batches: 1,
        }
    );
    assert_eq!(count(t, "conversations").await, i64::from(MESSAGES));
    assert_eq!(
        count(t, "conversation_participants").await,
        i64::from(MESSAGES * (RECIPIENTS + 1))
    );
    assert_eq!(count(t, "messages WHERE conversation_id IS NULL").await, 0);

    let verified = verify_conversations(&t.db, &s, false, 5000, |_| {})
        .await
        .unwrap();
    assert_eq!(verified.conversations, n);
    assert_eq!(verified.drifts, Vec::new());
    assert_eq!(verified.unassigned, 0);
}
