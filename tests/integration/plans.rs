//! The read side's statements on a real database: every page statement the service runs
//! walks its composite index in key order (no sort for the keyset ordering), checked with
//! `EXPLAIN` on PostgreSQL and `EXPLAIN QUERY PLAN` on SQLite; and bulk reads stay under
//! the engines' statement limits however many ids a loader batches.

use chrono::{DateTime, Duration, TimeZone, Utc};
use parley_tests::{Engine, TestDb, on_both_engines};
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, EntityTrait, QueryTrait, Statement, TransactionTrait,
};
use serde_json::json;
use service::cursor::Cursor;
use service::query::{self, ConversationFilter, MessageFilter, MessageScope, Window};
use service::{
    Channel, Direction, Kind, Settings, conversation, conversation_participant, message,
};

on_both_engines!(
    conversation_pages_walk_the_activity_index,
    thread_pages_walk_the_thread_index,
    a_conversation_with_its_thread_walks_the_thread_index,
    batched_thread_page_walks_the_thread_index_per_conversation,
    batched_thread_pages_of_600_conversations,
    reads_by_70000_ids,
);

/// The number every seeded SMS conversation shares with its contact (a business line).
pub(crate) const LINE: &str = "+12015550100";
/// Messages per seeded conversation.
const PER: i64 = 3;

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 11, 1, 0, 0, 0).unwrap()
}

/// The id of the `k`-th message (0-based) of conversation `c` (1-based).
fn message_id(c: i64, k: i64) -> i64 {
    (c - 1) * PER + k + 1
}

/// Inserts `n` conversations (ids 1..=n; odd ones SMS with [`LINE`], even ones email), each
/// with [`PER`] messages (see [`message_id`]), plus `unassigned` messages without one.
pub(crate) async fn seed(db: &impl ConnectionTrait, n: i64, unassigned: i64) {
    let t0 = base();
    let mut conversations = Vec::new();
    let mut participants = Vec::new();
    let mut messages = Vec::new();
    for c in 1..=n {
        let sms = c % 2 == 1;
        let (channel, kind, contact) = if sms {
            (Channel::Sms, Kind::Sms, format!("+1804{:07}", c))
        } else {
            (Channel::Email, Kind::Email, format!("c{c}@example.com"))
        };
        let line = if sms {
            LINE.to_owned()
        } else {
            "us@example.com".to_owned()
        };
        let mut sorted = vec![line.clone(), contact.clone()];
        sorted.sort();
        let first = t0 + Duration::minutes(c);
        // Pairs of conversations share a last activity, so ties are broken by id.
        let last = t0 + Duration::days(1) + Duration::minutes(c / 2);
        conversations.push(conversation::ActiveModel {
            id: Set(c),
            channel: Set(channel),
            participants_key: Set(sorted.join("\u{1f}")),
            participants: Set(json!(sorted)),
            message_count: Set(PER),
            first_message_at: Set(first),
            last_message_at: Set(last),
            last_message_id: Set(Some(message_id(c, PER - 1))),
            snippet: Set("hi".into()),
            created_at: Set(first),
            updated_at: Set(last),
            last_sequence: Set(PER),
        });
        for address in [line, contact.clone()] {
            participants.push(conversation_participant::ActiveModel {
                address: Set(address),
                conversation_id: Set(c),
            });
        }
        for k in 0..PER {
            let sent = if k == PER - 1 { last } else { first };
            messages.push(new_message(
                message_id(c, k),
                Some(c),
                channel,
                kind,
                k,
                sent,
            ));
        }
    }
    for u in 0..unassigned {
        let id = n * PER + u + 1;
        messages.push(new_message(id, None, Channel::Sms, Kind::Sms, u, t0));
    }
    for chunk in conversations.chunks(500) {
        conversation::Entity::insert_many(chunk.to_vec())
            .exec(db)
            .await
            .unwrap();
    }
    for chunk in participants.chunks(500) {
        conversation_participant::Entity::insert_many(chunk.to_vec())
            .exec(db)
            .await
            .unwrap();
    }
    for chunk in messages.chunks(500) {
        message::Entity::insert_many(chunk.to_vec())
            .exec(db)
            .await
            .unwrap();
    }
}

fn new_message(
    id: i64,
    conversation_id: Option<i64>,
    channel: Channel,
    kind: Kind,
    k: i64,
    sent_at: DateTime<Utc>,
) -> message::ActiveModel {
    message::ActiveModel {
        id: Set(id),
        conversation_id: Set(conversation_id),
        channel: Set(channel),
        kind: Set(kind),
        direction: Set(if k % 2 == 0 {
            Direction::Inbound
        } else {
            Direction::Outbound
        }),
        from_raw: Set("x".into()),
        to_raw: Set(json!(["y"])),
        from_address: Set(None),
        to_addresses: Set(None),
        body: Set(format!("message {id}")),
        attachments: Set(json!([])),
        provider_message_id: Set(None),
        sent_at: Set(sent_at),
        recorded_at: Set(sent_at),
        assignment_error: Set(conversation_id.is_none().then(|| "unparsable".to_owned())),
        sequence: Set(conversation_id.map(|_| k + 1)),
    }
}

/// The plan of `statement` as the engine reports it, one node per line. On PostgreSQL,
/// within a transaction that disables sequential scans and sorts wherever an index can
/// serve instead: the question is whether the index CAN deliver the rows in key order, not
/// what the planner prefers for a small table.
pub(crate) async fn plan(t: &TestDb, statement: Statement) -> String {
    let backend = t.db.get_database_backend();
    let values = statement.values.map(|v| v.0).unwrap_or_default();
    let (prefix, column) = match t.engine {
        Engine::Postgres => ("EXPLAIN ", "QUERY PLAN"),
        Engine::Sqlite => ("EXPLAIN QUERY PLAN ", "detail"),
    };
    let explain_sql = statement.sql.clone();
    let explain =
        Statement::from_sql_and_values(backend, format!("{prefix}{}", statement.sql), values);
    let txn = t.db.begin().await.unwrap();
    if t.engine == Engine::Postgres {
        txn.execute_unprepared("SET LOCAL enable_seqscan = off")
            .await
            .unwrap();
        txn.execute_unprepared("SET LOCAL enable_sort = off")
            .await
            .unwrap();
    }
    let rows = txn.query_all_raw(explain).await.unwrap();
    txn.rollback().await.unwrap();
    let lines: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String>("", column).unwrap())
        .collect();
    let text = lines.join("\n");
    eprintln!("--- {:?}\n{}\n{text}\n", t.engine, explain_sql);
    text
}

/// Asserts the plan reads `index` in key order: an index scan (PostgreSQL) or an index
/// search/scan (SQLite) on it, and no sort node anywhere.
pub(crate) fn assert_walks(t: &TestDb, plan: &str, index: &str) {
    match t.engine {
        Engine::Postgres => {
            assert!(
                plan.contains(&format!("Index Scan using {index} on "))
                    || plan.contains(&format!("Index Scan Backward using {index} on ")),
                "expected an index scan on {index}:\n{plan}"
            );
            assert!(!plan.contains("Sort"), "the ordering needs a sort:\n{plan}");
            assert!(!plan.contains("Seq Scan"), "a sequential scan:\n{plan}");
        }
        Engine::Sqlite => {
            assert!(
                plan.contains(&format!("USING INDEX {index}"))
                    || plan.contains(&format!("USING COVERING INDEX {index}")),
                "expected the index {index}:\n{plan}"
            );
            assert!(
                !plan.contains("TEMP B-TREE"),
                "the ordering needs a sort:\n{plan}"
            );
            assert!(
                !plan
                    .lines()
                    .any(|l| l.trim() == "SCAN conversations" || l.trim() == "SCAN messages"),
                "a full table scan:\n{plan}"
            );
        }
    }
}

/// Asserts the cursor bound is an index range condition, not a filter over the scan.
fn assert_range(t: &TestDb, plan: &str, columns: &str) {
    let first = columns.split(',').next().unwrap_or(columns);
    match t.engine {
        Engine::Postgres => assert!(
            plan.lines()
                .any(|l| l.contains("Index Cond:") && l.contains(&format!("ROW({columns})"))),
            "the cursor is not an index condition:\n{plan}"
        ),
        Engine::Sqlite => assert!(
            plan.lines().any(|l| l.starts_with("SEARCH ")
                && (l.contains(&format!("{first}>?")) || l.contains(&format!("{first}<?")))),
            "the cursor is not an index range:\n{plan}"
        ),
    }
}

pub(crate) async fn analyze(t: &TestDb) {
    if t.engine == Engine::Postgres {
        t.db.execute_unprepared("ANALYZE").await.unwrap();
    }
}

pub(crate) fn window(forward: bool, after: Option<Cursor>, before: Option<Cursor>) -> Window {
    Window {
        forward,
        size: 20,
        after,
        before,
    }
}

pub(crate) fn cursor(minutes: i64, id: i64) -> Option<Cursor> {
    Some(Cursor {
        at: base() + Duration::days(1) + Duration::minutes(minutes),
        id,
    })
}

const ACTIVITY_INDEX: &str = "conversations_last_message_at_id";
const THREAD_INDEX: &str = "messages_conversation_id_sent_at_id";

async fn conversation_pages_walk_the_activity_index(t: &TestDb) {
    seed(&t.db, 2000, 10).await;
    analyze(t).await;
    let backend = t.db.get_database_backend();
    let region = Settings::default().default_region;
    let filters = [
        ConversationFilter::default(),
        ConversationFilter {
            channel: Some(Channel::Sms),
            ..Default::default()
        },
        ConversationFilter {
            participant: Some(LINE.into()),
            ..Default::default()
        },
        ConversationFilter {
            channel: Some(Channel::Sms),
            participant: Some("(201) 555-0100".into()),
            ..Default::default()
        },
    ];
    let windows = [
        // first: 20
        window(true, None, None),
        // first: 20, after
        window(true, cursor(500, 1000), None),
        // last: 20
        window(false, None, None),
        // last: 20, before
        window(false, None, cursor(500, 1000)),
        // after and before together
        window(true, cursor(900, 1800), cursor(100, 200)),
    ];
    for filter in &filters {
        for w in &windows {
            let select =
                query::conversation_page(&service::Viewer::Everyone, region, filter, w).unwrap();
            let statement = query::page_statement(backend, select.as_query());
            let plan = plan(t, statement).await;
            if t.engine == Engine::Sqlite && filter.channel.is_some() {
                // Known gap, as before the move to the query builder: without statistics
                // SQLite prefers the equality on `conversations_channel_participants_key`
                // (channel, participants_key) and sorts the channel's conversations. Pinned
                // here so that the fix (an index on (channel, last_message_at, id), or
                // ANALYZE) turns this test red and the branch is tightened.
                assert!(
                    plan.contains("USING INDEX conversations_channel_participants_key (channel=?)")
                        && plan.contains("USE TEMP B-TREE FOR ORDER BY"),
                    "the SQLite channel-filter plan changed; tighten this test:\n{plan}"
                );
            } else if t.engine == Engine::Sqlite && filter.participant.is_some() {
                // SQLite drives from the participant: a key lookup in
                // `conversation_participants`, then each conversation by rowid, sorting only
                // that participant's conversations (as before the move). Never a table scan.
                assert!(
                    plan.contains("SEARCH conversations USING INTEGER PRIMARY KEY (rowid=?)")
                        && !plan.lines().any(|l| l.starts_with("SCAN ")),
                    "the participant filter is not a lookup:\n{plan}"
                );
            } else {
                assert_walks(t, &plan, ACTIVITY_INDEX);
                if w.after.is_some() || w.before.is_some() {
                    assert_range(t, &plan, "last_message_at, id");
                }
            }
            if *filter == ConversationFilter::default() {
                // The same page with one inbox's state joined (a `viewerState` selection):
                // still the activity index, plus one primary-key probe of the state per row.
                let statement = query::conversation_page_with_state(
                    backend,
                    &service::Viewer::Everyone,
                    region,
                    filter,
                    w,
                    LINE,
                )
                .unwrap();
                let statement = query::page_statement(backend, statement.as_query());
                let joined = self::plan(t, statement).await;
                assert_walks(t, &joined, ACTIVITY_INDEX);
                // A probe by the whole key for each row of the page, never a scan of the
                // inbox's rows joined by a filter.
                let probe = match t.engine {
                    Engine::Postgres => {
                        "Index Cond: ((conversation_id = conversations.id) AND (inbox = "
                    }
                    Engine::Sqlite => {
                        "SEARCH viewer_state USING INDEX sqlite_autoindex_conversation_states_1 \
                         (conversation_id=? AND inbox=?)"
                    }
                };
                assert!(
                    joined.contains(probe),
                    "the state is not a key lookup:\n{joined}"
                );
            }
            if filter.participant.is_some() {
                let lookup = match t.engine {
                    Engine::Postgres => "conversation_participants_pkey",
                    Engine::Sqlite => "sqlite_autoindex_conversation_participants_1",
                };
                assert!(
                    plan.contains(lookup),
                    "the participant is not a key lookup:\n{plan}"
                );
            }
        }
    }
}

async fn thread_pages_walk_the_thread_index(t: &TestDb) {
    seed(&t.db, 2000, 10).await;
    analyze(t).await;
    let backend = t.db.get_database_backend();
    let c = 7;
    let at = |k: i64| base() + Duration::minutes(c) + Duration::seconds(k);
    let mid = Some(Cursor {
        at: at(0),
        id: message_id(c, 1),
    });
    let filters = [
        MessageFilter::default(),
        MessageFilter {
            direction: Some(Direction::Inbound),
            kind: Some(Kind::Sms),
        },
    ];
    let windows = [
        window(true, None, None),
        window(true, mid, None),
        window(false, None, None),
        window(false, None, mid),
    ];
    for scope in [MessageScope::Conversation(c), MessageScope::Unassigned] {
        for filter in &filters {
            for w in &windows {
                let select = query::message_page(&service::Viewer::Everyone, scope, filter, w);
                let statement = query::page_statement(backend, select.as_query());
                let plan = plan(t, statement).await;
                assert_walks(t, &plan, THREAD_INDEX);
                if w.after.is_some() || w.before.is_some() {
                    assert_range(t, &plan, "sent_at, id");
                }
            }
        }
    }
}

/// `conversation(id:) { messages(..) }` in one statement: the conversation by its primary
/// key, and its page along the thread's index (a range of it after a cursor), for a viewer
/// who sees everything and for one restricted to an inbox.
async fn a_conversation_with_its_thread_walks_the_thread_index(t: &TestDb) {
    seed(&t.db, 2000, 10).await;
    analyze(t).await;
    let backend = t.db.get_database_backend();
    let c = 7;
    let at = |k: i64| base() + Duration::minutes(c) + Duration::seconds(k);
    let mid = Some(Cursor {
        at: at(0),
        id: message_id(c, 1),
    });
    let inbox = service::Viewer::Inboxes(vec!["+12016661234".to_owned()].into());
    for viewer in [&service::Viewer::Everyone, &inbox] {
        for w in [
            window(true, None, None),
            window(true, mid, None),
            window(false, None, None),
            window(false, None, mid),
        ] {
            let select = query::conversation_with_thread(viewer, c, &MessageFilter::default(), &w);
            let plan = plan(t, query::page_statement(backend, &select)).await;
            assert_walks(t, &plan, THREAD_INDEX);
            if w.after.is_some() || w.before.is_some() {
                assert_range(t, &plan, "sent_at, id");
            }
            let by_key = match t.engine {
                Engine::Postgres => plan.contains("conversations_pkey"),
                Engine::Sqlite => plan.contains("INTEGER PRIMARY KEY"),
            };
            assert!(by_key, "the conversation by its primary key:\n{plan}");
        }
    }
}

async fn batched_thread_page_walks_the_thread_index_per_conversation(t: &TestDb) {
    seed(&t.db, 2000, 10).await;
    analyze(t).await;
    let backend = t.db.get_database_backend();
    let ids = [3, 8, 13];
    let mid = Some(Cursor { at: base(), id: 1 });
    for w in [
        window(true, None, None),
        window(true, mid, None),
        window(false, None, None),
    ] {
        let statements = query::message_batch_pages(&ids, &MessageFilter::default(), &w);
        assert_eq!(statements.len(), 1, "three conversations are one statement");
        let plan = plan(t, query::page_statement(backend, &statements[0])).await;
        assert_walks(t, &plan, THREAD_INDEX);
        let scans = match t.engine {
            Engine::Postgres => plan.matches(&format!("using {THREAD_INDEX} on ")).count(),
            Engine::Sqlite => plan.matches(&format!("INDEX {THREAD_INDEX} ")).count(),
        };
        assert_eq!(
            scans,
            ids.len(),
            "one index range scan per conversation:\n{plan}"
        );
    }
}

/// More conversations than SQLite allows terms in one compound SELECT (500).
async fn batched_thread_pages_of_600_conversations(t: &TestDb) {
    seed(&t.db, 600, 0).await;
    let ids: Vec<i64> = (1..=600).chain([100_000]).collect();
    let filter = MessageFilter::default();
    let first = Window {
        forward: true,
        size: 2,
        after: None,
        before: None,
    };
    let pages = query::list_messages_batch(&t.db, &ids, &filter, &first)
        .await
        .unwrap();
    assert_eq!(pages.len(), ids.len());
    for c in 1..=600 {
        let page = &pages[&c];
        let got: Vec<i64> = page.items.iter().map(|m| m.id).collect();
        assert_eq!(
            got,
            [message_id(c, 0), message_id(c, 1)],
            "conversation {c}"
        );
        assert!(page.has_next_page && !page.has_previous_page);
    }
    assert!(pages[&100_000].items.is_empty());
    let last = Window {
        forward: false,
        ..first
    };
    let pages = query::list_messages_batch(&t.db, &ids, &filter, &last)
        .await
        .unwrap();
    for c in 1..=600 {
        let got: Vec<i64> = pages[&c].items.iter().map(|m| m.id).collect();
        assert_eq!(
            got,
            [message_id(c, 1), message_id(c, 2)],
            "conversation {c}"
        );
        assert!(pages[&c].has_previous_page);
    }
    let inbound = MessageFilter {
        direction: Some(Direction::Inbound),
        kind: None,
    };
    let counts = query::count_messages_batch(&t.db, &ids, &inbound, 1000)
        .await
        .unwrap();
    assert_eq!(counts.len(), ids.len());
    assert!(
        (1..=600).all(|c| counts[&c] == query::Count::exact(2)),
        "{counts:?}"
    );
    assert_eq!(counts[&100_000], query::Count::exact(0));
}

/// More ids than either engine binds parameters in one statement (SQLite 32,766,
/// PostgreSQL 65,535).
async fn reads_by_70000_ids(t: &TestDb) {
    seed(&t.db, 600, 5).await;
    let ids: Vec<i64> = (1..=70_000).collect();
    let messages = query::messages_by_ids(&t.db, &service::Viewer::Everyone, &ids)
        .await
        .unwrap();
    assert_eq!(messages.len() as i64, 600 * PER + 5);
    assert!(messages.iter().all(|(id, m)| *id == m.id));
    assert_eq!(messages[&message_id(600, 2)].conversation_id, Some(600));
    assert_eq!(messages[&(600 * PER + 5)].conversation_id, None);
    let conversations = query::conversations_by_ids(&t.db, &service::Viewer::Everyone, &ids)
        .await
        .unwrap();
    assert_eq!(conversations.len(), 600);
    assert!((1..=600).all(|c| conversations[&c].id == c));
    let counts = query::count_messages_batch(&t.db, &ids, &MessageFilter::default(), 1000)
        .await
        .unwrap();
    assert_eq!(counts.len(), ids.len());
    assert!((1..=600).all(|c| counts[&c] == query::Count::exact(PER as u64)));
    assert!((601..=70_000).all(|c| counts[&c] == query::Count::exact(0)));
}
