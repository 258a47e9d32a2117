//! Pages whose `nodes` and `edges` are resolved from a plan (api::graphql::types::plain)
//! answer exactly as through async-graphql's executor. A field the plan does not cover
//! (`lastMessage`, a message's `statusHistory`) sends the whole list to the executor, so
//! each query is asked twice: as it is, and with that field added, which is then removed
//! from the answer before comparing.

use api::config::AppConfig;
use chrono::{Duration, TimeZone, Utc};
use parley_tests::{TestApp, TestDb, error_code, on_both_engines};
use serde_json::{Value, json};

const ALICE: &str = "+12025550101";
const BOB: &str = "+12025550102";

async fn record(app: &TestApp, input: Value) -> String {
    let data = app
        .data(
            "mutation($input: RecordMessageInput!) { recordMessage(input: $input) {
                conversation { id } } }",
            json!({ "input": input }),
        )
        .await;
    data["recordMessage"]["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn at(minute: i64) -> String {
    (Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap() + Duration::minutes(minute)).to_rfc3339()
}

/// Removes `field` from every object under `value`.
fn strip(value: &mut Value, field: &str) {
    match value {
        Value::Object(map) => {
            map.remove(field);
            map.values_mut().for_each(|v| strip(v, field));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| strip(v, field)),
        _ => {}
    }
}

/// The conversation selection both paths answer; `EXTRA` marks where the field that forces
/// the executor goes.
const CONVERSATION: &str = r#"
    __typename id channel participants key messageCount lastSequence firstMessageAt
    lastMessageAt createdAt snippet short: snippet(length: 3) snippet
    ... on Node { id nodeType: __typename }
    ...Counts
    viewerState(inbox: "(202) 555-0101") { __typename inbox readUpTo unreadCount archived }
    again: viewerState(inbox: "+1 202 555 0101") { readUpTo }
    again: viewerState(inbox: "+1 202 555 0101") { archived }
    unreadCount(inbox: "2025550101")
    EXTRA"#;

const MESSAGE: &str = r#"
    __typename id sequence channel kind direction from to fromRaw toRaw body attachments
    providerMessageId sentAt recordedAt snippet tiny: snippet(length: 2) assignmentError
    ... on Message { sentAt } ...When EXTRA"#;

const COUNTS: &str = "fragment Counts on Conversation { messageCount count: messageCount }";
const WHEN: &str = "fragment When on Message { recordedAt id }";

async fn both_ways(app: &TestApp, query: &str, extra: &str, variables: Value) -> Value {
    let planned = query.replace("EXTRA", "");
    let planned = app.data(&planned, variables.clone()).await;
    let executed = query.replace("EXTRA", extra);
    let mut executed = app.data(&executed, variables).await;
    let name = extra.split([' ', '{']).next().unwrap();
    strip(&mut executed, name);
    assert_eq!(planned, executed, "{query}");
    planned
}

async fn a_page_resolves_alike_planned_and_through_the_executor(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let c1 = record(
        &app,
        json!({"channel": "SMS", "direction": "INBOUND", "from": BOB, "to": [ALICE],
            "body": "Where is my order?", "providerMessageId": "p-1", "sentAt": at(1),
            "attachments": ["https://example.com/a.png"]}),
    )
    .await;
    record(
        &app,
        json!({"channel": "SMS", "direction": "OUTBOUND", "from": "(202) 555-0101",
            "to": [BOB], "body": "On its way", "sentAt": at(2)}),
    )
    .await;
    record(
        &app,
        json!({"channel": "SMS", "direction": "INBOUND", "from": BOB, "to": [ALICE],
            "body": "Thanks 👍🏽 a lot", "sentAt": at(3)}),
    )
    .await;
    let c2 = record(
        &app,
        json!({"channel": "SMS", "direction": "INBOUND", "from": "+12025550103", "to": [ALICE],
            "body": "Hello", "sentAt": at(4)}),
    )
    .await;
    app.data(
        "mutation($c: ID!) { markConversationRead(conversationId: $c, inbox: \"+12025550101\",
            upToSequence: 1) { id } archiveConversation(conversationId: $c,
            inbox: \"+12025550101\") { id } }",
        json!({ "c": c1 }),
    )
    .await;

    // nodes and edges of a conversation page, with state read by the page's statement.
    let nodes = both_ways(
        &app,
        &format!("{{ conversations(first: 10) {{ nodes {{ {CONVERSATION} }} }} }} {COUNTS}"),
        "lastMessage { id }",
        json!({}),
    )
    .await;
    let list = nodes["conversations"]["nodes"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["id"], c1);
    assert_eq!(list[0]["id"], c2);
    // Her outbound reply (sequence 2) moved her horizon past the mark at 1.
    assert_eq!(list[1]["again"], json!({"readUpTo": 2, "archived": true}));
    assert_eq!(list[1]["unreadCount"], 1);
    assert_eq!(list[1]["short"], "Th…");
    assert_eq!(list[1]["count"], 3);
    assert_eq!(list[1]["nodeType"], "Conversation");
    let edges = both_ways(
        &app,
        &format!(
            "{{ conversations(first: 10) {{ edges {{ __typename cursor c: cursor
                node {{ {CONVERSATION} }} }} }} }} {COUNTS}"
        ),
        "lastMessage { id }",
        json!({}),
    )
    .await;
    let edges = edges["conversations"]["edges"].as_array().unwrap();
    assert_eq!(edges[1]["node"], list[1]);
    assert_eq!(edges[1]["__typename"], "ConversationEdge");

    // A thread's nodes and edges.
    let thread = both_ways(
        &app,
        &format!(
            "query($c: ID!) {{ conversation(id: $c) {{ messages(last: 5) {{
                nodes {{ {MESSAGE} }} edges {{ cursor node {{ {MESSAGE} }} }} }} }} }} {WHEN}"
        ),
        "statusHistory { status }",
        json!({ "c": c1 }),
    )
    .await;
    let messages = &thread["conversation"]["messages"];
    let nodes = messages["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(
        nodes[0]["attachments"],
        json!(["https://example.com/a.png"])
    );
    assert_eq!(nodes[0]["providerMessageId"], "p-1");
    assert_eq!(nodes[1]["providerMessageId"], Value::Null);
    assert_eq!(nodes[1]["direction"], "OUTBOUND");
    assert_eq!(nodes[2]["tiny"], "T…");
    assert_eq!(messages["edges"][2]["node"], nodes[2]);

    // What the plan leaves to the executor still answers its errors, with their path.
    let body = app
        .graphql(
            "{ conversations(first: 10) { nodes { id snippet(length: 0) } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body:#}");
    assert_eq!(body["errors"][0]["path"][2], 0, "{body:#}");
    let body = app
        .graphql(
            r#"{ conversations(first: 10) { nodes { id viewerState(inbox: "+12025550199") { archived } } } }"#,
            json!({}),
        )
        .await;
    assert!(
        body["errors"][0]["extensions"]["code"].is_string(),
        "{body:#}"
    );
}

on_both_engines!(a_page_resolves_alike_planned_and_through_the_executor);
