//! Visibility on both engines: two principals with disjoint inboxes and one shared
//! conversation. Lists, `totalCount`, filters, cursors, `node`/`nodes`, lookups and threads
//! never show either one the other's rows; an invisible id answers exactly like an unknown
//! one. The expected sets come from what the test stored, never from the responses.

use std::collections::BTreeSet;

use axum::Router;
use chrono::{Duration, TimeZone, Utc};
use jsonwebtoken::Algorithm;
use parley_tests::{TestDb, on_both_engines};
use serde_json::{Value, json};
use service::record::{NewMessage, record_message};
use service::{Channel, Direction};

use crate::auth::{ALICE, BOB, CAROL, alice, claims, gql, hs256, secured};

const DAVE: &str = "+12025550198";
const ERIN: &str = "+12025550197";

fn conversation_gid(id: i64) -> String {
    api::graphql::ids::encode_id(api::graphql::ids::NodeType::Conversation, id).to_string()
}

fn message_gid(id: i64) -> String {
    api::graphql::ids::encode_id(api::graphql::ids::NodeType::Message, id).to_string()
}

/// What was stored: each conversation's global id and its messages' global ids.
struct World {
    alice_carol: (String, Vec<String>),
    alice_dave: (String, Vec<String>),
    shared: (String, Vec<String>),
    bob_erin: (String, Vec<String>),
    unassigned: String,
}

async fn store(t: &TestDb, minute: i64, from: &str, to: &str) -> (Option<i64>, i64) {
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap() + Duration::minutes(minute);
    let r = record_message(
        &t.db,
        &Default::default(),
        NewMessage {
            channel: Channel::Sms,
            kind: None,
            direction: Direction::Inbound,
            from: from.into(),
            to: vec![to.into()],
            body: format!("at minute {minute}"),
            attachments: vec![],
            provider_message_id: None,
            sent_at: Some(at),
        },
    )
    .await
    .unwrap();
    (r.conversation.map(|c| c.id), r.message.id)
}

async fn world(t: &TestDb) -> World {
    let thread = |c: Option<i64>, ids: Vec<i64>| {
        (
            conversation_gid(c.unwrap()),
            ids.into_iter().map(message_gid).collect::<Vec<_>>(),
        )
    };
    // Interleaved in time, so every page mixes Alice's, Bob's and the shared rows.
    let (ac, m1) = store(t, 1, CAROL, ALICE).await;
    let (be, m2) = store(t, 2, ERIN, BOB).await;
    let (ab, m3) = store(t, 3, ALICE, BOB).await;
    let (ad, m4) = store(t, 4, DAVE, ALICE).await;
    let (_, m5) = store(t, 5, ALICE, CAROL).await;
    let (_, m6) = store(t, 6, BOB, ALICE).await;
    let (_, m7) = store(t, 7, BOB, ERIN).await;
    let (none, m8) = store(t, 8, "not a number", "nor this").await;
    assert_eq!(none, None);
    World {
        alice_carol: thread(ac, vec![m1, m5]),
        bob_erin: thread(be, vec![m2, m7]),
        shared: thread(ab, vec![m3, m6]),
        alice_dave: thread(ad, vec![m4]),
        unassigned: message_gid(m8),
    }
}

fn ids(nodes: &Value) -> Vec<String> {
    nodes
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {nodes}"))
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn data(app: &Router, token: &str, query: &str, variables: Value) -> Value {
    let reply = gql(app, Some(token), query, variables).await;
    assert!(
        reply.json.get("errors").is_none() && reply.status.is_success(),
        "{query}: {}",
        reply.text
    );
    reply.json["data"].clone()
}

/// Every conversation `token` lists, page by page (`first: 1`), and the cursors.
async fn walk(app: &Router, token: &str, filter: Value) -> (Vec<String>, Vec<String>, i64) {
    let q = "query($after: String, $filter: ConversationFilter) {
        conversations(first: 1, after: $after, filter: $filter) {
            totalCount edges { cursor node { id } } pageInfo { hasNextPage endCursor }
        } }";
    let (mut seen, mut cursors) = (Vec::new(), Vec::new());
    let mut after = Value::Null;
    let mut total = None;
    loop {
        let d = data(app, token, q, json!({ "after": after, "filter": filter })).await;
        let c = &d["conversations"];
        let t = c["totalCount"].as_i64().unwrap();
        assert_eq!(
            *total.get_or_insert(t),
            t,
            "totalCount changes between pages"
        );
        for e in c["edges"].as_array().unwrap() {
            seen.push(e["node"]["id"].as_str().unwrap().to_owned());
            cursors.push(e["cursor"].as_str().unwrap().to_owned());
        }
        if !c["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = c["pageInfo"]["endCursor"].clone();
        assert!(seen.len() < 20, "runaway paging");
    }
    (seen, cursors, total.unwrap_or(0))
}

async fn each_principal_sees_only_its_inboxes_conversations(t: &TestDb) {
    let w = world(t).await;
    let app = secured(t, api::auth::limit::RateLimits::off());
    let a = alice(Algorithm::HS256);
    let b = hs256(&claims("bob", "conversations:read", &[BOB]));

    // Lists and totalCount, newest activity first, page by page.
    let (seen_a, cursors_a, total_a) = walk(&app, &a, Value::Null).await;
    assert_eq!(
        seen_a,
        [&w.shared.0, &w.alice_carol.0, &w.alice_dave.0].map(String::clone)
    );
    assert_eq!(total_a, 3);
    let (seen_b, _, total_b) = walk(&app, &b, Value::Null).await;
    assert_eq!(seen_b, [&w.bob_erin.0, &w.shared.0].map(String::clone));
    assert_eq!(total_b, 2);

    // Filters apply within what each sees.
    let (carol_a, _, n) = walk(&app, &a, json!({ "participant": CAROL })).await;
    assert_eq!((carol_a, n), (vec![w.alice_carol.0.clone()], 1));
    let (carol_b, _, n) = walk(&app, &b, json!({ "participant": CAROL })).await;
    assert_eq!((carol_b, n), (vec![], 0));
    let (email, _, n) = walk(&app, &a, json!({ "channel": "EMAIL" })).await;
    assert_eq!((email, n), (vec![], 0));

    // A cursor taken by Alice gives Bob only what he could see past that point.
    let q = "query($after: String, $before: String) {
        after: conversations(after: $after) { nodes { id } }
        before: conversations(before: $before) { nodes { id } } }";
    let bob_sees: BTreeSet<&String> = [&w.bob_erin.0, &w.shared.0].into();
    for cursor in &cursors_a {
        let d = data(&app, &b, q, json!({ "after": cursor, "before": cursor })).await;
        for side in ["after", "before"] {
            for id in ids(&d[side]["nodes"]) {
                assert!(bob_sees.contains(&id), "{side} {cursor}: Bob got {id}");
            }
        }
    }
    // Alice's cursor of Alice+Carol (minute 5): Bob has the shared one (minute 6) before
    // it and Bob+Erin (minute 7) before that, nothing after.
    let d = data(
        &app,
        &b,
        q,
        json!({ "after": cursors_a[1], "before": cursors_a[1] }),
    )
    .await;
    assert_eq!(ids(&d["after"]["nodes"]), Vec::<String>::new());
    assert_eq!(
        ids(&d["before"]["nodes"]),
        [&w.bob_erin.0, &w.shared.0].map(String::clone)
    );

    // node / nodes / conversation / message: an invisible id is null, like an unknown one.
    let unknown_c = conversation_gid(9999);
    let unknown_m = message_gid(9999);
    let q = "query($ids: [ID!]!, $c: ID!, $m: ID!) {
        nodes(ids: $ids) { id }
        conversation(id: $c) { id }
        message(id: $m) { id }
        node(id: $m) { id } }";
    let all = [
        &w.alice_carol.0,
        &w.alice_carol.1[0],
        &w.shared.0,
        &w.shared.1[1],
        &w.bob_erin.0,
        &w.bob_erin.1[1],
        &w.alice_dave.0,
        &w.unassigned,
        &unknown_c,
        &unknown_m,
    ];
    let d = data(
        &app,
        &b,
        q,
        json!({ "ids": all, "c": w.alice_carol.0, "m": w.alice_carol.1[1] }),
    )
    .await;
    let visible = |id: &str| {
        d["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == json!(id))
    };
    let shown: Vec<bool> = all.iter().map(|id| visible(id)).collect();
    assert_eq!(
        shown,
        [
            false, false, true, true, true, true, false, false, false, false
        ]
    );
    assert_eq!(
        d["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n.is_null())
            .count(),
        6
    );
    assert_eq!(d["conversation"], Value::Null);
    assert_eq!(d["message"], Value::Null);
    assert_eq!(d["node"], Value::Null);
    let d = data(
        &app,
        &b,
        q,
        json!({ "ids": [], "c": unknown_c, "m": unknown_m }),
    )
    .await;
    assert_eq!(
        (&d["conversation"], &d["message"], &d["node"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );

    // conversationByParticipants: Alice finds hers; Bob gets null for it.
    let q = "query($p: [String!]!) { conversationByParticipants(channel: SMS, participants: $p) { id } }";
    let p = json!({ "p": [CAROL, ALICE] });
    let d = data(&app, &a, q, p.clone()).await;
    assert_eq!(
        d["conversationByParticipants"]["id"],
        json!(w.alice_carol.0)
    );
    let d = data(&app, &b, q, p).await;
    assert_eq!(d["conversationByParticipants"], Value::Null);

    // The shared conversation's thread is whole for both, with its messages' conversation.
    let q = "query($c: ID!) { conversation(id: $c) { messages { totalCount nodes { id conversation { id } } } lastMessage { id } } }";
    for token in [&a, &b] {
        let d = data(&app, token, q, json!({ "c": w.shared.0 })).await;
        let m = &d["conversation"]["messages"];
        assert_eq!(ids(&m["nodes"]), w.shared.1);
        assert_eq!(m["totalCount"], json!(2));
        assert_eq!(m["nodes"][0]["conversation"]["id"], json!(w.shared.0));
        assert_eq!(d["conversation"]["lastMessage"]["id"], json!(w.shared.1[1]));
    }

    // REST reads apply the same rule.
    let get = |token: &str, path: &str| {
        axum::http::Request::get(path)
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let r = crate::auth::send(&app, get(&b, "/api/conversations")).await;
    assert_eq!(
        r.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [w.bob_erin.0.as_str(), w.shared.0.as_str()]
    );
    let r = crate::auth::send(
        &app,
        get(
            &b,
            &format!("/api/conversations/{}/messages", w.alice_dave.0),
        ),
    )
    .await;
    assert_eq!(r.status, axum::http::StatusCode::NOT_FOUND);
    let r = crate::auth::send(
        &app,
        get(
            &a,
            &format!("/api/conversations/{}/messages", w.alice_dave.0),
        ),
    )
    .await;
    assert_eq!(r.json["items"][0]["id"], json!(w.alice_dave.1[0]));

    // A wildcard reader sees everything; unassigned messages stay admin-only.
    let all_reader = hs256(&claims("support", "conversations:read", &["*"]));
    let (everything, _, n) = walk(&app, &all_reader, Value::Null).await;
    assert_eq!(n, 4);
    assert_eq!(everything.len(), 4);
}

/// A page as a principal sees it is still one statement that reads indexes only: both
/// engines walk the activity index without sorting, and the visibility rule is a key lookup
/// in `conversation_participants` per row, never a scan.
async fn a_visible_page_is_one_statement_on_the_indexes(t: &TestDb) {
    use crate::plans::{LINE, analyze, assert_walks, cursor, plan, seed, window};
    use sea_orm::QueryTrait;
    seed(&t.db, 2000, 10).await;
    analyze(t).await;
    let backend = t.db.get_database_backend();
    let region = service::Settings::default().default_region;
    let lookup = match t.engine {
        parley_tests::Engine::Postgres => "conversation_participants_pkey",
        parley_tests::Engine::Sqlite => "sqlite_autoindex_conversation_participants_1",
    };
    let line = service::Viewer::Inboxes(vec![LINE.to_owned(), "+18040000001".to_owned()].into());
    for w in [
        window(true, None, None),
        window(true, cursor(500, 1000), None),
        window(false, None, cursor(500, 1000)),
    ] {
        let select =
            service::query::conversation_page(&line, region, &Default::default(), &w).unwrap();
        let statement = service::query::page_statement(backend, select.as_query());
        let plan = plan(t, statement).await;
        assert!(
            plan.contains(lookup),
            "visibility is not a key lookup:\n{plan}"
        );
        assert_walks(t, &plan, "conversations_last_message_at_id");
        // The page itself is what the listing returns: every row visible, none missing.
        let page =
            service::query::list_conversations(&t.db, &line, region, &Default::default(), &w)
                .await
                .unwrap();
        assert!(!page.items.is_empty());
        assert!(page.items.iter().all(|c| c.participants_key.contains(LINE)));
    }
}

on_both_engines!(
    each_principal_sees_only_its_inboxes_conversations,
    a_visible_page_is_one_statement_on_the_indexes,
);
