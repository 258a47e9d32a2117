//! Data correctness under hostile values and load (issue 11): leap seconds and cursors,
//! null propagation of field errors, snippets capped in bytes, pool exhaustion, and `Int`
//! literals out of range.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use parley_tests::{AppConfig, TestApp, TestDb, error_code, on_both_engines, prometheus_value};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sea_orm::TransactionTrait;
use serde_json::{Value, json};

const RECORD: &str = r#"
mutation Record($input: RecordMessageInput!) {
  recordMessage(input: $input) {
    message { id sentAt snippet }
    conversation { id messageCount snippet }
  }
}"#;

fn sms(from: &str, to: &str, body: &str, sent_at: Option<&str>) -> Value {
    json!({ "input": {
        "channel": "SMS", "direction": "OUTBOUND", "from": from, "to": [to],
        "body": body, "sentAt": sent_at,
    }})
}

async fn record(app: &TestApp, vars: Value) -> Value {
    app.data(RECORD, vars).await["recordMessage"].clone()
}

on_both_engines!(
    leap_seconds_and_ties_page_exactly_once_both_ways,
    a_leap_second_is_stored_as_the_last_instant_of_its_minute,
    field_errors_null_the_nearest_nullable_parent,
    snippets_of_one_huge_cluster_are_capped_in_bytes,
    one_conversation_takes_200_concurrent_writers_on_a_pool_of_2,
    an_exhausted_pool_answers_overloaded_not_unavailable,
);

/// A few instants that stress ordering: the epoch and its next microsecond, a leap second
/// and its neighbours, microsecond ties, and the latest accepted (now + 1 day, less a
/// minute for the time the test takes).
fn anchors() -> Vec<String> {
    let latest = (Utc::now() + chrono::Duration::days(1) - chrono::Duration::minutes(1))
        .to_rfc3339_opts(SecondsFormat::Micros, true);
    [
        "1970-01-01T00:00:00Z",
        "1970-01-01T00:00:00.000001Z",
        "2016-12-31T23:59:59Z",
        "2016-12-31T23:59:59.999998Z",
        "2016-12-31T23:59:59.999999Z",
        "2016-12-31T23:59:60Z",
        "2016-12-31T23:59:60.5Z",
        "2016-12-31T23:59:60.999999Z",
        "2017-01-01T00:00:00Z",
        "2017-01-01T00:00:00.5Z",
        "2024-02-29T12:00:00.123456Z",
        "2024-02-29T12:00:00.123456789Z",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([latest])
    .collect()
}

/// The instant a `sentAt` is stored at: microseconds, a leap second as 23:59:59.999999
/// (README, GraphQL section).
fn stored_at(sent_at: &str) -> DateTime<Utc> {
    let t: DateTime<Utc> = sent_at.parse().unwrap();
    let t = if t.nanosecond() >= 1_000_000_000 {
        t.with_nanosecond(999_999_999).unwrap()
    } else {
        t
    };
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap()
}

/// Sent-at values for one case: anchors (with repeats, so equal timestamps) and arbitrary
/// microseconds between 1970 and now.
fn sent_ats() -> impl Strategy<Value = Vec<String>> {
    let anchors = anchors();
    let now = Utc::now().timestamp_micros();
    let one = prop_oneof![
        3 => prop::sample::select(anchors),
        1 => (0..now).prop_map(|us| DateTime::from_timestamp_micros(us)
            .unwrap()
            .to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    ];
    prop::collection::vec(one, 1..10)
}

const THREAD: &str = r#"
query Thread($id: ID!, $first: Int, $after: String, $last: Int, $before: String) {
  conversation(id: $id) {
    messages(first: $first, after: $after, last: $last, before: $before) {
      nodes { id }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
}"#;

/// Pages through conversation `id` with pages of `size`, forward (`first`/`after`) or
/// backward (`last`/`before`), and returns the ids in list order. More pages than
/// messages (an endless loop, an empty page that says more follow) is an error.
async fn page_through(
    app: &TestApp,
    id: &str,
    size: usize,
    forward: bool,
    total: usize,
) -> Result<Vec<String>, String> {
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = Value::Null;
    for _ in 0..=total + 1 {
        let vars = if forward {
            json!({ "id": id, "first": size, "after": cursor })
        } else {
            json!({ "id": id, "last": size, "before": cursor })
        };
        let page = app.data(THREAD, vars).await["conversation"]["messages"].clone();
        let ids: Vec<String> = page["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .collect();
        if ids.is_empty() && seen.len() < total {
            return Err(format!("an empty page after {} of {total}", seen.len()));
        }
        let info = &page["pageInfo"];
        let more = if forward {
            cursor = info["endCursor"].clone();
            seen.extend(ids);
            info["hasNextPage"] == true
        } else {
            cursor = info["startCursor"].clone();
            seen.splice(0..0, ids);
            info["hasPreviousPage"] == true
        };
        if !more {
            return Ok(seen);
        }
    }
    Err(format!(
        "more than {} pages of {size} for {total} messages",
        total + 2
    ))
}

async fn leap_seconds_and_ties_page_exactly_once_both_ways(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let serial = AtomicU32::new(0);
    // Each case writes its own conversation (its own sender), so cases share a database.
    let check = |sent: Vec<String>| {
        let app = app.clone();
        let n = serial.fetch_add(1, Ordering::Relaxed);
        async move {
            let from = format!("+1201555{n:04}");
            // (stored instant, order of insertion, id): ids grow with each insert, and
            // ties on the instant are broken by id.
            let mut expected: Vec<(DateTime<Utc>, usize, String)> = Vec::new();
            let mut conversation = String::new();
            for (i, at) in sent.iter().enumerate() {
                let r = record(&app, sms(&from, "+18045550100", "hi", Some(at))).await;
                conversation = r["conversation"]["id"].as_str().unwrap().to_owned();
                let id = r["message"]["id"].as_str().unwrap().to_owned();
                expected.push((stored_at(at), i, id));
            }
            expected.sort();
            let expected: Vec<String> = expected.into_iter().map(|(_, _, id)| id).collect();
            for size in 1..=7 {
                for forward in [true, false] {
                    let got = page_through(&app, &conversation, size, forward, sent.len())
                        .await
                        .map_err(|e| format!("size {size}, forward {forward}: {e}"))?;
                    if got != expected {
                        return Err(format!(
                            "size {size}, forward {forward}: got {got:?}, want {expected:?}"
                        ));
                    }
                }
            }
            Ok(())
        }
    };
    let mut runner = TestRunner::new(Config {
        cases: 12,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&sent_ats(), |sent| {
            handle.block_on(check(sent)).map_err(TestCaseError::fail)
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

async fn a_leap_second_is_stored_as_the_last_instant_of_its_minute(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let a = record(
        &app,
        sms(
            "+12015550001",
            "+18045550100",
            "a",
            Some("2016-12-31T23:59:60.5Z"),
        ),
    )
    .await;
    let b = record(
        &app,
        sms(
            "+12015550001",
            "+18045550100",
            "b",
            Some("2017-01-01T00:00:00.5Z"),
        ),
    )
    .await;
    assert_eq!(a["message"]["sentAt"], "2016-12-31T23:59:59.999999+00:00");
    assert_eq!(b["message"]["sentAt"], "2017-01-01T00:00:00.500+00:00");
    // Read back from the database, the same on both engines, in send order.
    let id = b["conversation"]["id"].as_str().unwrap();
    let page = app
        .data(
            "query($id: ID!) { conversation(id: $id) { messages { nodes { body sentAt } } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        page["conversation"]["messages"]["nodes"],
        json!([
            { "body": "a", "sentAt": "2016-12-31T23:59:59.999999+00:00" },
            { "body": "b", "sentAt": "2017-01-01T00:00:00.500+00:00" },
        ])
    );
    // A leap second in a filter means the same instant.
    let filtered = app
        .data(
            r#"{ conversations(filter: { activeSince: "2016-12-31T23:59:60.9Z", activeBefore: "2017-01-01T00:00:00.6Z" }) { totalCount } }"#,
            json!({}),
        )
        .await;
    assert_eq!(filtered["conversations"]["totalCount"], 1);
}

async fn field_errors_null_the_nearest_nullable_parent(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let r = record(&app, sms("+12015550002", "+18045550100", "hello", None)).await;
    let message = r["message"]["id"].as_str().unwrap();
    let conversation = r["conversation"]["id"].as_str().unwrap();
    let check = |body: &Value, data: Value, path: Value| {
        assert_eq!(body["data"], data, "{body:#}");
        assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body:#}");
        assert_eq!(body["errors"][0]["path"], path, "{body:#}");
        assert_eq!(error_code(body), "BAD_USER_INPUT");
        assert_eq!(body["errors"][0]["extensions"]["field"], "length");
    };

    // `Message.snippet: String!` fails: `message` (nullable) becomes null.
    let body = app
        .graphql(
            "query($id: ID!) { message(id: $id) { id snippet(length: 0) } }",
            json!({ "id": message }),
        )
        .await;
    check(
        &body,
        json!({ "message": null }),
        json!(["message", "snippet"]),
    );

    // In `nodes: [Conversation!]!` of `conversations: ConversationConnection!`: no nullable
    // parent up to the root, so `data` is null.
    let body = app
        .graphql(
            "{ conversations(first: 1) { nodes { snippet(length: 0) } } }",
            json!({}),
        )
        .await;
    check(
        &body,
        Value::Null,
        json!(["conversations", "nodes", 0, "snippet"]),
    );

    // Under `edges { node }` (`node: Conversation!`): likewise.
    let body = app
        .graphql(
            "{ conversations(first: 1) { edges { cursor node { id snippet(length: 0) } } } }",
            json!({}),
        )
        .await;
    check(
        &body,
        Value::Null,
        json!(["conversations", "edges", 0, "node", "snippet"]),
    );

    // Under `edges { node }` inside a nullable `conversation`: that one is nulled, and its
    // siblings keep their data.
    let body = app
        .graphql(
            "query($id: ID!) { ok: conversation(id: $id) { id } conversation(id: $id) { id messages(first: 1) { edges { node { id snippet(length: 0) } } } } }",
            json!({ "id": conversation }),
        )
        .await;
    check(
        &body,
        json!({ "ok": { "id": conversation }, "conversation": null }),
        json!(["conversation", "messages", "edges", 0, "node", "snippet"]),
    );

    // Through a fragment on the `Node` interface.
    let body = app
        .graphql(
            "query($id: ID!) { node(id: $id) { id ... on Message { body snippet(length: 0) } } }",
            json!({ "id": message }),
        )
        .await;
    check(&body, json!({ "node": null }), json!(["node", "snippet"]));

    // A valid length still answers the whole object.
    let body = app
        .data(
            "query($id: ID!) { message(id: $id) { id snippet(length: 3) } }",
            json!({ "id": message }),
        )
        .await;
    assert_eq!(body["message"]["snippet"], "he…");
}

async fn snippets_of_one_huge_cluster_are_capped_in_bytes(t: &TestDb) {
    let config = AppConfig::default();
    let app = t.app(config);
    // `a` and 400,000 combining acute accents: one user-perceived character, 800,001 bytes.
    let body = format!("a{}", "\u{301}".repeat(400_000));
    let r = record(&app, sms("+12015550003", "+18045550100", &body, None)).await;
    let cap = 64 * service::snippet::MAX_SNIPPET_BYTES_PER_CHARACTER;
    for snippet in [&r["conversation"]["snippet"], &r["message"]["snippet"]] {
        let s = snippet.as_str().unwrap();
        assert!(s.len() <= cap, "{} bytes", s.len());
        assert!(s.ends_with('…'));
        assert!(body.starts_with(s.strip_suffix('…').unwrap()));
    }
    let page = app
        .data(
            "{ conversations(first: 1) { nodes { snippet short: snippet(length: 2) } } }",
            json!({}),
        )
        .await;
    let node = &page["conversations"]["nodes"][0];
    assert!(node["snippet"].as_str().unwrap().len() <= cap);
    assert!(
        node["short"].as_str().unwrap().len()
            <= 2 * service::snippet::MAX_SNIPPET_BYTES_PER_CHARACTER
    );
    // `verify` recomputes the stored snippet with the same rule: no drift.
    let report = service::verify::verify_conversations(&t.db, &config.settings, false, 100, |_| {})
        .await
        .unwrap();
    assert_eq!(report.conversations, 1);
    assert!(report.drifts.is_empty(), "{:?}", report.drifts);
}

/// An app over its own pool of `max` connections that waits at most `acquire` for one.
async fn app_with_pool(
    t: &TestDb,
    max: u32,
    acquire: Duration,
) -> (TestApp, service::DatabaseConnection) {
    let db = service::db::connect(
        &t.url,
        &service::db::DbOptions {
            max_connections: max,
            acquire_timeout: acquire,
            ..parley_tests::test_db_options()
        },
    )
    .await
    .expect("a small pool");
    let app = TestApp {
        router: api::router(api::AppState::new(db.clone(), AppConfig::default())),
    };
    (app, db)
}

async fn one_conversation_takes_200_concurrent_writers_on_a_pool_of_2(t: &TestDb) {
    // A short acquire timeout: before writers queued in process, each held a connection
    // while it waited for the conversation's row lock, and the rest timed out.
    let (app, db) = app_with_pool(t, 2, Duration::from_millis(500)).await;
    let writers = (0..200).map(|i| {
        let app = app.clone();
        tokio::spawn(async move {
            let vars = sms(
                "+12015550004",
                "+18045550100",
                &format!("m{i}"),
                Some("2024-11-01T12:00:00Z"),
            );
            app.graphql(RECORD, vars).await
        })
    });
    let answers = futures::future::join_all(writers).await;
    let errors: Vec<&Value> = answers
        .iter()
        .map(|a| a.as_ref().unwrap())
        .filter(|b| b.get("errors").is_some())
        .collect();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:#}",
        errors.len(),
        errors[0]
    );
    assert_eq!(t.count("messages").await, 200);
    assert_eq!(t.count("conversations").await, 1);
    let counts: HashSet<i64> = answers
        .iter()
        .map(|a| {
            a.as_ref().unwrap()["data"]["recordMessage"]["conversation"]["messageCount"]
                .as_i64()
                .unwrap()
        })
        .collect();
    // Every writer saw its own commit: counts 1..=200, each once.
    assert_eq!(counts, (1..=200).collect::<HashSet<i64>>());
    let page = app
        .data("{ conversations { nodes { messageCount } } }", json!({}))
        .await;
    assert_eq!(page["conversations"]["nodes"][0]["messageCount"], 200);
    db.close().await.ok();
}

async fn an_exhausted_pool_answers_overloaded_not_unavailable(t: &TestDb) {
    let (app, db) = app_with_pool(t, 1, Duration::from_millis(300)).await;
    let metrics_before = overloaded_total(&app).await;
    // Hold the pool's one connection: the database is healthy, the pool is exhausted.
    let held = db.begin().await.expect("the one connection");

    let request = Request::post("/graphql")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({ "query": "{ conversations(first: 1) { totalCount } }" }).to_string(),
        ))
        .unwrap();
    let (status, retry_after, body) = send_with_retry_after(&app, request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:#}");
    assert_eq!(retry_after.as_deref(), Some("1"), "Retry-After");
    assert_eq!(error_code(&body), "OVERLOADED", "{body:#}");
    assert_eq!(body["data"], Value::Null);

    let write = app
        .post_json(
            "/graphql",
            &json!({ "query": RECORD, "variables": sms("+12015550005", "+18045550100", "x", None) }),
        )
        .await;
    assert_eq!(error_code(&write.json), "OVERLOADED", "{}", write.text);

    let request = Request::get("/api/conversations")
        .body(Body::empty())
        .unwrap();
    let response = send_with_retry_after(&app, request).await;
    assert_eq!(response.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.1.as_deref(), Some("1"), "Retry-After");
    assert_eq!(response.2["code"], "OVERLOADED");

    held.rollback().await.expect("giving the connection back");
    // Nothing was written, and with the connection back every request succeeds.
    assert_eq!(t.count("messages").await, 0);
    record(&app, sms("+12015550005", "+18045550100", "x", None)).await;
    assert!(overloaded_total(&app).await >= metrics_before + 3.0);
    db.close().await.ok();
}

async fn overloaded_total(app: &TestApp) -> f64 {
    let text = app.get("/metrics").await.text;
    prometheus_value(&text, "parley_overloaded_total", &[]).unwrap_or(0.0)
}

/// Sends `request` and returns the status, the `Retry-After` header and the JSON body.
async fn send_with_retry_after(
    app: &TestApp,
    request: Request<Body>,
) -> (StatusCode, Option<String>, Value) {
    use tower::ServiceExt;
    let response = app
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        retry,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn an_int_literal_out_of_range_fails_even_where_nothing_runs() {
    let t = TestDb::sqlite().await;
    let app = t.app(AppConfig::default());
    // No conversation: `snippet` never runs, so only validation can refuse its argument.
    let query = "{ conversations(first: 1) { nodes { snippet(length: 99999999999) } } }";
    let body = app.graphql(query, json!({})).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body:#}");
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "length",
        "{body:#}"
    );
    assert_eq!(
        body["errors"][0]["locations"],
        json!([{ "line": 1, "column": 53 }]),
        "{body:#}"
    );
    assert_eq!(body["data"], Value::Null);
    // A connection's `first` is refused too (its cost is computed from it).
    let query =
        "{ conversations(first: 1) { nodes { messages(first: 99999999999) { nodes { id } } } } }";
    let body = app.graphql(query, json!({})).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body:#}");
    // Inside a fragment, below the limit, and through a variable.
    let body = app
        .graphql(
            "{ conversations(first: 1) { ...F } } fragment F on ConversationConnection { nodes { snippet(length: -2147483649) } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body:#}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "length");
    let body = app
        .graphql(
            "query($n: Int) { conversations(first: 1) { nodes { snippet(length: $n) } } }",
            json!({ "n": 4_294_967_296_i64 }),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body:#}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "$n");
    // The 32-bit edges pass validation (and a resolver that runs checks its own range).
    let body = app
        .graphql(
            "{ conversations(first: 1) { nodes { messages(first: 2147483647, filter: null) { nodes { id } } } } }",
            json!({}),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body:#}");
    t.cleanup().await;
}
