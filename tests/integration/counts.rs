//! `totalCount` from the counters the database keeps (`conversation_counts`): exact after
//! every write path, exact under 100 concurrent creations that share one business number,
//! actually read (a corrupted counter shows), checked and rebuilt by `verify`. Counts of
//! rows (other filters) stop at `--max-count-rows` and say so (`totalCountIsExact`), and
//! are priced by what they may read.

use std::sync::Arc;

use api::auth::limit::RateLimits;
use api::config::AppConfig;
use chrono::{Duration, TimeZone, Utc};
use parley_tests::{TestDb, error_code, on_both_engines};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
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
    row_counts_stop_at_the_limit_and_say_so,
    row_counts_are_priced_by_what_they_may_read,
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

/// The count of `f` as `viewer` sees it, which must be exact (these databases hold far
/// fewer rows than the default limit).
async fn total(t: &TestDb, viewer: &Viewer, f: &ConversationFilter) -> u64 {
    let count = count_conversations(
        &t.db,
        viewer,
        Region::default(),
        f,
        service::settings::DEFAULT_MAX_COUNT_ROWS,
    )
    .await
    .unwrap();
    assert!(count.exact, "{f:?}: {count:?}");
    count.n
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

/// 12 conversations of the business number with one customer each, the first at minute 0
/// (its thread: 8 inbound messages) and conversation `i` last active at minute `10 * i`; 7
/// unassigned (legacy) messages. Returns the first conversation's global id.
async fn seed_twelve(t: &TestDb) -> String {
    let s = Settings::default();
    let mut first = None;
    for i in 0..12 {
        let r = record_message(
            &t.db,
            &s,
            sms(&format!("+1202555{}", 1400 + i), &[BUSINESS], 10 * i),
        )
        .await
        .unwrap();
        first.get_or_insert(r.conversation.unwrap().id);
    }
    for m in 1..8 {
        record_message(&t.db, &s, sms("+12025551400", &[BUSINESS], m))
            .await
            .unwrap();
    }
    let base = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let legacy = (0..7u64).map(|i| {
        let line = json!({
            "channel": "SMS", "direction": "INBOUND", "from": "+12025550177",
            "to": [BUSINESS], "body": format!("legacy {i}"),
            "providerMessageId": format!("legacy-{i}"),
            "sentAt": (base + Duration::minutes(i as i64)).to_rfc3339(),
        });
        (i + 1, line.to_string())
    });
    import_messages(&t.db, &s, legacy, true, 8, |_| {})
        .await
        .unwrap();
    api::graphql::ids::encode_id(api::graphql::ids::NodeType::Conversation, first.unwrap()).0
}

/// `activeSince` as of minute `m` of the seed (conversation `i` is active at `10 * i`).
fn since(m: i64) -> String {
    (Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(m)).to_rfc3339()
}

/// A configuration whose row counts stop at `rows`.
fn counting(rows: u64) -> AppConfig {
    let mut config = AppConfig::default();
    config.settings.limits.max_count_rows = rows;
    config
}

/// The in-process app with authentication (tokens from `crate::auth`) and `config`.
fn secured(t: &TestDb, config: AppConfig) -> axum::Router {
    api::router(api::AppState::secured(
        t.db.clone(),
        config,
        crate::auth::security(RateLimits::off()),
    ))
}

/// `{totalCount, totalCountIsExact}` of `conversations(filter:)` as `token`'s principal.
async fn listed(app: &axum::Router, token: &str, filter: Value) -> Value {
    let reply = crate::auth::gql(
        app,
        Some(token),
        "query($f: ConversationFilter) { conversations(filter: $f) { totalCount totalCountIsExact } }",
        json!({ "f": filter }),
    )
    .await;
    assert!(reply.json.get("errors").is_none(), "{}", reply.text);
    reply.json["data"]["conversations"].clone()
}

/// Past the limit a row count answers the limit and `totalCountIsExact: false`; at or under
/// it, the exact count and `true`. Counter-backed counts stay exact past the limit.
async fn row_counts_stop_at_the_limit_and_say_so(t: &TestDb) {
    let conversation = seed_twelve(t).await;
    let app = t.app(counting(5));
    let count = |filter: Value| {
        let app = app.clone();
        async move {
            app.data(
                "query($f: ConversationFilter) { conversations(first: 2, filter: $f) { totalCount totalCountIsExact nodes { id } } }",
                json!({ "f": filter }),
            )
            .await["conversations"]
                .clone()
        }
    };
    let exact = |n: u64| json!({ "totalCount": n, "totalCountIsExact": true });
    let bound = |n: u64| json!({ "totalCount": n, "totalCountIsExact": false });
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("nodes");
        v
    };
    // Rows: 12 match, counted up to 5.
    assert_eq!(
        strip(count(json!({ "activeSince": since(0) })).await),
        bound(5)
    );
    assert_eq!(
        strip(count(json!({ "activeSince": since(0), "channel": "SMS" })).await),
        bound(5)
    );
    assert_eq!(
        strip(count(json!({ "participantPrefix": "+1 202 555 14" })).await),
        bound(5)
    );
    // 6 match (minutes 60..110): one past the limit.
    assert_eq!(
        strip(count(json!({ "activeSince": since(60) })).await),
        bound(5)
    );
    // Exactly the limit, and under it: exact.
    assert_eq!(
        strip(count(json!({ "activeSince": since(70) })).await),
        exact(5)
    );
    assert_eq!(
        strip(count(json!({ "activeSince": since(90) })).await),
        exact(3)
    );
    assert_eq!(
        strip(count(json!({ "activeBefore": since(0) })).await),
        exact(0)
    );
    // Counters: exact past the limit.
    assert_eq!(strip(count(Value::Null).await), exact(12));
    assert_eq!(strip(count(json!({ "channel": "SMS" })).await), exact(12));
    assert_eq!(
        strip(count(json!({ "participant": BUSINESS })).await),
        exact(12)
    );
    assert_eq!(
        strip(count(json!({ "participant": "+12025551405" })).await),
        exact(1)
    );
    // A page is unaffected by the count's limit.
    let page = count(json!({ "activeSince": since(0) })).await;
    assert_eq!(page["nodes"].as_array().unwrap().len(), 2);

    // Messages: a thread without a filter is its exact messageCount; with one, and the
    // unassigned list, count rows up to the limit.
    let thread = app
        .data(
            "query($c: ID!) { conversation(id: $c) {
                all: messages { totalCount totalCountIsExact }
                inbound: messages(filter: { direction: INBOUND }) { totalCount totalCountIsExact }
                outbound: messages(filter: { direction: OUTBOUND }) { totalCount totalCountIsExact }
                sms: messages(filter: { kind: SMS }) { totalCount } } }",
            json!({ "c": conversation }),
        )
        .await;
    let c = &thread["conversation"];
    assert_eq!(c["all"], exact(8));
    assert_eq!(c["inbound"], bound(5));
    assert_eq!(c["outbound"], exact(0));
    assert_eq!(c["sms"]["totalCount"], 5);
    // In a list of conversations, each thread is counted on its own.
    let list = app
        .data(
            "{ conversations(first: 12) { nodes { messages(filter: { direction: INBOUND }) { totalCount totalCountIsExact } } } }",
            json!({}),
        )
        .await;
    let threads: Vec<&Value> = list["conversations"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["messages"])
        .collect();
    assert_eq!(threads.len(), 12);
    assert_eq!(threads.iter().filter(|m| **m == &bound(5)).count(), 1);
    assert_eq!(threads.iter().filter(|m| **m == &exact(1)).count(), 11);
    let unassigned = app
        .data(
            "{ unassignedMessages { totalCount totalCountIsExact } }",
            json!({}),
        )
        .await;
    assert_eq!(unassigned["unassignedMessages"], bound(5));
    let roomy = t.app(counting(7));
    let unassigned = roomy
        .data(
            "{ unassignedMessages { totalCount totalCountIsExact } }",
            json!({}),
        )
        .await;
    assert_eq!(unassigned["unassignedMessages"], exact(7));

    // Principals: one inbox reads its counter (exact past the limit); two inboxes count
    // rows.
    let app = secured(t, counting(5));
    let one = crate::auth::hs256(&crate::auth::claims(
        "one",
        "conversations:read",
        &[BUSINESS],
    ));
    let two = crate::auth::hs256(&crate::auth::claims(
        "two",
        "conversations:read",
        &[BUSINESS, "+12025551405"],
    ));
    assert_eq!(listed(&app, &one, Value::Null).await, exact(12));
    assert_eq!(
        listed(&app, &one, json!({ "activeSince": since(0) })).await,
        bound(5)
    );
    assert_eq!(listed(&app, &two, Value::Null).await, bound(5));
    assert_eq!(
        listed(&app, &two, json!({ "participant": "+12025551405" })).await,
        exact(1)
    );
}

/// A row count adds `--max-count-rows / 10` to the price, once per connection; counters
/// cost what any field does. Many aliased or nested row counts are refused before they
/// run, the same document with counter-backed counts passes.
async fn row_counts_are_priced_by_what_they_may_read(t: &TestDb) {
    seed_twelve(t).await;
    let app = t.app(AppConfig::default());
    let price = |query: &'static str, variables: Value| {
        let app = app.clone();
        async move {
            let body = app.graphql(query, variables).await;
            (
                body["extensions"]["cost"]["requested"].as_u64().unwrap(),
                body,
            )
        }
    };
    // conversations (field + object) + totalCount + totalCountIsExact, and the count.
    let (counter, body) = price(
        "{ conversations { totalCount totalCountIsExact } }",
        json!({}),
    )
    .await;
    assert_eq!(counter, 2 + 2, "{body}");
    let (rows, body) = price(
        "query($f: ConversationFilter) { conversations(filter: $f) { totalCount totalCountIsExact } }",
        json!({ "f": { "activeSince": since(0) } }),
    )
    .await;
    assert_eq!(rows, 2 + 2 + 1000, "{body}");
    assert_eq!(body["data"]["conversations"]["totalCount"], 12);
    // A page without its count pays nothing for it.
    let (page, _) = price(
        "query($f: ConversationFilter) { conversations(first: 3, filter: $f) { nodes { id } } }",
        json!({ "f": { "activeSince": since(0) } }),
    )
    .await;
    assert_eq!(page, 2 + 1 + 3 * 2);

    // Five aliased counts: 5 x 1,003 is over the budget of 4,000 with rows, 15 with counters.
    let five = |filter: &str| {
        (0..5)
            .map(|i| format!("c{i}: conversations(filter: {filter}) {{ totalCount }}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let scanning = format!(
        r#"{{ {} }}"#,
        five(&format!(r#"{{ activeSince: "{}" }}"#, since(0)))
    );
    let refused = app.graphql(&scanning, json!({})).await;
    assert_eq!(error_code(&refused), "QUERY_TOO_COMPLEX", "{refused:#}");
    assert_eq!(refused["extensions"]["cost"]["requested"], 5 * 1003);
    assert!(
        refused.get("data").is_none_or(Value::is_null),
        "{refused:#}"
    );
    for counters in [
        "{ channel: SMS }".to_owned(),
        format!(r#"{{ participant: "{BUSINESS}" }}"#),
        "null".to_owned(),
    ] {
        let body = app
            .graphql(&format!("{{ {} }}", five(&counters)), json!({}))
            .await;
        assert!(body.get("errors").is_none(), "{counters}: {body:#}");
        assert_eq!(body["extensions"]["cost"]["requested"], 5 * 3);
        assert_eq!(body["data"]["c4"]["totalCount"], 12);
    }
    // The same decided from variables, and from the operation's defaults.
    let aliased = "query($f: ConversationFilter) { a: conversations(filter: $f) { totalCount }
        b: conversations(filter: $f) { totalCount } c: conversations(filter: $f) { totalCount }
        d: conversations(filter: $f) { totalCount } e: conversations(filter: $f) { totalCount } }";
    let refused = app
        .graphql(
            aliased,
            json!({ "f": { "unread": true, "inbox": BUSINESS } }),
        )
        .await;
    assert_eq!(error_code(&refused), "QUERY_TOO_COMPLEX", "{refused:#}");
    let refused = app
        .graphql(
            aliased,
            json!({ "f": { "participant": BUSINESS, "activeBefore": since(0) } }),
        )
        .await;
    assert_eq!(error_code(&refused), "QUERY_TOO_COMPLEX", "{refused:#}");
    let ok = app
        .graphql(aliased, json!({ "f": { "participant": BUSINESS } }))
        .await;
    assert!(ok.get("errors").is_none(), "{ok:#}");
    let defaulted = format!(
        r#"query($f: ConversationFilter = {{ activeSince: "{}" }}) {{ a: conversations(filter: $f) {{ totalCount }}
        b: conversations(filter: $f) {{ totalCount }} c: conversations(filter: $f) {{ totalCount }}
        d: conversations(filter: $f) {{ totalCount }} e: conversations(filter: $f) {{ totalCount }} }}"#,
        since(0)
    );
    let refused = app.graphql(&defaulted, json!({})).await;
    assert_eq!(error_code(&refused), "QUERY_TOO_COMPLEX", "{refused:#}");
    let ok = app
        .graphql(&defaulted, json!({ "f": { "channel": "SMS" } }))
        .await;
    assert!(ok.get("errors").is_none(), "{ok:#}");
    // A filter variable left out inside a literal counts as null, as it runs.
    let (mixed, _) = price(
        "query($t: DateTime) { conversations(filter: { activeSince: $t, channel: SMS }) { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(mixed, 2 + 1);

    // Nested in a list: a thread's filtered count, per conversation of the page.
    let (nested, body) = price(
        "{ conversations(first: 3) { nodes { messages(filter: { direction: INBOUND }) { totalCount } } } }",
        json!({}),
    )
    .await;
    assert_eq!(nested, 2 + 1 + 3 * (1 + 2 + 1 + 1000), "{body}");
    let refused = app
        .graphql(
            "{ conversations(first: 4) { nodes { messages(filter: { kind: SMS }) { totalCount } } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&refused), "QUERY_TOO_COMPLEX", "{refused:#}");
    let ok = app
        .graphql(
            "{ conversations(first: 100) { nodes { messages { totalCount totalCountIsExact } } } }",
            json!({}),
        )
        .await;
    assert!(ok.get("errors").is_none(), "{ok:#}");
    // Fragments: the count is priced once per connection however it is spread.
    let (fragments, body) = price(
        "query($f: ConversationFilter) { conversations(filter: $f) { ...N ... on ConversationConnection { totalCountIsExact } totalCount } }
         fragment N on ConversationConnection { totalCount }",
        json!({ "f": { "activeSince": since(0) } }),
    )
    .await;
    assert_eq!(fragments, 2 + 3 + 1000, "{body}");
    let (unassigned, _) = price("{ unassignedMessages(first: 1) { totalCount } }", json!({})).await;
    assert_eq!(unassigned, 2 + 1 + 1000);

    // A lower limit makes row counts cheaper: 5 rows cost 1.
    let cheap = t.app(counting(5));
    let body = cheap.graphql(&scanning, json!({})).await;
    assert!(body.get("errors").is_none(), "{body:#}");
    assert_eq!(body["extensions"]["cost"]["requested"], 5 * 4);

    // The viewer decides too: one inbox reads its counter, two count rows.
    let app = secured(t, AppConfig::default());
    let one = crate::auth::hs256(&crate::auth::claims(
        "one",
        "conversations:read",
        &[BUSINESS],
    ));
    let two = crate::auth::hs256(&crate::auth::claims(
        "two",
        "conversations:read",
        &[BUSINESS, "+12025551405"],
    ));
    let unfiltered = format!("{{ {} }}", five("null"));
    let ok = crate::auth::gql(&app, Some(&one), &unfiltered, json!({})).await;
    assert!(ok.json.get("errors").is_none(), "{}", ok.text);
    assert_eq!(ok.json["data"]["c0"]["totalCount"], 12);
    let refused = crate::auth::gql(&app, Some(&two), &unfiltered, json!({})).await;
    assert_eq!(
        error_code(&refused.json),
        "QUERY_TOO_COMPLEX",
        "{}",
        refused.text
    );
}
