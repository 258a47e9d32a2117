//! Messaging state (SPEC section 14) on both engines: delivery statuses in every arrival
//! order, before their message, redelivered; email threading headers; archive; read
//! horizons and unread counts; the inbox rules of who may set what.

use api::config::AppConfig;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{DateTime, Duration, TimeZone, Utc};
use jsonwebtoken::Algorithm;
use parley_tests::{TestApp, TestDb, error_code, on_both_engines};
use serde_json::{Value, json};
use service::Channel;
use service::delivery::{DeliveryStatus, StatusEvent, record_delivery_status};

use crate::auth::{ALICE, BOB, CAROL, SMS_SECRET_NEW, alice, claims, gql, hs256, secured, send};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap()
}

fn dev(t: &TestDb) -> TestApp {
    t.app(AppConfig::default())
}

/// Records a message through GraphQL (development mode: admin); returns (message id,
/// conversation id), global.
async fn record(app: &TestApp, input: Value) -> (String, String) {
    let data = app
        .data(
            "mutation($input: RecordMessageInput!) { recordMessage(input: $input) {
                message { id } conversation { id } } }",
            json!({ "input": input }),
        )
        .await;
    (
        data["recordMessage"]["message"]["id"]
            .as_str()
            .unwrap()
            .to_owned(),
        data["recordMessage"]["conversation"]["id"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

fn sms(direction: &str, from: &str, to: &str, pid: Option<&str>, minute: i64) -> Value {
    json!({
        "channel": "SMS", "direction": direction, "from": from, "to": [to],
        "body": format!("minute {minute}"), "providerMessageId": pid,
        "sentAt": (t0() + Duration::minutes(minute)).to_rfc3339(),
    })
}

const STATUS: &str = "query($id: ID!) { node(id: $id) { ... on Message {
    status statusAt errorCode errorMessage statusHistory { status at errorCode } } } }";

async fn status_of(app: &TestApp, id: &str) -> Value {
    app.data(STATUS, json!({ "id": id })).await["node"].clone()
}

fn permutations<T: Copy>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first);
            out.push(p);
        }
    }
    out
}

/// The time each status happened at in these tests: in rank order, a minute apart.
fn happened(s: DeliveryStatus) -> DateTime<Utc> {
    t0() + Duration::minutes(10 + i64::from(s.rank()))
}

async fn every_arrival_order_ends_in_the_right_status(t: &TestDb) {
    use DeliveryStatus::{Delivered, Failed, Queued, Sent};
    let app = dev(t);
    let mut cases = Vec::new();
    for (n, order) in permutations(&[Queued, Sent, Delivered, Failed])
        .into_iter()
        .enumerate()
    {
        cases.push((format!("f-{n}"), order, Failed));
    }
    for (n, order) in permutations(&[Queued, Sent, Delivered])
        .into_iter()
        .enumerate()
    {
        cases.push((format!("d-{n}"), order, Delivered));
    }
    assert_eq!(cases.len(), 24 + 6);
    for (i, (pid, order, expected)) in cases.iter().enumerate() {
        // Half the messages are stored before their events, half after.
        let before = i % 2 == 0;
        let mut message = None;
        if before {
            message = Some(
                record(&app, sms("OUTBOUND", ALICE, BOB, Some(pid), i as i64))
                    .await
                    .0,
            );
        }
        for status in order {
            let r = record_delivery_status(
                &t.db,
                StatusEvent {
                    channel: Channel::Sms,
                    provider_message_id: pid.clone(),
                    status: *status,
                    at: Some(happened(*status)),
                    error_code: (*status == Failed).then(|| "30007".to_owned()),
                    error_message: None,
                },
            )
            .await
            .unwrap();
            assert!(!r.duplicate);
            assert_eq!(r.message.is_some(), before);
        }
        if !before {
            message = Some(
                record(&app, sms("OUTBOUND", ALICE, BOB, Some(pid), i as i64))
                    .await
                    .0,
            );
        }
        let got = status_of(&app, message.as_deref().unwrap()).await;
        let history: Vec<Value> = order
            .iter()
            .map(|s| {
                json!({
                    "status": s.as_str(),
                    "at": happened(*s).to_rfc3339(),
                    "errorCode": if *s == Failed { json!("30007") } else { Value::Null },
                })
            })
            .collect();
        assert_eq!(
            got,
            json!({
                "status": expected.as_str(),
                "statusAt": happened(*expected).to_rfc3339(),
                "errorCode": if *expected == Failed { json!("30007") } else { Value::Null },
                "errorMessage": null,
                "statusHistory": history,
            }),
            "{pid}: {order:?}"
        );
    }
}

async fn a_callback_before_its_message_and_a_redelivery(t: &TestDb) {
    let app = dev(t);
    let body = json!({"messaging_provider_id": "early-1", "status": "sent",
        "timestamp": "2026-03-01T09:05:00Z"});
    let first = app.post_json("/api/webhooks/sms/status", &body).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(
        first.json,
        json!({"message_id": null, "status": "SENT", "status_at": "2026-03-01T09:05:00Z", "duplicate": false})
    );
    let delivered = json!({"messaging_provider_id": "early-1", "status": "DELIVERED",
        "timestamp": "2026-03-01T09:06:00Z"});
    assert_eq!(
        app.post_json("/api/webhooks/sms/status", &delivered)
            .await
            .status,
        StatusCode::OK
    );
    // The redelivered SENT is stored once and changes nothing.
    let again = app.post_json("/api/webhooks/sms/status", &body).await;
    assert_eq!(
        again.json,
        json!({"message_id": null, "status": "DELIVERED", "status_at": "2026-03-01T09:06:00Z", "duplicate": true})
    );
    let (id, _) = record(&app, sms("OUTBOUND", ALICE, BOB, Some("early-1"), 1)).await;
    assert_eq!(
        status_of(&app, &id).await,
        json!({
            "status": "DELIVERED", "statusAt": "2026-03-01T09:06:00+00:00", "errorCode": null,
            "errorMessage": null,
            "statusHistory": [
                {"status": "SENT", "at": "2026-03-01T09:05:00+00:00", "errorCode": null},
                {"status": "DELIVERED", "at": "2026-03-01T09:06:00+00:00", "errorCode": null},
            ],
        })
    );
    // A late, lower-rank event is kept in the history without regressing the status; the
    // answer now names the message.
    let late = json!({"messaging_provider_id": "early-1", "status": "Queued",
        "timestamp": "2026-03-01T09:04:00Z"});
    let reply = app.post_json("/api/webhooks/sms/status", &late).await;
    assert_eq!(reply.json["message_id"], json!(id));
    assert_eq!(reply.json["status"], "DELIVERED");
    let got = status_of(&app, &id).await;
    assert_eq!(got["status"], "DELIVERED");
    assert_eq!(got["statusHistory"].as_array().unwrap().len(), 3);
    assert_eq!(t.count("delivery_events").await, 3);
    // An inbound message has no status; an outbound one without reports is QUEUED.
    let (inbound, _) = record(&app, sms("INBOUND", BOB, ALICE, Some("in-1"), 2)).await;
    assert_eq!(
        status_of(&app, &inbound).await,
        json!({"status": null, "statusAt": null, "errorCode": null, "errorMessage": null, "statusHistory": []})
    );
    let (quiet, _) = record(&app, sms("OUTBOUND", ALICE, BOB, Some("quiet-1"), 3)).await;
    assert_eq!(status_of(&app, &quiet).await["status"], "QUEUED");
}

async fn bad_status_reports_name_their_field_and_store_nothing(t: &TestDb) {
    let app = dev(t);
    for (body, field) in [
        (
            json!({"messaging_provider_id": "m-1", "status": "bounced"}),
            "status",
        ),
        (json!({"messaging_provider_id": "m-1"}), "status"),
        (json!({"status": "sent"}), "messaging_provider_id"),
        (
            json!({"messaging_provider_id": "m-1", "status": "sent", "timestamp": "later"}),
            "timestamp",
        ),
        (
            json!({"messaging_provider_id": "", "status": "sent"}),
            "messaging_provider_id",
        ),
        (
            json!({"messaging_provider_id": "m\u{0}1", "status": "sent"}),
            "messaging_provider_id",
        ),
    ] {
        let reply = app.post_json("/api/webhooks/sms/status", &body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
        assert_eq!(reply.json["code"], "BAD_USER_INPUT");
        assert_eq!(reply.json["field"], field, "{body}");
    }
    let reply = app
        .post_json(
            "/api/webhooks/email/status",
            &json!({"messaging_provider_id": "m-1", "status": "sent"}),
        )
        .await;
    assert_eq!(reply.json["field"], "xillio_id");
    let mutation = "mutation($input: RecordDeliveryStatusInput!) {
        recordDeliveryStatus(input: $input) { status statusAt duplicate message { id } } }";
    let body = app
        .graphql(
            mutation,
            json!({"input": {"channel": "SMS", "providerMessageId": "m-2", "status": "lost"}}),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(body["errors"][0]["extensions"]["field"], "status");
    assert_eq!(t.count("delivery_events").await, 0);
    assert_eq!(t.count("delivery_statuses").await, 0);
    let data = app
        .data(
            mutation,
            json!({"input": {"channel": "EMAIL", "providerMessageId": "x-1", "status": "undelivered",
                "at": "2026-03-01T09:00:00Z", "errorCode": "550"}}),
        )
        .await;
    assert_eq!(
        data["recordDeliveryStatus"],
        json!({"status": "UNDELIVERED", "statusAt": "2026-03-01T09:00:00+00:00", "duplicate": false, "message": null})
    );
}

async fn status_webhooks_are_signed_and_the_mutation_is_for_admins(t: &TestDb) {
    let app = secured(t, Default::default());
    let body = json!({"messaging_provider_id": "s-1", "status": "delivered"}).to_string();
    let post = |signature: Option<String>| {
        let mut b = Request::post("/api/webhooks/sms/status")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(s) = signature {
            b = b.header("x-parley-signature", s);
        }
        b.body(Body::from(body.clone())).unwrap()
    };
    let unsigned = send(&app, post(None)).await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
    assert_eq!(t.count("delivery_events").await, 0);
    let sig = api::auth::webhook::sign(
        SMS_SECRET_NEW.as_bytes(),
        Utc::now().timestamp(),
        body.as_bytes(),
    );
    let signed = send(&app, post(Some(sig))).await;
    assert_eq!(signed.status, StatusCode::OK, "{}", signed.text);
    assert_eq!(signed.json["status"], "DELIVERED");
    let mutation = "mutation { recordDeliveryStatus(input: {channel: SMS, providerMessageId: \"s-1\", status: \"read\"}) { status } }";
    let reply = gql(&app, Some(&alice(Algorithm::HS256)), mutation, json!({})).await;
    assert_eq!(error_code(&reply.json), "FORBIDDEN");
    let admin = hs256(&claims("ops", "admin", &[]));
    let reply = gql(&app, Some(&admin), mutation, json!({})).await;
    assert_eq!(
        reply.json["data"]["recordDeliveryStatus"]["status"], "READ",
        "{}",
        reply.text
    );
}

const JANE: &str = "jane@example.com";
const SUPPORT: &str = "support@example.com";

fn email(direction: &str, from: &str, to: &str, minute: i64, headers: Value) -> Value {
    let mut input = json!({
        "channel": "EMAIL", "direction": direction, "from": from, "to": [to],
        "body": format!("minute {minute}"),
        "sentAt": (t0() + Duration::minutes(minute)).to_rfc3339(),
    });
    for (k, v) in headers.as_object().unwrap() {
        input[k] = v.clone();
    }
    input
}

async fn email_headers_are_stored_and_resolved_without_splitting(t: &TestDb) {
    let app = dev(t);
    let (first, conversation) = record(
        &app,
        email(
            "INBOUND",
            JANE,
            SUPPORT,
            1,
            json!({"subject": "Lunch?", "messageId": "<a.1@mail.example.com>"}),
        ),
    )
    .await;
    let (reply, same) = record(
        &app,
        email(
            "OUTBOUND",
            SUPPORT,
            JANE,
            2,
            json!({
                "subject": "Re: RE: Lunch?", "messageId": "<b.2@support.example.com>",
                "inReplyTo": "<a.1@mail.example.com>", "references": ["<a.1@mail.example.com>"],
            }),
        ),
    )
    .await;
    // A reply to a message we never stored, and a header-less email: same participants,
    // same conversation (headers never split or merge).
    let (orphan, third) = record(
        &app,
        email(
            "INBOUND",
            JANE,
            SUPPORT,
            3,
            json!({"subject": "Fwd: Other", "inReplyTo": "<zzz@elsewhere.example>"}),
        ),
    )
    .await;
    let (_, fourth) = record(&app, email("INBOUND", JANE, SUPPORT, 4, json!({}))).await;
    assert_eq!([&same, &third, &fourth], [&conversation; 3]);
    let data = app
        .data(
            "query($c: ID!) { conversation(id: $c) { subject messages(first: 10) { nodes {
                id subject messageId inReplyTo references inReplyToMessage { id } } } } }",
            json!({ "c": conversation }),
        )
        .await;
    assert_eq!(
        data["conversation"],
        json!({
            "subject": "Lunch?",
            "messages": { "nodes": [
                {"id": first, "subject": "Lunch?", "messageId": "<a.1@mail.example.com>",
                 "inReplyTo": null, "references": [], "inReplyToMessage": null},
                {"id": reply, "subject": "Re: RE: Lunch?", "messageId": "<b.2@support.example.com>",
                 "inReplyTo": "<a.1@mail.example.com>", "references": ["<a.1@mail.example.com>"],
                 "inReplyToMessage": {"id": first}},
                {"id": orphan, "subject": "Fwd: Other", "messageId": null,
                 "inReplyTo": "<zzz@elsewhere.example>", "references": [], "inReplyToMessage": null},
                {"id": data["conversation"]["messages"]["nodes"][3]["id"], "subject": null,
                 "messageId": null, "inReplyTo": null, "references": [], "inReplyToMessage": null},
            ]},
        })
    );
}

async fn malformed_headers_answer_bad_user_input_with_the_field(t: &TestDb) {
    let app = dev(t);
    let mutation =
        "mutation($input: RecordMessageInput!) { recordMessage(input: $input) { duplicate } }";
    for (headers, field) in [
        (json!({"messageId": "a.1@mail.example.com"}), "messageId"),
        (json!({"inReplyTo": "<no-at-sign>"}), "inReplyTo"),
        (json!({"references": ["<a@b>", "<c d@e>"]}), "references[1]"),
        (json!({"subject": "x".repeat(999)}), "subject"),
        (json!({"subject": "Hi\r\nBcc: spy@example.com"}), "subject"),
        (
            json!({"references": (0..101).map(|i| format!("<{i}@x>")).collect::<Vec<_>>()}),
            "references",
        ),
    ] {
        let body = app
            .graphql(
                mutation,
                json!({"input": email("INBOUND", JANE, SUPPORT, 1, headers.clone())}),
            )
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{headers}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{headers}");
    }
    let mut on_sms = sms("INBOUND", BOB, ALICE, None, 1);
    on_sms["subject"] = json!("Hello");
    let body = app.graphql(mutation, json!({"input": on_sms})).await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "subject");
    // The REST email payload names its own fields.
    let reply = app
        .post_json(
            "/api/webhooks/email",
            &json!({"from": JANE, "to": SUPPORT, "body": "hi", "xillio_id": "x-1",
                "in_reply_to": "nope", "references": "<a@b> <c@d>"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(reply.json["field"], "in_reply_to");
    assert_eq!(t.count("messages").await, 0);
    assert_eq!(t.count("message_headers").await, 0);
    let reply = app
        .post_json(
            "/api/webhooks/email",
            &json!({"from": JANE, "to": SUPPORT, "body": "hi", "xillio_id": "x-1", "subject": "Re: Plans",
                "message_id": "<r.1@mail.example.com>", "references": "<a@b>\n <c@d>"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let data = app
        .data(
            "query($id: ID!) { node(id: $id) { ... on Message { subject messageId references
                conversation { subject } } } }",
            json!({"id": reply.json["message_id"]}),
        )
        .await;
    assert_eq!(
        data["node"],
        json!({"subject": "Re: Plans", "messageId": "<r.1@mail.example.com>",
            "references": ["<a@b>", "<c@d>"], "conversation": {"subject": "Plans"}})
    );
}

const ARCHIVE: &str = "mutation($c: ID!, $inbox: String) {
    archiveConversation(conversationId: $c, inbox: $inbox) { id viewerState(inbox: $inbox) { inbox archived } } }";
const UNARCHIVE: &str = "mutation($c: ID!, $inbox: String) {
    unarchiveConversation(conversationId: $c, inbox: $inbox) { id viewerState(inbox: $inbox) { inbox archived } } }";

async fn archived_ids(
    app: &TestApp,
    inbox: &str,
    archived: bool,
    first: i64,
    after: Option<&str>,
) -> (Vec<String>, Option<String>) {
    let data = app
        .data(
            "query($f: ConversationFilter, $first: Int, $after: String) {
                conversations(first: $first, after: $after, filter: $f) {
                    totalCount nodes { id } pageInfo { hasNextPage endCursor } } }",
            json!({"f": {"inbox": inbox, "archived": archived}, "first": first, "after": after}),
        )
        .await;
    let c = &data["conversations"];
    let ids = c["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    let next = c["pageInfo"]["hasNextPage"]
        .as_bool()
        .unwrap()
        .then(|| c["pageInfo"]["endCursor"].as_str().unwrap().to_owned());
    (ids, next)
}

async fn archive_is_per_inbox_and_a_new_inbound_message_reopens(t: &TestDb) {
    let app = dev(t);
    // Five conversations of Alice, newest activity last; Bob shares the first one.
    let contacts = [
        "+12025550111",
        "+12025550112",
        "+12025550113",
        "+12025550114",
    ];
    let (_, shared) = record(&app, sms("INBOUND", BOB, ALICE, None, 0)).await;
    let mut ids = vec![shared.clone()];
    for (i, c) in contacts.iter().enumerate() {
        ids.push(
            record(&app, sms("INBOUND", c, ALICE, None, 1 + i as i64))
                .await
                .1,
        );
    }
    for id in [&ids[0], &ids[2], &ids[4]] {
        let data = app
            .data(ARCHIVE, json!({"c": id, "inbox": "(202) 555-0101"}))
            .await;
        assert_eq!(
            data["archiveConversation"],
            json!({"id": id, "viewerState": {"inbox": ALICE, "archived": true}})
        );
    }
    // Pages of two with cursors, newest activity first.
    let (page, next) = archived_ids(&app, ALICE, true, 2, None).await;
    assert_eq!(page, vec![ids[4].clone(), ids[2].clone()]);
    let (page, next) = archived_ids(&app, ALICE, true, 2, next.as_deref()).await;
    assert_eq!((page, next), (vec![ids[0].clone()], None));
    let (page, _) = archived_ids(&app, ALICE, false, 10, None).await;
    assert_eq!(page, vec![ids[3].clone(), ids[1].clone()]);
    // Bob's state of the shared conversation is his own.
    let (page, _) = archived_ids(&app, BOB, false, 10, None).await;
    assert_eq!(page, vec![shared.clone()]);
    // An outbound message from Alice leaves her archive alone; an inbound one to her
    // reopens it, and only for her.
    app.data(ARCHIVE, json!({"c": shared, "inbox": BOB})).await;
    record(&app, sms("OUTBOUND", ALICE, BOB, None, 10)).await;
    assert_eq!(
        archived_ids(&app, ALICE, true, 10, None).await.0,
        vec![shared.clone(), ids[4].clone(), ids[2].clone()]
    );
    record(&app, sms("INBOUND", BOB, ALICE, None, 11)).await;
    assert_eq!(
        archived_ids(&app, ALICE, true, 10, None).await.0,
        vec![ids[4].clone(), ids[2].clone()]
    );
    assert_eq!(
        archived_ids(&app, BOB, true, 10, None).await.0,
        vec![shared.clone()]
    );
    let data = app
        .data(UNARCHIVE, json!({"c": ids[4], "inbox": ALICE}))
        .await;
    assert_eq!(
        data["unarchiveConversation"]["viewerState"]["archived"],
        false
    );
    assert_eq!(
        archived_ids(&app, ALICE, true, 10, None).await.0,
        vec![ids[2].clone()]
    );
}

async fn only_your_own_inboxes_and_errors_name_the_field(t: &TestDb) {
    let dev_app = dev(t);
    let (_, alice_carol) = record(&dev_app, sms("INBOUND", CAROL, ALICE, None, 1)).await;
    let (_, alice_bob) = record(&dev_app, sms("INBOUND", BOB, ALICE, None, 2)).await;
    // Development mode acts for every address: the inbox must be named.
    let body = dev_app.graphql(ARCHIVE, json!({"c": alice_carol})).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(body["errors"][0]["extensions"]["field"], "inbox");
    let body = dev_app
        .graphql(ARCHIVE, json!({"c": alice_carol, "inbox": BOB}))
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "inbox");
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    let body = dev_app.graphql(ARCHIVE, json!({"c": "bm9wZQ"})).await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "conversationId");
    let body = dev_app
        .graphql(
            "query { conversations(filter: {archived: true}) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "filter.inbox");
    let app = secured(t, Default::default());
    let token = alice(Algorithm::HS256);
    // Alice acts for one participant: she may leave the inbox out.
    let reply = gql(&app, Some(&token), ARCHIVE, json!({"c": alice_carol})).await;
    assert_eq!(
        reply.json["data"]["archiveConversation"]["viewerState"],
        json!({"inbox": ALICE, "archived": true}),
        "{}",
        reply.text
    );
    let reply = gql(
        &app,
        Some(&token),
        "query { conversations(filter: {archived: true}) { nodes { id } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        reply.json["data"]["conversations"]["nodes"],
        json!([{"id": alice_carol}])
    );
    // Bob's inbox is not hers.
    let reply = gql(
        &app,
        Some(&token),
        ARCHIVE,
        json!({"c": alice_bob, "inbox": BOB}),
    )
    .await;
    assert_eq!(error_code(&reply.json), "FORBIDDEN");
    assert_eq!(reply.json["errors"][0]["extensions"]["field"], "inbox");
    // Bob cannot see Alice and Carol's conversation: it answers like an unknown id.
    let bob = hs256(&claims("bob", "conversations:read messages:write", &[BOB]));
    let reply = gql(&app, Some(&bob), ARCHIVE, json!({"c": alice_carol})).await;
    assert_eq!(error_code(&reply.json), "NOT_FOUND");
    let unknown = api::graphql::ids::encode_id(api::graphql::ids::NodeType::Conversation, 999_999)
        .to_string();
    let reply = gql(&app, Some(&bob), ARCHIVE, json!({"c": unknown})).await;
    assert_eq!(error_code(&reply.json), "NOT_FOUND");
    let reply = gql(&app, Some(&bob), "query { conversations(filter: {archived: false, inbox: \"+12025550101\"}) { totalCount } }", json!({})).await;
    assert_eq!(error_code(&reply.json), "FORBIDDEN");
}

const READ: &str = "mutation($c: ID!, $inbox: String, $upTo: Int) {
    markConversationRead(conversationId: $c, inbox: $inbox, upToSequence: $upTo) {
        lastSequence viewerState(inbox: $inbox) { inbox readUpTo unreadCount archived } } }";
const UNREAD: &str = "mutation($c: ID!, $inbox: String, $from: Int!) {
    markConversationUnread(conversationId: $c, inbox: $inbox, fromSequence: $from) {
        viewerState(inbox: $inbox) { readUpTo unreadCount } } }";
const VIEW: &str = "query($c: ID!, $inbox: String!) { conversation(id: $c) {
    viewerState(inbox: $inbox) { inbox readUpTo unreadCount archived } unreadCount(inbox: $inbox) } }";

/// The state the test expects, computed from what it stored: the messages' senders in
/// sequence order and the horizon.
fn expected(senders: &[&str], inbox: &str, horizon: usize) -> Value {
    let unread = senders[horizon..].iter().filter(|s| **s != inbox).count();
    json!({"viewerState": {"inbox": inbox, "readUpTo": horizon, "unreadCount": unread, "archived": false},
        "unreadCount": unread})
}

async fn unread_counts_are_exact_after_interleaved_messages_and_marks(t: &TestDb) {
    let app = dev(t);
    let mut senders: Vec<&str> = Vec::new();
    let mut c = String::new();
    let mut add =
        async |senders: &mut Vec<&'static str>, from: &'static str, to: &str, direction: &str| {
            let minute = senders.len() as i64;
            c = record(&app, sms(direction, from, to, None, minute)).await.1;
            senders.push(from);
            c.clone()
        };
    for _ in 0..3 {
        add(&mut senders, CAROL, ALICE, "INBOUND").await;
    }
    let c = add(&mut senders, ALICE, CAROL, "OUTBOUND").await;
    let view = async |inbox: &str| {
        app.data(VIEW, json!({"c": c, "inbox": inbox})).await["conversation"].clone()
    };
    // Alice answered at 4: she has read everything; Carol's own messages moved hers to 3.
    assert_eq!(view(ALICE).await, expected(&senders, ALICE, 4));
    assert_eq!(view(CAROL).await, expected(&senders, CAROL, 3));
    let c = {
        add(&mut senders, CAROL, ALICE, "INBOUND").await;
        add(&mut senders, CAROL, ALICE, "INBOUND").await
    };
    assert_eq!(view(ALICE).await, expected(&senders, ALICE, 4));
    assert_eq!(view(ALICE).await["unreadCount"], 2);
    // Unread from 2 on: her own message 4 stays read for her.
    let data = app
        .data(UNREAD, json!({"c": c, "inbox": ALICE, "from": 2}))
        .await;
    assert_eq!(
        data["markConversationUnread"]["viewerState"],
        json!({"readUpTo": 1, "unreadCount": 4})
    );
    assert_eq!(view(ALICE).await, expected(&senders, ALICE, 1));
    let data = app
        .data(READ, json!({"c": c, "inbox": ALICE, "upTo": 3}))
        .await;
    assert_eq!(
        data["markConversationRead"]["viewerState"]["unreadCount"],
        2
    );
    assert_eq!(view(ALICE).await, expected(&senders, ALICE, 3));
    // Forward only: an earlier sequence changes nothing; unread never moves it forward.
    app.data(READ, json!({"c": c, "inbox": ALICE, "upTo": 2}))
        .await;
    assert_eq!(view(ALICE).await, expected(&senders, ALICE, 3));
    app.data(UNREAD, json!({"c": c, "inbox": ALICE, "from": 6}))
        .await;
    assert_eq!(view(ALICE).await, expected(&senders, ALICE, 3));
    // Carol's state is her own: her messages 5 and 6 moved it.
    assert_eq!(view(CAROL).await, expected(&senders, CAROL, 6));
    // A new message from Alice moves her horizon past everything, even after a set-back.
    app.data(UNREAD, json!({"c": c, "inbox": ALICE, "from": 1}))
        .await;
    assert_eq!(view(ALICE).await, expected(&senders, ALICE, 0));
    let c = add(&mut senders, ALICE, CAROL, "OUTBOUND").await;
    assert_eq!(view(ALICE).await, expected(&senders, ALICE, 7));
    assert_eq!(view(CAROL).await, expected(&senders, CAROL, 6));
    // Default: up to the latest.
    let data = app.data(READ, json!({"c": c, "inbox": CAROL})).await;
    assert_eq!(
        data["markConversationRead"],
        json!({"lastSequence": 7, "viewerState": {"inbox": CAROL, "readUpTo": 7, "unreadCount": 0, "archived": false}})
    );
    for (query, vars, field) in [
        (
            READ,
            json!({"c": c, "inbox": ALICE, "upTo": 8}),
            "upToSequence",
        ),
        (
            READ,
            json!({"c": c, "inbox": ALICE, "upTo": -1}),
            "upToSequence",
        ),
        (
            UNREAD,
            json!({"c": c, "inbox": ALICE, "from": 0}),
            "fromSequence",
        ),
        (
            UNREAD,
            json!({"c": c, "inbox": ALICE, "from": 8}),
            "fromSequence",
        ),
        (READ, json!({"c": c}), "inbox"),
        (READ, json!({"c": c, "inbox": BOB}), "inbox"),
    ] {
        let body = app.graphql(query, vars.clone()).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{vars}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{vars}");
    }
    assert_eq!(view(ALICE).await, expected(&senders, ALICE, 7));
}

async fn concurrent_marks_keep_the_horizon_monotonic(t: &TestDb) {
    let app = dev(t);
    let mut c = String::new();
    for minute in 0..50 {
        c = record(&app, sms("INBOUND", CAROL, ALICE, None, minute))
            .await
            .1;
    }
    // 50 marks with every sequence, in a scrambled order, at once, beside 10 new messages.
    let mut tasks = Vec::new();
    for i in 0..50i64 {
        let up_to = (i * 17) % 50 + 1;
        let app = app.clone();
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let data = app
                .data(READ, json!({"c": c, "inbox": ALICE, "upTo": up_to}))
                .await;
            let horizon = data["markConversationRead"]["viewerState"]["readUpTo"]
                .as_i64()
                .unwrap();
            // Whatever ran before, the horizon never ends below what this mark asked for.
            assert!(horizon >= up_to, "{horizon} < {up_to}");
        }));
    }
    for minute in 50..60 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            record(&app, sms("INBOUND", CAROL, ALICE, None, minute)).await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let got = app.data(VIEW, json!({"c": c, "inbox": ALICE})).await["conversation"].clone();
    assert_eq!(
        got,
        json!({"viewerState": {"inbox": ALICE, "readUpTo": 50, "unreadCount": 10, "archived": false}, "unreadCount": 10})
    );
}

async fn unread_ids(
    app: &TestApp,
    unread: bool,
    first: i64,
    after: Option<&str>,
) -> (Vec<String>, Option<String>, i64) {
    let data = app
        .data(
            "query($f: ConversationFilter, $first: Int, $after: String) {
                conversations(first: $first, after: $after, filter: $f) {
                    totalCount nodes { id viewerState(inbox: \"+12025550101\") { unreadCount } }
                    pageInfo { hasNextPage endCursor } } }",
            json!({"f": {"inbox": ALICE, "unread": unread}, "first": first, "after": after}),
        )
        .await;
    let c = &data["conversations"];
    for n in c["nodes"].as_array().unwrap() {
        assert_eq!(
            n["viewerState"]["unreadCount"].as_i64().unwrap() > 0,
            unread,
            "{n}"
        );
    }
    let ids = c["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    let next = c["pageInfo"]["hasNextPage"]
        .as_bool()
        .unwrap()
        .then(|| c["pageInfo"]["endCursor"].as_str().unwrap().to_owned());
    (ids, next, c["totalCount"].as_i64().unwrap())
}

async fn the_unread_filter_pages_with_cursors(t: &TestDb) {
    let app = dev(t);
    let contacts = [
        "+12025550111",
        "+12025550112",
        "+12025550113",
        "+12025550114",
        "+12025550115",
    ];
    let mut ids = Vec::new();
    for (i, c) in contacts.iter().enumerate() {
        ids.push(
            record(&app, sms("INBOUND", c, ALICE, None, i as i64))
                .await
                .1,
        );
    }
    // Read: 1 (marked), 3 (answered). Unread: 0, 2, 4.
    app.data(READ, json!({"c": ids[1], "inbox": ALICE})).await;
    record(&app, sms("OUTBOUND", ALICE, contacts[3], None, 3)).await;
    let (page, next, total) = unread_ids(&app, true, 2, None).await;
    assert_eq!((page, total), (vec![ids[4].clone(), ids[2].clone()], 3));
    let (page, next, _) = unread_ids(&app, true, 2, next.as_deref()).await;
    assert_eq!((page, next), (vec![ids[0].clone()], None));
    let (page, _, total) = unread_ids(&app, false, 10, None).await;
    assert_eq!((page, total), (vec![ids[3].clone(), ids[1].clone()], 2));
    // A new message makes 1 unread again.
    record(&app, sms("INBOUND", contacts[1], ALICE, None, 9)).await;
    assert_eq!(
        unread_ids(&app, true, 10, None).await.0,
        vec![
            ids[1].clone(),
            ids[4].clone(),
            ids[2].clone(),
            ids[0].clone()
        ]
    );
}

async fn verify_reports_and_repairs_the_state_invariants(t: &TestDb) {
    use sea_orm::ConnectionTrait;
    let app = dev(t);
    for minute in 0..3 {
        record(&app, sms("INBOUND", CAROL, ALICE, None, minute)).await;
    }
    let (_, c) = record(&app, sms("OUTBOUND", ALICE, CAROL, None, 3)).await;
    let settings = service::Settings::default();
    let run = async |repair| {
        service::verify::verify_conversations(&t.db, &settings, repair, 100, |_| {})
            .await
            .unwrap()
    };
    assert_eq!(run(false).await.drifts, vec![]);
    let backend = t.db.get_database_backend();
    for sql in [
        format!("UPDATE conversation_states SET read_up_to = 99 WHERE inbox = '{ALICE}'"),
        format!("UPDATE conversation_states SET sent_after = 5 WHERE inbox = '{CAROL}'"),
    ] {
        t.db.execute_raw(sea_orm::Statement::from_string(backend, sql))
            .await
            .unwrap();
    }
    let fields = |r: &service::verify::VerifyReport| {
        let mut f: Vec<(&str, String, String)> = r
            .drifts
            .iter()
            .map(|d| (d.field, d.stored.clone(), d.actual.clone()))
            .collect();
        f.sort();
        f
    };
    let found = run(false).await;
    assert_eq!(
        fields(&found),
        vec![
            ("read_up_to", "99".to_owned(), "within 0..=4".to_owned()),
            ("sent_after", "5".to_owned(), "0".to_owned()),
        ]
    );
    assert_eq!(found.repaired, 0);
    let repaired = run(true).await;
    assert_eq!(fields(&repaired).len(), 2);
    assert_eq!(repaired.repaired, 1);
    assert_eq!(run(false).await.drifts, vec![]);
    let view = app.data(VIEW, json!({"c": c, "inbox": ALICE})).await;
    assert_eq!(
        view["conversation"]["viewerState"],
        json!({"inbox": ALICE, "readUpTo": 4, "unreadCount": 0, "archived": false})
    );
    let view = app.data(VIEW, json!({"c": c, "inbox": CAROL})).await;
    assert_eq!(
        view["conversation"]["viewerState"],
        json!({"inbox": CAROL, "readUpTo": 3, "unreadCount": 1, "archived": false})
    );
}

/// A page's state per conversation id: `nodes` (or `edges { node }`) of `data`.
fn states_by_id(data: &Value, key: &str) -> std::collections::BTreeMap<String, Value> {
    let conversations = &data["conversations"];
    let nodes: Vec<&Value> = match conversations["nodes"].as_array() {
        Some(nodes) => nodes.iter().collect(),
        None => conversations["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["node"])
            .collect(),
    };
    nodes
        .into_iter()
        .map(|n| (n["id"].as_str().unwrap().to_owned(), n[key].clone()))
        .collect()
}

async fn a_page_reads_state_alike_on_every_path(t: &TestDb) {
    let app = dev(t);
    // c1: two messages from Carol, Alice read the first; c2: Bob, Alice (her horizon moves
    // to her own message), Bob again, then Alice archives it; c3: no state row for Alice.
    let (_, c1) = record(&app, sms("INBOUND", CAROL, ALICE, None, 1)).await;
    record(&app, sms("INBOUND", CAROL, ALICE, None, 2)).await;
    app.data(READ, json!({"c": c1, "inbox": ALICE, "upTo": 1}))
        .await;
    let (_, c2) = record(&app, sms("INBOUND", BOB, ALICE, None, 3)).await;
    record(&app, sms("OUTBOUND", ALICE, BOB, None, 4)).await;
    record(&app, sms("INBOUND", BOB, ALICE, None, 5)).await;
    app.data(ARCHIVE, json!({"c": c2, "inbox": ALICE})).await;
    let (_, c3) = record(&app, sms("INBOUND", "+12025550113", ALICE, None, 6)).await;
    let state = |read: i64, unread: i64, archived: bool| {
        json!({"__typename": "ViewerState", "inbox": ALICE, "readUpTo": read,
            "unreadCount": unread, "archived": archived})
    };
    let alice: std::collections::BTreeMap<String, Value> = [
        (c1.clone(), state(1, 1, false)),
        (c2.clone(), state(2, 1, true)),
        (c3.clone(), state(0, 1, false)),
    ]
    .into();
    let unread: std::collections::BTreeMap<String, Value> =
        alice.keys().map(|k| (k.clone(), json!(1))).collect();

    // One inbox, plain fields: read by the page's own statement, resolved directly.
    let data = app
        .data(
            r#"{ conversations(first: 10) { nodes { id
                viewerState(inbox: "(202) 555-0101") { __typename inbox readUpTo unreadCount archived }
                unreadCount(inbox: "(202) 555-0101") } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(states_by_id(&data, "viewerState"), alice);
    assert_eq!(states_by_id(&data, "unreadCount"), unread);

    // Fragments, an alias and a directive (the derived object resolves them), two
    // spellings of one inbox, through edges.
    let data = app
        .data(
            r#"{ conversations(first: 10) { edges { node { id
                viewerState(inbox: "(202) 555-0101") { ... on ViewerState { __typename inbox }
                    ...Rest horizon: readUpTo @include(if: true) }
                unreadCount(inbox: "+1 202 555 0101") } } } }
            fragment Rest on ViewerState { unreadCount archived readUpTo }"#,
            json!({}),
        )
        .await;
    let with_alias: std::collections::BTreeMap<String, Value> = alice
        .iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            v["horizon"] = v["readUpTo"].clone();
            (k.clone(), v)
        })
        .collect();
    assert_eq!(states_by_id(&data, "viewerState"), with_alias);
    assert_eq!(states_by_id(&data, "unreadCount"), unread);

    // Two inboxes in one page (a second statement), and one conversation by id.
    let data = app
        .data(
            r#"query($p: String!) { conversations(filter: {participant: $p}) { nodes { id
                a: viewerState(inbox: "(202) 555-0101") { __typename inbox readUpTo unreadCount archived }
                b: viewerState(inbox: $p) { inbox readUpTo unreadCount archived } } } }"#,
            json!({"p": BOB}),
        )
        .await;
    assert_eq!(
        states_by_id(&data, "a"),
        [(c2.clone(), alice[&c2].clone())].into()
    );
    assert_eq!(
        states_by_id(&data, "b"),
        [(
            c2.clone(),
            json!({"inbox": BOB, "readUpTo": 3, "unreadCount": 0, "archived": false})
        )]
        .into()
    );
    for (c, expected) in &alice {
        let data = app
            .data(
                r#"query($c: ID!) { conversation(id: $c) {
                    viewerState(inbox: "(202) 555-0101") { __typename inbox readUpTo unreadCount archived } } }"#,
                json!({"c": c}),
            )
            .await;
        assert_eq!(&data["conversation"]["viewerState"], expected);
    }

    // An inbox that is not a participant of every conversation of the page: each of those
    // answers the field's error (`viewerState` is non-null, so `data` is null).
    let body = app
        .graphql(
            r#"{ conversations(first: 10) { nodes { id
                viewerState(inbox: "+1 (202) 555-0102") { inbox readUpTo unreadCount archived } } } }"#,
            json!({}),
        )
        .await;
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{body:#}");
    for e in errors {
        assert_eq!(e["extensions"]["code"], "BAD_USER_INPUT", "{body:#}");
        assert_eq!(e["extensions"]["field"], "inbox", "{body:#}");
    }
    assert_eq!(body["data"], Value::Null);
}

async fn a_page_of_50_with_state_costs_a_constant_number_of_statements(t: &TestDb) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let counter = Arc::new(AtomicUsize::new(0));
    let (db, _counting) = service::db::counting(&t.db, counter.clone());
    let app = TestApp {
        router: api::router(api::AppState::new(db, AppConfig::default())),
    };
    let query = |n: usize| {
        format!(
            "{{ conversations(first: {n}) {{ nodes {{ subject unreadCount(inbox: \"{ALICE}\")
                viewerState(inbox: \"{ALICE}\") {{ readUpTo unreadCount archived }}
                lastMessage {{ status statusAt subject }} }} }} }}"
        )
    };
    let mut statements = Vec::new();
    for n in [5usize, 50] {
        while (t.count("conversations").await as usize) < n {
            let i = t.count("conversations").await;
            let contact = format!("+1804555{:04}", 1000 + i);
            record(&app, sms("INBOUND", &contact, ALICE, None, 0)).await;
            let pid = format!("out-{i}");
            record(&app, sms("OUTBOUND", ALICE, &contact, Some(&pid), 1)).await;
            record_delivery_status(
                &t.db,
                StatusEvent {
                    channel: Channel::Sms,
                    provider_message_id: pid,
                    status: DeliveryStatus::Sent,
                    at: None,
                    error_code: None,
                    error_message: None,
                },
            )
            .await
            .unwrap();
            record(&app, sms("INBOUND", &contact, ALICE, None, 2)).await;
        }
        t.count_statements_from_zero(&counter).await;
        let d = app.data(&query(n), json!({})).await;
        let nodes = d["conversations"]["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), n);
        for node in nodes {
            assert_eq!(
                node,
                &json!({"subject": null, "unreadCount": 1,
                    "viewerState": {"readUpTo": 2, "unreadCount": 1, "archived": false},
                    "lastMessage": {"status": null, "statusAt": null, "subject": null}})
            );
        }
        statements.push(counter.load(Ordering::SeqCst));
    }
    eprintln!("statements for 5 and 50 conversations with state: {statements:?}");
    assert_eq!(
        statements[0], statements[1],
        "statement count grows with the page size"
    );
}

on_both_engines!(
    every_arrival_order_ends_in_the_right_status,
    a_callback_before_its_message_and_a_redelivery,
    bad_status_reports_name_their_field_and_store_nothing,
    status_webhooks_are_signed_and_the_mutation_is_for_admins,
    email_headers_are_stored_and_resolved_without_splitting,
    malformed_headers_answer_bad_user_input_with_the_field,
    archive_is_per_inbox_and_a_new_inbound_message_reopens,
    only_your_own_inboxes_and_errors_name_the_field,
    unread_counts_are_exact_after_interleaved_messages_and_marks,
    concurrent_marks_keep_the_horizon_monotonic,
    the_unread_filter_pages_with_cursors,
    verify_reports_and_repairs_the_state_invariants,
    a_page_reads_state_alike_on_every_path,
    a_page_of_50_with_state_costs_a_constant_number_of_statements,
);
