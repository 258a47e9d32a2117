//! Live updates (SPEC section 13): the per-conversation message sequence (gap-free and in
//! commit order under concurrency, assigned by record, backfill and the migration, checked
//! and repaired by verify), and the subscriptions that deliver and resume by it.

use chrono::{Duration, TimeZone, Utc};
use migration::{Migrator, MigratorTrait};
use parley_tests::{AppConfig, TestDb, on_both_engines};
use sea_orm::{ConnectionTrait, QueryTrait, Statement};
use serde_json::json;
use service::backfill::backfill_conversations;
use service::import::import_messages;
use service::record::{NewMessage, record_message};
use service::verify::verify_conversations;
use service::{Channel, Direction, Settings};

on_both_engines!(
    concurrent_writers_to_one_conversation_get_1_to_100_in_commit_order,
    backfill_numbers_attached_messages_after_the_live_ones,
    verify_finds_a_broken_sequence_and_repair_renumbers_it,
    the_migration_numbers_existing_messages_in_id_order,
    graphql_exposes_sequence_and_last_sequence,
);

/// A message between `a` and `b` (`a` sends when `outbound`), sent at minute `minute`.
fn sms(a: &str, b: &str, outbound: bool, body: &str, minute: i64) -> NewMessage {
    let (from, to, direction) = if outbound {
        (a, b, Direction::Outbound)
    } else {
        (b, a, Direction::Inbound)
    };
    NewMessage {
        channel: Channel::Sms,
        kind: None,
        direction,
        from: from.into(),
        to: vec![to.into()],
        body: body.into(),
        attachments: vec![],
        provider_message_id: None,
        sent_at: Some(
            Utc.with_ymd_and_hms(2024, 11, 1, 12, 0, 0).unwrap() + Duration::minutes(minute),
        ),
    }
}

/// `(message id, sequence)` of conversation `conversation_id`'s messages, in id order.
async fn numbering(t: &TestDb, conversation_id: i64) -> Vec<(i64, Option<i64>)> {
    t.db.query_all_raw(Statement::from_string(
        t.db.get_database_backend(),
        format!(
            "SELECT id, sequence FROM messages WHERE conversation_id = {conversation_id} ORDER BY id"
        ),
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.try_get::<i64>("", "id").unwrap(),
            r.try_get::<Option<i64>>("", "sequence").unwrap(),
        )
    })
    .collect()
}

async fn last_sequence(t: &TestDb, conversation_id: i64) -> i64 {
    t.db.query_one_raw(Statement::from_string(
        t.db.get_database_backend(),
        format!("SELECT last_sequence FROM conversations WHERE id = {conversation_id}"),
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get("", "last_sequence")
    .unwrap()
}

/// The conversation ids, in id order.
async fn conversation_ids(t: &TestDb) -> Vec<i64> {
    t.ids("conversations").await
}

/// Asserts that the messages of `conversation_id` are numbered exactly 1..n in id order
/// and that `last_sequence` is n; returns n.
async fn assert_numbered_in_id_order(t: &TestDb, conversation_id: i64) -> i64 {
    let rows = numbering(t, conversation_id).await;
    let sequences: Vec<Option<i64>> = rows.iter().map(|r| r.1).collect();
    let expected: Vec<Option<i64>> = (1..=rows.len() as i64).map(Some).collect();
    assert_eq!(
        sequences, expected,
        "conversation {conversation_id}: {rows:?}"
    );
    assert_eq!(last_sequence(t, conversation_id).await, rows.len() as i64);
    rows.len() as i64
}

async fn concurrent_writers_to_one_conversation_get_1_to_100_in_commit_order(t: &TestDb) {
    let s = Settings::default();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let db = t.db.clone();
            // Every spelling lands in one conversation; half of them replies.
            let m = sms(
                ["+12016661234", "(201) 666-1234", "2016661234"][i % 3],
                "+18045551234",
                i % 2 == 0,
                &format!("m{i}"),
                (i % 7) as i64,
            );
            tokio::spawn(async move { record_message(&db, &s, m).await })
        })
        .collect();
    let mut answered = Vec::new();
    for task in tasks {
        let r = task.await.unwrap().expect("every writer succeeds");
        let c = r.conversation.expect("assigned");
        // The answer carries the message's number and the conversation as of its commit.
        assert_eq!(c.last_sequence, r.message.sequence.unwrap());
        answered.push(r.message.sequence.unwrap());
    }
    answered.sort_unstable();
    assert_eq!(answered, (1..=100).collect::<Vec<i64>>());
    let ids = conversation_ids(t).await;
    assert_eq!(ids.len(), 1);
    // Ids are taken under the row lock too, so id order is the order numbers were given.
    assert_eq!(assert_numbered_in_id_order(t, ids[0]).await, 100);
    let report = verify_conversations(&t.db, &s, false, 100, |_| {})
        .await
        .unwrap();
    assert_eq!(report.drifts, vec![]);
}

async fn backfill_numbers_attached_messages_after_the_live_ones(t: &TestDb) {
    let s = Settings::default();
    // Legacy rows (unassigned, no sequence) for two pairs, and live messages for one.
    let lines: Vec<(u64, String)> = (0..30u64)
        .map(|i| {
            let contact = if i % 2 == 0 {
                "+18045550001"
            } else {
                "+18045550002"
            };
            let line = json!({ "channel": "SMS", "direction": "OUTBOUND",
                "from": "+12016661234", "to": [contact], "body": format!("legacy {i}"),
                "providerMessageId": format!("legacy-{i}") });
            (i + 1, line.to_string())
        })
        .collect();
    let imported = import_messages(&t.db, &s, lines, true, 7, |_| {})
        .await
        .unwrap();
    assert_eq!(imported.imported, 30);
    assert_eq!(t.count("messages WHERE sequence IS NOT NULL").await, 0);
    for i in 0..3 {
        let r = record_message(
            &t.db,
            &s,
            sms(
                "+12016661234",
                "+18045550001",
                true,
                &format!("live {i}"),
                i,
            ),
        )
        .await
        .unwrap();
        assert_eq!(r.message.sequence, Some(i + 1));
    }
    // Small batches: one conversation's legacy messages span several of them.
    let report = backfill_conversations(&t.db, &s, 4, false, |_| {})
        .await
        .unwrap();
    assert_eq!(report.attached, 30);
    let ids = conversation_ids(t).await;
    assert_eq!(ids.len(), 2);
    // The live messages keep 1..3 and the attached ones follow, in id order.
    let first = numbering(t, ids[0]).await;
    let sequences: Vec<i64> = first.iter().map(|r| r.1.unwrap()).collect();
    let mut live_then_legacy: Vec<(i64, i64)> = first.iter().map(|r| (r.1.unwrap(), r.0)).collect();
    live_then_legacy.sort_unstable();
    assert_eq!(
        live_then_legacy[..3]
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let legacy_ids: Vec<i64> = live_then_legacy[3..].iter().map(|r| r.1).collect();
    let mut sorted_ids = legacy_ids.clone();
    sorted_ids.sort_unstable();
    assert_eq!(
        legacy_ids, sorted_ids,
        "attached messages are numbered in id order"
    );
    let mut sorted = sequences.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=18).collect::<Vec<i64>>());
    assert_eq!(last_sequence(t, ids[0]).await, 18);
    assert_eq!(assert_numbered_in_id_order(t, ids[1]).await, 15);
    // A live message after the backfill takes the next number.
    let next = record_message(
        &t.db,
        &s,
        sms("+12016661234", "+18045550001", false, "after", 9),
    )
    .await
    .unwrap();
    assert_eq!(next.message.sequence, Some(19));
    let rerun = backfill_conversations(&t.db, &s, 4, false, |_| {})
        .await
        .unwrap();
    assert_eq!(rerun.attached, 0);
    let verify = verify_conversations(&t.db, &s, false, 100, |_| {})
        .await
        .unwrap();
    assert_eq!(verify.drifts, vec![]);
}

async fn verify_finds_a_broken_sequence_and_repair_renumbers_it(t: &TestDb) {
    let s = Settings::default();
    for (pair, n) in [
        ("+18045550001", 5),
        ("+18045550002", 4),
        ("+18045550003", 3),
    ] {
        for i in 0..n {
            record_message(&t.db, &s, sms("+12016661234", pair, i % 2 == 0, "x", i))
                .await
                .unwrap();
        }
    }
    let ids = conversation_ids(t).await;
    let clean = verify_conversations(&t.db, &s, false, 2, |_| {})
        .await
        .unwrap();
    assert_eq!(clean.drifts, vec![]);
    let second = numbering(t, ids[1]).await;
    for sql in [
        // A gap: the fourth message of the first conversation jumps to 9.
        format!(
            "UPDATE messages SET sequence = 9 WHERE conversation_id = {} AND sequence = 4",
            ids[0]
        ),
        // An unnumbered message in the second.
        format!(
            "UPDATE messages SET sequence = NULL WHERE id = {}",
            second[1].0
        ),
        // A stale last_sequence in the third.
        format!(
            "UPDATE conversations SET last_sequence = 7 WHERE id = {}",
            ids[2]
        ),
    ] {
        t.db.execute_unprepared(&sql).await.unwrap();
    }
    let found = verify_conversations(&t.db, &s, false, 2, |_| {})
        .await
        .unwrap();
    let mut drifts: Vec<_> = found
        .drifts
        .iter()
        .map(|d| {
            (
                d.conversation_id,
                d.field,
                d.stored.clone(),
                d.actual.clone(),
            )
        })
        .collect();
    drifts.sort();
    assert_eq!(
        drifts,
        [
            (
                ids[0],
                "sequence",
                "5 numbered within 1..9".to_owned(),
                "1..5".to_owned()
            ),
            (
                ids[1],
                "sequence",
                "3 numbered within 1..4".to_owned(),
                "1..4".to_owned()
            ),
            (ids[2], "last_sequence", "7".to_owned(), "3".to_owned()),
        ]
    );
    let repaired = verify_conversations(&t.db, &s, true, 2, |_| {})
        .await
        .unwrap();
    assert_eq!(repaired.repaired, 3);
    let after = verify_conversations(&t.db, &s, false, 2, |_| {})
        .await
        .unwrap();
    assert_eq!(after.drifts, vec![]);
    // The first keeps the order of its numbers: the message moved to 9 stays last, as 5.
    let first: Vec<Option<i64>> = numbering(t, ids[0]).await.iter().map(|r| r.1).collect();
    assert_eq!(first, [Some(1), Some(2), Some(3), Some(5), Some(4)]);
    assert_eq!(last_sequence(t, ids[0]).await, 5);
    // The unnumbered one goes last; the others keep their order.
    let renumbered = numbering(t, ids[1]).await;
    assert_eq!(
        renumbered,
        [
            (second[0].0, Some(1)),
            (second[1].0, Some(4)),
            (second[2].0, Some(2)),
            (second[3].0, Some(3)),
        ]
    );
    assert_eq!(last_sequence(t, ids[1]).await, 4);
    assert_eq!(assert_numbered_in_id_order(t, ids[2]).await, 3);
    let next = record_message(&t.db, &s, sms("+12016661234", "+18045550003", true, "y", 9))
        .await
        .unwrap();
    assert_eq!(next.message.sequence, Some(4));
}

async fn the_migration_numbers_existing_messages_in_id_order(t: &TestDb) {
    let s = Settings::default();
    // Interleaved writes to two conversations, sent out of order.
    for i in 0..10i64 {
        let pair = if i % 3 == 0 {
            "+18045550001"
        } else {
            "+18045550002"
        };
        record_message(
            &t.db,
            &s,
            sms("+12016661234", pair, i % 2 == 0, "x", 10 - i),
        )
        .await
        .unwrap();
    }
    // Take the sequence migration back (the columns go; with the migrations after it) and
    // apply it again over the rows.
    let later = Migrator::migrations()
        .iter()
        .rev()
        .take_while(|m| m.name() != "m20261201_000001_message_sequence")
        .count();
    Migrator::down(&t.db, Some(later as u32 + 1)).await.unwrap();
    let pending = Migrator::get_pending_migrations(&t.db).await.unwrap();
    assert_eq!(pending.len(), later + 1);
    assert_eq!(pending[0].name(), "m20261201_000001_message_sequence");
    Migrator::up(&t.db, None).await.unwrap();
    let ids = conversation_ids(t).await;
    assert_eq!(assert_numbered_in_id_order(t, ids[0]).await, 4);
    assert_eq!(assert_numbered_in_id_order(t, ids[1]).await, 6);
    let next = record_message(
        &t.db,
        &s,
        sms("+12016661234", "+18045550002", true, "y", 20),
    )
    .await
    .unwrap();
    assert_eq!(next.message.sequence, Some(7));
    // The index refuses a second message with a number already given.
    let dup =
        t.db.execute_unprepared(&format!(
            "UPDATE messages SET sequence = 1 WHERE conversation_id = {} AND sequence = 2",
            ids[1]
        ))
        .await;
    assert!(dup.is_err(), "(conversation_id, sequence) is unique");
}

async fn graphql_exposes_sequence_and_last_sequence(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let record = r#"mutation R($input: RecordMessageInput!) {
        recordMessage(input: $input) { message { sequence } conversation { id lastSequence } } }"#;
    let mut conversation = None;
    for i in 1..=3 {
        let vars = json!({ "input": { "channel": "SMS", "direction": "OUTBOUND",
            "from": "+12016661234", "to": ["+18045551234"], "body": format!("m{i}") } });
        let data = app.data(record, vars).await;
        assert_eq!(data["recordMessage"]["message"]["sequence"], i);
        assert_eq!(data["recordMessage"]["conversation"]["lastSequence"], i);
        conversation = data["recordMessage"]["conversation"]["id"]
            .as_str()
            .map(str::to_owned);
    }
    let data = app
        .data(
            "query($id: ID!) { conversation(id: $id) { lastSequence messages(first: 10) { nodes { sequence body } } } }",
            json!({ "id": conversation }),
        )
        .await;
    assert_eq!(
        data["conversation"],
        json!({ "lastSequence": 3, "messages": { "nodes": [
            { "sequence": 1, "body": "m1" }, { "sequence": 2, "body": "m2" }, { "sequence": 3, "body": "m3" }
        ] } })
    );
    // An unassigned message has no place in a conversation: 0.
    let vars = json!({ "input": { "channel": "SMS", "direction": "INBOUND",
        "from": "garbage", "to": ["+18045551234"], "body": "odd" } });
    let data = app.data(record, vars).await;
    assert_eq!(data["recordMessage"]["message"]["sequence"], 0);
    assert_eq!(
        data["recordMessage"]["conversation"],
        serde_json::Value::Null
    );
}

// ---------------------------------------------------------------------------------------
// Subscriptions over WebSocket.

use std::time::Duration as StdDuration;

use api::http::limits::ConnLimits;
use futures::{SinkExt, StreamExt};
use parley_tests::{Engine, Server};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::auth::{ALICE, BOB, CAROL, claims, hs256, security};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Serves `state` on a free local port in this process (the real accept loop with
/// `limits`) and returns `127.0.0.1:PORT`.
async fn serve(state: api::AppState, limits: ConnLimits) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(api::http::serve::serve(
        listener,
        api::router(state),
        limits,
        std::future::pending(),
    ));
    addr
}

/// What a socket received next.
#[derive(Debug)]
enum Got {
    Json(Value),
    Closed(Option<u16>, String),
}

/// A GraphQL WebSocket client (graphql-transport-ws unless told otherwise).
struct Client {
    ws: Socket,
}

impl Client {
    async fn open(addr: &str, protocol: &str) -> Client {
        let mut request = format!("ws://{addr}/graphql/ws")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().unwrap());
        let (ws, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the upgrade is accepted");
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            protocol,
            "the server speaks the asked subprotocol"
        );
        Client { ws }
    }

    /// Opens a graphql-transport-ws connection and completes `connection_init` with
    /// `payload`.
    async fn connect(addr: &str, payload: Value) -> Client {
        let mut c = Client::open(addr, "graphql-transport-ws").await;
        c.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        match c.recv(StdDuration::from_secs(20)).await {
            Got::Json(v) if v["type"] == "connection_ack" => c,
            other => panic!("expected connection_ack, got {other:?}"),
        }
    }

    async fn send(&mut self, v: Value) {
        self.ws
            .send(WsMessage::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({ "id": id, "type": "subscribe",
            "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// The next text message, or the close; pings are answered while reading.
    async fn recv(&mut self, within: StdDuration) -> Got {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("nothing received within {within:?}"));
            match next {
                Some(Ok(WsMessage::Text(t))) => {
                    return Got::Json(serde_json::from_str(&t).unwrap());
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    return Got::Closed(
                        frame.as_ref().map(|f| u16::from(f.code)),
                        frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    );
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Got::Closed(None, e.to_string()),
                None => return Got::Closed(None, "ended".into()),
            }
        }
    }

    /// The next message, which must be JSON.
    async fn json(&mut self) -> Value {
        match self.recv(StdDuration::from_secs(30)).await {
            Got::Json(v) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The payloads of the next `n` `next` messages of subscription `id`.
    async fn next_n(&mut self, id: &str, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let v = self.json().await;
            assert_eq!(v["id"], id, "{v}");
            assert_eq!(v["type"], "next", "{v}");
            out.push(v["payload"].clone());
        }
        out
    }
}

/// The first error subscription `id` was refused with (a `next` carrying errors, then its
/// `complete`; or an `error` message).
async fn refusal(c: &mut Client, id: &str) -> Value {
    let v = c.json().await;
    assert_eq!(v["id"], id, "{v}");
    match v["type"].as_str() {
        Some("next") => {
            let err = v["payload"]["errors"][0].clone();
            assert!(!err.is_null(), "{v}");
            assert_eq!(c.json().await, json!({ "id": id, "type": "complete" }));
            err
        }
        Some("error") => v["payload"][0].clone(),
        _ => panic!("{v}"),
    }
}

const MESSAGES: &str = "subscription($c: ID, $after: Int) {
  messageRecorded(filter: {conversationId: $c}, afterSequence: $after) {
    sequence body conversation { id } } }";

/// The `sequence` of each `messageRecorded` payload.
fn sequences(payloads: &[Value]) -> Vec<i64> {
    payloads
        .iter()
        .map(|p| {
            p["data"]["messageRecorded"]["sequence"]
                .as_i64()
                .unwrap_or_else(|| panic!("{p}"))
        })
        .collect()
}

/// Records `body` from our line to `contact` and returns (conversation global id,
/// sequence).
async fn record_via(
    client: &reqwest::Client,
    base: &str,
    contact: &str,
    body: &str,
    token: Option<&str>,
) -> (String, i64) {
    let mut request = client.post(format!("{base}/graphql")).json(&json!({
        "query": "mutation($i: RecordMessageInput!) { recordMessage(input: $i) { message { sequence } conversation { id } } }",
        "variables": { "i": { "channel": "SMS", "direction": "OUTBOUND", "from": "+12016661234",
            "to": [contact], "body": body } }
    }));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let answer: Value = request.send().await.unwrap().json().await.unwrap();
    let r = &answer["data"]["recordMessage"];
    assert!(answer["errors"].is_null(), "{answer}");
    (
        r["conversation"]["id"].as_str().unwrap().to_owned(),
        r["message"]["sequence"].as_i64().unwrap(),
    )
}

on_both_engines!(
    resume_replays_then_follows_live_without_gap_or_duplicate,
    feeds_filter_by_channel_and_participant,
    limits_refuse_the_subscription_over_the_cap_and_close_silent_connections,
    a_subscriber_that_falls_behind_is_ended_with_its_last_sequence,
    thirty_subscribers_leave_room_for_queries,
    only_subscriptions_run_over_websocket_and_legacy_graphql_ws_works,
    subscribers_see_only_conversations_they_may_see,
    the_in_memory_visibility_rule_agrees_with_the_sql_one,
    catching_up_walks_the_sequence_index,
);

fn dev_state(t: &TestDb, live: api::config::LiveLimits) -> api::AppState {
    api::AppState::new(
        t.db.clone(),
        AppConfig {
            live,
            ..Default::default()
        },
    )
}

async fn resume_replays_then_follows_live_without_gap_or_duplicate(t: &TestDb) {
    let addr = serve(dev_state(t, Default::default()), ConnLimits::default()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let (conversation, _) = record_via(&http, &base, "+18045550001", "m1", None).await;
    for i in 2..=300 {
        record_via(&http, &base, "+18045550001", &format!("m{i}"), None).await;
    }
    // A writer keeps committing while the subscriber replays 290 stored messages (three
    // pages) and switches to live ones.
    let writer = {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move {
            for i in 301..=400 {
                record_via(&http, &base, "+18045550001", &format!("m{i}"), None).await;
            }
        })
    };
    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe("1", MESSAGES, json!({ "c": conversation, "after": 10 }))
        .await;
    let got = c.next_n("1", 390).await;
    writer.await.unwrap();
    assert_eq!(sequences(&got), (11..=400).collect::<Vec<i64>>());
    assert_eq!(got[0]["data"]["messageRecorded"]["body"], "m11");
    assert_eq!(got[389]["data"]["messageRecorded"]["body"], "m400");
    // Disconnect, miss some, resume after the last one received: exactly the rest.
    drop(c);
    for i in 401..=405 {
        record_via(&http, &base, "+18045550001", &format!("m{i}"), None).await;
    }
    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe("2", MESSAGES, json!({ "c": conversation, "after": 400 }))
        .await;
    let got = c.next_n("2", 5).await;
    assert_eq!(sequences(&got), [401, 402, 403, 404, 405]);
    record_via(&http, &base, "+18045550001", "m406", None).await;
    assert_eq!(sequences(&c.next_n("2", 1).await), [406]);
    // Resuming needs the conversation, and a sequence it has given.
    c.subscribe("3", MESSAGES, json!({ "after": 3 })).await;
    let refused = refusal(&mut c, "3").await;
    assert_eq!(refused["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(refused["extensions"]["field"], "afterSequence");
    c.subscribe("4", MESSAGES, json!({ "c": conversation, "after": 999 }))
        .await;
    let refused = refusal(&mut c, "4").await;
    assert_eq!(refused["extensions"]["field"], "afterSequence");
    c.subscribe("5", MESSAGES, json!({ "c": "bm90IGFuIGlk", "after": 0 }))
        .await;
    let refused = refusal(&mut c, "5").await;
    assert_eq!(refused["extensions"]["field"], "filter.conversationId");
}

/// Records marker messages to a conversation of `contact` until subscription `id` of `c`
/// delivers one: from then on the subscription is live (its markers are drained).
async fn wait_until_live(
    c: &mut Client,
    id: &str,
    http: &reqwest::Client,
    base: &str,
    contact: &str,
) {
    for attempt in 0..100 {
        record_via(http, base, contact, &format!("marker {attempt}"), None).await;
        if let Ok(Got::Json(v)) = tokio::time::timeout(
            StdDuration::from_millis(300),
            c.recv(StdDuration::from_secs(60)),
        )
        .await
        {
            assert_eq!(v["id"], id, "{v}");
            // Drain markers still on their way.
            while let Ok(Got::Json(_)) = tokio::time::timeout(
                StdDuration::from_millis(300),
                c.recv(StdDuration::from_secs(60)),
            )
            .await
            {}
            return;
        }
    }
    panic!("subscription {id} never went live");
}

async fn feeds_filter_by_channel_and_participant(t: &TestDb) {
    let addr = serve(dev_state(t, Default::default()), ConnLimits::default()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe(
        "p",
        "subscription { messageRecorded(filter: {participant: \"(804) 555-0009\"}) { sequence body conversation { participants } } }",
        json!({}),
    )
    .await;
    wait_until_live(&mut c, "p", &http, &base, "+18045550009").await;
    let mut other = Client::connect(&addr, json!({})).await;
    other
        .subscribe(
            "e",
            "subscription { conversationUpdated(filter: {channel: EMAIL}) { channel messageCount } }",
            json!({}),
        )
        .await;
    // SMS to another contact: neither feed; SMS to the participant: the first.
    record_via(&http, &base, "+18045550010", "not for p", None).await;
    let (_, seq) = record_via(&http, &base, "+18045550009", "for p", None).await;
    let got = c.next_n("p", 1).await;
    assert_eq!(got[0]["data"]["messageRecorded"]["body"], "for p");
    assert_eq!(got[0]["data"]["messageRecorded"]["sequence"], seq);
    assert_eq!(
        got[0]["data"]["messageRecorded"]["conversation"]["participants"],
        json!(["+12016661234", "+18045550009"])
    );
    // An email reaches the channel feed only.
    let email = http
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": "mutation { recordMessage(input: {channel: EMAIL, direction: OUTBOUND, from: \"us@example.com\", to: [\"them@example.com\"], body: \"hi\"}) { message { id } } }" }))
        .send()
        .await
        .unwrap();
    assert!(email.status().is_success());
    let updated = other.next_n("e", 1).await;
    assert_eq!(
        updated[0]["data"]["conversationUpdated"],
        json!({ "channel": "EMAIL", "messageCount": 1 })
    );
    assert!(
        tokio::time::timeout(
            StdDuration::from_millis(500),
            c.recv(StdDuration::from_secs(5))
        )
        .await
        .is_err(),
        "the participant feed received nothing else"
    );
    // A participant that is no address is refused, naming the filter field.
    c.subscribe(
        "bad",
        "subscription { messageRecorded(filter: {participant: \"not a number\"}) { sequence } }",
        json!({}),
    )
    .await;
    let refused = refusal(&mut c, "bad").await;
    assert_eq!(refused["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(refused["extensions"]["field"], "filter.participant");
}

async fn limits_refuse_the_subscription_over_the_cap_and_close_silent_connections(t: &TestDb) {
    let live = api::config::LiveLimits {
        max_subscriptions: 3,
        init_timeout: StdDuration::from_millis(500),
        keepalive: StdDuration::from_millis(300),
        ..Default::default()
    };
    let addr = serve(dev_state(t, live), ConnLimits::default()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let (conversation, _) = record_via(&http, &base, "+18045550001", "m1", None).await;
    let mut c = Client::connect(&addr, json!({})).await;
    for id in ["a", "b", "c"] {
        c.subscribe(id, MESSAGES, json!({ "c": conversation, "after": 0 }))
            .await;
        assert_eq!(sequences(&c.next_n(id, 1).await), [1]);
    }
    c.subscribe("d", MESSAGES, json!({ "c": conversation, "after": 0 }))
        .await;
    let refused = refusal(&mut c, "d").await;
    assert_eq!(refused["extensions"]["code"], "TOO_MANY_SUBSCRIPTIONS");
    // Completing one frees its slot.
    c.send(json!({ "id": "a", "type": "complete" })).await;
    c.subscribe("e", MESSAGES, json!({ "c": conversation, "after": 0 }))
        .await;
    loop {
        let v = c.json().await;
        if v["id"] == "e" {
            assert_eq!(v["type"], "next", "{v}");
            break;
        }
    }
    // Reading (and so answering pings) keeps a connection open past many intervals.
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    record_via(&http, &base, "+18045550001", "m2", None).await;
    let mut seen = 0;
    while seen < 3 {
        let v = c.json().await;
        assert_eq!(
            v["payload"]["data"]["messageRecorded"]["sequence"], 2,
            "{v}"
        );
        seen += 1;
    }
    // No connection_init in time: closed with 4408.
    let mut late = Client::open(&addr, "graphql-transport-ws").await;
    match late.recv(StdDuration::from_secs(10)).await {
        Got::Closed(code, _) => assert_eq!(code, Some(4408)),
        other => panic!("{other:?}"),
    }
    // A client that stops reading (and so answering pings) is closed within two intervals.
    let mut silent = Client::connect(&addr, json!({})).await;
    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    let mut closed = None;
    for _ in 0..10 {
        if let Got::Closed(code, reason) = silent.recv(StdDuration::from_secs(5)).await {
            closed = Some((code, reason));
            break;
        }
    }
    let (code, reason) = closed.expect("closed");
    assert!(code == Some(1001) || code.is_none(), "{code:?} {reason}");
}

async fn a_subscriber_that_falls_behind_is_ended_with_its_last_sequence(t: &TestDb) {
    let live = api::config::LiveLimits {
        buffer: 4,
        keepalive: StdDuration::from_secs(120),
        ..Default::default()
    };
    let addr = serve(dev_state(t, live), ConnLimits::default()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let (conversation, _) = record_via(&http, &base, "+18045550001", "m1", None).await;
    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe("1", MESSAGES, json!({ "c": conversation, "after": 1 }))
        .await;
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    // Big messages while the client does not read: the socket fills, the subscription
    // stops taking changes, and falls more than 4 behind.
    let body = "x".repeat(500_000);
    for _ in 0..40 {
        record_via(&http, &base, "+18045550001", &body, None).await;
    }
    let mut delivered = Vec::new();
    let ended = loop {
        let v = c.json().await;
        match v["type"].as_str() {
            Some("next") if v["payload"]["errors"].is_null() => delivered.push(
                v["payload"]["data"]["messageRecorded"]["sequence"]
                    .as_i64()
                    .unwrap(),
            ),
            Some("next") => break v["payload"]["errors"][0].clone(),
            _ => panic!("{v}"),
        }
    };
    assert_eq!(
        ended["extensions"]["code"], "SUBSCRIPTION_LAGGED",
        "{ended}"
    );
    let last = ended["extensions"]["lastSequence"].as_i64().unwrap();
    let expected: Vec<i64> = (2..=last).collect();
    assert_eq!(
        delivered, expected,
        "what was delivered is gap-free up to lastSequence"
    );
    assert!(last < 41, "it did fall behind: {last}");
    assert_eq!(c.json().await, json!({ "id": "1", "type": "complete" }));
    // Resuming from lastSequence gives the rest.
    c.subscribe("2", MESSAGES, json!({ "c": conversation, "after": last }))
        .await;
    let rest = c.next_n("2", (41 - last) as usize).await;
    assert_eq!(sequences(&rest), (last + 1..=41).collect::<Vec<i64>>());
}

async fn thirty_subscribers_leave_room_for_queries(t: &TestDb) {
    let limits = ConnLimits {
        max_in_flight: 16,
        ..Default::default()
    };
    let addr = serve(dev_state(t, Default::default()), limits).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let (conversation, _) = record_via(&http, &base, "+18045550001", "m1", None).await;
    let mut clients = Vec::new();
    for _ in 0..30 {
        let mut c = Client::connect(&addr, json!({})).await;
        c.subscribe("s", MESSAGES, json!({ "c": conversation, "after": 0 }))
            .await;
        assert_eq!(sequences(&c.next_n("s", 1).await), [1]);
        clients.push(c);
    }
    let queries: Vec<_> = (0..40)
        .map(|_| {
            let (http, base) = (http.clone(), base.clone());
            tokio::spawn(async move {
                http.post(format!("{base}/graphql"))
                    .json(&json!({ "query": "{ conversations(first: 5) { totalCount } }" }))
                    .timeout(StdDuration::from_secs(20))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    for q in queries {
        assert_eq!(q.await.unwrap().expect("answered"), 200);
    }
    record_via(&http, &base, "+18045550001", "m2", None).await;
    for c in &mut clients {
        assert_eq!(sequences(&c.next_n("s", 1).await), [2]);
    }
}

async fn only_subscriptions_run_over_websocket_and_legacy_graphql_ws_works(t: &TestDb) {
    let config = AppConfig {
        graphql: api::config::GraphqlLimits {
            max_complexity: 100,
            ..Default::default()
        },
        ..Default::default()
    };
    let addr = serve(
        api::AppState::new(t.db.clone(), config),
        ConnLimits::default(),
    )
    .await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let (conversation, _) = record_via(&http, &base, "+18045550001", "m1", None).await;
    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe("q", "{ conversations(first: 1) { totalCount } }", json!({}))
        .await;
    let refused = refusal(&mut c, "q").await;
    assert_eq!(refused["extensions"]["code"], "BAD_REQUEST");
    c.subscribe("x", "subscription { messageRecorded { nope } }", json!({}))
        .await;
    let invalid = refusal(&mut c, "x").await;
    assert_eq!(
        invalid["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
        "{invalid}"
    );
    // Priced as over HTTP, per event: 100 bodies of a page under each message is over a
    // budget of 100.
    c.subscribe(
        "big",
        "subscription { messageRecorded { conversation { messages(first: 100) { nodes { body } } } } }",
        json!({}),
    )
    .await;
    let refused = refusal(&mut c, "big").await;
    assert_eq!(
        refused["extensions"]["code"], "QUERY_TOO_COMPLEX",
        "{refused}"
    );
    // The legacy subprotocol (subscriptions-transport-ws) works too.
    let mut legacy = Client::open(&addr, "graphql-ws").await;
    legacy
        .send(json!({ "type": "connection_init", "payload": {} }))
        .await;
    assert_eq!(legacy.json().await["type"], "connection_ack");
    legacy
        .send(json!({ "id": "1", "type": "start",
            "payload": { "query": MESSAGES, "variables": { "c": conversation, "after": 0 } } }))
        .await;
    let data = legacy.json().await;
    assert_eq!(data["type"], "data", "{data}");
    assert_eq!(data["payload"]["data"]["messageRecorded"]["sequence"], 1);
}

/// Alice and Bob each see the conversations of their own inbox; Carol's conversation
/// with Alice is Alice's. A subscriber never receives another's.
async fn subscribers_see_only_conversations_they_may_see(t: &TestDb) {
    let config = AppConfig {
        graphql: api::config::GraphqlLimits {
            introspection: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let state = api::AppState::secured(
        t.db.clone(),
        config,
        security(api::auth::limit::RateLimits::off()),
    );
    let addr = serve(state, ConnLimits::default()).await;
    let alice = hs256(&claims(
        "alice",
        "conversations:read messages:write",
        &[ALICE],
    ));
    let bob = hs256(&claims("bob", "conversations:read messages:write", &[BOB]));
    let admin = hs256(&claims("ops", "admin", &["*"]));
    let s = Settings::default();
    let with_alice = record_message(&t.db, &s, sms(ALICE, CAROL, true, "a1", 0))
        .await
        .unwrap();
    let alice_conversation = api::graphql::ids::encode_id(
        api::graphql::ids::NodeType::Conversation,
        with_alice.conversation.unwrap().id,
    );
    // No token, or a bad one: closed with 4403.
    for payload in [json!({}), json!({ "Authorization": "Bearer nonsense" })] {
        let mut c = Client::open(&addr, "graphql-transport-ws").await;
        c.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        match c.recv(StdDuration::from_secs(10)).await {
            Got::Closed(code, reason) => {
                assert_eq!(code, Some(4403), "{reason}");
                assert!(reason.starts_with("UNAUTHENTICATED"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    let mut a = Client::connect(&addr, json!({ "Authorization": format!("Bearer {alice}") })).await;
    let mut b = Client::connect(&addr, json!({ "authToken": bob })).await;
    let feed = "subscription { messageRecorded { body } }";
    a.subscribe("all", feed, json!({})).await;
    b.subscribe("all", feed, json!({})).await;
    // Bob may not follow Alice's conversation: it answers as an unknown one.
    b.subscribe(
        "x",
        MESSAGES,
        json!({ "c": alice_conversation, "after": 0 }),
    )
    .await;
    let refused = refusal(&mut b, "x").await;
    assert_eq!(refused["extensions"]["code"], "NOT_FOUND");
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    // Through the API with the admin token: one message to each inbox.
    for (to, body) in [(ALICE, "to alice"), (BOB, "to bob"), (CAROL, "to carol")] {
        let answer: Value = http
            .post(format!("{base}/graphql"))
            .bearer_auth(&admin)
            .json(&json!({
                "query": "mutation($i: RecordMessageInput!) { recordMessage(input: $i) { message { id } } }",
                "variables": { "i": { "channel": "SMS", "direction": "INBOUND", "from": "+18045550042",
                    "to": [to], "body": body } }
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(answer["errors"].is_null(), "{answer}");
    }
    let got_a = a.next_n("all", 1).await;
    assert_eq!(got_a[0]["data"]["messageRecorded"]["body"], "to alice");
    let got_b = b.next_n("all", 1).await;
    assert_eq!(got_b[0]["data"]["messageRecorded"]["body"], "to bob");
    for c in [&mut a, &mut b] {
        assert!(
            tokio::time::timeout(
                StdDuration::from_millis(500),
                c.recv(StdDuration::from_secs(5))
            )
            .await
            .is_err(),
            "nothing else: not Carol's, not the other's"
        );
    }
}

/// Two `parley serve` processes on one PostgreSQL: a subscriber on A receives what is
/// recorded through B, and 100 concurrent writers through both give it 1..100 in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_deliver_across_and_resume_exactly() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    let a = Server::start(&t.url, &[], &[]).await;
    let b = Server::start(&t.url, &[], &[]).await;
    let http = reqwest::Client::new();
    let (conversation, first) = record_via(&http, &b.base, "+18045550001", "w0", None).await;
    assert_eq!(first, 1);
    let addr_a = a.base.trim_start_matches("http://").to_owned();
    let mut c = Client::connect(&addr_a, json!({})).await;
    c.subscribe("1", MESSAGES, json!({ "c": conversation, "after": 0 }))
        .await;
    assert_eq!(sequences(&c.next_n("1", 1).await), [1]);
    let writers: Vec<_> = (1..100)
        .map(|i| {
            let http = http.clone();
            let base = if i % 2 == 0 {
                a.base.clone()
            } else {
                b.base.clone()
            };
            tokio::spawn(async move {
                record_via(&http, &base, "+18045550001", &format!("w{i}"), None).await
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let got = c.next_n("1", 99).await;
    assert_eq!(sequences(&got), (2..=100).collect::<Vec<i64>>());
    drop(c);
    drop((a, b));
    t.cleanup().await;
}

/// The listener's connection killed (`pg_terminate_backend`): it reconnects by itself, and
/// what was committed meanwhile reaches the subscriber, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_listener_reconnects_and_nothing_is_lost() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    let addr = serve(dev_state(&t, Default::default()), ConnLimits::default()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let (conversation, _) = record_via(&http, &base, "+18045550001", "m1", None).await;
    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe("1", MESSAGES, json!({ "c": conversation, "after": 0 }))
        .await;
    assert_eq!(sequences(&c.next_n("1", 1).await), [1]);
    let killed =
        t.db.query_all_raw(Statement::from_string(
            t.db.get_database_backend(),
            "SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity \
             WHERE application_name = 'parley-live' AND datname = current_database()",
        ))
        .await
        .unwrap();
    assert_eq!(killed.len(), 1, "exactly one listening connection");
    for i in 2..=20 {
        record_via(&http, &base, "+18045550001", &format!("m{i}"), None).await;
    }
    let got = c.next_n("1", 19).await;
    assert_eq!(sequences(&got), (2..=20).collect::<Vec<i64>>());
    drop(c);
    t.cleanup().await;
}

/// The trap of hasura/graphql-engine#8632: a message whose transaction began first (lower
/// id) commits after a later one. A feed delivers both, and resuming one conversation by
/// its own sequence finds the late one, where "ids after the last one seen" would skip it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_committing_late_is_not_skipped() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    assert_eq!(t.engine, Engine::Postgres);
    let s = Settings::default();
    let x = record_message(
        &t.db,
        &s,
        sms("+12016661234", "+18045550001", true, "x1", 0),
    )
    .await
    .unwrap();
    // Messages with body 'slow' hold their transaction open for a second after taking
    // their id.
    for sql in [
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF NEW.body = 'slow' THEN PERFORM pg_sleep(1.5); END IF; RETURN NEW; END $$",
        "CREATE TRIGGER slow AFTER INSERT ON messages FOR EACH ROW EXECUTE FUNCTION slow()",
    ] {
        t.db.execute_unprepared(sql).await.unwrap();
    }
    let addr = serve(dev_state(&t, Default::default()), ConnLimits::default()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let mut feed = Client::connect(&addr, json!({})).await;
    feed.subscribe(
        "feed",
        "subscription { messageRecorded { body sequence conversation { id } } }",
        json!({}),
    )
    .await;
    wait_until_live(&mut feed, "feed", &http, &base, "+18045550099").await;
    let late = {
        let db = t.db.clone();
        tokio::spawn(async move {
            record_message(
                &db,
                &s,
                sms("+12016661234", "+18045550001", false, "slow", 1),
            )
            .await
        })
    };
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    let early = record_message(
        &t.db,
        &s,
        sms("+12016661234", "+18045550002", true, "y1", 2),
    )
    .await
    .unwrap();
    let late = late.await.unwrap().unwrap();
    assert!(
        late.message.id < early.message.id,
        "the slow message took the lower id"
    );
    let got = feed.next_n("feed", 2).await;
    let bodies: Vec<&Value> = got
        .iter()
        .map(|p| &p["data"]["messageRecorded"]["body"])
        .collect();
    assert_eq!(
        bodies,
        [&json!("y1"), &json!("slow")],
        "delivered in commit order, both"
    );
    // A client that saw y1 (the highest id) and x's first message resumes x after its
    // sequence 1: it gets the late one.
    let conversation = api::graphql::ids::encode_id(
        api::graphql::ids::NodeType::Conversation,
        x.conversation.unwrap().id,
    );
    let mut resumed = Client::connect(&addr, json!({})).await;
    resumed
        .subscribe("x", MESSAGES, json!({ "c": conversation, "after": 1 }))
        .await;
    let got = resumed.next_n("x", 1).await;
    assert_eq!(got[0]["data"]["messageRecorded"]["body"], "slow");
    assert_eq!(got[0]["data"]["messageRecorded"]["sequence"], 2);
    t.cleanup().await;
}

/// An upgraded connection keeps its place under --max-connections, and shutdown closes it
/// (1001) and then ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websockets_count_as_connections_and_close_on_shutdown() {
    let t = TestDb::sqlite().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = ConnLimits {
        max_connections: 2,
        ..Default::default()
    };
    let server = tokio::spawn(api::http::serve::serve(
        listener,
        api::router(dev_state(&t, Default::default())),
        limits,
        async move {
            let _ = stopped.await;
        },
    ));
    let mut first = Client::connect(&addr, json!({})).await;
    let mut second = Client::connect(&addr, json!({})).await;
    // Both upgraded connections are still counted: a third connection is refused.
    let third = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(StdDuration::from_secs(5))
        .send()
        .await;
    match third {
        Ok(r) => assert_eq!(r.status().as_u16(), 503),
        Err(e) => assert!(!e.is_timeout(), "{e}"),
    }
    stop.send(()).unwrap();
    for c in [&mut first, &mut second] {
        match c.recv(StdDuration::from_secs(10)).await {
            Got::Closed(code, reason) => assert_eq!(code, Some(1001), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    tokio::time::timeout(StdDuration::from_secs(10), server)
        .await
        .expect("the server ended after its WebSocket connections")
        .unwrap()
        .unwrap();
    t.cleanup().await;
}

/// `Viewer::sees` (what feeds filter loaded rows with) and `Viewer::visible` (what every
/// read filters rows with in SQL) are one rule: they agree on every conversation for
/// every kind of viewer.
async fn the_in_memory_visibility_rule_agrees_with_the_sql_one(t: &TestDb) {
    let s = Settings::default();
    for (a, b) in [
        ("+12025550101", "+12025550199"),
        ("+12025550102", "+12025550199"),
        ("+12025550101", "+12025550102"),
        ("+12025550103", "+12025550104"),
    ] {
        record_message(&t.db, &s, sms(a, b, true, "x", 0))
            .await
            .unwrap();
    }
    let viewers = [
        service::Viewer::Everyone,
        service::Viewer::Inboxes(vec![].into()),
        service::Viewer::Inboxes(vec!["+12025550101".to_owned()].into()),
        service::Viewer::Inboxes(vec!["+12025550102".to_owned(), "+12025550199".to_owned()].into()),
    ];
    for id in conversation_ids(t).await {
        let c = service::query::find_conversation(&t.db, &service::Viewer::Everyone, id)
            .await
            .unwrap()
            .unwrap();
        for viewer in &viewers {
            let by_sql = service::query::find_conversation(&t.db, viewer, id)
                .await
                .unwrap()
                .is_some();
            assert_eq!(viewer.sees(&c.participants_key), by_sql, "{viewer:?} {c:?}");
        }
    }
}

/// What a resuming subscriber reads (the messages of one conversation after a sequence) is
/// one range scan of the `(conversation_id, sequence)` index.
async fn catching_up_walks_the_sequence_index(t: &TestDb) {
    crate::plans::seed(&t.db, 2000, 10).await;
    crate::plans::analyze(t).await;
    for viewer in [
        service::Viewer::Everyone,
        service::Viewer::Inboxes(vec!["+12025550101".to_owned()].into()),
    ] {
        let select = service::query::messages_after_sequence_page(&viewer, 7, 1, 100);
        let statement =
            service::query::page_statement(t.db.get_database_backend(), select.as_query());
        let plan = crate::plans::plan(t, statement).await;
        crate::plans::assert_walks(t, &plan, "messages_conversation_id_sequence");
    }
}

// ---------------------------------------------------------------------------------------
// Resuming a feed over many conversations (`messageFeed` and its cursors).

on_both_engines!(
    a_feed_cursor_finds_a_message_that_commits_after_a_later_one,
    a_feed_resumes_from_its_cursor_after_many_messages,
    a_bad_feed_cursor_is_refused_on_after,
);

const FEED: &str = "subscription($after: String, $c: ID) {
  messageFeed(filter: {conversationId: $c}, after: $after) {
    cursor message { id body sequence conversation { id } } } }";

/// `(body, cursor)` of each `messageFeed` payload.
fn feed_events(payloads: &[Value]) -> Vec<(String, String)> {
    payloads
        .iter()
        .map(|p| {
            let e = &p["data"]["messageFeed"];
            (
                e["message"]["body"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{p}"))
                    .to_owned(),
                e["cursor"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{p}"))
                    .to_owned(),
            )
        })
        .collect()
}

/// How many ids a feed cursor lists as delivered since its horizon.
fn delivered_ids(cursor: &str) -> usize {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    let ids = text.split('/').nth(3).unwrap();
    ids.split(',').filter(|id| !id.is_empty()).count()
}

/// Asserts that subscription `id` delivers nothing more for a moment.
async fn assert_quiet(c: &mut Client, id: &str) {
    if let Ok(got) = tokio::time::timeout(
        StdDuration::from_millis(700),
        c.recv(StdDuration::from_secs(5)),
    )
    .await
    {
        panic!("subscription {id} delivered more: {got:?}");
    }
}

/// Opens a message in `txn` (already holding the write lock) as the record path would
/// store it, without announcing it: copies message `from` into the same conversation
/// with the next sequence. Returns its id.
async fn insert_unannounced_copy(txn: &impl ConnectionTrait, from: i64, body: &str) -> i64 {
    let backend = txn.get_database_backend();
    let columns: Vec<String> = txn
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT name FROM pragma_table_info('messages')",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String>("", "name").unwrap())
        .filter(|n| {
            !matches!(
                n.as_str(),
                "id" | "sequence" | "body" | "provider_message_id"
            )
        })
        .collect();
    let list = columns.join(", ");
    let row = txn
        .query_one_raw(Statement::from_string(
            backend,
            format!(
                "INSERT INTO messages ({list}, body, sequence) \
                 SELECT {list}, '{body}', (SELECT last_sequence + 1 FROM conversations c \
                 WHERE c.id = messages.conversation_id) FROM messages WHERE id = {from} \
                 RETURNING id"
            ),
        ))
        .await
        .unwrap()
        .unwrap();
    let id: i64 = row.try_get("", "id").unwrap();
    txn.execute_unprepared(&format!(
        "UPDATE conversations SET last_sequence = last_sequence + 1, \
         message_count = message_count + 1 \
         WHERE id = (SELECT conversation_id FROM messages WHERE id = {from})"
    ))
    .await
    .unwrap();
    id
}

/// The trap of hasura/graphql-engine#8632, over all conversations: message A takes its id
/// first, message B after it, and B commits first. A subscriber receives B with a cursor
/// and disconnects before A commits; resuming from that cursor delivers A, and nothing
/// twice. On PostgreSQL A's transaction is held open (a trigger sleeps in it) while B
/// commits. On SQLite that order cannot happen, which is what makes its cursor (the last
/// id) exact: B's writer waits for A's transaction, shown here; A is committed without
/// being announced, so only the resume can deliver it.
async fn a_feed_cursor_finds_a_message_that_commits_after_a_later_one(t: &TestDb) {
    let s = Settings::default();
    let x = record_message(
        &t.db,
        &s,
        sms("+12016661234", "+18045550001", true, "x1", 0),
    )
    .await
    .unwrap();
    if t.engine == Engine::Postgres {
        for sql in [
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN IF NEW.body = 'slow' THEN PERFORM pg_sleep(3); END IF; RETURN NEW; END $$",
            "CREATE TRIGGER slow AFTER INSERT ON messages FOR EACH ROW EXECUTE FUNCTION slow()",
        ] {
            t.db.execute_unprepared(sql).await.unwrap();
        }
    }
    let addr = serve(dev_state(t, Default::default()), ConnLimits::default()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let mut feed = Client::connect(&addr, json!({})).await;
    feed.subscribe("feed", FEED, json!({})).await;
    wait_until_live(&mut feed, "feed", &http, &base, "+18045550099").await;

    let (a_id, b_id) = if t.engine == Engine::Postgres {
        let late = {
            let (db, s) = (t.db.clone(), s);
            tokio::spawn(async move {
                record_message(
                    &db,
                    &s,
                    sms("+12016661234", "+18045550001", false, "slow", 1),
                )
                .await
            })
        };
        tokio::time::sleep(StdDuration::from_millis(400)).await;
        let early = record_message(&t.db, &s, sms("+12016661234", "+18045550002", true, "B", 2))
            .await
            .unwrap();
        // B is committed and delivered while A's transaction is still open.
        let got = feed_events(&feed.next_n("feed", 1).await);
        assert_eq!(got[0].0, "B");
        assert!(!late.is_finished(), "A is still open when B is delivered");
        // The listener announces a snapshot in which A is in progress and B committed;
        // the next message's cursor starts from it (B is no longer listed): A is found
        // by its transaction, which that snapshot did not see, not by any number.
        tokio::time::sleep(StdDuration::from_millis(700)).await;
        record_message(
            &t.db,
            &s,
            sms("+12016661234", "+18045550004", true, "B2", 3),
        )
        .await
        .unwrap();
        let got = feed_events(&feed.next_n("feed", 1).await);
        assert_eq!(got[0].0, "B2");
        assert!(!late.is_finished(), "A is still open when B2 is delivered");
        assert!(delivered_ids(&got[0].1) <= 1, "the horizon moved past B");
        let cursor = got[0].1.clone();
        drop(feed);
        let late = late.await.unwrap().unwrap();
        let (a, b) = (late.message.id, early.message.id);
        assert!(a < b, "A took the lower id");
        resume_finds_late(t, &addr, &http, &base, &cursor).await;
        (a, b)
    } else {
        let txn = service::db::begin_write(&t.db).await.unwrap();
        let a = insert_unannounced_copy(&*txn, x.message.id, "slow").await;
        let writer = {
            let (db, s) = (t.db.clone(), s);
            tokio::spawn(async move {
                record_message(&db, &s, sms("+12016661234", "+18045550002", true, "B", 2)).await
            })
        };
        tokio::time::sleep(StdDuration::from_millis(500)).await;
        assert!(
            !writer.is_finished(),
            "SQLite: a writer cannot commit while another write transaction is open"
        );
        txn.commit().await.unwrap();
        let b = writer.await.unwrap().unwrap().message.id;
        assert!(a < b, "ids are assigned in commit order");
        let got = feed_events(&feed.next_n("feed", 1).await);
        assert_eq!(got[0].0, "B");
        let cursor = got[0].1.clone();
        drop(feed);
        resume_finds_late(t, &addr, &http, &base, &cursor).await;
        (a, b)
    };
    // "Everything after the last id seen" would have skipped A.
    assert!(a_id < b_id);
    let _ = x;
}

/// Resumes a feed from `cursor` (given with B): A ("slow") comes, then only new messages.
async fn resume_finds_late(
    _t: &TestDb,
    addr: &str,
    http: &reqwest::Client,
    base: &str,
    cursor: &str,
) {
    let mut resumed = Client::connect(addr, json!({})).await;
    resumed
        .subscribe("r", FEED, json!({ "after": cursor }))
        .await;
    let got = feed_events(&resumed.next_n("r", 1).await);
    assert_eq!(got[0].0, "slow", "the late message is replayed");
    record_via(http, base, "+18045550003", "C", None).await;
    let got = feed_events(&resumed.next_n("r", 1).await);
    assert_eq!(
        got[0].0, "C",
        "then the live ones; B is not delivered twice"
    );
    assert_quiet(&mut resumed, "r").await;
}

/// Records `n` messages from 4 concurrent writers into 7 conversations; returns their
/// bodies.
async fn record_many(t: &TestDb, prefix: &str, n: usize) -> Vec<String> {
    let s = Settings::default();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (db, s) = (t.db.clone(), s);
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                let mut bodies = Vec::new();
                for i in (w..n).step_by(4) {
                    let contact = format!("+1804555{:04}", 100 + i % 7);
                    let body = format!("{prefix}{i}");
                    record_message(
                        &db,
                        &s,
                        sms("+12016661234", &contact, true, &body, i as i64),
                    )
                    .await
                    .unwrap();
                    bodies.push(body);
                }
                bodies
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in writers {
        all.extend(w.await.unwrap());
    }
    all.sort();
    all
}

/// Asserts that `payloads` are `expected` (as a set, each once) and in sequence order
/// within each conversation.
fn assert_exactly(payloads: &[Value], expected: &[String]) {
    let mut bodies: Vec<String> = feed_events(payloads).into_iter().map(|e| e.0).collect();
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    for p in payloads {
        let m = &p["data"]["messageFeed"]["message"];
        let c = m["conversation"]["id"].as_str().unwrap().to_owned();
        let seq = m["sequence"].as_i64().unwrap();
        if let Some(prev) = last.insert(c, seq) {
            assert_eq!(
                seq,
                prev + 1,
                "in sequence order within a conversation: {m}"
            );
        }
    }
    bodies.sort();
    assert_eq!(bodies, expected);
}

/// A feed over all conversations: 300 live messages (more than a position lists before
/// the feed reads a new horizon), then 600 recorded while disconnected are replayed
/// exactly from the last cursor; a resume from a cursor in the middle of that replay gets
/// exactly the rest; then live ones follow.
async fn a_feed_resumes_from_its_cursor_after_many_messages(t: &TestDb) {
    let addr = serve(dev_state(t, Default::default()), ConnLimits::default()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe("1", FEED, json!({})).await;
    wait_until_live(&mut c, "1", &http, &base, "+18045550099").await;
    let live = record_many(t, "live", 300).await;
    let got = c.next_n("1", 300).await;
    assert_exactly(&got, &live);
    let cursor = feed_events(&got).pop().unwrap().1;
    assert!(
        cursor.len() < 4000,
        "a position stays short: {}",
        cursor.len()
    );
    // A position lists the ids delivered since its horizon; the horizon moves on (on
    // PostgreSQL with the snapshots the listener announces every 250 ms, on SQLite every
    // 256 messages), so the list stays short.
    tokio::time::sleep(StdDuration::from_millis(800)).await;
    record_via(&http, &base, "+18045550003", "probe", None).await;
    let probe = feed_events(&c.next_n("1", 1).await).pop().unwrap();
    assert_eq!(probe.0, "probe");
    let listed = delivered_ids(&probe.1);
    if t.engine == Engine::Postgres {
        assert!(
            listed <= 1,
            "the listener's snapshot moved the horizon: {listed} ids"
        );
    } else {
        assert!(listed < 256, "{listed} ids");
    }
    let cursor = probe.1;
    drop(c);

    let missed = record_many(t, "missed", 600).await;
    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe("2", FEED, json!({ "after": cursor })).await;
    let first = c.next_n("2", 250).await;
    drop(c);
    let middle = feed_events(&first).pop().unwrap().1;
    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe("3", FEED, json!({ "after": middle })).await;
    let rest = c.next_n("3", 350).await;
    let mut both = first.clone();
    both.extend(rest.iter().cloned());
    assert_exactly(&both, &missed);
    record_via(&http, &base, "+18045550003", "after", None).await;
    assert_eq!(feed_events(&c.next_n("3", 1).await)[0].0, "after");
    assert_quiet(&mut c, "3").await;
    drop(c);

    // The whole replay again, from the first cursor: the same 600 and the live one.
    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe("4", FEED, json!({ "after": cursor })).await;
    let again = c.next_n("4", 601).await;
    let mut expected = missed.clone();
    expected.push("after".into());
    expected.sort();
    assert_exactly(&again, &expected);
    assert_quiet(&mut c, "4").await;

    // With a conversation filter, only its messages.
    let conversation = again[0]["data"]["messageFeed"]["message"]["conversation"]["id"].clone();
    let of_it = again
        .iter()
        .filter(|p| p["data"]["messageFeed"]["message"]["conversation"]["id"] == conversation)
        .count();
    c.subscribe("5", FEED, json!({ "after": cursor, "c": conversation }))
        .await;
    let got = c.next_n("5", of_it).await;
    assert!(
        got.iter()
            .all(|p| p["data"]["messageFeed"]["message"]["conversation"]["id"] == conversation)
    );
    assert_quiet(&mut c, "5").await;
}

async fn a_bad_feed_cursor_is_refused_on_after(t: &TestDb) {
    let addr = serve(dev_state(t, Default::default()), ConnLimits::default()).await;
    let mut c = Client::connect(&addr, json!({})).await;
    use base64::Engine as _;
    let encode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let other_engine = if t.engine == Engine::Postgres {
        encode("f1/s/10/")
    } else {
        encode("f1/p/10:12:11/")
    };
    for (i, bad) in [
        "not a cursor".to_owned(),
        encode("f1/p/12:10:/"),
        encode("f1/s/x/1,2"),
        other_engine,
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("bad{i}");
        c.subscribe(&id, FEED, json!({ "after": bad })).await;
        let refused = refusal(&mut c, &id).await;
        assert_eq!(
            refused["extensions"]["code"], "BAD_USER_INPUT",
            "{bad}: {refused}"
        );
        assert_eq!(refused["extensions"]["field"], "after", "{bad}: {refused}");
    }
    // messageRecorded still resumes one conversation only, and says where to look.
    c.subscribe("3", MESSAGES, json!({ "after": 3 })).await;
    let refused = refusal(&mut c, "3").await;
    assert_eq!(refused["extensions"]["field"], "afterSequence");
    assert!(
        refused["message"].as_str().unwrap().contains("messageFeed"),
        "{refused}"
    );
}

on_both_engines!(a_feed_resume_reads_an_index_range_from_the_horizon);

/// What a resuming feed reads (the messages its cursor's horizon did not see) is a range
/// of the `messages_txid` index from the snapshot's xmin on PostgreSQL, of the primary key
/// on SQLite: never a scan of every message.
async fn a_feed_resume_reads_an_index_range_from_the_horizon(t: &TestDb) {
    crate::plans::seed(&t.db, 2000, 10).await;
    crate::plans::analyze(t).await;
    let cursor = |text: &str| {
        service::live::FeedCursor::decode(text, t.db.get_database_backend(), "after").unwrap()
    };
    use base64::Engine as _;
    let encode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let (base, partial) = if t.engine == Engine::Postgres {
        let now: String =
            t.db.query_one_raw(Statement::from_string(
                t.db.get_database_backend(),
                "SELECT pg_current_snapshot()::text AS s",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get("", "s")
            .unwrap();
        (
            encode(&format!("f1/p/{now}/1,2")),
            encode(&format!("f1/p/{now}/1,2/{now}/5/3")),
        )
    } else {
        (encode("f1/s/20000/1,2"), encode("f1/s/20000/1,2/20000/5/3"))
    };
    for text in [base, partial] {
        let statement =
            service::live::replay_statement(&cursor(&text), None, t.db.get_database_backend());
        let plan = crate::plans::plan(t, statement).await;
        match t.engine {
            Engine::Postgres => assert!(
                plan.contains("using messages_txid on")
                    || plan.contains("Bitmap Index Scan on messages_txid"),
                "{plan}"
            ),
            Engine::Sqlite => assert!(
                plan.contains("USING INTEGER PRIMARY KEY (rowid>?)"),
                "{plan}"
            ),
        }
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(
            !plan.contains("SCAN m\n") && !plan.ends_with("SCAN m"),
            "{plan}"
        );
    }
}

/// A feed over all conversations whose server's listener connection is killed
/// (`pg_terminate_backend`): what commits meanwhile, in any conversation, is read from the
/// database once the listener is back (a conversation the feed never saw included), each
/// message once; and the cursors given meanwhile resume exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_feed_loses_nothing_when_the_listener_is_killed() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    let addr = serve(dev_state(&t, Default::default()), ConnLimits::default()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe("1", FEED, json!({})).await;
    wait_until_live(&mut c, "1", &http, &base, "+18045550099").await;
    let killed =
        t.db.query_all_raw(Statement::from_string(
            t.db.get_database_backend(),
            "SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity \
             WHERE application_name = 'parley-live' AND datname = current_database()",
        ))
        .await
        .unwrap();
    assert_eq!(killed.len(), 1, "exactly one listening connection");
    let recorded = record_many(&t, "k", 40).await;
    let got = c.next_n("1", 40).await;
    assert_exactly(&got, &recorded);
    assert_quiet(&mut c, "1").await;
    // Resuming from the 20th cursor gives exactly the other 20.
    let cursor = feed_events(&got)[19].1.clone();
    drop(c);
    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe("2", FEED, json!({ "after": cursor })).await;
    let rest = c.next_n("2", 20).await;
    let mut both = got[..20].to_vec();
    both.extend(rest);
    assert_exactly(&both, &recorded);
    assert_quiet(&mut c, "2").await;
    drop(c);
    t.cleanup().await;
}

on_both_engines!(
    a_conversation_feed_cursor_finds_a_message_that_commits_after_a_later_one,
    a_conversation_feed_resumes_each_changed_conversation_once,
);

const CONVERSATIONS: &str = "subscription($after: String, $p: String) {
  conversationFeed(filter: {participant: $p}, after: $after) {
    cursor conversation { id lastSequence messageCount participants } } }";

/// One `conversationFeed` event: the contact (the conversation's other participant than
/// our line), its `lastSequence` and `messageCount`, and the cursor.
#[derive(Debug, Clone)]
struct Changed {
    id: String,
    contact: String,
    last_sequence: i64,
    message_count: i64,
    cursor: String,
}

fn changed(payloads: &[Value]) -> Vec<Changed> {
    payloads
        .iter()
        .map(|p| {
            let e = &p["data"]["conversationFeed"];
            let c = &e["conversation"];
            let participants = c["participants"]
                .as_array()
                .unwrap_or_else(|| panic!("{p}"));
            Changed {
                id: c["id"].as_str().unwrap().to_owned(),
                contact: participants
                    .iter()
                    .filter_map(Value::as_str)
                    .find(|a| *a != "+12016661234")
                    .unwrap()
                    .to_owned(),
                last_sequence: c["lastSequence"].as_i64().unwrap(),
                message_count: c["messageCount"].as_i64().unwrap(),
                cursor: e["cursor"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

/// `(contact, lastSequence)` of each event.
fn states(events: &[Changed]) -> Vec<(String, i64)> {
    events
        .iter()
        .map(|e| (e.contact.clone(), e.last_sequence))
        .collect()
}

/// The trap of hasura/graphql-engine#8632 for a feed of conversations: conversation X's
/// message A takes its id first, conversation Y's message B after it, and B commits first.
/// A subscriber receives Y (and Z after it) with cursors; resuming from either cursor once
/// A has committed delivers X as it is with A, then only what changes after, and not Y or
/// Z again. On PostgreSQL A's transaction is held open (a trigger sleeps in it) while B
/// commits, and a feed that stays connected receives X live when A commits. On SQLite B's
/// writer waits for A's transaction (ids are in commit order there); A is committed
/// without being announced, so only the resume can deliver it.
async fn a_conversation_feed_cursor_finds_a_message_that_commits_after_a_later_one(t: &TestDb) {
    let s = Settings::default();
    let x = record_message(
        &t.db,
        &s,
        sms("+12016661234", "+18045550001", true, "x1", 0),
    )
    .await
    .unwrap();
    if t.engine == Engine::Postgres {
        for sql in [
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN IF NEW.body = 'slow' THEN PERFORM pg_sleep(3); END IF; RETURN NEW; END $$",
            "CREATE TRIGGER slow AFTER INSERT ON messages FOR EACH ROW EXECUTE FUNCTION slow()",
        ] {
            t.db.execute_unprepared(sql).await.unwrap();
        }
    }
    let addr = serve(dev_state(t, Default::default()), ConnLimits::default()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let mut feed = Client::connect(&addr, json!({})).await;
    feed.subscribe("feed", CONVERSATIONS, json!({})).await;
    wait_until_live(&mut feed, "feed", &http, &base, "+18045550099").await;

    let (cursor_b, cursor_z) = if t.engine == Engine::Postgres {
        let late = {
            let (db, s) = (t.db.clone(), s);
            tokio::spawn(async move {
                record_message(
                    &db,
                    &s,
                    sms("+12016661234", "+18045550001", false, "slow", 1),
                )
                .await
            })
        };
        tokio::time::sleep(StdDuration::from_millis(400)).await;
        let early = record_message(&t.db, &s, sms("+12016661234", "+18045550002", true, "B", 2))
            .await
            .unwrap();
        let got = changed(&feed.next_n("feed", 1).await);
        assert_eq!(states(&got), [("+18045550002".to_owned(), 1)]);
        assert!(!late.is_finished(), "A is still open when Y is delivered");
        let cursor_b = got[0].cursor.clone();
        // The listener announces a snapshot in which A is in progress and B committed;
        // the next cursor starts from it: A is found by its transaction, not by a number.
        tokio::time::sleep(StdDuration::from_millis(700)).await;
        record_message(&t.db, &s, sms("+12016661234", "+18045550004", true, "Z", 3))
            .await
            .unwrap();
        let got = changed(&feed.next_n("feed", 1).await);
        assert_eq!(states(&got), [("+18045550004".to_owned(), 1)]);
        assert!(!late.is_finished(), "A is still open when Z is delivered");
        assert!(
            delivered_ids(&got[0].cursor) <= 1,
            "the horizon moved past B"
        );
        let cursor_z = got[0].cursor.clone();
        let late = late.await.unwrap().unwrap();
        assert!(
            late.message.id < early.message.id,
            "A took the lower id and committed last"
        );
        // The connected feed receives X live once A commits.
        let got = changed(&feed.next_n("feed", 1).await);
        assert_eq!(states(&got), [("+18045550001".to_owned(), 2)]);
        assert_quiet(&mut feed, "feed").await;
        (cursor_b, cursor_z)
    } else {
        let txn = service::db::begin_write(&t.db).await.unwrap();
        let a = insert_unannounced_copy(&*txn, x.message.id, "slow").await;
        let writer = {
            let (db, s) = (t.db.clone(), s);
            tokio::spawn(async move {
                record_message(&db, &s, sms("+12016661234", "+18045550002", true, "B", 2)).await
            })
        };
        tokio::time::sleep(StdDuration::from_millis(500)).await;
        assert!(
            !writer.is_finished(),
            "SQLite: a writer cannot commit while another write transaction is open"
        );
        txn.commit().await.unwrap();
        let b = writer.await.unwrap().unwrap().message.id;
        assert!(a < b, "ids are assigned in commit order");
        let got = changed(&feed.next_n("feed", 1).await);
        assert_eq!(states(&got), [("+18045550002".to_owned(), 1)]);
        let cursor_b = got[0].cursor.clone();
        record_message(&t.db, &s, sms("+12016661234", "+18045550004", true, "Z", 3))
            .await
            .unwrap();
        let got = changed(&feed.next_n("feed", 1).await);
        assert_eq!(states(&got), [("+18045550004".to_owned(), 1)]);
        // A was never announced: the live feed does not know it.
        assert_quiet(&mut feed, "feed").await;
        (cursor_b, got[0].cursor.clone())
    };
    drop(feed);
    // Resuming after Y: X (as it is with A) and Z, by conversation id; after Z: X only.
    // Either way nothing twice, then the live changes.
    let mut resumed = Vec::new();
    for (cursor, expected) in [
        (
            cursor_b,
            vec![
                ("+18045550001".to_owned(), 2),
                ("+18045550004".to_owned(), 1),
            ],
        ),
        (cursor_z, vec![("+18045550001".to_owned(), 2)]),
    ] {
        let mut r = Client::connect(&addr, json!({})).await;
        r.subscribe("r", CONVERSATIONS, json!({ "after": cursor }))
            .await;
        let got = changed(&r.next_n("r", expected.len()).await);
        assert_eq!(
            states(&got),
            expected,
            "the late message's conversation is replayed"
        );
        assert_eq!(got[0].message_count, 2);
        resumed.push(r);
    }
    record_via(&http, &base, "+18045550003", "C", None).await;
    for r in &mut resumed {
        let got = changed(&r.next_n("r", 1).await);
        assert_eq!(
            states(&got),
            [("+18045550003".to_owned(), 1)],
            "then the live ones"
        );
        assert_quiet(r, "r").await;
    }
    let _ = x;
}

/// Records `n` messages from 4 concurrent writers to 7 contacts (`+1804555` 0100..0106)
/// and returns, per contact, how many went to it.
async fn record_spread(
    t: &TestDb,
    prefix: &str,
    n: usize,
) -> std::collections::BTreeMap<String, i64> {
    record_many(t, prefix, n).await;
    let mut per = std::collections::BTreeMap::new();
    for i in 0..n {
        *per.entry(format!("+1804555{:04}", 100 + i % 7))
            .or_insert(0) += 1;
    }
    per
}

/// Reads conversation events of subscription `id` until every contact of `last` shows
/// its last sequence; asserts that each conversation's `lastSequence` only grows (no
/// change delivered twice) and that nothing else follows.
async fn read_until(
    c: &mut Client,
    id: &str,
    last: &std::collections::BTreeMap<String, i64>,
) -> Vec<Changed> {
    let mut seen: std::collections::BTreeMap<String, i64> = Default::default();
    let mut all = Vec::new();
    while last.iter().any(|(k, v)| seen.get(k) != Some(v)) {
        let got = changed(&c.next_n(id, 1).await).pop().unwrap();
        assert!(last.contains_key(&got.contact), "{got:?}");
        if let Some(prev) = seen.insert(got.contact.clone(), got.last_sequence) {
            assert!(
                got.last_sequence > prev,
                "a conversation shown again without a new change: {got:?} after {prev}"
            );
        }
        assert_eq!(got.message_count, got.last_sequence, "{got:?}");
        all.push(got);
    }
    assert_quiet(c, id).await;
    all
}

/// A conversation feed over 7 conversations: live changes, then 300 messages recorded
/// while disconnected are replayed as exactly one event per changed conversation (a new
/// one included), as it is now; a resume from the middle of that replay gets exactly the
/// rest; a resume while writers keep recording misses no change and shows none twice; a
/// participant filter narrows the replay; a bad cursor is refused on `after`.
async fn a_conversation_feed_resumes_each_changed_conversation_once(t: &TestDb) {
    let addr = serve(dev_state(t, Default::default()), ConnLimits::default()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe("1", CONVERSATIONS, json!({})).await;
    wait_until_live(&mut c, "1", &http, &base, "+18045550099").await;
    let mut last = record_spread(t, "live", 60).await;
    let got = read_until(&mut c, "1", &last).await;
    let cursor = got.last().unwrap().cursor.clone();
    drop(c);

    for (k, n) in record_spread(t, "missed", 300).await {
        *last.get_mut(&k).unwrap() += n;
    }
    record_via(&http, &base, "+18045550200", "new", None).await;
    let mut expected: Vec<(String, i64)> = last.iter().map(|(k, v)| (k.clone(), *v)).collect();
    expected.push(("+18045550200".to_owned(), 1));
    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe("2", CONVERSATIONS, json!({ "after": cursor }))
        .await;
    let replayed = changed(&c.next_n("2", 8).await);
    let mut by_contact = states(&replayed);
    by_contact.sort();
    assert_eq!(
        by_contact, expected,
        "each changed conversation once, as it is"
    );
    let ids: Vec<i64> = replayed
        .iter()
        .map(|e| {
            api::graphql::ids::decode_id(api::graphql::ids::NodeType::Conversation, &e.id).unwrap()
        })
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "by conversation id: {ids:?}"
    );
    assert_quiet(&mut c, "2").await;
    drop(c);

    // From the middle of that replay: exactly the rest.
    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe("3", CONVERSATIONS, json!({ "after": replayed[2].cursor }))
        .await;
    let rest = changed(&c.next_n("3", 5).await);
    assert_eq!(states(&rest), states(&replayed[3..]));
    assert_quiet(&mut c, "3").await;
    drop(c);

    // From the first cursor again while 4 writers record 200 more: every conversation
    // reaches its last state, none is shown twice unchanged.
    let mut c = Client::connect(&addr, json!({})).await;
    let writers = {
        let t_db = t.db.clone();
        tokio::spawn(async move {
            let s = Settings::default();
            let mut per = std::collections::BTreeMap::<String, i64>::new();
            for i in 0..200usize {
                let contact = format!("+1804555{:04}", 100 + i % 7);
                record_message(
                    &t_db,
                    &s,
                    sms(
                        "+12016661234",
                        &contact,
                        true,
                        &format!("during{i}"),
                        i as i64,
                    ),
                )
                .await
                .unwrap();
                *per.entry(contact).or_insert(0) += 1;
            }
            per
        })
    };
    c.subscribe("4", CONVERSATIONS, json!({ "after": cursor }))
        .await;
    for (k, n) in writers.await.unwrap() {
        *last.get_mut(&k).unwrap() += n;
    }
    last.insert("+18045550200".to_owned(), 1);
    read_until(&mut c, "4", &last).await;

    // A participant filter: its conversation only.
    c.subscribe(
        "5",
        CONVERSATIONS,
        json!({ "after": cursor, "p": "(804) 555-0101" }),
    )
    .await;
    let got = changed(&c.next_n("5", 1).await);
    assert_eq!(
        states(&got),
        [("+18045550101".to_owned(), last["+18045550101"])]
    );
    assert_quiet(&mut c, "5").await;

    c.subscribe("6", CONVERSATIONS, json!({ "after": "not a cursor" }))
        .await;
    let refused = refusal(&mut c, "6").await;
    assert_eq!(refused["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(refused["extensions"]["field"], "after");
}

/// Backfill attaching legacy messages to conversations is a change like recording them
/// (PostgreSQL): the attached messages reach a live `messageFeed` and a live
/// `conversationFeed`, and a resume from a cursor given before the backfill replays them,
/// although they were inserted (unassigned) long before that cursor's horizon.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfilled_messages_reach_live_feeds_and_resumes() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    let s = Settings::default();
    let lines: Vec<(u64, String)> = (0..10u64)
        .map(|i| {
            let contact = if i < 6 {
                "+18045550001"
            } else {
                "+18045550002"
            };
            let line = json!({ "channel": "SMS", "direction": "OUTBOUND",
                "from": "+12016661234", "to": [contact], "body": format!("legacy {i}"),
                "providerMessageId": format!("legacy-{i}") });
            (i + 1, line.to_string())
        })
        .collect();
    let imported = import_messages(&t.db, &s, lines, true, 7, |_| {})
        .await
        .unwrap();
    assert_eq!(imported.imported, 10);
    record_message(
        &t.db,
        &s,
        sms("+12016661234", "+18045550001", true, "live 0", 0),
    )
    .await
    .unwrap();
    let addr = serve(dev_state(&t, Default::default()), ConnLimits::default()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let mut messages = Client::connect(&addr, json!({})).await;
    messages.subscribe("m", FEED, json!({})).await;
    wait_until_live(&mut messages, "m", &http, &base, "+18045550099").await;
    let mut conversations = Client::connect(&addr, json!({})).await;
    conversations.subscribe("c", CONVERSATIONS, json!({})).await;
    wait_until_live(&mut conversations, "c", &http, &base, "+18045550099").await;
    // Drain the markers the second wait recorded from the first feed.
    while let Ok(Got::Json(_)) = tokio::time::timeout(
        StdDuration::from_millis(500),
        messages.recv(StdDuration::from_secs(5)),
    )
    .await
    {}
    record_via(&http, &base, "+18045550098", "probe", None).await;
    let message_cursor = feed_events(&messages.next_n("m", 1).await).pop().unwrap().1;
    let conversation_cursor = changed(&conversations.next_n("c", 1).await)
        .pop()
        .unwrap()
        .cursor;

    let report = backfill_conversations(&t.db, &s, 4, false, |_| {})
        .await
        .unwrap();
    assert_eq!(report.attached, 10);
    let legacy: Vec<String> = {
        let mut l: Vec<String> = (0..10).map(|i| format!("legacy {i}")).collect();
        l.sort();
        l
    };
    let got = messages.next_n("m", 10).await;
    assert_exactly(&got, &legacy);
    assert_quiet(&mut messages, "m").await;
    let last: std::collections::BTreeMap<String, i64> = [
        ("+18045550001".to_owned(), 7),
        ("+18045550002".to_owned(), 4),
    ]
    .into();
    read_until(&mut conversations, "c", &last).await;
    drop((messages, conversations));

    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe("m2", FEED, json!({ "after": message_cursor }))
        .await;
    let got = c.next_n("m2", 10).await;
    assert_exactly(&got, &legacy);
    assert_quiet(&mut c, "m2").await;
    c.subscribe("c2", CONVERSATIONS, json!({ "after": conversation_cursor }))
        .await;
    let got = changed(&c.next_n("c2", 2).await);
    let mut got = states(&got);
    got.sort();
    assert_eq!(got, last.into_iter().collect::<Vec<_>>());
    assert_quiet(&mut c, "c2").await;
    drop(c);
    t.cleanup().await;
}

/// A conversation feed whose server's listener connection is killed
/// (`pg_terminate_backend`): the changes committed meanwhile are read from the database
/// once the listener is back (each conversation's last state reached, none shown twice
/// unchanged), and a cursor given before the kill resumes with every changed conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conversation_feed_loses_nothing_when_the_listener_is_killed() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    let addr = serve(dev_state(&t, Default::default()), ConnLimits::default()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe("1", CONVERSATIONS, json!({})).await;
    wait_until_live(&mut c, "1", &http, &base, "+18045550099").await;
    record_via(&http, &base, "+18045550098", "probe", None).await;
    let cursor = changed(&c.next_n("1", 1).await).pop().unwrap().cursor;
    let killed =
        t.db.query_all_raw(Statement::from_string(
            t.db.get_database_backend(),
            "SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity \
             WHERE application_name = 'parley-live' AND datname = current_database()",
        ))
        .await
        .unwrap();
    assert_eq!(killed.len(), 1, "exactly one listening connection");
    let last = record_spread(&t, "k", 40).await;
    read_until(&mut c, "1", &last).await;
    drop(c);
    let mut c = Client::connect(&addr, json!({})).await;
    c.subscribe("2", CONVERSATIONS, json!({ "after": cursor }))
        .await;
    let mut got = states(&changed(&c.next_n("2", 7).await));
    got.sort();
    assert_eq!(got, last.into_iter().collect::<Vec<_>>());
    assert_quiet(&mut c, "2").await;
    drop(c);
    t.cleanup().await;
}
