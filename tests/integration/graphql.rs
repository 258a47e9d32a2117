//! The GraphQL API through the in-process router: round trips, paging with every
//! `pageInfo` flag, filters, node lookups, error codes, batching (N+1) and the committed SDL.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parley_tests::{AppConfig, TestApp, TestDb, error_code, expected_cursor, on_both_engines};
use serde_json::{Value, json};
use service::cursor::CursorKind;

const RECORD: &str = r#"
mutation Record($input: RecordMessageInput!) {
  recordMessage(input: $input) {
    duplicate conversationCreated
    message { id from to body kind direction sentAt assignmentError providerMessageId attachments
              conversation { id } }
    conversation { id channel participants key messageCount firstMessageAt lastMessageAt snippet
                   lastMessage { id body } }
  }
}"#;

fn sms(from: &str, to: &str, body: &str, direction: &str, minute: u32) -> Value {
    json!({ "input": {
        "channel": "SMS", "kind": "SMS", "direction": direction, "from": from, "to": [to],
        "body": body, "sentAt": format!("2024-11-01T14:{minute:02}:00Z")
    }})
}

/// An app over `t` whose database counts every statement it runs (while the guard lives).
fn counting_app(t: &TestDb) -> (TestApp, Arc<AtomicUsize>, service::db::CountingGuard) {
    let counter = Arc::new(AtomicUsize::new(0));
    let (db, guard) = service::db::counting(&t.db, counter.clone());
    let app = TestApp {
        router: api::router(api::AppState::new(db, AppConfig::default())),
    };
    (app, counter, guard)
}

async fn record(app: &TestApp, vars: Value) -> Value {
    app.data(RECORD, vars).await["recordMessage"].clone()
}

on_both_engines!(
    record_and_read_round_trip,
    pair_scenario_lands_in_one_conversation,
    replay_answers_duplicate_with_the_original,
    unassigned_inbound_is_listed_for_operators,
    conversations_page_forward_and_backward_with_exact_flags,
    thread_pages_back_from_the_latest,
    filters_narrow_conversations_and_messages,
    node_lookups_answer_null_for_unknown_ids,
    bad_input_gets_typed_errors,
    nested_fields_cost_a_constant_number_of_statements,
    normalize_addresses_shows_the_key_without_writing,
    every_operation_reports_its_cost_and_runs_once,
    a_document_seen_before_answers_as_the_first_time,
);

async fn record_and_read_round_trip(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let mut vars = sms(
        "+12016661234",
        "(804) 555-1234",
        "Hello 👋🏽 there",
        "OUTBOUND",
        0,
    );
    vars["input"]["attachments"] = json!(["https://files.example.com/a.png"]);
    vars["input"]["kind"] = json!("MMS");
    vars["input"]["providerMessageId"] = json!("p-1");
    let r = record(&app, vars).await;
    assert_eq!(r["duplicate"], false);
    assert_eq!(r["conversationCreated"], true);
    let m = &r["message"];
    assert_eq!(m["from"], "+12016661234");
    assert_eq!(m["to"], json!(["+18045551234"]));
    assert_eq!(m["kind"], "MMS");
    assert_eq!(m["direction"], "OUTBOUND");
    assert_eq!(m["sentAt"], "2024-11-01T14:00:00+00:00");
    assert_eq!(m["attachments"], json!(["https://files.example.com/a.png"]));
    assert_eq!(m["providerMessageId"], "p-1");
    assert_eq!(m["assignmentError"], Value::Null);
    let c = &r["conversation"];
    assert_eq!(m["conversation"]["id"], c["id"]);
    assert_eq!(c["channel"], "SMS");
    assert_eq!(c["participants"], json!(["+12016661234", "+18045551234"]));
    assert_eq!(c["messageCount"], 1);
    assert_eq!(c["snippet"], "Hello 👋🏽 there");
    assert_eq!(c["lastMessage"]["id"], m["id"]);
    assert_eq!(c["key"].as_str().unwrap().len(), 32);

    let read = app
        .data(
            r#"query($c: ID!, $m: ID!) {
                 conversation(id: $c) { id messageCount snippet(length: 6)
                   messages(last: 5) { totalCount nodes { id body } } }
                 message(id: $m) { id body snippet(length: 5) conversation { id } }
                 node(id: $c) { id ... on Conversation { participants } }
               }"#,
            json!({ "c": c["id"], "m": m["id"] }),
        )
        .await;
    assert_eq!(read["conversation"]["id"], c["id"]);
    assert_eq!(read["conversation"]["snippet"], "Hello…");
    assert_eq!(read["conversation"]["messages"]["totalCount"], 1);
    assert_eq!(
        read["conversation"]["messages"]["nodes"][0]["body"],
        "Hello 👋🏽 there"
    );
    assert_eq!(read["message"]["snippet"], "Hell…");
    assert_eq!(read["message"]["conversation"]["id"], c["id"]);
    assert_eq!(read["node"]["participants"], c["participants"]);
}

async fn pair_scenario_lands_in_one_conversation(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let out = record(
        &app,
        sms(
            "+12016661234",
            "+18045551234",
            "Are you coming?",
            "OUTBOUND",
            0,
        ),
    )
    .await;
    let back = record(
        &app,
        sms("804-555-1234", "+1 201 666 1234", "Yes!", "INBOUND", 3),
    )
    .await;
    assert_eq!(out["conversationCreated"], true);
    assert_eq!(back["conversationCreated"], false);
    assert_eq!(out["conversation"]["id"], back["conversation"]["id"]);
    let c = &back["conversation"];
    assert_eq!(c["messageCount"], 2);
    assert_eq!(c["firstMessageAt"], "2024-11-01T14:00:00+00:00");
    assert_eq!(c["lastMessageAt"], "2024-11-01T14:03:00+00:00");
    assert_eq!(c["snippet"], "Yes!");
    assert_eq!(c["lastMessage"]["body"], "Yes!");
    let list = app
        .data(
            "{ conversations(first: 10) { totalCount nodes { messageCount } } }",
            json!({}),
        )
        .await;
    assert_eq!(list["conversations"]["totalCount"], 1);
}

async fn replay_answers_duplicate_with_the_original(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let mut vars = sms("+18045551234", "+12016661234", "webhook", "INBOUND", 1);
    vars["input"]["providerMessageId"] = json!("message-1");
    let first = record(&app, vars.clone()).await;
    vars["input"]["body"] = json!("a changed body is still the same provider message");
    let again = record(&app, vars).await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["conversationCreated"], false);
    assert_eq!(again["message"], first["message"]);
    assert_eq!(again["conversation"]["messageCount"], 1);
    assert_eq!(t.count("messages").await, 1);
}

async fn unassigned_inbound_is_listed_for_operators(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let r = record(
        &app,
        sms(
            "+1 555 0100 99999",
            "+12016661234",
            "odd sender",
            "INBOUND",
            1,
        ),
    )
    .await;
    assert_eq!(r["conversation"], Value::Null);
    assert_eq!(r["conversationCreated"], false);
    assert_eq!(r["message"]["conversation"], Value::Null);
    let reason = r["message"]["assignmentError"].as_str().unwrap();
    assert_eq!(reason, "from: phone number is not valid for region US");
    let list = app
        .data(
            "{ unassignedMessages(first: 10) { totalCount nodes { id assignmentError from } } }",
            json!({}),
        )
        .await;
    let u = &list["unassignedMessages"];
    assert_eq!(u["totalCount"], 1);
    assert_eq!(u["nodes"][0]["id"], r["message"]["id"]);
    assert_eq!(u["nodes"][0]["from"], "+1 555 0100 99999");
    // An outbound message with the same address is refused, with the field named.
    let body = app
        .graphql(
            RECORD,
            sms("+1 555 0100 99999", "+12016661234", "x", "OUTBOUND", 1),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(body["errors"][0]["extensions"]["field"], "from");
    assert_eq!(t.count("messages").await, 1);
}

const PAGE: &str = r#"query($first: Int, $after: String, $last: Int, $before: String) {
  conversations(first: $first, after: $after, last: $last, before: $before) {
    totalCount
    edges { cursor node { lastMessageAt snippet } }
    nodes { id }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  } }"#;

async fn conversations_page_forward_and_backward_with_exact_flags(t: &TestDb) {
    let app = t.app(AppConfig::default());
    for i in 0..23u32 {
        record(
            &app,
            sms(
                "+12016661234",
                &format!("+1804555{:04}", 1000 + i),
                &format!("c{i}"),
                "OUTBOUND",
                i,
            ),
        )
        .await;
    }
    let snippets = |page: &Value| -> Vec<String> {
        page["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["snippet"].as_str().unwrap().to_owned())
            .collect()
    };
    // Forward, 10 at a time: c22..c13, c12..c3, c2..c0.
    let p1 = app.data(PAGE, json!({ "first": 10 })).await["conversations"].clone();
    assert_eq!(p1["totalCount"], 23);
    assert_eq!(
        snippets(&p1),
        (13..23).rev().map(|i| format!("c{i}")).collect::<Vec<_>>()
    );
    assert_eq!(p1["pageInfo"]["hasNextPage"], true);
    assert_eq!(p1["pageInfo"]["hasPreviousPage"], false);
    // Conversation ci was last active at 14:i; its cursor is that position and its row id.
    let rows = t.ids("conversations").await;
    let cursor = |i: usize| {
        json!(expected_cursor(
            CursorKind::Conversation,
            &format!("2024-11-01T14:{i:02}:00Z"),
            rows[i]
        ))
    };
    let cursors = |page: &Value| -> Vec<Value> {
        page["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["cursor"].clone())
            .collect()
    };
    assert_eq!(cursors(&p1), (13..23).rev().map(cursor).collect::<Vec<_>>());
    assert_eq!(p1["pageInfo"]["startCursor"], cursor(22));
    assert_eq!(p1["pageInfo"]["endCursor"], cursor(13));
    assert_eq!(p1["nodes"].as_array().unwrap().len(), 10);
    let p2 = app
        .data(
            PAGE,
            json!({ "first": 10, "after": p1["pageInfo"]["endCursor"] }),
        )
        .await["conversations"]
        .clone();
    assert_eq!(
        snippets(&p2),
        (3..13).rev().map(|i| format!("c{i}")).collect::<Vec<_>>()
    );
    assert_eq!(p2["pageInfo"]["hasNextPage"], true);
    assert_eq!(p2["pageInfo"]["hasPreviousPage"], true);
    let p3 = app
        .data(
            PAGE,
            json!({ "first": 10, "after": p2["pageInfo"]["endCursor"] }),
        )
        .await["conversations"]
        .clone();
    assert_eq!(snippets(&p3), ["c2", "c1", "c0"]);
    assert_eq!(cursors(&p3), [cursor(2), cursor(1), cursor(0)]);
    assert_eq!(p3["pageInfo"]["startCursor"], cursor(2));
    assert_eq!(p3["pageInfo"]["endCursor"], cursor(0));
    assert_eq!(p3["pageInfo"]["hasNextPage"], false);
    assert_eq!(p3["pageInfo"]["hasPreviousPage"], true);
    // Exactly at the end: a full page with nothing after it says so.
    let p_exact = app
        .data(
            PAGE,
            json!({ "first": 3, "after": p2["pageInfo"]["endCursor"] }),
        )
        .await["conversations"]
        .clone();
    assert_eq!(p_exact["pageInfo"]["hasNextPage"], false);

    // Backward, 10 at a time from the end: c9..c0, then c19..c10, then c22..c20.
    let b1 = app.data(PAGE, json!({ "last": 10 })).await["conversations"].clone();
    assert_eq!(
        snippets(&b1),
        (0..10).rev().map(|i| format!("c{i}")).collect::<Vec<_>>()
    );
    assert_eq!(b1["pageInfo"]["startCursor"], cursor(9));
    assert_eq!(b1["pageInfo"]["endCursor"], cursor(0));
    assert_eq!(b1["pageInfo"]["hasPreviousPage"], true);
    assert_eq!(b1["pageInfo"]["hasNextPage"], false);
    let b2 = app
        .data(
            PAGE,
            json!({ "last": 10, "before": b1["pageInfo"]["startCursor"] }),
        )
        .await["conversations"]
        .clone();
    assert_eq!(
        snippets(&b2),
        (10..20).rev().map(|i| format!("c{i}")).collect::<Vec<_>>()
    );
    assert_eq!(b2["pageInfo"]["hasPreviousPage"], true);
    assert_eq!(b2["pageInfo"]["hasNextPage"], true);
    let b3 = app
        .data(
            PAGE,
            json!({ "last": 10, "before": b2["pageInfo"]["startCursor"] }),
        )
        .await["conversations"]
        .clone();
    assert_eq!(snippets(&b3), ["c22", "c21", "c20"]);
    assert_eq!(b3["pageInfo"]["hasPreviousPage"], false);
    assert_eq!(b3["pageInfo"]["hasNextPage"], true);
}

const THREAD: &str = r#"query($id: ID!, $first: Int, $after: String, $last: Int, $before: String) {
  conversation(id: $id) { messages(first: $first, after: $after, last: $last, before: $before) {
    totalCount edges { cursor node { body } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } }"#;

async fn thread_pages_back_from_the_latest(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let mut id = Value::Null;
    for i in 0..12u32 {
        let dir = if i % 2 == 0 { "OUTBOUND" } else { "INBOUND" };
        let (from, to) = if i % 2 == 0 {
            ("+12016661234", "+18045551234")
        } else {
            ("+18045551234", "+12016661234")
        };
        id = record(&app, sms(from, to, &format!("m{i}"), dir, i)).await["conversation"]["id"]
            .clone();
    }
    let bodies = |v: &Value| -> Vec<String> {
        v["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["body"].as_str().unwrap().to_owned())
            .collect()
    };
    let q = |vars: Value| {
        let app = app.clone();
        async move { app.data(THREAD, vars).await["conversation"]["messages"].clone() }
    };
    let l1 = q(json!({ "id": id, "last": 5 })).await;
    assert_eq!(l1["totalCount"], 12);
    assert_eq!(bodies(&l1), ["m7", "m8", "m9", "m10", "m11"]);
    assert_eq!(
        (
            l1["pageInfo"]["hasPreviousPage"].clone(),
            l1["pageInfo"]["hasNextPage"].clone()
        ),
        (json!(true), json!(false))
    );
    let l2 = q(json!({ "id": id, "last": 5, "before": l1["pageInfo"]["startCursor"] })).await;
    assert_eq!(bodies(&l2), ["m2", "m3", "m4", "m5", "m6"]);
    assert_eq!(
        (
            l2["pageInfo"]["hasPreviousPage"].clone(),
            l2["pageInfo"]["hasNextPage"].clone()
        ),
        (json!(true), json!(true))
    );
    let l3 = q(json!({ "id": id, "last": 5, "before": l2["pageInfo"]["startCursor"] })).await;
    assert_eq!(bodies(&l3), ["m0", "m1"]);
    assert_eq!(l3["pageInfo"]["hasPreviousPage"], false);
    let f1 = q(json!({ "id": id, "first": 7 })).await;
    assert_eq!(bodies(&f1), ["m0", "m1", "m2", "m3", "m4", "m5", "m6"]);
    assert_eq!(
        (
            f1["pageInfo"]["hasPreviousPage"].clone(),
            f1["pageInfo"]["hasNextPage"].clone()
        ),
        (json!(false), json!(true))
    );
    let f2 = q(json!({ "id": id, "first": 7, "after": f1["pageInfo"]["endCursor"] })).await;
    assert_eq!(bodies(&f2), ["m7", "m8", "m9", "m10", "m11"]);
    assert_eq!(
        (
            f2["pageInfo"]["hasPreviousPage"].clone(),
            f2["pageInfo"]["hasNextPage"].clone()
        ),
        (json!(true), json!(false))
    );
}

async fn filters_narrow_conversations_and_messages(t: &TestDb) {
    let app = t.app(AppConfig::default());
    record(
        &app,
        sms("+12016661234", "+18045551234", "a", "OUTBOUND", 1),
    )
    .await;
    record(&app, sms("+18045551234", "+12016661234", "b", "INBOUND", 2)).await;
    record(
        &app,
        sms("+12016661234", "+14155552671", "c", "OUTBOUND", 30),
    )
    .await;
    let email = json!({ "input": { "channel": "EMAIL", "direction": "INBOUND", "from": "Jane <jane+x@example.com>",
        "to": ["support@usehatchapp.com"], "body": "<p>hi</p>", "sentAt": "2024-11-01T14:40:00Z" }});
    record(&app, email).await;
    let count = |filter: Value| {
        let app = app.clone();
        async move {
            app.data("query($f: ConversationFilter) { conversations(first: 50, filter: $f) { totalCount nodes { id } } }", json!({ "f": filter }))
                .await["conversations"]["totalCount"]
                .as_i64()
                .unwrap()
        }
    };
    assert_eq!(count(json!({})).await, 3);
    assert_eq!(count(json!({ "channel": "EMAIL" })).await, 1);
    assert_eq!(count(json!({ "channel": "SMS" })).await, 2);
    assert_eq!(count(json!({ "participant": "(804) 555-1234" })).await, 1);
    assert_eq!(count(json!({ "participant": "201.666.1234" })).await, 2);
    assert_eq!(count(json!({ "participant": "JANE@example.com" })).await, 1);
    assert_eq!(
        count(json!({ "activeSince": "2024-11-01T14:30:00Z" })).await,
        2
    );
    assert_eq!(
        count(json!({ "activeBefore": "2024-11-01T14:30:00Z" })).await,
        1
    );
    let thread = app
        .data(
            r#"{ conversations(first: 1, filter: { participant: "+18045551234" }) { nodes {
                 inbound: messages(first: 10, filter: { direction: INBOUND }) { totalCount nodes { body } }
                 sms: messages(first: 10, filter: { kind: SMS }) { totalCount }
                 mms: messages(first: 10, filter: { kind: MMS }) { totalCount } } } }"#,
            json!({}),
        )
        .await;
    let n = &thread["conversations"]["nodes"][0];
    assert_eq!(n["inbound"]["totalCount"], 1);
    assert_eq!(n["inbound"]["nodes"], json!([{ "body": "b" }]));
    assert_eq!(n["sms"]["totalCount"], 2);
    assert_eq!(n["mms"]["totalCount"], 0);
    let bad = app
        .graphql(
            r#"{ conversations(first: 5, filter: { participant: "nope" }) { totalCount } }"#,
            json!({}),
        )
        .await;
    assert_eq!(error_code(&bad), "BAD_USER_INPUT");
    assert_eq!(
        bad["errors"][0]["extensions"]["field"],
        "filter.participant"
    );
}

async fn node_lookups_answer_null_for_unknown_ids(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let r = record(
        &app,
        sms("+12016661234", "+18045551234", "x", "OUTBOUND", 1),
    )
    .await;
    let (cid, mid) = (r["conversation"]["id"].clone(), r["message"]["id"].clone());
    let d = app
        .data(
            r#"query($ids: [ID!]!, $c: ID!, $m: ID!) {
                 nodes(ids: $ids) { __typename id }
                 wrongType: conversation(id: $m) { id }
                 wrongType2: message(id: $c) { id }
                 garbage: node(id: "%%%not-an-id") { id }
                 missing: conversation(id: "Q29udmVyc2F0aW9uOjk5OTk5") { id }
               }"#,
            json!({ "ids": [cid, mid, "bogus", "TWVzc2FnZTo5OTk5OTk"], "c": cid, "m": mid }),
        )
        .await;
    assert_eq!(
        d["nodes"],
        json!([{ "__typename": "Conversation", "id": cid }, { "__typename": "Message", "id": mid }, null, null])
    );
    assert_eq!(d["wrongType"], Value::Null);
    assert_eq!(d["wrongType2"], Value::Null);
    assert_eq!(d["garbage"], Value::Null);
    assert_eq!(d["missing"], Value::Null);
    let by = app
        .data(
            r#"{ conversationByParticipants(channel: SMS, participants: ["(804) 555-1234", "+1 201 666 1234"]) { id }
                 none: conversationByParticipants(channel: SMS, participants: ["+14155552671"]) { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(by["conversationByParticipants"]["id"], cid);
    assert_eq!(by["none"], Value::Null);
}

async fn bad_input_gets_typed_errors(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let cases = [
        (
            "{ conversations(first: 101) { totalCount } }",
            "BAD_USER_INPUT",
            Some("first"),
        ),
        (
            "{ conversations(first: 0) { totalCount } }",
            "BAD_USER_INPUT",
            Some("first"),
        ),
        (
            "{ conversations(last: -1) { totalCount } }",
            "BAD_USER_INPUT",
            Some("last"),
        ),
        (
            "{ conversations(first: 1, last: 1) { totalCount } }",
            "BAD_USER_INPUT",
            Some("last"),
        ),
        (
            r#"{ conversations(first: 1, after: "forged") { totalCount } }"#,
            "INVALID_CURSOR",
            None,
        ),
        (
            r#"{ conversations(first: 1, after: "bTE6MTo1") { totalCount } }"#,
            "INVALID_CURSOR",
            None,
        ),
        (
            r#"{ conversations(first: 1) { nodes { snippet(length: 0) } } }"#,
            "BAD_USER_INPUT",
            None,
        ),
        (
            "{ conversations(first: 1) { nope } }",
            "GRAPHQL_VALIDATION_FAILED",
            None,
        ),
        ("{ conversations(first: 1) { ", "GRAPHQL_PARSE_FAILED", None),
    ];
    record(
        &app,
        sms("+12016661234", "+18045551234", "x", "OUTBOUND", 1),
    )
    .await;
    for (query, code, field) in cases {
        let body = app.graphql(query, json!({})).await;
        assert_eq!(error_code(&body), code, "{query}: {body:#}");
        if let Some(field) = field {
            assert_eq!(body["errors"][0]["extensions"]["field"], field, "{query}");
        }
    }
    let page_100 = app
        .graphql("{ conversations(first: 100) { totalCount } }", json!({}))
        .await;
    assert!(page_100.get("errors").is_none(), "{page_100:#}");
    let cases = [
        (
            json!({ "channel": "SMS", "direction": "OUTBOUND", "from": "+12016661234", "to": [], "body": "x" }),
            "to",
        ),
        (
            json!({ "channel": "SMS", "direction": "OUTBOUND", "from": "+12016661234", "to": ["+18045551234"], "body": "x\u{0}" }),
            "body",
        ),
        (
            json!({ "channel": "SMS", "kind": "EMAIL", "direction": "OUTBOUND", "from": "+12016661234", "to": ["+18045551234"], "body": "x" }),
            "kind",
        ),
        (
            json!({ "channel": "EMAIL", "direction": "OUTBOUND", "from": "+12016661234", "to": ["a@example.com"], "body": "x" }),
            "from",
        ),
        (
            json!({ "channel": "SMS", "direction": "OUTBOUND", "from": "+12016661234", "to": ["+18045551234", "jane@example.com"], "body": "x" }),
            "to[1]",
        ),
    ];
    for (input, field) in cases {
        let body = app.graphql(RECORD, json!({ "input": input })).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body:#}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body:#}");
        assert_eq!(body["data"], Value::Null);
    }
    let bad_date = app
        .graphql(RECORD, json!({ "input": { "channel": "SMS", "direction": "OUTBOUND", "from": "+12016661234", "to": ["+18045551234"], "body": "x", "sentAt": "yesterday" } }))
        .await;
    assert_eq!(error_code(&bad_date), "BAD_USER_INPUT", "{bad_date:#}");
    assert_eq!(t.count("messages").await, 1);
}

async fn nested_fields_cost_a_constant_number_of_statements(t: &TestDb) {
    let (app, counter, _counting) = counting_app(t);
    let query = |n: usize| {
        format!(
            "{{ conversations(first: {n}) {{ nodes {{ lastMessage {{ body }} messages(last: 3) {{ totalCount nodes {{ body conversation {{ id }} }} }} }} }} }}"
        )
    };
    let mut statements = Vec::new();
    for (conversations, page) in [(5, 5), (50, 50)] {
        while (t.count("conversations").await as usize) < conversations {
            let i = t.count("conversations").await;
            for k in 0..4 {
                record(
                    &app,
                    sms(
                        "+12016661234",
                        &format!("+1804555{:04}", 1000 + i),
                        &format!("m{k}"),
                        "OUTBOUND",
                        k,
                    ),
                )
                .await;
            }
        }
        t.count_statements_from_zero(&counter).await;
        let d = app.data(&query(page), json!({})).await;
        let nodes = d["conversations"]["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), page);
        assert!(
            nodes
                .iter()
                .all(|n| n["messages"]["nodes"].as_array().unwrap().len() == 3)
        );
        assert!(nodes.iter().all(|n| n["lastMessage"]["body"] == "m3"));
        statements.push(counter.load(Ordering::SeqCst));
    }
    eprintln!("statements for conversations(first: 5) and (first: 50): {statements:?}");
    assert_eq!(
        statements[0], statements[1],
        "statement count grows with the page size"
    );
    assert_eq!(
        statements[1], 3,
        "page, last messages, thread pages: {statements:?}"
    );
}

async fn normalize_addresses_shows_the_key_without_writing(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let r = record(
        &app,
        sms("+12016661234", "+18045551234", "x", "OUTBOUND", 1),
    )
    .await;
    let d = app
        .data(
            r#"{ ok: normalizeAddresses(channel: SMS, addresses: ["(804) 555-1234", "201-666-1234"]) {
                   valid participants key conversation { id } addresses { input normalized error } }
                 bad: normalizeAddresses(channel: SMS, addresses: ["jane@example.com"]) {
                   valid participants key addresses { normalized error } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(d["ok"]["valid"], true);
    assert_eq!(
        d["ok"]["participants"],
        json!(["+12016661234", "+18045551234"])
    );
    assert_eq!(d["ok"]["key"], r["conversation"]["key"]);
    assert_eq!(d["ok"]["conversation"]["id"], r["conversation"]["id"]);
    assert_eq!(
        d["ok"]["addresses"][0],
        json!({ "input": "(804) 555-1234", "normalized": "+18045551234", "error": null })
    );
    assert_eq!(d["bad"]["valid"], false);
    assert_eq!(d["bad"]["key"], Value::Null);
    assert_eq!(d["bad"]["participants"], Value::Null);
    assert_eq!(
        d["bad"]["addresses"],
        json!([{
            "normalized": null,
            "error": "looks like an email address, but SMS takes phone numbers and short codes only",
        }])
    );
    assert_eq!(t.count("messages").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_record_message_over_http_creates_one_conversation() {
    let mut dbs = vec![TestDb::sqlite().await];
    dbs.extend(TestDb::postgres().await);
    for t in dbs {
        let app = api::router(api::AppState::new(t.db.clone(), AppConfig::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let spellings = [
            ("+1 415-555-2671", "+12016661234"),
            ("(415) 555-2671", "201.666.1234"),
            ("4155552671", "1-201-666-1234"),
        ];
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let client = client.clone();
                let (a, b) = spellings[i % 3];
                let body = json!({ "query": RECORD, "variables": sms(a, b, &format!("n{i}"), "OUTBOUND", (i % 60) as u32) });
                tokio::spawn(async move {
                    let r = client.post(format!("http://{addr}/graphql")).json(&body).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    r.json::<Value>().await.unwrap()
                })
            })
            .collect();
        let mut created = 0;
        for task in tasks {
            let body = task.await.unwrap();
            assert!(body.get("errors").is_none(), "{body:#}");
            created += usize::from(body["data"]["recordMessage"]["conversationCreated"] == true);
        }
        assert_eq!(created, 1);
        let list: Value = client
            .post(format!("http://{addr}/graphql"))
            .json(&json!({ "query": "{ conversations(first: 5) { totalCount nodes { messageCount } } }" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["data"]["conversations"]["totalCount"], 1, "{list:#}");
        assert_eq!(
            list["data"]["conversations"]["nodes"][0]["messageCount"],
            100
        );
        server.abort();
        t.cleanup().await;
    }
}

#[test]
fn committed_schema_matches_the_code() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql"))
            .expect("schema.graphql at the top level");
    let generated = api::graphql::schema::sdl();
    assert!(
        committed == generated,
        "schema.graphql is out of date: run `cargo run -p parley-api -- schema > schema.graphql`"
    );
}

/// SPEC: the race holds "with two server processes on one PostgreSQL". Two real `parley`
/// processes (two pools, no shared memory) take 100 concurrent first messages between one
/// new pair, spelled three ways, alternating between the processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_server_processes_on_one_postgres_create_one_conversation() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    // Generous pool waits: 100 writers queue on one row lock, and this checks the
    // invariant, not latency, on a machine that may be busy.
    let wait = ["--db-acquire-timeout", "30"];
    let a = parley_tests::Server::start(&t.url, &wait, &[]).await;
    let b = parley_tests::Server::start(&t.url, &wait, &["--no-migrate"]).await;
    let client = reqwest::Client::new();
    let spellings = [
        ("+1 415-555-2671", "+12016661234"),
        ("(415) 555-2671", "201.666.1234"),
        ("4155552671", "1-201-666-1234"),
    ];
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let client = client.clone();
            let url = if i % 2 == 0 { a.url("/graphql") } else { b.url("/graphql") };
            let (x, y) = spellings[i % 3];
            let (from, to) = if i % 4 < 2 { (x, y) } else { (y, x) };
            let body = json!({ "query": RECORD, "variables": sms(from, to, &format!("p{i}"), "OUTBOUND", (i % 60) as u32) });
            tokio::spawn(async move {
                let r = client.post(url).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.json::<Value>().await.unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let body = task.await.unwrap();
        assert!(body.get("errors").is_none(), "{body:#}");
        created += usize::from(body["data"]["recordMessage"]["conversationCreated"] == true);
    }
    assert_eq!(
        created, 1,
        "exactly one request, on one of the two processes, created it"
    );
    assert_eq!(t.count("conversations").await, 1);
    assert_eq!(t.count("messages").await, 100);
    assert_eq!(t.count("conversations WHERE message_count = 100").await, 1);
    drop((a, b));
    t.cleanup().await;
}

/// The loaders batch siblings without a time window: `nodes(ids)` over 3 or 30 messages
/// (and their conversations) costs the same statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sibling_lookups_share_one_statement_per_loader() {
    let t = TestDb::sqlite().await;
    let (app, counter, _counting) = counting_app(&t);
    let mut ids = Vec::new();
    for i in 0..30u32 {
        let r = record(
            &app,
            sms(
                "+12016661234",
                &format!("+1804555{:04}", 1000 + i),
                "x",
                "OUTBOUND",
                i,
            ),
        )
        .await;
        ids.push(r["message"]["id"].clone());
    }
    let q = "query($ids: [ID!]!) { nodes(ids: $ids) { ... on Message { body conversation { messageCount } } } }";
    let mut statements = Vec::new();
    for n in [3, 30] {
        t.count_statements_from_zero(&counter).await;
        let d = app.data(q, json!({ "ids": ids[..n] })).await;
        assert_eq!(d["nodes"].as_array().unwrap().len(), n);
        assert!(
            d["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["conversation"]["messageCount"] == 1)
        );
        statements.push(counter.load(Ordering::SeqCst));
    }
    // Messages, then their conversations: 2 statements. Loaders batch within a 1 ms window,
    // which a very busy machine can split once or twice; loading row by row would cost 31.
    assert_eq!(statements[0], 2, "{statements:?}");
    assert!(
        statements[1] <= 4,
        "lookups are not batched: {statements:?}"
    );
    t.cleanup().await;
}

/// `conversation(id)` with its last message and a thread page: two statements (the
/// conversation and its page in one, the last message), loaded ahead rather than through
/// loader windows one level after another; with the page alone, one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_conversation_with_its_thread_costs_two_statements() {
    let t = TestDb::sqlite().await;
    let (app, counter, _counting) = counting_app(&t);
    let mut id = Value::Null;
    for i in 0..8u32 {
        id = record(
            &app,
            sms(
                "+12016661234",
                "+18045551234",
                &format!("m{i}"),
                "OUTBOUND",
                i,
            ),
        )
        .await["conversation"]["id"]
            .clone();
    }
    t.count_statements_from_zero(&counter).await;
    let d = app
        .data(
            "query($id: ID!) { conversation(id: $id) { lastMessage { body } messages(last: 3) { nodes { body conversation { id } } } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(d["conversation"]["lastMessage"]["body"], "m7");
    assert_eq!(
        d["conversation"]["messages"]["nodes"],
        json!([
            { "body": "m5", "conversation": { "id": id } },
            { "body": "m6", "conversation": { "id": id } },
            { "body": "m7", "conversation": { "id": id } },
        ])
    );
    // The conversation and its thread page in one statement, the last message in another.
    assert_eq!(counter.load(Ordering::SeqCst), 2);
    t.count_statements_from_zero(&counter).await;
    let d = app
        .data(
            "query($id: ID!) { conversation(id: $id) { participants messages(first: 2) { nodes { body } pageInfo { hasNextPage } } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        d["conversation"]["messages"],
        json!({ "nodes": [{ "body": "m0" }, { "body": "m1" }], "pageInfo": { "hasNextPage": true } })
    );
    assert_eq!(counter.load(Ordering::SeqCst), 1);
    t.cleanup().await;
}

/// The cost comes from a probe that validates first (see `api::graphql::cost`): it must be
/// in every answer, match what async-graphql's Analyzer reports, and never run an operation
/// twice, nor at all when it fails validation.
async fn every_operation_reports_its_cost_and_runs_once(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let mut vars = sms("+12016661234", "+18045551234", "once", "OUTBOUND", 0);
    vars["input"]["providerMessageId"] = json!("cost-1");
    let body = app.graphql(RECORD, vars).await;
    assert!(body.get("errors").is_none(), "{body:#}");
    assert_eq!(
        body["data"]["recordMessage"]["duplicate"], false,
        "{body:#}"
    );
    assert_eq!(
        body["data"]["recordMessage"]["conversation"]["messageCount"],
        1
    );
    // The price: the values the response can hold (see `api::graphql::cost`).
    assert_eq!(
        body["extensions"]["analyzer"],
        json!({ "complexity": 33, "depth": 4 })
    );
    assert_eq!(t.count("messages").await, 1, "the mutation ran once");

    // The page size counts, also when it comes in a variable: 5 nodes of an object and two
    // fields each (2 + 1 + 5 x 3), then 10 (2 + 1 + 10 x 3).
    let body = app
        .graphql(
            "query Page($n: Int) { conversations(first: $n) { nodes { id messageCount } } }",
            json!({ "n": 5 }),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body:#}");
    assert_eq!(body["data"]["conversations"]["nodes"][0]["messageCount"], 1);
    assert_eq!(
        body["extensions"]["analyzer"],
        json!({ "complexity": 18, "depth": 3 })
    );
    let body = app
        .graphql(
            "query Page($n: Int) { conversations(first: $n) { nodes { id messageCount } } }",
            json!({ "n": 10 }),
        )
        .await;
    assert_eq!(
        body["extensions"]["analyzer"],
        json!({ "complexity": 33, "depth": 3 })
    );

    // A mutation that fails validation is not run (the probe answers), and the answer
    // keeps its code.
    let mut vars = sms("+12016661234", "+18045551234", "never", "OUTBOUND", 1);
    vars["input"]["providerMessageId"] = json!("cost-2");
    let bad = app
        .graphql(
            "mutation R($input: RecordMessageInput!) { recordMessage(input: $input) { nope } }",
            vars,
        )
        .await;
    assert_eq!(error_code(&bad), "GRAPHQL_VALIDATION_FAILED", "{bad:#}");
    assert_eq!(
        t.count("messages").await,
        1,
        "a mutation that fails validation never runs"
    );
}

/// Validated documents are remembered by their text (`api::graphql::cost::DocumentCache`):
/// a document sent again, with the same or other variables and operation names, must get
/// exactly the answer (data, errors, codes, cost) a server that never saw it gives. A
/// remembered document with variables skips the probe and only has its variables' values
/// checked (`api::graphql::variables`): each bad value below comes after good ones, so it
/// meets the remembered document, and must be refused with the probe's very errors, and
/// each good one priced by its own page sizes.
async fn a_document_seen_before_answers_as_the_first_time(t: &TestDb) {
    let warm = t.app(AppConfig::default());
    // The record document with variables, remembered: its bad inputs below are checked
    // against the cached document.
    for minute in 0..3 {
        let mut vars = sms("+12016661234", "+18045551234", "hi", "OUTBOUND", minute);
        vars["input"]["providerMessageId"] = json!(format!("seen-{minute}"));
        record(&warm, vars).await;
    }
    let id = warm
        .data("{ conversations(first: 1) { nodes { id } } }", json!({}))
        .await["conversations"]["nodes"][0]["id"]
        .clone();
    const PAGE: &str =
        "query Page($n: Int) { conversations(first: $n) { nodes { id messageCount } } }";
    const TWO: &str = "query A { conversations(first: 1) { nodes { id } } } \
                       query B { conversations(last: 1) { nodes { messageCount snippet } } }";
    const THREAD: &str = "query T($id: ID!, $n: Int) { conversation(id: $id) { \
                          messages(last: $n) { nodes { id body sentAt direction } } } }";
    // Variables in a list, an input object with an enum, a directive and a fragment.
    const MANY: &str = "query M($ids: [ID!]!, $f: ConversationFilter, $with: Boolean!, $n: Int) { \
                        nodes(ids: $ids) { id } \
                        conversations(first: 2, filter: $f) { nodes { ...F @include(if: $with) } } } \
                        fragment F on Conversation { id messages(first: $n) { nodes { id } } }";
    // A variable used only in the operation that is not selected is not checked.
    const OTHER: &str = "query A($n: Int) { conversations(first: $n) { nodes { id } } } \
                         query B { conversations(last: 1) { nodes { id } } }";
    let many = |ids: Value, f: Value, with: Value, n: Value| json!({ "ids": ids, "f": f, "with": with, "n": n });
    let good_input = || {
        let mut vars = sms("+12016661234", "+18045551234", "hi", "OUTBOUND", 9);
        vars["input"]["providerMessageId"] = json!("seen-0");
        vars
    };
    let bad_input = |edit: &dyn Fn(&mut Value)| {
        let mut vars = good_input();
        edit(&mut vars["input"]);
        vars
    };
    let cases: Vec<(&str, Option<&str>, Value)> = vec![
        (
            "{ conversations(first: 2) { nodes { participants messageCount } } }",
            None,
            json!({}),
        ),
        (PAGE, None, json!({ "n": 2 })),
        // Variables that fail validation, coercion or the Int range, after good ones.
        (PAGE, None, json!({ "n": "two" })),
        (PAGE, None, json!({ "n": 3_000_000_000u64 })),
        (PAGE, None, json!({ "n": 0 })),
        (PAGE, None, json!({})),
        (TWO, Some("A"), json!({})),
        (TWO, Some("B"), json!({})),
        (TWO, Some("C"), json!({})),
        (TWO, None, json!({})),
        // A budget the same text exceeds when its variable asks for more.
        (
            "query Deep($n: Int) { conversations(first: $n) { nodes { messages(first: 100) { nodes { id body } } } } }",
            None,
            json!({ "n": 100 }),
        ),
        (
            "{ conversations(first: 2) { nodes { nope } } }",
            None,
            json!({}),
        ),
        (
            "{ conversations(first: 5000000000) { nodes { id } } }",
            None,
            json!({}),
        ),
        (THREAD, None, json!({ "id": id, "n": 2 })),
        // Priced by this request's page size, not the remembered one's.
        (THREAD, None, json!({ "id": id, "n": 50 })),
        (THREAD, None, json!({ "id": id })),
        (THREAD, None, json!({ "id": null, "n": 2 })),
        (THREAD, None, json!({ "id": true, "n": 2 })),
        (THREAD, None, json!({ "id": { "a": 1 }, "n": 2 })),
        (THREAD, None, json!({ "id": [id], "n": 2 })),
        (THREAD, None, json!({ "id": 12, "n": 2 })),
        (THREAD, None, json!({ "id": "bogus", "n": 2 })),
        (THREAD, None, json!({ "id": id, "n": "two" })),
        (THREAD, None, json!({ "id": id, "n": 2.5 })),
        (THREAD, None, json!({ "id": id, "n": 3_000_000_000u64 })),
        (THREAD, None, json!({ "id": id, "n": 5000 })),
        (THREAD, None, json!({ "n": 2 })),
        (THREAD, None, json!({ "id": null, "n": "two" })),
        (
            MANY,
            None,
            many(
                json!([id]),
                json!({ "channel": "SMS" }),
                json!(true),
                json!(1),
            ),
        ),
        (
            MANY,
            None,
            many(json!([id]), json!(null), json!(false), json!(null)),
        ),
        (
            MANY,
            None,
            many(json!([id, null]), json!(null), json!(true), json!(1)),
        ),
        (
            MANY,
            None,
            many(json!([id, 7, {}]), json!(null), json!(true), json!(1)),
        ),
        (
            MANY,
            None,
            many(json!(id), json!(null), json!(true), json!(1)),
        ),
        (
            MANY,
            None,
            many(
                json!([id]),
                json!({ "channel": "FAX" }),
                json!(true),
                json!(1),
            ),
        ),
        (
            MANY,
            None,
            many(json!([id]), json!({ "channel": 3 }), json!(true), json!(1)),
        ),
        (
            MANY,
            None,
            many(json!([id]), json!({ "nope": 1 }), json!(true), json!(1)),
        ),
        (
            MANY,
            None,
            many(json!([id]), json!("SMS"), json!(true), json!(1)),
        ),
        (
            MANY,
            None,
            many(
                json!([id]),
                json!({ "activeSince": "yesterday" }),
                json!(true),
                json!(1),
            ),
        ),
        (
            MANY,
            None,
            many(json!([id]), json!(null), json!("yes"), json!(1)),
        ),
        (
            MANY,
            None,
            many(json!([id]), json!(null), json!(null), json!(1)),
        ),
        (
            MANY,
            None,
            many(json!([id]), json!(null), json!(true), json!("one")),
        ),
        // Two bad values: both errors, in the order validation reports them.
        (
            MANY,
            None,
            many(
                json!([null]),
                json!({ "channel": "FAX" }),
                json!(1),
                json!("one"),
            ),
        ),
        (OTHER, Some("A"), json!({ "n": 1 })),
        (OTHER, Some("B"), json!({ "n": "one" })),
        (OTHER, Some("A"), json!({ "n": "one" })),
        (RECORD, None, bad_input(&|i| i["channel"] = json!("FAX"))),
        (RECORD, None, bad_input(&|i| i["direction"] = json!(null))),
        (RECORD, None, bad_input(&|i| i["to"] = json!([null]))),
        (RECORD, None, bad_input(&|i| i["extra"] = json!(1))),
        (
            RECORD,
            None,
            bad_input(&|i| {
                i.as_object_mut().unwrap().remove("from");
            }),
        ),
        (RECORD, None, json!({ "input": "text" })),
    ];
    let send = |app: &TestApp, (query, op, vars): &(&str, Option<&str>, Value)| {
        let body = json!({ "query": query, "operationName": op, "variables": vars });
        let app = app.clone();
        async move { app.post_json("/graphql", &body).await }
    };
    // Every case twice in a row on the warm app (the second from the cache), and once on
    // an app that never saw it: the three answers must be the same.
    for case in &cases {
        let first = send(&warm, case).await;
        let again = send(&warm, case).await;
        let cold = send(&t.app(AppConfig::default()), case).await;
        assert_eq!(first.status, cold.status, "{case:?}");
        assert_eq!(again.status, cold.status, "{case:?}");
        assert_eq!(first.json, cold.json, "{case:?}");
        assert_eq!(again.json, cold.json, "{case:?}: {:#}", again.json);
    }
    // And the variable cases once more after the document was remembered with good values.
    for case in cases.iter().filter(|c| c.0.contains('$')) {
        let again = send(&warm, case).await;
        let cold = send(&t.app(AppConfig::default()), case).await;
        assert_eq!(again.json, cold.json, "{case:?}");
    }
    // The remembered thread is priced by each request's page size (5n + 5), and a bad id
    // is the typed validation error.
    for (n, price) in [(2, 15), (50, 255), (7, 40)] {
        let r = send(&warm, &(THREAD, None, json!({ "id": id, "n": n }))).await;
        assert_eq!(
            r.json["extensions"]["cost"]["requested"],
            json!(price),
            "{n}"
        );
        assert_eq!(
            r.json["data"]["conversation"]["messages"]["nodes"]
                .as_array()
                .unwrap()
                .len(),
            3.min(n)
        );
    }
    let r = send(&warm, &(THREAD, None, json!({ "id": null, "n": 2 }))).await;
    assert_eq!(error_code(&r.json), "BAD_USER_INPUT", "{:#}", r.json);
    assert_eq!(
        r.json["errors"][0]["message"],
        "Invalid value for argument \"id\", expected type \"ID\""
    );
    let ok = send(&warm, &cases[0]).await;
    assert_eq!(
        ok.json["data"]["conversations"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        ok.json["extensions"]["analyzer"]["complexity"],
        json!(2 + 1 + 2 * 3)
    );
}
