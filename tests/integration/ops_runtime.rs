//! The running server as an operator sees it: `/metrics` after known traffic, JSON logs,
//! request ids, `/readyz`, a database outage on a throwaway PostgreSQL cluster, and
//! graceful shutdown. Most tests run the real `parley` binary, so the process-global
//! metrics registry and the signal handling are the production ones.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use parley_tests::{
    AppConfig, Server, TempCluster, TestDb, error_code, prometheus_value, skip_or_fail,
    sqlite_url_in,
};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

const RECORD: &str = "mutation Record($input: RecordMessageInput!) {
  recordMessage(input: $input) {
    message { id providerMessageId }
    conversation { id key }
    conversationCreated
    duplicate
  }
}";

/// [`RECORD`] as an operation named `name` (the `operation` label of the GraphQL metrics).
fn record_named(name: &str) -> String {
    RECORD.replacen("mutation Record(", &format!("mutation {name}("), 1)
}

/// Prometheus labels, as (name, value) pairs.
type Labels<'a> = &'a [(&'a str, &'a str)];

fn sms(from: &str, to: &str, direction: &str, pid: &str) -> Value {
    json!({ "input": { "channel": "SMS", "direction": direction, "from": from, "to": [to],
                       "body": "hello there", "providerMessageId": pid } })
}

fn email(from: &str, to: &str, pid: &str) -> Value {
    json!({ "input": { "channel": "EMAIL", "direction": "INBOUND", "from": from, "to": [to],
                       "body": "<p>hi</p>", "providerMessageId": pid } })
}

/// POSTs one `recordMessage` named `operation` to a running server: status, `x-request-id`, JSON body.
async fn post(
    client: &reqwest::Client,
    server: &Server,
    operation: &str,
    variables: Value,
) -> (u16, String, Value) {
    let r = client
        .post(server.url("/graphql"))
        .json(&json!({ "query": record_named(operation), "operationName": operation, "variables": variables }))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let rid = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, rid, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_known_traffic_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&sqlite_url_in(dir.path()), &[], &[]).await;
    let client = reqwest::Client::new();
    let ok = |b: &Value| assert!(b.get("errors").is_none(), "{b:#}");

    // Two SMS messages between the same pair (created, then reused), one email (created),
    // one retried delivery (duplicate), one inbound from an unparseable sender
    // (unassigned), one outbound to a bad address (rejected).
    let traffic = [
        sms("+1 (415) 555-0101", "415-555-0102", "INBOUND", "m-1"),
        sms("+14155550102", "+14155550101", "OUTBOUND", "m-2"),
        email("Alice <alice@example.com>", "bob@example.com", "m-3"),
        sms("+1 (415) 555-0101", "415-555-0102", "INBOUND", "m-1"),
        sms("+1 555 0100 99999", "+14155550101", "INBOUND", "m-5"),
    ];
    for vars in traffic {
        let (status, _, body) = post(&client, &server, "MetricsRecord", vars).await;
        assert_eq!(status, 200);
        ok(&body);
    }
    let (_, _, body) = post(
        &client,
        &server,
        "MetricsRecord",
        sms("+14155550102", "not a phone", "OUTBOUND", "m-6"),
    )
    .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");

    let r = client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.expect("body");
    let value = |name: &str, labels: &[(&str, &str)]| prometheus_value(&text, name, labels);

    let expected: &[(&str, Labels, f64)] = &[
        ("parley_conversations_created_total", &[], 2.0),
        ("parley_conversations_reused_total", &[], 1.0),
        (
            "parley_messages_recorded_total",
            &[("channel", "SMS"), ("direction", "INBOUND")],
            2.0,
        ),
        (
            "parley_messages_recorded_total",
            &[("channel", "SMS"), ("direction", "OUTBOUND")],
            1.0,
        ),
        (
            "parley_messages_recorded_total",
            &[("channel", "EMAIL"), ("direction", "INBOUND")],
            1.0,
        ),
        ("parley_messages_duplicate_total", &[], 1.0),
        ("parley_messages_unassigned_total", &[], 1.0),
        ("parley_record_message_duration_seconds_count", &[], 4.0),
        (
            "parley_graphql_requests_total",
            &[("operation", "MetricsRecord"), ("outcome", "ok")],
            5.0,
        ),
        (
            "parley_graphql_requests_total",
            &[("operation", "MetricsRecord"), ("outcome", "error")],
            1.0,
        ),
        ("parley_graphql_request_duration_seconds_count", &[], 6.0),
    ];
    for (name, labels, want) in expected {
        assert_eq!(
            value(name, labels),
            Some(*want),
            "{name}{labels:?} in\n{text}"
        );
    }
    assert_eq!(
        value(
            "parley_messages_recorded_total",
            &[("channel", "EMAIL"), ("direction", "OUTBOUND")]
        ),
        None
    );
    // Nothing failed, so the failure counter was never touched.
    assert_eq!(
        value("parley_record_failures_total", &[]).unwrap_or(0.0),
        0.0
    );
    // The histogram has buckets, and every recorded message fell in the last one.
    assert_eq!(
        value(
            "parley_record_message_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        Some(4.0)
    );
    // Pool gauges are sampled on scrape: the pool is open, with at most 16 connections.
    let pool = value("parley_db_pool_connections", &[]).expect("pool gauge");
    assert!((1.0..=16.0).contains(&pool), "{pool}");
    let idle = value("parley_db_pool_idle_connections", &[]).expect("idle gauge");
    assert!((0.0..=pool).contains(&idle), "{idle} idle of {pool}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_logs_name_conversations_by_key_never_by_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&sqlite_url_in(dir.path()), &[], &[]).await;
    let client = reqwest::Client::new();
    let sends = [
        sms("+1 (415) 555-0171", "(415) 555-0172", "INBOUND", "log-1"),
        sms("+14155550172", "+1 415 555 0171", "OUTBOUND", "log-2"),
        email("Carol <carol.q@example.org>", "dave@example.org", "log-3"),
    ];
    let mut answers = Vec::new();
    for vars in sends {
        let (status, rid, body) = post(&client, &server, "LogRecord", vars).await;
        assert_eq!(status, 200);
        assert!(body.get("errors").is_none(), "{body:#}");
        assert!(!rid.is_empty(), "no x-request-id");
        answers.push((rid, body["data"]["recordMessage"].clone()));
    }

    let logs = server.logs();
    let events: Vec<Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) if v.is_object() => v,
            _ => panic!("not one JSON object per line: {l:?}"),
        })
        .collect();
    let recorded: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == "message recorded")
        .collect();
    assert_eq!(recorded.len(), 3, "{logs}");
    for ((rid, answer), event) in answers.iter().zip(&recorded) {
        let (_, message_id) =
            api::graphql::ids::decode_any(answer["message"]["id"].as_str().unwrap()).unwrap();
        let (_, conversation_id) =
            api::graphql::ids::decode_any(answer["conversation"]["id"].as_str().unwrap()).unwrap();
        let created = if answer["conversationCreated"] == true {
            "created"
        } else {
            "reused"
        };
        assert_eq!(event["level"], "INFO", "{event}");
        assert_eq!(event["message_id"], message_id, "{event}");
        assert_eq!(event["conversation_id"], conversation_id, "{event}");
        assert_eq!(event["conversation"], created, "{event}");
        assert_eq!(
            event["conversation_key"], answer["conversation"]["key"],
            "{event}"
        );
        // The event sits in its request's span, which names the request id the client got.
        assert_eq!(event["span"]["request_id"], rid.as_str(), "{event}");
        assert_eq!(event["span"]["path"], "/graphql", "{event}");
    }
    assert_eq!(recorded[0]["conversation"], "created");
    assert_eq!(recorded[1]["conversation"], "reused");
    assert_eq!(recorded[2]["conversation"], "created");

    // Addresses are personal data: no spelling of any of them is in the logs.
    for needle in [
        "555-0171",
        "555-0172",
        "5550171",
        "5550172",
        "555 0171",
        "4155550171",
        "4155550172",
        "carol",
        "dave",
        "example.org",
    ] {
        assert!(
            !logs.contains(needle),
            "{needle:?} leaked into the logs:\n{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_response_carries_a_request_id() {
    let db = TestDb::sqlite().await;
    let app = db.app(AppConfig::default());
    let mut seen = BTreeSet::new();
    let requests = [
        Request::get("/healthz").body(Body::empty()),
        Request::get("/readyz").body(Body::empty()),
        Request::get("/metrics").body(Body::empty()),
        Request::get("/no-such-route").body(Body::empty()),
        Request::post("/graphql")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"query":"{ __typename }"}"#)),
        Request::post("/graphql")
            .header("content-type", "application/json")
            .body(Body::from("not json")),
    ];
    for request in requests {
        let response = tower::ServiceExt::oneshot(app.router.clone(), request.unwrap())
            .await
            .unwrap();
        let id = response
            .headers()
            .get("x-request-id")
            .unwrap_or_else(|| panic!("no x-request-id on {}", response.status()))
            .to_str()
            .unwrap()
            .to_owned();
        assert!(!id.is_empty());
        assert!(seen.insert(id.clone()), "request id {id} given twice");
    }
    // An id the caller (or a proxy in front) already set is kept and echoed.
    let response = tower::ServiceExt::oneshot(
        app.router.clone(),
        Request::get("/healthz")
            .header("x-request-id", "from-the-edge-7")
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.headers()["x-request-id"], "from-the-edge-7");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_errors_name_the_request_id_and_hide_the_cause() {
    let db = TestDb::sqlite().await;
    let app = db.app(AppConfig::default());
    // Break the schema under the server: the record path's participant index is gone.
    db.db
        .execute_unprepared("DROP TABLE conversation_participants")
        .await
        .unwrap();
    let answer = app
        .send(
            Request::post("/graphql")
                .header("content-type", "application/json")
                .header("x-request-id", "trace-me-42")
                .body(Body::from(
                    json!({ "query": RECORD, "variables": sms("+14155550181", "+14155550182", "INBOUND", "int-1") })
                        .to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(error_code(&answer.json), "INTERNAL");
    let message = answer.json["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("trace-me-42"), "{message}");
    assert!(
        !answer.text.contains("conversation_participants") && !answer.text.contains("no such"),
        "database detail leaked: {}",
        answer.text
    );
    // Nothing is half-written.
    assert_eq!(db.count("messages").await, 0);
    assert_eq!(db.count("conversations").await, 0);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closed_pool_answers_unavailable_and_readyz_503() {
    let db = TestDb::sqlite().await;
    let app = db.app(AppConfig::default());
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);
    db.db.close_by_ref().await.unwrap();
    let ready = app.get("/readyz").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.text
    );
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    let body = app
        .graphql(
            RECORD,
            sms("+14155550191", "+14155550192", "INBOUND", "closed-1"),
        )
        .await;
    assert_eq!(error_code(&body), "UNAVAILABLE", "{body:#}");
}

/// How one request of the outage test ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok,
    Unavailable,
    Other(String),
}

/// One request of the outage test, timed from the test's start.
#[derive(Debug, Clone)]
struct Call {
    pid: String,
    start: Duration,
    end: Duration,
    outcome: Outcome,
}

async fn record_once(client: &reqwest::Client, url: &str, pid: &str) -> Outcome {
    let vars = sms("+14155550111", "+14155550112", "INBOUND", pid);
    let sent = client
        .post(url)
        .json(&json!({ "query": record_named("OutageRecord"), "operationName": "OutageRecord", "variables": vars }))
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => return Outcome::Other(format!("transport: {e}")),
    };
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let code = body["errors"][0]["extensions"]["code"].as_str();
    if status == 200
        && body.get("errors").is_none()
        && body["data"]["recordMessage"]["message"]["providerMessageId"] == pid
    {
        Outcome::Ok
    } else if status == 200 && code == Some("UNAVAILABLE") {
        Outcome::Unavailable
    } else {
        Outcome::Other(format!("{status}: {text}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_outage_fails_fast_with_unavailable_and_recovers_without_losing_acknowledged_messages()
 {
    let cluster = match TempCluster::start().await {
        Ok(c) => c,
        Err(why) => {
            skip_or_fail("the database outage test", &why);
            return;
        }
    };
    const ACQUIRE_TIMEOUT: f64 = 1.0;
    const SLACK: f64 = 1.0;
    let mut server = Server::start(
        &cluster.url(),
        &["--db-acquire-timeout", "1", "--db-statement-timeout", "2"],
        &[],
    )
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));

    let mut writers = Vec::new();
    for c in 0..4 {
        let (client, url, stop) = (client.clone(), server.url("/graphql"), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            for n in 0..5_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let pid = format!("outage-{c}-{n}");
                let start = t0.elapsed();
                let outcome = record_once(&client, &url, &pid).await;
                calls.push(Call {
                    pid,
                    start,
                    end: t0.elapsed(),
                    outcome,
                });
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            calls
        }));
    }
    let readiness = {
        let (client, url, stop) = (client.clone(), server.url("/readyz"), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..1_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let start = t0.elapsed();
                let status = match client.get(&url).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                seen.push((start, t0.elapsed(), status));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    let stop_begin = t0.elapsed();
    cluster
        .stop_immediate()
        .await
        .expect("stopping the cluster");
    let down = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restart = t0.elapsed();
    cluster.start_again().await.expect("restarting the cluster");
    let up = t0.elapsed();
    // Keep the traffic going for a while after the restart.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut calls: Vec<Call> = Vec::new();
    for w in writers {
        calls.extend(w.await.unwrap());
    }
    let readiness = readiness.await.unwrap();
    let elapsed = t0.elapsed();

    let count = |o: &Outcome| calls.iter().filter(|c| &c.outcome == o).count();
    let others: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Other(_)))
        .collect();
    let unavailable: Vec<&Call> = calls
        .iter()
        .filter(|c| c.outcome == Outcome::Unavailable)
        .collect();
    let max_unavailable_latency = unavailable
        .iter()
        .map(|c| (c.end - c.start).as_secs_f64())
        .fold(0.0, f64::max);
    let during_outage: Vec<&Call> = calls
        .iter()
        .filter(|c| c.start >= down && c.end <= restart)
        .collect();
    let first_success_after_restart = calls
        .iter()
        .filter(|c| c.outcome == Outcome::Ok && c.end > restart)
        .map(|c| c.end)
        .min();

    // Every acknowledged message is stored; some unacknowledged ones may be too (their
    // commit went through but the answer was lost): a retry is idempotent.
    let check = Database::connect(cluster.url())
        .await
        .expect("connecting to the restarted cluster");
    let stored: BTreeSet<String> = check
        .query_all_raw(Statement::from_string(
            check.get_database_backend(),
            "SELECT provider_message_id FROM messages WHERE provider_message_id LIKE 'outage-%'",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String>("", "provider_message_id").unwrap())
        .collect();
    let acknowledged: BTreeSet<String> = calls
        .iter()
        .filter(|c| c.outcome == Outcome::Ok)
        .map(|c| c.pid.clone())
        .collect();
    let lost: Vec<&String> = acknowledged.difference(&stored).collect();
    let stored_unacknowledged = stored.difference(&acknowledged).count();
    let count_row = check
        .query_one_raw(Statement::from_string(
            check.get_database_backend(),
            "SELECT message_count FROM conversations",
        ))
        .await
        .unwrap()
        .unwrap();
    let message_count: i64 = count_row.try_get("", "message_count").unwrap();
    check.close().await.ok();

    let ready_503: Vec<_> = readiness.iter().filter(|r| r.2 == 503).collect();
    let max_readyz_503_latency = ready_503
        .iter()
        .map(|r| (r.1 - r.0).as_secs_f64())
        .fold(0.0, f64::max);
    let logs = server.logs();
    let unavailable_logged = logs
        .lines()
        .filter(|l| l.contains("\"database unavailable\""))
        .collect::<Vec<_>>();
    // What the server saw, with digits masked so that one cause is listed once.
    let causes: BTreeSet<String> = unavailable_logged
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["detail"].as_str().map(str::to_owned))
        .map(|d| d.replace(|c: char| c.is_ascii_digit(), "#"))
        .collect();

    eprintln!(
        "outage: {} requests in {:.1} s: {} ok, {} UNAVAILABLE, {} other; \
         cluster stopped at {:.2} s (down at {:.2} s), restarted at {:.2} s (ready at {:.2} s)",
        calls.len(),
        elapsed.as_secs_f64(),
        count(&Outcome::Ok),
        unavailable.len(),
        others.len(),
        stop_begin.as_secs_f64(),
        down.as_secs_f64(),
        restart.as_secs_f64(),
        up.as_secs_f64(),
    );
    eprintln!(
        "outage: {} requests wholly inside the outage, all UNAVAILABLE: {}; slowest UNAVAILABLE \
         answer {:.0} ms (acquire timeout {:.0} ms); /readyz 503 x{} (slowest {:.0} ms)",
        during_outage.len(),
        during_outage
            .iter()
            .all(|c| c.outcome == Outcome::Unavailable),
        max_unavailable_latency * 1e3,
        ACQUIRE_TIMEOUT * 1e3,
        ready_503.len(),
        max_readyz_503_latency * 1e3,
    );
    eprintln!(
        "outage: first success {} after the restart began ({} after the cluster was ready); \
         acknowledged {}, stored {}, lost {}, stored but unacknowledged {}; conversation count {}",
        first_success_after_restart
            .map(|t| format!("{:.0} ms", (t - restart).as_secs_f64() * 1e3))
            .unwrap_or_else(|| "never".into()),
        first_success_after_restart
            .map(|t| format!("{:.0} ms", t.saturating_sub(up).as_secs_f64() * 1e3))
            .unwrap_or_else(|| "never".into()),
        acknowledged.len(),
        stored.len(),
        lost.len(),
        stored_unacknowledged,
        message_count,
    );

    eprintln!("outage: UNAVAILABLE causes logged: {causes:#?}");

    assert!(
        others.is_empty(),
        "answers other than success or UNAVAILABLE: {:#?}",
        others.iter().take(5).collect::<Vec<_>>()
    );
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    assert_eq!(message_count as usize, stored.len(), "conversation count");
    assert!(
        !during_outage.is_empty()
            && during_outage
                .iter()
                .all(|c| c.outcome == Outcome::Unavailable),
        "requests during the outage: {during_outage:#?}"
    );
    assert!(
        max_unavailable_latency <= ACQUIRE_TIMEOUT + SLACK,
        "an UNAVAILABLE answer took {max_unavailable_latency:.2} s"
    );
    let recovery = first_success_after_restart.expect("no success after the restart") - restart;
    assert!(
        recovery <= Duration::from_secs(5),
        "first success {recovery:?} after the restart"
    );
    // /readyz: 200 before, 503 while down, 200 again after the restart, and it kept
    // answering 200 from then on.
    assert!(readiness.iter().any(|r| r.1 < stop_begin && r.2 == 200));
    assert!(
        readiness
            .iter()
            .any(|r| r.0 >= stop_begin && r.1 <= up && r.2 == 503),
        "{readiness:?}"
    );
    assert!(
        readiness.iter().all(|r| r.2 == 200 || r.2 == 503),
        "{readiness:?}"
    );
    let back = readiness
        .iter()
        .position(|r| r.0 > up && r.2 == 200)
        .expect("/readyz never came back");
    assert!(
        readiness[back..].iter().all(|r| r.2 == 200),
        "{readiness:?}"
    );
    // Each UNAVAILABLE was logged with its request id; nothing was logged as INTERNAL.
    assert!(!unavailable_logged.is_empty());
    assert!(
        unavailable_logged
            .iter()
            .all(|l| l.contains("\"request_id\"")),
        "{unavailable_logged:?}"
    );
    assert!(!logs.contains("\"internal error\""), "{logs}");
    assert!(server.is_running(), "the server restarted or died");
}

/// A raw HTTP/1.1 POST /graphql whose body is sent in two parts, to hold a request in flight.
struct SlowRequest {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl SlowRequest {
    /// Connects and sends the headers and all but the last bytes of `body`.
    fn begin(port: u16, body: &str) -> SlowRequest {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let head = format!(
            "POST /graphql HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let split = body.len() - 8;
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body.as_bytes()[..split]).unwrap();
        SlowRequest {
            stream,
            rest: body.as_bytes()[split..].to_vec(),
        }
    }

    /// Sends the rest of the body and reads the answer: status, headers, body.
    fn finish(mut self) -> (u16, String, Value) {
        self.stream.write_all(&self.rest).unwrap();
        let mut raw = Vec::new();
        self.stream
            .read_to_end(&mut raw)
            .expect("reading the answer");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        let json = serde_json::from_str(&body).unwrap_or(Value::Null);
        (status, head.to_owned(), json)
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    for _ in 0..10_000 {
        let Some((size, rest)) = s.split_once("\r\n") else {
            break;
        };
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn batch_body(prefix: &str, n: usize) -> String {
    let ops: Vec<Value> = (0..n)
        .map(|i| {
            json!({ "query": record_named("ShutdownRecord"), "operationName": "ShutdownRecord",
                    "variables": sms(&format!("+1415555{:04}", 2000 + i), "+14155559999", "INBOUND",
                                     &format!("{prefix}-{i}")) })
        })
        .collect();
    Value::Array(ops).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_zero() {
    const CONNECTIONS: usize = 6;
    const BATCH: usize = 40;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url_in(dir.path());
    let mut server =
        Server::start(&url, &[], &["--max-batch", "40", "--shutdown-grace", "20"]).await;

    // Requests in flight: each has sent its headers and most of a 40-operation batch.
    let slow: Vec<SlowRequest> = (0..CONNECTIONS)
        .map(|c| SlowRequest::begin(server.port, &batch_body(&format!("drain-{c}"), BATCH)))
        .collect();
    // Let the server accept them and start reading their bodies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    server.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Draining: still running, but the listener is gone.
    assert!(server.is_running(), "exited before draining");
    let refused = TcpStream::connect(("127.0.0.1", server.port));
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
        "a new connection was not refused: {refused:?}"
    );

    // The in-flight requests finish after the signal, every one of them in full.
    let answers: Vec<(u16, String, Value)> =
        tokio::task::spawn_blocking(move || slow.into_iter().map(SlowRequest::finish).collect())
            .await
            .unwrap();
    let answered = signalled.elapsed();
    for (status, head, body) in &answers {
        assert_eq!(*status, 200, "{head}\n{body}");
        assert!(
            head.to_ascii_lowercase().contains("x-request-id:"),
            "{head}"
        );
        let results = body.as_array().expect("a batch answer");
        assert_eq!(results.len(), BATCH);
        for r in results {
            assert!(r.get("errors").is_none(), "{r}");
            assert_eq!(r["data"]["recordMessage"]["duplicate"], false);
        }
    }

    let status = server
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("parley did not exit after draining");
    let exited = signalled.elapsed();
    let logs = server.logs();
    eprintln!(
        "shutdown: {CONNECTIONS} requests x {BATCH} messages in flight at SIGTERM; all answered \
         200 {:.0} ms after the signal; new connections refused; exited with {status} {:.0} ms \
         after the signal",
        answered.as_secs_f64() * 1e3,
        exited.as_secs_f64() * 1e3
    );
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(logs.contains("shutting down"), "{logs}");
    assert!(logs.contains("parley stopped"), "{logs}");

    // Everything answered is stored.
    let db = service::db::connect(&url, &Default::default())
        .await
        .unwrap();
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM messages WHERE provider_message_id LIKE 'drain-%'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.try_get::<i64>("", "n").unwrap(),
        (CONNECTIONS * BATCH) as i64
    );
    db.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_outliving_the_shutdown_grace_ends_the_process_with_status_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server =
        Server::start(&sqlite_url_in(dir.path()), &[], &["--shutdown-grace", "1"]).await;
    // A request that never finishes sending its body.
    let stuck = SlowRequest::begin(server.port, &batch_body("stuck", 1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    server.terminate();
    let status = server
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the watchdog did not end the process");
    let after = signalled.elapsed();
    eprintln!(
        "shutdown watchdog: grace 1 s, stuck request, exited with {status} after {:.0} ms",
        after.as_secs_f64() * 1e3
    );
    assert_eq!(status.code(), Some(1));
    assert!(after >= Duration::from_millis(900), "{after:?}");
    assert!(server.logs().contains("grace period over"));
    drop(stuck);
}
