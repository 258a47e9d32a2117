//! The REST ingress through the in-process router: the sms, mms and email flows, webhook
//! redelivery, the same ids and cursors as GraphQL in both directions, and every error
//! status with its JSON body.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use parley_tests::{Answer, AppConfig, TestApp, TestDb, expected_cursor, on_both_engines};
use serde_json::{Value, json};
use service::cursor::CursorKind;

on_both_engines!(
    sms_outbound_then_inbound_reply_share_one_conversation,
    mms_keeps_its_kind_and_attachments,
    email_outbound_then_inbound_reply_share_one_conversation,
    redelivered_webhook_is_stored_once,
    rest_writes_are_visible_through_graphql,
    graphql_writes_are_visible_through_rest_with_the_same_cursors,
    pages_follow_cursors_both_ways_with_exact_flags,
    bad_input_answers_400_with_the_payload_field,
    unnormalizable_inbound_is_stored_and_answered_202,
    body_over_the_limit_answers_413,
    non_json_content_type_answers_415,
    unknown_conversation_answers_404,
    database_down_answers_503,
);

fn sms(from: &str, to: Value, ty: &str, body: &str, minute: u32) -> Value {
    json!({
        "from": from, "to": to, "type": ty, "body": body, "attachments": null,
        "timestamp": format!("2024-11-01T14:{minute:02}:00Z"),
    })
}

fn email(from: &str, to: Value, body: &str, minute: u32) -> Value {
    json!({
        "from": from, "to": to, "body": body, "attachments": [],
        "timestamp": format!("2024-11-01T14:{minute:02}:00Z"),
    })
}

async fn post_ok(app: &TestApp, path: &str, body: &Value) -> Value {
    let answer = app.post_json(path, body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json
}

async fn get_ok(app: &TestApp, path: &str) -> Value {
    let answer = app.get(path).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json
}

/// Asserts an error answer: status, and the whole body `{code, message, field?}`.
#[track_caller]
fn assert_error(
    answer: &Answer,
    status: StatusCode,
    code: &str,
    field: Option<&str>,
    message: &str,
) {
    assert_eq!(answer.status, status, "{}", answer.text);
    let body = answer.json.as_object().unwrap_or_else(|| {
        panic!("error body is not a JSON object: {:?}", answer.text);
    });
    assert_eq!(body["code"], code, "{}", answer.text);
    assert_eq!(body["message"], message, "{}", answer.text);
    match field {
        Some(f) => assert_eq!(body["field"], f, "{}", answer.text),
        None => assert!(!body.contains_key("field"), "{}", answer.text),
    }
    let allowed = ["code", "message", "field"];
    assert!(
        body.keys().all(|k| allowed.contains(&k.as_str())),
        "{}",
        answer.text
    );
}

async fn sms_outbound_then_inbound_reply_share_one_conversation(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let out = post_ok(
        &app,
        "/api/messages/sms",
        &sms(
            "+12016661234",
            json!("+18045551234"),
            "sms",
            "Are you coming?",
            0,
        ),
    )
    .await;
    assert_eq!(out["conversation_created"], true);
    assert_eq!(out["duplicate"], false);
    assert_eq!(
        out.as_object().unwrap().len(),
        4,
        "exactly the four fields: {out}"
    );
    let mut reply = sms(
        "(804) 555-1234",
        json!(["+1 201 666 1234"]),
        "sms",
        "Yes!",
        3,
    );
    reply["messaging_provider_id"] = json!("message-1");
    let back = post_ok(&app, "/api/webhooks/sms", &reply).await;
    assert_eq!(back["conversation_created"], false);
    assert_eq!(back["duplicate"], false);
    assert_eq!(back["conversation_id"], out["conversation_id"]);
    assert_ne!(back["message_id"], out["message_id"]);

    let list = get_ok(&app, "/api/conversations").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let c = &list["items"][0];
    assert_eq!(c["id"], out["conversation_id"]);
    assert_eq!(c["channel"], "SMS");
    assert_eq!(c["participants"], json!(["+12016661234", "+18045551234"]));
    assert_eq!(c["key"].as_str().unwrap().len(), 32);
    assert_eq!(c["message_count"], 2);
    assert_eq!(c["first_message_at"], "2024-11-01T14:00:00+00:00");
    assert_eq!(c["last_message_at"], "2024-11-01T14:03:00+00:00");
    assert_eq!(c["snippet"], "Yes!");
    assert_eq!(c["last_message_id"], back["message_id"]);

    let thread = get_ok(
        &app,
        &format!(
            "/api/conversations/{}/messages",
            out["conversation_id"].as_str().unwrap()
        ),
    )
    .await;
    let items = thread["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], out["message_id"]);
    assert_eq!(items[0]["direction"], "OUTBOUND");
    assert_eq!(items[0]["provider_message_id"], Value::Null);
    let m = &items[1];
    assert_eq!(m["id"], back["message_id"]);
    assert_eq!(m["conversation_id"], out["conversation_id"]);
    assert_eq!(m["channel"], "SMS");
    assert_eq!(m["kind"], "SMS");
    assert_eq!(m["direction"], "INBOUND");
    assert_eq!(m["from"], "+18045551234");
    assert_eq!(m["to"], json!(["+12016661234"]));
    assert_eq!(m["body"], "Yes!");
    assert_eq!(m["attachments"], json!([]));
    assert_eq!(m["provider_message_id"], "message-1");
    assert_eq!(m["sent_at"], "2024-11-01T14:03:00+00:00");
    assert!(m["recorded_at"].is_string());
    assert_eq!(m["assignment_error"], Value::Null);
    // The cursors are the (sent_at, id) positions of the two stored messages.
    let stored = t.ids("messages").await;
    assert_eq!(stored.len(), 2);
    assert_eq!(
        thread["page_info"],
        json!({
            "has_next_page": false, "has_previous_page": false,
            "start_cursor": expected_cursor(CursorKind::Message, "2024-11-01T14:00:00Z", stored[0]),
            "end_cursor": expected_cursor(CursorKind::Message, "2024-11-01T14:03:00Z", stored[1]),
        })
    );
    assert_eq!(t.count("messages").await, 2);
    assert_eq!(t.count("conversations").await, 1);
}

async fn mms_keeps_its_kind_and_attachments(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let mut out = sms(
        "+12016661234",
        json!("+18045551234"),
        "mms",
        "look at this",
        0,
    );
    out["attachments"] = json!(["https://files.example.com/a.png"]);
    let sent = post_ok(&app, "/api/messages/sms", &out).await;
    let mut reply = sms("+18045551234", json!("+12016661234"), "mms", "nice", 1);
    reply["attachments"] = json!([
        "https://files.example.com/b.jpg",
        "http://files.example.com/c.gif"
    ]);
    reply["messaging_provider_id"] = json!("mms-1");
    let back = post_ok(&app, "/api/webhooks/sms", &reply).await;
    // SMS and MMS between the same numbers are one conversation.
    let text = post_ok(
        &app,
        "/api/messages/sms",
        &sms("+12016661234", json!("+18045551234"), "sms", "ok", 2),
    )
    .await;
    assert_eq!(back["conversation_id"], sent["conversation_id"]);
    assert_eq!(text["conversation_id"], sent["conversation_id"]);

    let thread = get_ok(
        &app,
        &format!(
            "/api/conversations/{}/messages?first=10",
            sent["conversation_id"].as_str().unwrap()
        ),
    )
    .await;
    let kinds: Vec<_> = thread["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["kind"].clone(), m["attachments"].clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (json!("MMS"), json!(["https://files.example.com/a.png"])),
            (
                json!("MMS"),
                json!([
                    "https://files.example.com/b.jpg",
                    "http://files.example.com/c.gif"
                ])
            ),
            (json!("SMS"), json!([])),
        ]
    );
}

async fn email_outbound_then_inbound_reply_share_one_conversation(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let out = post_ok(
        &app,
        "/api/messages/email",
        &email(
            "user@usehatchapp.com",
            json!("contact@gmail.com"),
            "<html><body><p>Hello <b>there</b></p></body></html>",
            0,
        ),
    )
    .await;
    assert_eq!(out["conversation_created"], true);
    let mut reply = email(
        "Contact <Contact+news@Gmail.com>",
        json!(["USER@usehatchapp.com"]),
        "<p>Thanks,&nbsp;see you</p>",
        5,
    );
    reply["xillio_id"] = json!("message-2");
    reply["attachments"] = json!(["https://files.example.com/invite.ics"]);
    let back = post_ok(&app, "/api/webhooks/email", &reply).await;
    assert_eq!(back["conversation_id"], out["conversation_id"]);
    assert_eq!(back["conversation_created"], false);

    let list = get_ok(&app, "/api/conversations?first=5").await;
    let c = &list["items"][0];
    assert_eq!(c["id"], out["conversation_id"]);
    assert_eq!(c["channel"], "EMAIL");
    assert_eq!(
        c["participants"],
        json!(["contact@gmail.com", "user@usehatchapp.com"])
    );
    assert_eq!(c["message_count"], 2);
    assert_eq!(c["snippet"], "Thanks, see you");

    let thread = get_ok(
        &app,
        &format!(
            "/api/conversations/{}/messages?last=1",
            out["conversation_id"].as_str().unwrap()
        ),
    )
    .await;
    let m = &thread["items"][0];
    assert_eq!(m["id"], back["message_id"]);
    assert_eq!(m["kind"], "EMAIL");
    assert_eq!(m["from"], "contact@gmail.com");
    assert_eq!(m["to"], json!(["user@usehatchapp.com"]));
    assert_eq!(m["body"], "<p>Thanks,&nbsp;see you</p>");
    assert_eq!(m["provider_message_id"], "message-2");
    assert_eq!(
        m["attachments"],
        json!(["https://files.example.com/invite.ics"])
    );
    assert_eq!(thread["page_info"]["has_previous_page"], true);
    assert_eq!(thread["page_info"]["has_next_page"], false);
}

async fn redelivered_webhook_is_stored_once(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let mut hook = sms("+18045551234", json!("+12016661234"), "sms", "hi", 1);
    hook["messaging_provider_id"] = json!("message-1");
    let first = post_ok(&app, "/api/webhooks/sms", &hook).await;
    let again = post_ok(&app, "/api/webhooks/sms", &hook).await;
    assert_eq!(first["duplicate"], false);
    assert_eq!(
        again,
        json!({
            "message_id": first["message_id"], "conversation_id": first["conversation_id"],
            "conversation_created": false, "duplicate": true,
        })
    );
    // The provider id is per channel: the same id by email is another message.
    let mut mail = email("a@example.com", json!("b@example.com"), "hi", 1);
    mail["xillio_id"] = json!("message-1");
    let e1 = post_ok(&app, "/api/webhooks/email", &mail).await;
    let e2 = post_ok(&app, "/api/webhooks/email", &mail).await;
    assert_eq!(e1["duplicate"], false);
    assert_eq!(e2["duplicate"], true);
    assert_eq!(e2["message_id"], e1["message_id"]);
    assert_ne!(e1["message_id"], first["message_id"]);
    assert_eq!(t.count("messages").await, 2);
    let list = get_ok(&app, "/api/conversations").await;
    let counts: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["message_count"].clone())
        .collect();
    assert_eq!(counts, vec![json!(1), json!(1)]);
}

async fn rest_writes_are_visible_through_graphql(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let mut hook = sms("+18045551234", json!("+12016661234"), "sms", "from REST", 1);
    hook["messaging_provider_id"] = json!("p-9");
    let r = post_ok(&app, "/api/webhooks/sms", &hook).await;
    let data = app
        .data(
            r#"query($m: ID!, $c: ID!) {
                 node(id: $m) { id ... on Message { body direction providerMessageId
                                                    conversation { id } } }
                 conversation(id: $c) { id messageCount lastMessage { id } }
               }"#,
            json!({ "m": r["message_id"], "c": r["conversation_id"] }),
        )
        .await;
    assert_eq!(
        data,
        json!({
            "node": { "id": r["message_id"], "body": "from REST", "direction": "INBOUND",
                      "providerMessageId": "p-9", "conversation": { "id": r["conversation_id"] } },
            "conversation": { "id": r["conversation_id"], "messageCount": 1,
                              "lastMessage": { "id": r["message_id"] } },
        })
    );
    // A GraphQL write with the same provider id is the same message.
    let dup = app
        .data(
            r#"mutation($input: RecordMessageInput!) {
                 recordMessage(input: $input) { duplicate message { id } } }"#,
            json!({ "input": { "channel": "SMS", "direction": "INBOUND", "from": "+18045551234",
                               "to": ["+12016661234"], "body": "x", "providerMessageId": "p-9" } }),
        )
        .await;
    assert_eq!(dup["recordMessage"]["duplicate"], true);
    assert_eq!(dup["recordMessage"]["message"]["id"], r["message_id"]);
}

async fn graphql_writes_are_visible_through_rest_with_the_same_cursors(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let rec = app
        .data(
            r#"mutation($input: RecordMessageInput!) {
                 recordMessage(input: $input) { message { id } conversation { id key } } }"#,
            json!({ "input": { "channel": "EMAIL", "direction": "OUTBOUND",
                               "from": "ops@example.com", "to": ["jane@example.org"],
                               "body": "from GraphQL", "sentAt": "2024-11-01T14:00:00Z" } }),
        )
        .await;
    let gq = app
        .data(
            r#"{ conversations(first: 10) {
                   edges { cursor node { id messages(first: 10) {
                     edges { cursor node { id } } } } } } }"#,
            json!({}),
        )
        .await;
    let edge = &gq["conversations"]["edges"][0];
    // Both surfaces hand out the cursor of the stored rows' positions.
    let conversation_cursor = expected_cursor(
        CursorKind::Conversation,
        "2024-11-01T14:00:00Z",
        t.ids("conversations").await[0],
    );
    let message_cursor = expected_cursor(
        CursorKind::Message,
        "2024-11-01T14:00:00Z",
        t.ids("messages").await[0],
    );
    assert_eq!(edge["cursor"], conversation_cursor);
    let list = get_ok(&app, "/api/conversations?first=10").await;
    let c = &list["items"][0];
    assert_eq!(c["id"], rec["recordMessage"]["conversation"]["id"]);
    assert_eq!(c["key"], rec["recordMessage"]["conversation"]["key"]);
    assert_eq!(c["last_message_id"], rec["recordMessage"]["message"]["id"]);
    assert_eq!(list["page_info"]["start_cursor"], conversation_cursor);
    assert_eq!(list["page_info"]["end_cursor"], conversation_cursor);
    let thread = get_ok(
        &app,
        &format!("/api/conversations/{}/messages", c["id"].as_str().unwrap()),
    )
    .await;
    let m_edge = &edge["node"]["messages"]["edges"][0];
    assert_eq!(thread["items"][0]["id"], m_edge["node"]["id"]);
    assert_eq!(thread["items"][0]["body"], "from GraphQL");
    assert_eq!(m_edge["cursor"], message_cursor);
    assert_eq!(thread["page_info"]["start_cursor"], message_cursor);
    assert_eq!(thread["page_info"]["end_cursor"], message_cursor);
}

async fn pages_follow_cursors_both_ways_with_exact_flags(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let mut ids = Vec::new();
    for i in 0..5u32 {
        let r = post_ok(
            &app,
            "/api/messages/sms",
            &sms(
                "+12016661234",
                json!(format!("+1804555{:04}", 1000 + i)),
                "sms",
                &format!("m{i}"),
                i,
            ),
        )
        .await;
        ids.push(r["conversation_id"].clone());
    }
    // Newest activity first.
    ids.reverse();
    let ids_of = |page: &Value| -> Vec<Value> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].clone())
            .collect()
    };
    // Conversation i was last active at 14:0i; its cursor is that position and its row id.
    let rows = t.ids("conversations").await;
    assert_eq!(rows.len(), 5);
    let cursor = |i: usize| {
        expected_cursor(
            CursorKind::Conversation,
            &format!("2024-11-01T14:{i:02}:00Z"),
            rows[i],
        )
    };
    let page_info = |next: bool, previous: bool, start: usize, end: usize| {
        json!({
            "has_next_page": next, "has_previous_page": previous,
            "start_cursor": cursor(start), "end_cursor": cursor(end),
        })
    };
    let p1 = get_ok(&app, "/api/conversations?first=2").await;
    assert_eq!(ids_of(&p1), ids[0..2]);
    assert_eq!(p1["page_info"], page_info(true, false, 4, 3));
    let p2 = get_ok(
        &app,
        &format!("/api/conversations?first=2&after={}", cursor(3)),
    )
    .await;
    assert_eq!(ids_of(&p2), ids[2..4]);
    assert_eq!(p2["page_info"], page_info(true, true, 2, 1));
    let p3 = get_ok(
        &app,
        &format!("/api/conversations?first=2&after={}", cursor(1)),
    )
    .await;
    assert_eq!(ids_of(&p3), ids[4..5]);
    assert_eq!(p3["page_info"], page_info(false, true, 0, 0));
    let back = get_ok(
        &app,
        &format!("/api/conversations?last=3&before={}", cursor(0)),
    )
    .await;
    assert_eq!(ids_of(&back), ids[1..4]);
    assert_eq!(back["page_info"], page_info(true, true, 3, 1));

    // Page limits and cursors are the service's, with GraphQL's codes.
    let over = "; page through longer lists with cursors";
    let start_over = "; pass a cursor from this list's edges or pageInfo, or none to start over";
    for (query, code, field, message) in [
        (
            "first=0",
            "BAD_USER_INPUT",
            Some("first"),
            format!("first: first must be between 1 and 100 (got 0){over}"),
        ),
        (
            "first=101",
            "BAD_USER_INPUT",
            Some("first"),
            format!("first: first must be between 1 and 100 (got 101){over}"),
        ),
        (
            "first=two",
            "BAD_USER_INPUT",
            Some("first"),
            "first: first must be a whole number".to_owned(),
        ),
        (
            "first=1&last=1",
            "BAD_USER_INPUT",
            Some("last"),
            "last: pass either first (to page forward) or last (to page backward), not both"
                .to_owned(),
        ),
        (
            "after=bm90LWEtY3Vyc29y",
            "INVALID_CURSOR",
            None,
            format!("cursor is not one this server issued{start_over}"),
        ),
    ] {
        let answer = app.get(&format!("/api/conversations?{query}")).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, code, field, &message);
    }
    // A conversation cursor is not a message cursor.
    let answer = app
        .get(&format!(
            "/api/conversations/{}/messages?after={}",
            ids[0].as_str().unwrap(),
            cursor(1)
        ))
        .await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "INVALID_CURSOR",
        None,
        &format!("cursor belongs to another list{start_over}"),
    );
}

async fn bad_input_answers_400_with_the_payload_field(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let good = sms("+12016661234", json!("+18045551234"), "sms", "hi", 0);
    let with = |key: &str, value: Value| {
        let mut p = good.clone();
        p[key] = value;
        p
    };
    let without = |key: &str| {
        let mut p = good.clone();
        p.as_object_mut().unwrap().remove(key);
        p
    };
    let mut bad_pid = with("messaging_provider_id", json!("x".repeat(256)));
    bad_pid["from"] = json!("+18045551234");
    bad_pid["to"] = json!("+12016661234");
    let sms_path = "/api/messages/sms";
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            sms_path,
            with("from", json!("+1 555 0100 99999")),
            "from",
            "from: phone number is not valid for region US",
        ),
        (
            sms_path,
            with("to", json!(["not a phone"])),
            "to[0]",
            "to[0]: letters are not accepted in phone numbers; write vanity numbers like \
             1-800-FLOWERS as digits",
        ),
        (
            sms_path,
            with("to", json!(["+18045551234", 5])),
            "to[1]",
            "to[1]: must be a string",
        ),
        (
            sms_path,
            with("to", json!([])),
            "to",
            "to: at least one recipient is required",
        ),
        (
            sms_path,
            with("to", json!(7)),
            "to",
            "to: to must be an address or a list of addresses",
        ),
        (sms_path, without("to"), "to", "to: to is required"),
        (sms_path, without("from"), "from", "from: from is required"),
        (sms_path, without("body"), "body", "body: body is required"),
        (
            sms_path,
            with("body", json!(42)),
            "body",
            "body: body must be a string",
        ),
        (
            sms_path,
            with("type", json!("fax")),
            "type",
            r#"type: type must be "sms" or "mms""#,
        ),
        (sms_path, without("type"), "type", "type: type is required"),
        (
            sms_path,
            with("timestamp", json!("yesterday")),
            "timestamp",
            "timestamp: timestamp must be an RFC 3339 date-time such as 2024-11-01T14:00:00Z",
        ),
        (
            sms_path,
            with("timestamp", json!("2999-01-01T00:00:00Z")),
            "timestamp",
            "timestamp: timestamp must lie between 1970-01-01 and one day from now",
        ),
        (
            sms_path,
            with("attachments", json!("a.png")),
            "attachments",
            "attachments: attachments must be a list of URLs or null",
        ),
        (
            sms_path,
            with("attachments", json!(["ftp://x/a.png"])),
            "attachments[0]",
            "attachments[0]: an attachment must be an absolute http(s) URL without spaces",
        ),
        (
            sms_path,
            with("body", json!("nul \u{0} inside")),
            "body",
            "body: contains a NUL character (U+0000)",
        ),
        (
            "/api/webhooks/sms",
            bad_pid,
            "messaging_provider_id",
            "messaging_provider_id: 256 bytes given; at most 255 are allowed",
        ),
        (
            "/api/messages/email",
            with("from", json!("user@")),
            "from",
            "from: not an email address: nothing after '@'",
        ),
    ];
    // Messages speak of the payload's fields, never of GraphQL's names for them.
    for (path, payload, field, message) in cases {
        let answer = app.post_json(path, &payload).await;
        assert_error(
            &answer,
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            Some(field),
            message,
        );
    }
    // Bodies that are not one JSON object: no field to name.
    for (raw, message) in [
        (
            "{\"from\": ",
            "the body is not valid JSON: EOF while parsing a value at line 1 column 9",
        ),
        ("[1, 2]", "the body must be a JSON object"),
        (
            "",
            "the body is not valid JSON: EOF while parsing a value at line 1 column 0",
        ),
    ] {
        let answer = app
            .send(
                Request::post("/api/messages/sms")
                    .header("content-type", "application/json")
                    .body(Body::from(raw))
                    .unwrap(),
            )
            .await;
        assert_error(
            &answer,
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            None,
            message,
        );
    }
    // Unknown fields are ignored.
    post_ok(
        &app,
        "/api/messages/sms",
        &with("campaign", json!({"a": 1})),
    )
    .await;
    assert_eq!(t.count("messages").await, 1);
    assert_eq!(t.count("conversations").await, 1);
}

async fn unnormalizable_inbound_is_stored_and_answered_202(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let mut hook = sms("+1 555 0100 99999", json!("+12016661234"), "sms", "odd", 1);
    hook["messaging_provider_id"] = json!("odd-1");
    let answer = app.post_json("/api/webhooks/sms", &hook).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    let reason = answer.json["assignment_error"].as_str().unwrap().to_owned();
    assert_eq!(reason, "from: phone number is not valid for region US");
    let stored = t.ids("messages").await;
    assert_eq!(stored.len(), 1);
    let message_id = api::graphql::ids::encode_id(api::graphql::ids::NodeType::Message, stored[0]);
    assert_eq!(
        answer.json,
        json!({
            "message_id": message_id.as_str(), "conversation_id": null,
            "conversation_created": false, "duplicate": false, "assignment_error": reason,
        })
    );
    let again = app.post_json("/api/webhooks/sms", &hook).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.text);
    assert_eq!(again.json["duplicate"], true);
    assert_eq!(again.json["message_id"], answer.json["message_id"]);

    let list = app
        .data(
            "{ unassignedMessages(first: 10) { totalCount nodes { id assignmentError from } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        list["unassignedMessages"],
        json!({ "totalCount": 1, "nodes": [{
            "id": answer.json["message_id"], "assignmentError": reason, "from": "+1 555 0100 99999",
        }] })
    );
    assert_eq!(t.count("messages").await, 1);
    assert_eq!(t.count("conversations").await, 0);
    let list = get_ok(&app, "/api/conversations").await;
    assert_eq!(list["items"], json!([]));
}

async fn body_over_the_limit_answers_413(t: &TestDb) {
    let app = t.app(AppConfig {
        max_request_bytes: 1024,
        ..Default::default()
    });
    let mut payload = sms("+12016661234", json!("+18045551234"), "sms", "", 0);
    let base = payload.to_string().len();
    payload["body"] = json!("x".repeat(1024 - base));
    assert_eq!(payload.to_string().len(), 1024);
    post_ok(&app, "/api/messages/sms", &payload).await;
    payload["body"] = json!("x".repeat(1025 - base));
    // Streamed (no content-length): the handler reads to the limit and answers JSON.
    let answer = app.post_json("/api/messages/sms", &payload).await;
    assert_error(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        None,
        "the request body is over the limit of 1024 bytes",
    );
    // With a content-length over the limit the router's limit layer refuses it before any
    // handler runs, and the REST answer is JSON all the same.
    let text = payload.to_string();
    let answer = app
        .send(
            Request::post("/api/webhooks/email")
                .header("content-type", "application/json")
                .header("content-length", text.len())
                .body(Body::from(text))
                .unwrap(),
        )
        .await;
    assert_error(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        None,
        "the request body is over the limit of 1024 bytes",
    );
    assert_eq!(t.count("messages").await, 1);
}

async fn non_json_content_type_answers_415(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let payload = sms("+12016661234", json!("+18045551234"), "sms", "hi", 0).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = Request::post("/api/messages/sms");
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let answer = app
            .send(request.body(Body::from(payload.clone())).unwrap())
            .await;
        assert_error(
            &answer,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            None,
            "send the body as JSON, with content-type: application/json",
        );
    }
    let answer = app
        .send(
            Request::post("/api/messages/sms")
                .header("content-type", "application/json; charset=utf-8")
                .body(Body::from(payload))
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(t.count("messages").await, 1);
}

async fn unknown_conversation_answers_404(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let r = post_ok(
        &app,
        "/api/messages/sms",
        &sms("+12016661234", json!("+18045551234"), "sms", "hi", 0),
    )
    .await;
    // A well-formed id of no row ("Conversation:999"), a message's id, and junk.
    let unknown = "Q29udmVyc2F0aW9uOjk5OQ";
    for id in [unknown, r["message_id"].as_str().unwrap(), "nope"] {
        let answer = app.get(&format!("/api/conversations/{id}/messages")).await;
        assert_error(
            &answer,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            None,
            &format!("conversation {id} not found"),
        );
    }
    let answer = app.get("/api/no-such-endpoint").await;
    assert_error(
        &answer,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        None,
        "no such endpoint; see the README's REST ingress section",
    );
    let answer = app.get("/api/messages/sms").await;
    assert_error(
        &answer,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        None,
        "this endpoint does not take that method: messages are POSTed, pages are read with GET",
    );
}

async fn database_down_answers_503(t: &TestDb) {
    let db = service::db::connect(&t.url, &Default::default())
        .await
        .expect("a second pool");
    let app = TestApp {
        router: api::router(api::AppState::new(db.clone(), AppConfig::default())),
    };
    db.close().await.expect("closing the second pool");
    let payload = sms("+12016661234", json!("+18045551234"), "sms", "hi", 0);
    let answer = app.post_json("/api/messages/sms", &payload).await;
    assert_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        None,
        "the database is unavailable right now; retry shortly",
    );
    let mut hook = payload.clone();
    hook["messaging_provider_id"] = json!("down-1");
    let answer = app.post_json("/api/webhooks/sms", &hook).await;
    assert_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        None,
        "the database is unavailable right now; retry shortly",
    );
    let answer = app.get("/api/conversations").await;
    assert_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        None,
        "the database is unavailable right now; retry shortly",
    );
    // Nothing was half-written, and the shared pool still works.
    assert_eq!(t.count("messages").await, 0);
    post_ok(&t.app(AppConfig::default()), "/api/messages/sms", &payload).await;
}
