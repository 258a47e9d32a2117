//! Search on both engines: a table of queries over a fixed corpus with the exact expected
//! message sets (the same on SQLite and PostgreSQL, which a cross-engine test also checks
//! for random queries of the grammar), keyset paging both ways while matching messages
//! arrive, escaped highlights, hostile queries, visibility, and participant prefixes.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use parley_tests::{AppConfig, TestApp, TestDb, error_code, on_both_engines};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use service::record::{NewMessage, record_message};
use service::{Channel, Direction};

const SEARCH: &str = "query($q: String!, $first: Int, $after: String, $last: Int, $before: String, $filter: MessageSearchFilter) {
  searchMessages(query: $q, first: $first, after: $after, last: $last, before: $before, filter: $filter) {
    edges { cursor highlight node { id body providerMessageId } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

/// Records one message; the provider id is its label in the assertions.
async fn store(
    t: &TestDb,
    label: &str,
    channel: Channel,
    from: &str,
    to: &str,
    body: &str,
    at: DateTime<Utc>,
) -> i64 {
    record_message(
        &t.db,
        &Default::default(),
        NewMessage {
            channel,
            kind: None,
            direction: Direction::Inbound,
            from: from.into(),
            to: vec![to.into()],
            body: body.into(),
            attachments: vec![],
            provider_message_id: Some(label.into()),
            sent_at: Some(at),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{label}: {e}"))
    .message
    .id
}

/// The fixed corpus: label, channel, body.
const CORPUS: &[(&str, Channel, &str)] = &[
    (
        "refund",
        Channel::Sms,
        "Your refund for order #12345 is on its way",
    ),
    (
        "refunds",
        Channel::Sms,
        "Refunds take 5-7 days. Sorry for the late reply!",
    ),
    ("return", Channel::Sms, "I want to return the shoes"),
    ("cafe", Channel::Sms, "Meet me at the Café Olé at noon"),
    ("cafe_plain", Channel::Sms, "CAFE closed today"),
    ("phone", Channel::Sms, "Call me at +1 (804) 555-1234 please"),
    ("phone2", Channel::Sms, "my number is 804.555.9999"),
    ("emoji", Channel::Sms, "Party 🎉tonight at Bob's 🥳"),
    (
        "html",
        Channel::Email,
        "<html><head><title>refund title</title></head><body><p>Your <b>invoice</b> &amp; receipt</p>\
         <script>refund()</script><div class=\"refund\">Thanks</div></body></html>",
    ),
    ("spam", Channel::Sms, "WIN a free cruise, refund guaranteed"),
    ("greek", Channel::Sms, "Καλημέρα κόσμε"),
    ("german", Channel::Sms, "Straße und Grüße"),
    ("order", Channel::Sms, "order 12345 shipped; refund pending"),
    ("cjk", Channel::Sms, "東京 で 会いましょう"),
];

/// Stores the corpus, one message a minute in corpus order, SMS between two numbers and
/// email between two addresses (so two conversations).
async fn corpus(t: &TestDb) -> BTreeMap<i64, &'static str> {
    let mut ids = BTreeMap::new();
    for (i, (label, channel, body)) in CORPUS.iter().enumerate() {
        let (from, to) = match channel {
            Channel::Sms => ("+12025550140", "+12025550141"),
            Channel::Email => ("billing@shop.example", "jane@example.org"),
        };
        let at = t0() + Duration::minutes(i as i64);
        ids.insert(store(t, label, *channel, from, to, body, at).await, *label);
    }
    ids
}

/// The query table: what each query must find, exactly.
const TABLE: &[(&str, &[&str])] = &[
    ("refund", &["refund", "spam", "order"]),
    ("REFUND", &["refund", "spam", "order"]),
    ("refund*", &["refund", "refunds", "spam", "order"]),
    ("refu*", &["refund", "refunds", "spam", "order"]),
    ("\"refund for order\"", &["refund"]),
    ("\"order for refund\"", &[]),
    // Punctuation between words does not break a phrase.
    ("\"order 12345\"", &["refund", "order"]),
    ("order #12345", &["refund", "order"]),
    ("refund -win", &["refund", "order"]),
    ("refund -\"free cruise\"", &["refund", "order"]),
    ("refund -cruise -pending", &["refund"]),
    ("return OR invoice", &["return", "html"]),
    ("return OR refund -pending", &["return", "refund", "spam"]),
    ("shoes OR invoice receipt", &["html"]),
    // Accents and case fold both ways.
    ("cafe", &["cafe", "cafe_plain"]),
    ("CAFÉ", &["cafe", "cafe_plain"]),
    ("olé", &["cafe"]),
    ("ole", &["cafe"]),
    ("καλημερα", &["greek"]),
    ("ΚΑΛΗΜΈΡΑ", &["greek"]),
    ("grusse", &["german"]),
    ("straße", &["german"]),
    ("STRASSE", &["german"]),
    ("東京", &["cjk"]),
    // Phone numbers in any spelling: each digit group is a word.
    ("555-1234", &["phone"]),
    ("\"804 555 1234\"", &["phone"]),
    ("(804) 555", &["phone", "phone2"]),
    ("804-555-9999", &["phone2"]),
    ("+1 804", &["phone"]),
    // Emoji separate words.
    ("🎉tonight", &["emoji"]),
    ("tonight 🥳", &["emoji"]),
    ("bob", &["emoji"]),
    // HTML: the visible text only, entities decoded; no tags, attributes, scripts, titles.
    ("invoice receipt", &["html"]),
    ("\"invoice receipt\"", &["html"]),
    ("div", &[]),
    ("class", &[]),
    ("amp", &[]),
    ("title", &[]),
    ("nothingmatchesthis", &[]),
];

/// The labels `searchMessages(query)` returns, in order, following every page.
async fn labels(app: &TestApp, query: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = app
            .data(SEARCH, json!({ "q": query, "first": 5, "after": after }))
            .await;
        let conn = &data["searchMessages"];
        for e in conn["edges"].as_array().unwrap() {
            out.push(e["node"]["providerMessageId"].as_str().unwrap().to_owned());
        }
        if conn["pageInfo"]["hasNextPage"] != json!(true) {
            return out;
        }
        after = conn["pageInfo"]["endCursor"].clone();
    }
}

async fn the_query_table_finds_exactly_the_expected_messages(t: &TestDb) {
    let ids = corpus(t).await;
    let app = t.app(AppConfig::default());
    let minute: BTreeMap<&str, usize> = CORPUS
        .iter()
        .enumerate()
        .map(|(i, (l, _, _))| (*l, i))
        .collect();
    assert_eq!(ids.len(), CORPUS.len());
    for (query, expected) in TABLE {
        // Newest first: the corpus is in time order.
        let mut want: Vec<&str> = expected.to_vec();
        want.sort_by_key(|l| std::cmp::Reverse(minute[l]));
        let got = labels(&app, query).await;
        assert_eq!(got, want, "query {query:?}");
    }
}

async fn paging_is_exact_both_ways_while_matches_arrive(t: &TestDb) {
    // Seven matches: three share one instant (ordered by id), plus noise.
    let mut expected = Vec::new();
    for (i, minute) in [1, 2, 3, 3, 3, 5, 8].iter().enumerate() {
        let label = format!("m{i}");
        let at = t0() + Duration::minutes(*minute);
        let id = store(
            t,
            &label,
            Channel::Sms,
            "+12025550150",
            "+12025550151",
            &format!("parcel number {i}"),
            at,
        )
        .await;
        expected.push((at, id, label));
        store(
            t,
            &format!("noise{i}"),
            Channel::Sms,
            "+12025550150",
            "+12025550151",
            "unrelated words",
            at,
        )
        .await;
    }
    expected.sort_by_key(|e| std::cmp::Reverse((e.0, e.1)));
    let order: Vec<String> = expected.iter().map(|e| e.2.clone()).collect();
    let cursor = |at: DateTime<Utc>, id: i64| {
        service::cursor::encode_cursor(
            service::cursor::CursorKind::SearchResult,
            service::cursor::Cursor { at, id },
        )
    };
    let app = t.app(AppConfig::default());
    let page = |vars: Value| {
        let app = app.clone();
        async move {
            let data = app.data(SEARCH, vars).await;
            data["searchMessages"].clone()
        }
    };
    let names = |conn: &Value| -> Vec<String> {
        conn["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["providerMessageId"].as_str().unwrap().to_owned())
            .collect()
    };

    // Forward, three at a time.
    let p1 = page(json!({ "q": "parcel", "first": 3 })).await;
    assert_eq!(names(&p1), order[0..3]);
    assert_eq!(
        p1["pageInfo"],
        json!({
            "hasNextPage": true, "hasPreviousPage": false,
            "startCursor": cursor(expected[0].0, expected[0].1),
            "endCursor": cursor(expected[2].0, expected[2].1),
        })
    );
    // Meanwhile a newer match (before this page: not seen going forward) and an older one
    // (after everything: seen at the end) arrive.
    store(
        t,
        "newest",
        Channel::Sms,
        "+12025550150",
        "+12025550151",
        "parcel arrived",
        t0() + Duration::minutes(60),
    )
    .await;
    let oldest_at = t0() - Duration::minutes(60);
    let oldest = store(
        t,
        "oldest",
        Channel::Sms,
        "+12025550150",
        "+12025550151",
        "parcel lost",
        oldest_at,
    )
    .await;
    let p2 = page(json!({ "q": "parcel", "first": 3, "after": p1["pageInfo"]["endCursor"] })).await;
    assert_eq!(names(&p2), order[3..6]);
    assert_eq!(
        p2["pageInfo"],
        json!({
            "hasNextPage": true, "hasPreviousPage": true,
            "startCursor": cursor(expected[3].0, expected[3].1),
            "endCursor": cursor(expected[5].0, expected[5].1),
        })
    );
    let p3 = page(json!({ "q": "parcel", "first": 3, "after": p2["pageInfo"]["endCursor"] })).await;
    assert_eq!(names(&p3), vec![order[6].clone(), "oldest".to_owned()]);
    assert_eq!(
        p3["pageInfo"],
        json!({
            "hasNextPage": false, "hasPreviousPage": true,
            "startCursor": cursor(expected[6].0, expected[6].1),
            "endCursor": cursor(oldest_at, oldest),
        })
    );

    // Backward from the end, three at a time: the newest arrival shows up last.
    let mut full = vec!["newest".to_owned()];
    full.extend(order.iter().cloned());
    full.push("oldest".to_owned());
    let b1 = page(json!({ "q": "parcel", "last": 3 })).await;
    assert_eq!(names(&b1), full[6..9]);
    assert_eq!(b1["pageInfo"]["hasPreviousPage"], json!(true));
    assert_eq!(b1["pageInfo"]["hasNextPage"], json!(false));
    let b2 =
        page(json!({ "q": "parcel", "last": 3, "before": b1["pageInfo"]["startCursor"] })).await;
    assert_eq!(names(&b2), full[3..6]);
    assert_eq!(b2["pageInfo"]["hasPreviousPage"], json!(true));
    assert_eq!(b2["pageInfo"]["hasNextPage"], json!(true));
    let b3 =
        page(json!({ "q": "parcel", "last": 3, "before": b2["pageInfo"]["startCursor"] })).await;
    assert_eq!(names(&b3), full[0..3]);
    assert_eq!(b3["pageInfo"]["hasPreviousPage"], json!(false));
    assert_eq!(b3["pageInfo"]["hasNextPage"], json!(true));

    // A cursor of another list is refused.
    let thread_cursor = service::cursor::encode_cursor(
        service::cursor::CursorKind::Message,
        service::cursor::Cursor {
            at: expected[0].0,
            id: expected[0].1,
        },
    );
    let body = app
        .graphql(SEARCH, json!({ "q": "parcel", "after": thread_cursor }))
        .await;
    assert_eq!(error_code(&body), "INVALID_CURSOR", "{body}");
}

async fn filters_narrow_the_results(t: &TestDb) {
    let sms = store(
        t,
        "sms",
        Channel::Sms,
        "+12025550160",
        "+12025550161",
        "invoice attached",
        t0(),
    )
    .await;
    store(
        t,
        "sms_other",
        Channel::Sms,
        "+12025550162",
        "+12025550161",
        "invoice again",
        t0() + Duration::minutes(1),
    )
    .await;
    store(
        t,
        "email",
        Channel::Email,
        "billing@shop.example",
        "jane@example.org",
        "your invoice",
        t0() + Duration::minutes(2),
    )
    .await;
    let app = t.app(AppConfig::default());
    let run = |filter: Value| {
        let app = app.clone();
        async move {
            let data = app
                .data(SEARCH, json!({ "q": "invoice", "filter": filter }))
                .await;
            data["searchMessages"]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"]["providerMessageId"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(run(json!({ "channel": "EMAIL" })).await, ["email"]);
    assert_eq!(
        run(json!({ "participant": "(202) 555-0160" })).await,
        ["sms"]
    );
    assert_eq!(
        run(json!({ "participant": "Jane@Example.org" })).await,
        ["email"]
    );
    assert_eq!(
        run(json!({ "direction": "OUTBOUND" })).await,
        Vec::<String>::new()
    );
    assert_eq!(
        run(json!({ "sentAfter": "2026-03-01T12:01:00Z", "sentBefore": "2026-03-01T12:02:00Z" }))
            .await,
        ["sms_other"]
    );
    let conversation = service::query::find_message(&t.db, &service::Viewer::Everyone, sms)
        .await
        .unwrap()
        .unwrap()
        .conversation_id
        .unwrap();
    let gid = api::graphql::ids::encode_id(api::graphql::ids::NodeType::Conversation, conversation);
    assert_eq!(
        run(json!({ "conversationId": gid.to_string() })).await,
        ["sms"]
    );
    let body = app
        .graphql(
            SEARCH,
            json!({ "q": "invoice", "filter": { "conversationId": "nope" } }),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(
        body["errors"][0]["extensions"]["field"],
        "filter.conversationId"
    );
    let body = app
        .graphql(
            SEARCH,
            json!({ "q": "invoice", "filter": { "participant": "not an address" } }),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(
        body["errors"][0]["extensions"]["field"],
        "filter.participant"
    );
}

async fn highlights_are_escaped_with_the_terms_marked(t: &TestDb) {
    store(
        t,
        "xss",
        Channel::Sms,
        "+12025550170",
        "+12025550171",
        "<script>alert(\"x\")</script> Refund & co's",
        t0(),
    )
    .await;
    store(
        t,
        "mail",
        Channel::Email,
        "billing@shop.example",
        "jane@example.org",
        "<p>Hello <b>Jané</b>,</p><p>your r&eacute;fund of &lt;$5&gt; is ready</p>",
        t0() + Duration::minutes(1),
    )
    .await;
    let app = t.app(AppConfig::default());
    let data = app.data(SEARCH, json!({ "q": "refund OR jane" })).await;
    let highlights: Vec<&str> = data["searchMessages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["highlight"].as_str().unwrap())
        .collect();
    assert_eq!(
        highlights,
        [
            "Hello <mark>Jané</mark>, your <mark>réfund</mark> of &lt;$5&gt; is ready",
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; <mark>Refund</mark> &amp; co&#39;s",
        ]
    );
}

/// Queries no one should be able to break the server with.
fn hostile_queries() -> Vec<String> {
    let mut q: Vec<String> = [
        "\"refund",
        "refund\"",
        "\"\"\"",
        "\"",
        "OR",
        "OR OR OR",
        "-",
        "--",
        "-refund",
        "*",
        "**",
        "refund**",
        "-\"",
        "'",
        "''",
        "\\",
        "':*",
        "'refund':*",
        "!(",
        "&|!<->",
        "a <-> b",
        "NEAR(a b)",
        "a AND b",
        "a NOT b",
        "text:refund",
        "messages_fts:refund",
        "^refund",
        "refund + order",
        "(refund",
        "refund)",
        "\"\" OR \"\"",
        "'); DROP TABLE messages; --",
        "refund\u{0}",
        "\u{0}",
        "\u{1}\u{2}\u{7f}refund\u{1b}[0m",
        "\u{202e}refund\u{2066}",
        "🎉",
        "🎉🥳",
        "\u{301}\u{301}\u{301}",
        "a\u{301}\u{301}\u{301}*",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    q.push("!".repeat(10_240));
    q.push("\"-*".repeat(3_500));
    q.push("x".repeat(256));
    q.push("x".repeat(257));
    q.push("w ".repeat(16));
    q.push("w ".repeat(17));
    q.push("ab* ".repeat(16));
    q
}

async fn hostile_queries_answer_a_result_or_bad_user_input(t: &TestDb) {
    corpus(t).await;
    let app = t.app(AppConfig::default());
    for query in hostile_queries() {
        let answer = app
            .post_json(
                "/graphql",
                &json!({ "query": SEARCH, "variables": { "q": query } }),
            )
            .await;
        assert_eq!(answer.status, 200, "{query:?}: {}", answer.text);
        let body = answer.json;
        match body.get("errors") {
            None => assert!(body["data"]["searchMessages"]["edges"].is_array(), "{body}"),
            Some(_) => {
                assert_eq!(error_code(&body), "BAD_USER_INPUT", "{query:?}: {body}");
                assert_eq!(body["errors"][0]["extensions"]["field"], "query", "{body}");
            }
        }
    }
    // The limits: 256 characters and 16 words pass, one more is refused.
    let ok = app.graphql(SEARCH, json!({ "q": "x".repeat(256) })).await;
    assert!(ok.get("errors").is_none(), "{ok}");
    let ok = app.graphql(SEARCH, json!({ "q": "w ".repeat(16) })).await;
    assert!(ok.get("errors").is_none(), "{ok}");
    for too_much in ["x".repeat(257), "w ".repeat(17)] {
        let body = app.graphql(SEARCH, json!({ "q": too_much })).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT");
    }
}

async fn search_obeys_visibility(t: &TestDb) {
    use crate::auth::{ALICE, BOB, CAROL, claims, gql, hs256, secured};
    store(
        t,
        "alice_carol",
        Channel::Sms,
        CAROL,
        ALICE,
        "secret plan alpha",
        t0(),
    )
    .await;
    let bob_carol = store(
        t,
        "bob_carol",
        Channel::Sms,
        CAROL,
        BOB,
        "secret plan beta",
        t0() + Duration::minutes(1),
    )
    .await;
    let app = secured(t, api::auth::limit::RateLimits::off());
    let alice = hs256(&claims("alice", "conversations:read", &[ALICE]));
    let dave = hs256(&claims("dave", "conversations:read", &["+12025550198"]));
    let found = |reply: &Value| -> Vec<String> {
        reply["data"]["searchMessages"]["edges"]
            .as_array()
            .unwrap_or_else(|| panic!("{reply}"))
            .iter()
            .map(|e| e["node"]["providerMessageId"].as_str().unwrap().to_owned())
            .collect()
    };
    let reply = gql(&app, Some(&alice), SEARCH, json!({ "q": "secret plan" })).await;
    assert_eq!(found(&reply.json), ["alice_carol"]);
    // Bob's conversation, named explicitly, answers like an unknown one.
    let conversation = service::query::find_message(&t.db, &service::Viewer::Everyone, bob_carol)
        .await
        .unwrap()
        .unwrap()
        .conversation_id
        .unwrap();
    let gid = api::graphql::ids::encode_id(api::graphql::ids::NodeType::Conversation, conversation);
    let reply = gql(
        &app,
        Some(&alice),
        SEARCH,
        json!({ "q": "beta", "filter": { "conversationId": gid.to_string() } }),
    )
    .await;
    assert_eq!(found(&reply.json), Vec::<String>::new());
    let reply = gql(
        &app,
        Some(&alice),
        SEARCH,
        json!({ "q": "beta", "filter": { "conversationId": api::graphql::ids::encode_id(api::graphql::ids::NodeType::Conversation, 999_999).to_string() } }),
    )
    .await;
    assert_eq!(found(&reply.json), Vec::<String>::new());
    // A principal in neither conversation finds nothing.
    let reply = gql(&app, Some(&dave), SEARCH, json!({ "q": "secret" })).await;
    assert_eq!(found(&reply.json), Vec::<String>::new());
}

async fn existing_messages_are_indexed_after_migrating(t: &TestDb) {
    corpus(t).await;
    // As if the messages predated search: drop their texts, then run the catch-up.
    use sea_orm::ConnectionTrait;
    t.db.execute_unprepared("DELETE FROM message_texts")
        .await
        .unwrap();
    let app = t.app(AppConfig::default());
    assert_eq!(labels(&app, "refund").await, Vec::<String>::new());
    let n = service::search::index_missing_texts(&t.db, 4)
        .await
        .unwrap();
    assert_eq!(n, CORPUS.len() as u64);
    assert_eq!(
        service::search::index_missing_texts(&t.db, 4)
            .await
            .unwrap(),
        0
    );
    assert_eq!(labels(&app, "refund").await, ["order", "spam", "refund"]);
}

/// Every message's search text carries its message's keys: conversation (following
/// backfill), channel, direction and `sent_at`; and every message has its text.
async fn assert_keys_match(t: &TestDb, when: &str) {
    use sea_orm::ConnectionTrait;
    let differs = match t.engine {
        parley_tests::Engine::Postgres => "IS DISTINCT FROM",
        parley_tests::Engine::Sqlite => "IS NOT",
    };
    let sql = format!(
        "SELECT (SELECT count(*) FROM messages) AS messages, \
         (SELECT count(*) FROM message_texts) AS texts, \
         (SELECT count(*) FROM message_texts t JOIN messages m ON m.id = t.message_id \
          WHERE t.conversation_id {differs} m.conversation_id OR t.channel {differs} m.channel \
          OR t.direction {differs} m.direction OR t.sent_at {differs} m.sent_at) AS drift"
    );
    let row =
        t.db.query_one_raw(sea_orm::Statement::from_string(
            t.db.get_database_backend(),
            sql,
        ))
        .await
        .unwrap()
        .unwrap();
    let messages: i64 = row.try_get("", "messages").unwrap();
    let texts: i64 = row.try_get("", "texts").unwrap();
    let drift: i64 = row.try_get("", "drift").unwrap();
    assert_eq!((texts, drift), (messages, 0), "{when}");
}

async fn search_keys_follow_their_messages(t: &TestDb) {
    use service::backfill::backfill_conversations;
    use service::import::import_messages;
    let s = service::settings::Settings::default();
    corpus(t).await;
    // Inbound from an address that does not normalize: stored unassigned, never a result.
    store(
        t,
        "garbage",
        Channel::Sms,
        "not a phone",
        "+12025550141",
        "zebra unassigned",
        t0(),
    )
    .await;
    assert_keys_match(t, "recorded").await;
    let app = t.app(AppConfig::default());
    assert_eq!(labels(&app, "zebra").await, Vec::<String>::new());
    // Legacy imports are stored unassigned; backfill attaches them, and search finds them.
    let base = t0() + Duration::hours(1);
    let lines = |legacy: bool| {
        (0..6u64)
            .map(move |i| {
                let line = json!({
                    "channel": "EMAIL", "direction": if i % 2 == 0 { "INBOUND" } else { "OUTBOUND" },
                    "from": format!("customer{}@example.com", i % 3),
                    "to": ["ops@example.com"], "body": format!("zebra mail {i}"),
                    "providerMessageId": format!("{legacy}-{i}"),
                    "sentAt": (base + Duration::minutes(i as i64)).to_rfc3339(),
                });
                (i + 1, line.to_string())
            })
            .collect::<Vec<_>>()
    };
    import_messages(&t.db, &s, lines(true), true, 4, |_| {})
        .await
        .unwrap();
    assert_keys_match(t, "legacy import").await;
    assert_eq!(labels(&app, "zebra").await, Vec::<String>::new());
    backfill_conversations(&t.db, &s, 4, false, |_| {})
        .await
        .unwrap();
    assert_keys_match(t, "backfill").await;
    assert_eq!(
        labels(&app, "zebra mail").await,
        ["true-5", "true-4", "true-3", "true-2", "true-1", "true-0"]
    );
    import_messages(&t.db, &s, lines(false), false, 4, |_| {})
        .await
        .unwrap();
    assert_keys_match(t, "import").await;
    assert_eq!(labels(&app, "zebra").await.len(), 12);
    // The catch-up of messages without text writes the keys too.
    {
        use sea_orm::ConnectionTrait;
        t.db.execute_unprepared("DELETE FROM message_texts")
            .await
            .unwrap();
    }
    service::search::index_missing_texts(&t.db, 5)
        .await
        .unwrap();
    assert_keys_match(t, "catch-up").await;
    // verify reports keys that drifted from their messages, and --repair copies them again.
    let verify = |repair| service::verify::verify_conversations(&t.db, &s, repair, 1000, |_| {});
    assert_eq!(verify(false).await.unwrap().search_key_drifts, 0);
    {
        use sea_orm::ConnectionTrait;
        t.db.execute_unprepared(
            "UPDATE message_texts SET conversation_id = NULL WHERE message_id IN \
             (SELECT message_id FROM message_texts WHERE text LIKE 'zebra mail%' ORDER BY message_id LIMIT 3)",
        )
        .await
        .unwrap();
    }
    assert_eq!(labels(&app, "zebra mail").await.len(), 9);
    let found = verify(false).await.unwrap();
    assert_eq!(found.search_key_drifts, 3);
    assert_eq!(verify(true).await.unwrap().search_key_drifts, 3);
    assert_eq!(verify(false).await.unwrap().search_key_drifts, 0);
    assert_keys_match(t, "verify --repair").await;
    assert_eq!(labels(&app, "zebra").await.len(), 12);
}

/// The two statements of a search page, `search_page` (walking `messages`) and
/// `search_page_keys` (from `message_texts` alone), find the same messages in the same
/// order for every viewer, filter and window.
async fn both_page_statements_find_the_same_page(t: &TestDb) {
    use service::Viewer;
    use service::query::{PageRequest, SearchFilter, Window, search_page, search_page_keys};
    use std::sync::Arc;
    corpus(t).await;
    // A second pair of numbers, so visibility and participant filters split the results;
    // one message at the same instant as another (ties broken by id).
    for (i, body) in ["refund now", "refund later", "order refund"]
        .iter()
        .enumerate()
    {
        let at = t0() + Duration::minutes(2 * i as i64);
        store(
            t,
            &format!("other{i}"),
            Channel::Sms,
            "+12025550170",
            "+12025550171",
            body,
            at,
        )
        .await;
    }
    let backend = t.db.get_database_backend();
    let viewers = [
        Viewer::Everyone,
        Viewer::Inboxes(Arc::from(vec!["+12025550141".to_owned()])),
        Viewer::Inboxes(Arc::from(vec!["+12025550171".to_owned()])),
        Viewer::Inboxes(Arc::from(Vec::<String>::new())),
    ];
    let filters = [
        SearchFilter::default(),
        SearchFilter {
            channel: Some(Channel::Sms),
            direction: Some(Direction::Inbound),
            ..Default::default()
        },
        SearchFilter {
            direction: Some(Direction::Outbound),
            ..Default::default()
        },
        SearchFilter {
            participant: Some("(202) 555-0170".into()),
            ..Default::default()
        },
        SearchFilter {
            sent_after: Some(t0() + Duration::minutes(1)),
            sent_before: Some(t0() + Duration::minutes(12)),
            ..Default::default()
        },
    ];
    let mut compared = 0;
    for q in [
        "refund",
        "refund OR invoice",
        "order*",
        "nothingmatchesthis",
    ] {
        let query = service::search::parse_query(q).unwrap();
        for viewer in &viewers {
            for filter in &filters {
                // Forward by 2, then the same backward from the end, each page both ways.
                for forward in [true, false] {
                    let mut cursor: Option<String> = None;
                    loop {
                        let req = PageRequest {
                            first: forward.then_some(2),
                            after: if forward { cursor.clone() } else { None },
                            last: (!forward).then_some(2),
                            before: if forward { None } else { cursor.clone() },
                        };
                        let window = Window::new(
                            service::cursor::CursorKind::SearchResult,
                            &req,
                            &Default::default(),
                        )
                        .unwrap();
                        let args = (backend, viewer, Default::default(), &query, filter, &window);
                        let walked = search_page(args.0, args.1, args.2, args.3, args.4, args.5)
                            .unwrap()
                            .all(&t.db)
                            .await
                            .unwrap();
                        let keys: Vec<i64> =
                            search_page_keys(args.0, args.1, args.2, args.3, args.4, args.5)
                                .unwrap()
                                .into_tuple()
                                .all(&t.db)
                                .await
                                .unwrap();
                        let ids: Vec<i64> = walked.iter().map(|m| m.id).collect();
                        assert_eq!(keys, ids, "{q} {viewer:?} {filter:?} {req:?}");
                        compared += 1;
                        if walked.len() <= 2 {
                            break;
                        }
                        cursor = Some(service::query::search_cursor(&walked[1]));
                    }
                }
            }
        }
    }
    assert!(compared > 4 * 4 * 5 * 2, "{compared}");
}

/// A word in more messages than `FEW_MATCHES` pages exactly for every kind of viewer: on
/// SQLite a principal's pages come from its own messages when it sees few
/// (`search_page_visible_first`), and for it and an admin from the newest messages in
/// growing spans (`search_page_span`, whose pages are checked against the reference for a
/// span too small to hold them as well); on PostgreSQL from the walk. Every page of `search_messages`, forward to the end and back from it, equals
/// the same window of `search_page_keys` (every match's keys read and sorted: the
/// reference), and the page builders themselves agree with it.
async fn a_common_word_pages_exactly_for_every_viewer(t: &TestDb) {
    use sea_orm::ConnectionTrait;
    use service::Viewer;
    use service::query::{
        PageRequest, SearchFilter, Window, few_span_matches, search_messages, search_page_keys,
        search_page_span, search_page_visible_first, visible_ids, walk_span,
    };
    use std::sync::Arc;
    const AGENT: &str = "agent@parley.example";
    let customer = |c: usize| format!("c{c}@example.com");
    // 30 email conversations (the agent and one customer each), then 99 more messages in
    // each, interleaved in time: 3,000 messages with "common" in every one.
    for c in 1..=30 {
        store(
            t,
            &format!("first{c}"),
            Channel::Email,
            &customer(c),
            AGENT,
            "common first",
            t0() - Duration::days(1) + Duration::seconds(c as i64),
        )
        .await;
    }
    let backend = t.db.get_database_backend();
    let at = match backend {
        sea_orm::DbBackend::Postgres => {
            "timestamptz '2026-03-02 00:00:00+00' + (s.i * 30 + c.id) * interval '1 second'"
        }
        _ => "strftime('%Y-%m-%dT%H:%M:%S+00:00', 1772409600 + s.i * 30 + c.id, 'unixepoch')",
    };
    t.db.execute_unprepared(&format!(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 99) \
         INSERT INTO messages (conversation_id, channel, kind, direction, from_raw, to_raw, body, attachments, sent_at, recorded_at) \
         SELECT c.id, 'EMAIL', 'EMAIL', CASE WHEN s.i % 2 = 0 THEN 'INBOUND' ELSE 'OUTBOUND' END, 'x', '[]', \
         'common word ' || s.i, '[]', {at}, {at} FROM conversations c, s"
    ))
    .await
    .unwrap();
    t.db.execute_unprepared(
        "INSERT INTO message_texts (message_id, text, conversation_id, channel, direction, sent_at) \
         SELECT id, body, conversation_id, channel, direction, sent_at FROM messages \
         WHERE id NOT IN (SELECT message_id FROM message_texts)",
    )
    .await
    .unwrap();
    let query = service::search::parse_query("common").unwrap();
    let inboxes = |list: Vec<String>| Viewer::Inboxes(Arc::from(list));
    let viewers = [
        // 100 messages: its own, each looked up.
        inboxes(vec![customer(5)]),
        // 3,000: the walk in spans.
        inboxes(vec![AGENT.to_owned()]),
        // 800 of 3,000: the walk in spans.
        inboxes((1..=8).map(customer).collect()),
        Viewer::Everyone,
    ];
    let filters = [
        SearchFilter::default(),
        SearchFilter {
            direction: Some(Direction::Outbound),
            ..Default::default()
        },
    ];
    let window = |req: &PageRequest| {
        Window::new(
            service::cursor::CursorKind::SearchResult,
            req,
            &Default::default(),
        )
        .unwrap()
    };
    let region = Default::default();
    let timeout = std::time::Duration::from_secs(30);
    let mut checked_own = 0;
    for viewer in &viewers {
        for filter in &filters {
            let reference = |w: Window| {
                let keys = search_page_keys(backend, viewer, region, &query, filter, &w).unwrap();
                async move {
                    let mut ids: Vec<i64> = keys.into_tuple().all(&t.db).await.unwrap();
                    ids.truncate(w.size as usize);
                    if !w.forward {
                        ids.reverse();
                    }
                    ids
                }
            };
            // Forward to the end by pages of 50.
            let mut after: Option<String> = None;
            let mut seen = 0;
            loop {
                let req = PageRequest {
                    first: Some(50),
                    after: after.clone(),
                    ..Default::default()
                };
                let w = window(&req);
                let page = search_messages(&t.db, viewer, region, &query, filter, &w, timeout)
                    .await
                    .unwrap();
                let ids: Vec<i64> = page.items.iter().map(|m| m.id).collect();
                assert_eq!(
                    ids,
                    reference(w).await,
                    "{viewer:?} {filter:?} after {seen}"
                );
                // The builders: one past the page, in walk order.
                let want: Vec<i64> = search_page_keys(backend, viewer, region, &query, filter, &w)
                    .unwrap()
                    .into_tuple()
                    .all(&t.db)
                    .await
                    .unwrap();
                // A principal's own messages, when it sees fewer than 500.
                if let Viewer::Inboxes(inboxes) = viewer
                    && let Some(own) = visible_ids(&t.db, backend, inboxes, region, filter)
                        .await
                        .unwrap()
                {
                    // Each message looked up, and (SQLite) one range read over their span.
                    // (Every message here matches: the service would look each up.)
                    let span = if backend == sea_orm::DbBackend::Sqlite {
                        assert_eq!(few_span_matches(&t.db, &query, &own).await.unwrap(), None);
                        own.iter().min().copied().zip(own.iter().max().copied())
                    } else {
                        None
                    };
                    for span in [None, span] {
                        let visible: Vec<i64> = search_page_visible_first(
                            backend,
                            viewer,
                            region,
                            &query,
                            filter,
                            &w,
                            service::query::OwnMessages { ids: &own, span },
                        )
                        .unwrap()
                        .all(&t.db)
                        .await
                        .unwrap()
                        .iter()
                        .map(|m| m.id)
                        .collect();
                        assert_eq!(
                            visible, want,
                            "visible first {span:?}: {viewer:?} {filter:?} after {seen}"
                        );
                    }
                    checked_own += 1;
                }
                if backend == sea_orm::DbBackend::Sqlite {
                    // The service's spans, and one that cuts most pages short.
                    for span in [60, 500, 5_000] {
                        let Some((span_ids, n)) =
                            walk_span(&t.db, region, filter, &w, span).await.unwrap()
                        else {
                            assert!(want.is_empty());
                            continue;
                        };
                        let walked: Vec<i64> =
                            search_page_span(viewer, region, &query, filter, &w, span, span_ids)
                                .unwrap()
                                .all(&t.db)
                                .await
                                .unwrap()
                                .iter()
                                .map(|m| m.id)
                                .collect();
                        let context = format!("span {span}: {viewer:?} {filter:?} after {seen}");
                        if n < span || walked.len() > 50 {
                            assert_eq!(walked, want, "{context}");
                        } else {
                            assert!(want.starts_with(&walked), "{context}");
                        }
                    }
                }
                seen += ids.len();
                assert_eq!(
                    page.has_next_page,
                    ids.len() == 50 && seen < total(viewer, filter)
                );
                if !page.has_next_page {
                    break;
                }
                after = Some(service::query::search_cursor(page.items.last().unwrap()));
            }
            assert_eq!(seen, total(viewer, filter), "{viewer:?} {filter:?}");
            // Back from the end, three pages of 40.
            let mut before: Option<String> = None;
            for k in 0..3 {
                let req = PageRequest {
                    last: Some(40),
                    before: before.clone(),
                    ..Default::default()
                };
                let w = window(&req);
                let page = search_messages(&t.db, viewer, region, &query, filter, &w, timeout)
                    .await
                    .unwrap();
                let ids: Vec<i64> = page.items.iter().map(|m| m.id).collect();
                assert_eq!(ids, reference(w).await, "{viewer:?} {filter:?} before");
                assert_eq!(
                    ids.len(),
                    40.min(total(viewer, filter).saturating_sub(40 * k))
                );
                let Some(first) = page.items.first() else {
                    break;
                };
                before = Some(service::query::search_cursor(first));
            }
        }
    }
    // Forward pages of principals who see fewer than 500 messages: one inbox (100
    // messages, 50 outbound), eight inboxes' 400 outbound.
    assert_eq!(checked_own, 2 + 1 + 8);
    /// Messages the viewer sees under the filter: 100 a conversation, half of the bulk
    /// ones outbound (the first message of each is inbound).
    fn total(viewer: &Viewer, filter: &SearchFilter) -> usize {
        let conversations = match viewer {
            Viewer::Everyone => 30,
            Viewer::Inboxes(list) if list[0].starts_with("agent") => 30,
            Viewer::Inboxes(list) => list.len(),
        };
        let per = if filter.direction.is_some() { 50 } else { 100 };
        conversations * per
    }
}

/// An email's subject is searched with its body: recorded (assigned and unassigned) and
/// indexed by the catch-up of messages without text.
async fn email_subjects_are_searched(t: &TestDb) {
    use service::headers::EmailHeaders;
    let record = |label: &'static str,
                  from: &'static str,
                  subject: &'static str,
                  body: &'static str,
                  i: i64| {
        let db = t.db.clone();
        async move {
            service::record::record_message_with(
                &db,
                &Default::default(),
                NewMessage {
                    channel: Channel::Email,
                    kind: None,
                    direction: Direction::Inbound,
                    from: from.into(),
                    to: vec!["support@shop.example".into()],
                    body: body.into(),
                    attachments: vec![],
                    provider_message_id: Some(label.into()),
                    sent_at: Some(t0() + Duration::minutes(i)),
                },
                EmailHeaders {
                    subject: Some(subject.into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"))
        }
    };
    record(
        "quarterly",
        "jane@example.org",
        "Quarterly Zébra report",
        "<p>see <b>attached</b></p>",
        0,
    )
    .await;
    record(
        "plain",
        "jane@example.org",
        "Hello",
        "the quarterly numbers",
        1,
    )
    .await;
    // Unassigned (the sender does not normalize): stored with its subject, never a result.
    let unassigned = record("lost", "not an address", "Quarterly lost", "nothing", 2).await;
    assert!(unassigned.message.conversation_id.is_none());
    let app = t.app(AppConfig::default());
    let check = || async {
        assert_eq!(labels(&app, "quarterly").await, ["plain", "quarterly"]);
        assert_eq!(labels(&app, "\"zebra report\"").await, ["quarterly"]);
        assert_eq!(labels(&app, "zebra attached").await, ["quarterly"]);
        assert_eq!(labels(&app, "hello -zebra").await, ["plain"]);
    };
    check().await;
    {
        use sea_orm::ConnectionTrait;
        t.db.execute_unprepared("DELETE FROM message_texts")
            .await
            .unwrap();
    }
    assert_eq!(labels(&app, "quarterly").await, Vec::<String>::new());
    assert_eq!(
        service::search::index_missing_texts(&t.db, 2)
            .await
            .unwrap(),
        3
    );
    check().await;
    let lost: String = {
        use sea_orm::ConnectionTrait;
        t.db.query_one_raw(sea_orm::Statement::from_string(
            t.db.get_database_backend(),
            format!(
                "SELECT text FROM message_texts WHERE message_id = {}",
                unassigned.message.id
            ),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "text")
        .unwrap()
    };
    assert_eq!(lost, "quarterly lost nothing");
}

const PREFIX: &str = "query($p: String!, $channel: Channel) {
  conversations(first: 50, filter: { participantPrefix: $p, channel: $channel }) {
    totalCount
    nodes { participants }
  }
}";

/// Conversations of a support line with several people, phone and email.
async fn prefix_world(t: &TestDb) {
    let line = "+12025550100";
    let support = "support@shop.example";
    for (i, (channel, from)) in [
        (Channel::Sms, "+1 (804) 555-1234"),
        (Channel::Sms, "804.555.9999"),
        (Channel::Sms, "+44 20 7183 8750"),
        (Channel::Sms, "12345"),
        (Channel::Email, "Bob <Bob+news@Example.com>"),
        (Channel::Email, "bobby@other.org"),
        (Channel::Email, "alice@example.org"),
    ]
    .into_iter()
    .enumerate()
    {
        let to = if channel == Channel::Sms {
            line
        } else {
            support
        };
        store(
            t,
            &format!("p{i}"),
            channel,
            from,
            to,
            "hello",
            t0() + Duration::minutes(i as i64),
        )
        .await;
    }
}

async fn participant_prefix_finds_conversations_in_any_spelling(t: &TestDb) {
    prefix_world(t).await;
    let app = t.app(AppConfig::default());
    let table: &[(&str, &[&str])] = &[
        ("+1 804 555", &["+18045551234", "+18045559999"]),
        ("(804) 555-12", &["+18045551234"]),
        ("804555", &["+18045551234", "+18045559999"]),
        ("+44 20", &["+442071838750"]),
        ("1234", &["12345"]),
        ("bob", &["bob@example.com", "bobby@other.org"]),
        ("BOB@", &["bob@example.com"]),
        ("bob+news@Ex", &["bob@example.com"]),
        ("@example", &["alice@example.org", "bob@example.com"]),
        ("example.org", &["alice@example.org"]),
        (
            "@shop",
            &["alice@example.org", "bob@example.com", "bobby@other.org"],
        ),
        ("zzz", &[]),
        ("+1 999", &[]),
    ];
    for (prefix, expected) in table {
        let data = app.data(PREFIX, json!({ "p": prefix })).await;
        let conn = &data["conversations"];
        let mut found: Vec<String> = conn["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let p: Vec<&str> = n["participants"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .filter(|a| *a != "+12025550100" && *a != "support@shop.example")
                    .collect();
                p.join(",")
            })
            .collect();
        found.sort();
        assert_eq!(found, *expected, "prefix {prefix:?}");
        assert_eq!(
            conn["totalCount"],
            json!(expected.len()),
            "prefix {prefix:?}"
        );
    }
    let data = app
        .data(PREFIX, json!({ "p": "bob", "channel": "SMS" }))
        .await;
    assert_eq!(data["conversations"]["totalCount"], json!(0));
    for bad in ["+", "@", "   ", "-", &"1".repeat(321)] {
        let body = app.graphql(PREFIX, json!({ "p": bad })).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{bad:?}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["field"],
            "filter.participantPrefix"
        );
    }
}

async fn participant_prefixes_and_searches_use_the_indexes(t: &TestDb) {
    prefix_world(t).await;
    let backend = t.db.get_database_backend();
    let window = service::query::Window::new(
        service::cursor::CursorKind::Conversation,
        &Default::default(),
        &Default::default(),
    )
    .unwrap();
    let page = |prefix: &str| {
        let filter = service::query::ConversationFilter {
            participant_prefix: Some(prefix.into()),
            ..Default::default()
        };
        let select = service::query::conversation_page(
            &service::Viewer::Everyone,
            Default::default(),
            &filter,
            &window,
        )
        .unwrap();
        service::query::page_statement(backend, sea_orm::QueryTrait::as_query(&select))
    };
    let address = crate::plans::plan(t, page("bob@")).await;
    let domain = crate::plans::plan(t, page("@example")).await;
    match t.engine {
        parley_tests::Engine::Sqlite => {
            assert!(address.contains("(address>? AND address<?)"), "{address}");
            assert!(
                domain.contains("USING INDEX conversation_participants_domain_prefix"),
                "{domain}"
            );
        }
        parley_tests::Engine::Postgres => {
            assert!(
                address.contains("conversation_participants_pkey"),
                "{address}"
            );
            assert!(
                domain.contains("conversation_participants_domain_prefix"),
                "{domain}"
            );
        }
    }
    // A search reads the full-text index, not every message.
    let query = service::search::parse_query("hello").unwrap();
    let window = service::query::Window::new(
        service::cursor::CursorKind::SearchResult,
        &Default::default(),
        &Default::default(),
    )
    .unwrap();
    let select = service::query::search_page(
        backend,
        &service::Viewer::Everyone,
        Default::default(),
        &query,
        &Default::default(),
        &window,
    )
    .unwrap();
    let search = service::query::page_statement(backend, sea_orm::QueryTrait::as_query(&select));
    let search = crate::plans::plan(t, search).await;
    match t.engine {
        parley_tests::Engine::Sqlite => {
            assert!(search.contains("VIRTUAL TABLE INDEX"), "{search}")
        }
        parley_tests::Engine::Postgres => {
            assert!(search.contains("message_texts_tsv"), "{search}")
        }
    }
    // A rare word's page is read from the text rows alone: the full-text index, no
    // message.
    let keys = service::query::search_page_keys(
        backend,
        &service::Viewer::Everyone,
        Default::default(),
        &query,
        &Default::default(),
        &window,
    )
    .unwrap();
    let keys = service::query::page_statement(backend, sea_orm::QueryTrait::as_query(&keys));
    let keys = crate::plans::plan(t, keys).await;
    assert!(!keys.contains("messages "), "{keys}");
    match t.engine {
        parley_tests::Engine::Sqlite => {
            assert!(keys.contains("VIRTUAL TABLE INDEX"), "{keys}")
        }
        parley_tests::Engine::Postgres => {
            assert!(keys.contains("message_texts_tsv"), "{keys}")
        }
    }
}

async fn searches_are_priced_by_their_page(t: &TestDb) {
    corpus(t).await;
    let app = t.app(AppConfig::default());
    // searchMessages (field + object) + edges (field + 10 x (object + cursor + highlight +
    // node (field + object + id))).
    let body = app
        .graphql(
            "{ searchMessages(query: \"refund\", first: 10) { edges { cursor highlight node { id } } } }",
            json!({}),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(
        body["extensions"]["cost"]["requested"],
        json!(2 + 1 + 10 * (1 + 1 + 1 + 3))
    );
    // Without first/last a page is the default page size (20).
    let body = app
        .graphql(
            "{ searchMessages(query: \"refund\") { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["extensions"]["cost"]["requested"],
        json!(2 + 1 + 20 * 2)
    );
}

on_both_engines!(
    the_query_table_finds_exactly_the_expected_messages,
    paging_is_exact_both_ways_while_matches_arrive,
    filters_narrow_the_results,
    highlights_are_escaped_with_the_terms_marked,
    hostile_queries_answer_a_result_or_bad_user_input,
    search_obeys_visibility,
    existing_messages_are_indexed_after_migrating,
    participant_prefix_finds_conversations_in_any_spelling,
    participant_prefixes_and_searches_use_the_indexes,
    searches_are_priced_by_their_page,
    search_keys_follow_their_messages,
    both_page_statements_find_the_same_page,
    email_subjects_are_searched,
    a_common_word_pages_exactly_for_every_viewer,
);

/// A random query of the grammar: words from the corpus's vocabulary (and some that match
/// nothing), prefixes, phrases, exclusions and ORs.
fn grammar_query() -> impl Strategy<Value = String> {
    let word = proptest::sample::select(vec![
        "refund",
        "Refunds",
        "order",
        "12345",
        "café",
        "OLE",
        "804",
        "555",
        "1234",
        "tonight",
        "invoice",
        "receipt",
        "the",
        "at",
        "me",
        "zzz",
        "καλημέρα",
        "straße",
        "東京",
        "free",
    ]);
    let item = (
        word.clone(),
        proptest::sample::select(vec![0u8, 1, 2, 3, 4, 5]),
        word,
    )
        .prop_map(|(w, kind, w2)| match kind {
            0 => w.to_owned(),
            1 => format!("{}*", w.chars().take(3).collect::<String>()),
            2 => format!("\"{w} {w2}\""),
            3 => format!("-{w}"),
            4 => "OR".to_owned(),
            _ => format!("{w}-{w2}"),
        });
    proptest::collection::vec(item, 1..6).prop_map(|items| items.join(" "))
}

/// The label set `query` finds on `t`, through the service (no HTTP), or the refusal.
async fn found_labels(t: &TestDb, query: &str) -> Result<BTreeSet<String>, String> {
    let parsed = service::search::parse_query(query).map_err(|e| e.to_string())?;
    let window = service::query::Window::new(
        service::cursor::CursorKind::SearchResult,
        &service::query::PageRequest {
            first: Some(100),
            ..Default::default()
        },
        &Default::default(),
    )
    .unwrap();
    let page = service::query::search_messages(
        &t.db,
        &service::Viewer::Everyone,
        Default::default(),
        &parsed,
        &Default::default(),
        &window,
        std::time::Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|e| panic!("{query:?}: {e}"));
    Ok(page
        .items
        .into_iter()
        .map(|m| m.provider_message_id.unwrap())
        .collect())
}

/// SQLite and PostgreSQL find the same messages for the query table and for random queries
/// of the grammar, and no query of the grammar errors on either (only `BAD_USER_INPUT`
/// refusals, the same on both, which the parser decides before any database is asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_engines_find_the_same_messages() {
    let sqlite = TestDb::sqlite().await;
    corpus(&sqlite).await;
    let postgres = TestDb::postgres().await;
    if let Some(pg) = &postgres {
        corpus(pg).await;
    }
    let mut queries: Vec<String> = TABLE.iter().map(|(q, _)| q.to_string()).collect();
    let mut runner = TestRunner::deterministic();
    let strategy = grammar_query();
    for _ in 0..300 {
        queries.push(strategy.new_tree(&mut runner).unwrap().current());
    }
    for query in &queries {
        let on_sqlite = found_labels(&sqlite, query).await;
        if let Some(pg) = &postgres {
            let on_postgres = found_labels(pg, query).await;
            assert_eq!(on_sqlite, on_postgres, "query {query:?}");
        }
    }
    sqlite.cleanup().await;
    if let Some(pg) = postgres {
        pg.cleanup().await;
    }
}

/// PostgreSQL cuts a search off at its statement timeout and says `QUERY_TOO_COMPLEX`
/// (naming `query`); SQLite has no statement timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_search_past_its_timeout_is_too_complex_on_postgres() {
    use sea_orm::ConnectionTrait;
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    let id = store(
        &t,
        "seed",
        Channel::Sms,
        "+12025550180",
        "+12025550181",
        "common",
        t0(),
    )
    .await;
    let conversation = service::query::find_message(&t.db, &service::Viewer::Everyone, id)
        .await
        .unwrap()
        .unwrap()
        .conversation_id
        .unwrap();
    t.db.execute_unprepared(&format!(
        "INSERT INTO messages (conversation_id, channel, kind, direction, from_raw, to_raw, body, attachments, sent_at, recorded_at) \
         SELECT {conversation}, 'SMS', 'SMS', 'INBOUND', 'x', '[]', 'common word', '[]', now() - i * interval '1 second', now() \
         FROM generate_series(1, 50000) i;
         INSERT INTO message_texts (message_id, text, conversation_id, channel, direction, sent_at) \
         SELECT id, 'common word', conversation_id, channel, direction, sent_at FROM messages WHERE id <> {id}"
    ))
    .await
    .unwrap();
    let query = service::search::parse_query("common OR word* OR co*").unwrap();
    let window = service::query::Window::new(
        service::cursor::CursorKind::SearchResult,
        &Default::default(),
        &Default::default(),
    )
    .unwrap();
    let filter = service::query::SearchFilter::default();
    let search = |timeout| {
        service::query::search_messages(
            &t.db,
            &service::Viewer::Everyone,
            Default::default(),
            &query,
            &filter,
            &window,
            timeout,
        )
    };
    // A transaction holding the text table makes the search wait past its timeout every
    // time (a 1 ms timeout alone lost the race now and then: the first page of a common
    // word is read in well under a millisecond once cached).
    let blocker = {
        use sea_orm::TransactionTrait;
        let txn = t.db.begin().await.unwrap();
        txn.execute_unprepared("LOCK TABLE message_texts IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        txn
    };
    // Bounded, so a timeout that is not applied fails here rather than waiting on the lock.
    let cut = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        search(std::time::Duration::from_millis(1)),
    );
    match cut.await {
        Ok(Err(service::Error::TooComplex { field, .. })) => assert_eq!(field, "query"),
        other => panic!("{other:?}"),
    }
    blocker.rollback().await.unwrap();
    assert_eq!(
        api::error::ClientError::from_service(
            &service::Error::TooComplex {
                field: "query".into(),
                reason: "too long".into()
            },
            None
        )
        .code,
        "QUERY_TOO_COMPLEX"
    );
    // With time to spare the same search answers, and the pool's connection is fine.
    let page = search(std::time::Duration::from_secs(30)).await.unwrap();
    assert_eq!(page.items.len(), 20);
    t.cleanup().await;
}
