//! Connection-level limits of the real `parley` binary over real TCP: header, body and idle
//! timeouts, the connection caps (global and per client address), load shedding, the JSON
//! 413 for an announced oversized body, and the response cap. Each server runs with short
//! limits so every test takes a second or two.

use std::net::SocketAddr;
use std::time::Duration;

use parley_tests::{Server, prometheus_value, sqlite_url_in};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, sleep, timeout};

/// A server on a fresh SQLite database with `serve` flags `flags`.
async fn server(flags: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&sqlite_url_in(dir.path()), &[], flags).await;
    (server, dir)
}

async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect")
}

/// Connects from the local address `from` (any of 127.0.0.0/8 is this host on Linux).
async fn connect_from(server: &Server, from: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("binding a loopback source address");
    socket
        .connect(SocketAddr::from(([127, 0, 0, 1], server.port)))
        .await
        .expect("connect")
}

/// An HTTP/1.1 answer read off a socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    json: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    fn code(&self) -> &str {
        self.json["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {self:?}"))
    }
}

/// Reads one response (head and a `content-length` body) within 10 s.
async fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .expect("a content-length");
            if body.len() >= length {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return Answer {
                    status,
                    head: head.to_owned(),
                    json: serde_json::from_str(&body[..length]).unwrap_or(Value::Null),
                };
            }
        }
        let n = timeout(deadline - Instant::now(), stream.read(&mut buf))
            .await
            .expect("no answer within 10 s")
            .expect("reading the answer");
        assert!(n > 0, "closed before a full answer: {text:?}");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// How long until the server closes `stream` (EOF or reset), reading and discarding
/// whatever it sends; `None` if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 8192];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

fn post_head(path: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n\r\n"
    )
}

/// A whole POST of `body` to `path`.
fn post(path: &str, body: &str) -> String {
    format!("{}{body}", post_head(path, body.len()))
}

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";

/// A GraphQL request body for `query`.
fn graphql(query: &str) -> String {
    json!({ "query": query }).to_string()
}

/// Sends a request on a new connection and reads the answer.
async fn request(server: &Server, raw: &str) -> Answer {
    let mut stream = connect(server).await;
    stream.write_all(raw.as_bytes()).await.unwrap();
    read_answer(&mut stream).await
}

async fn limited(server: &Server, reason: &str) -> f64 {
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    prometheus_value(&text, "parley_http_limited_total", &[("reason", reason)]).unwrap_or(0.0)
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (server, _dir) = server(&["--idle-timeout", "0.5", "--header-read-timeout", "5"]).await;
    // A connection that never sends anything.
    let mut silent = connect(&server).await;
    // A keep-alive connection after one request.
    let mut kept = connect(&server).await;
    kept.write_all(HEALTHZ.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut kept).await.status, 200);
    let kept_closed = closed_within(&mut kept, Duration::from_secs(4))
        .await
        .expect("an idle keep-alive connection stayed open");
    let silent_closed = closed_within(&mut silent, Duration::from_secs(4))
        .await
        .expect("a silent connection stayed open");
    eprintln!(
        "idle timeout 0.5 s: keep-alive connection closed {:.0} ms after its answer",
        kept_closed.as_secs_f64() * 1e3
    );
    assert!(kept_closed >= Duration::from_millis(400), "{kept_closed:?}");
    assert!(silent_closed < Duration::from_secs(2), "{silent_closed:?}");
    assert!(limited(&server, "idle_timeout").await >= 2.0);

    // A connection whose request is being handled is not idle, however quiet: a body sent
    // in two parts 1 s apart (within the body allowance) is answered.
    let body = graphql("{ __typename }");
    let (first, rest) = body.split_at(5);
    let mut busy = connect(&server).await;
    busy.write_all(format!("{}{first}", post_head("/graphql", body.len())).as_bytes())
        .await
        .unwrap();
    sleep(Duration::from_secs(1)).await;
    busy.write_all(rest.as_bytes()).await.unwrap();
    let answer = read_answer(&mut busy).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json["data"]["__typename"], "Query");
}

#[tokio::test]
async fn headers_sent_a_byte_at_a_time_are_cut_at_the_header_timeout() {
    let (server, _dir) = server(&["--header-read-timeout", "0.5", "--idle-timeout", "30"]).await;
    let mut stream = connect(&server).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a client sending one header byte every 100 ms was still connected after 5 s"
        );
        // One more header byte every 100 ms (the write fails once the server has closed).
        let _ = stream.write_all(b"x").await;
        match timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(n)) => panic!(
                "answered a partial head: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
    };
    eprintln!(
        "header timeout 0.5 s: slowloris headers cut after {:.0} ms",
        closed.as_secs_f64() * 1e3
    );
    assert!(closed >= Duration::from_millis(400), "{closed:?}");
    assert!(limited(&server, "header_timeout").await >= 1.0);
}

#[tokio::test]
async fn a_body_slower_than_the_minimum_rate_is_cut_with_408_and_a_steady_one_passes() {
    let (server, _dir) = server(&[
        "--body-read-timeout",
        "0.5",
        "--body-min-rate",
        "1000",
        "--idle-timeout",
        "30",
    ])
    .await;
    // Declares 1000 bytes and sends one every 100 ms.
    let mut slow = connect(&server).await;
    slow.write_all(post_head("/graphql", 1000).as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let cut = loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a body sent at 10 bytes/s was still being read after 5 s"
        );
        let _ = slow.write_all(b" ").await;
        match timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    };
    let text = String::from_utf8_lossy(&raw);
    eprintln!(
        "body timeout 0.5 s + 1 s per 1000 bytes: 10 bytes/s body cut after {:.0} ms",
        cut.as_secs_f64() * 1e3
    );
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(text.contains("\"REQUEST_TIMEOUT\""), "{text}");
    assert!(cut >= Duration::from_millis(400), "{cut:?}");
    assert!(cut < Duration::from_secs(3), "{cut:?}");

    // 3000 bytes in three parts 300 ms apart: slower than the timeout alone allows, but
    // above the minimum rate, so never cut.
    let query = format!("{{ __typename{} }}", " ".repeat(3000));
    let body = graphql(&query);
    let mut steady = connect(&server).await;
    steady
        .write_all(post_head("/graphql", body.len()).as_bytes())
        .await
        .unwrap();
    for part in body.as_bytes().chunks(body.len().div_ceil(3)) {
        steady.write_all(part).await.unwrap();
        sleep(Duration::from_millis(300)).await;
    }
    let answer = read_answer(&mut steady).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json["data"]["__typename"], "Query", "{answer:?}");
    assert!(limited(&server, "body_timeout").await >= 1.0);
}

#[tokio::test]
async fn a_connection_over_the_cap_is_answered_503_and_closed_until_one_ends() {
    let (server, _dir) = server(&["--max-connections", "3", "--idle-timeout", "30"]).await;
    // The client the harness used to see the server up may still be closing.
    sleep(Duration::from_millis(200)).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&server).await;
        stream.write_all(HEALTHZ.as_bytes()).await.unwrap();
        assert_eq!(read_answer(&mut stream).await.status, 200);
        open.push(stream);
    }
    let mut fourth = connect(&server).await;
    let refused = read_answer(&mut fourth).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    assert_eq!(refused.code(), "OVERLOADED");
    assert!(
        closed_within(&mut fourth, Duration::from_secs(2))
            .await
            .is_some()
    );
    // One ends: there is room again.
    drop(open.pop());
    sleep(Duration::from_millis(200)).await;
    let mut again = connect(&server).await;
    again.write_all(HEALTHZ.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut again).await.status, 200);
}

#[tokio::test]
async fn one_address_cannot_take_more_than_its_share_of_connections() {
    let (server, _dir) = server(&[
        "--max-connections",
        "10",
        "--max-connections-per-ip",
        "2",
        "--idle-timeout",
        "30",
    ])
    .await;
    sleep(Duration::from_millis(200)).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from(&server, [127, 0, 0, 1]).await;
        stream.write_all(HEALTHZ.as_bytes()).await.unwrap();
        assert_eq!(read_answer(&mut stream).await.status, 200);
        open.push(stream);
    }
    let mut third = connect_from(&server, [127, 0, 0, 1]).await;
    let refused = read_answer(&mut third).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.code(), "OVERLOADED");
    // Another address still gets in.
    let mut other = connect_from(&server, [127, 0, 0, 2]).await;
    other.write_all(HEALTHZ.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut other).await.status, 200);
    drop((open, third));
    sleep(Duration::from_millis(200)).await;
    assert!(limited(&server, "max_connections_per_ip").await >= 1.0);
}

#[tokio::test]
async fn requests_over_the_in_flight_cap_queue_and_beyond_the_queue_are_shed_with_503() {
    let (server, _dir) = server(&[
        "--max-in-flight",
        "1",
        "--max-queued",
        "1",
        "--queue-timeout",
        "1",
        "--idle-timeout",
        "30",
    ])
    .await;
    let typename = post("/graphql", &graphql("{ __typename }"));
    // A holds the one turn: its handler is reading a body that is not all there yet.
    let body = graphql("{ __typename }");
    let (first, rest) = body.split_at(5);
    let mut a = connect(&server).await;
    a.write_all(format!("{}{first}", post_head("/graphql", body.len())).as_bytes())
        .await
        .unwrap();
    sleep(Duration::from_millis(200)).await;
    // B waits in the queue.
    let mut b = connect(&server).await;
    b.write_all(typename.as_bytes()).await.unwrap();
    sleep(Duration::from_millis(200)).await;
    // C finds the queue full: shed at once.
    let started = Instant::now();
    let c = request(&server, &typename).await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(c.status, 503, "{c:?}");
    assert_eq!(c.header("retry-after").as_deref(), Some("1"));
    assert_eq!(c.code(), "OVERLOADED");
    // Health stays answerable under load.
    assert_eq!(request(&server, HEALTHZ).await.status, 200);
    // A finishes; then B gets its turn.
    a.write_all(rest.as_bytes()).await.unwrap();
    let a = read_answer(&mut a).await;
    assert_eq!(a.status, 200, "{a:?}");
    let b = read_answer(&mut b).await;
    assert_eq!(b.status, 200, "{b:?}");
    assert_eq!(b.json["data"]["__typename"], "Query");

    // A request that waits longer than --queue-timeout is shed too.
    let mut hold = connect(&server).await;
    hold.write_all(format!("{}{first}", post_head("/graphql", body.len())).as_bytes())
        .await
        .unwrap();
    sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let waited = request(&server, &typename).await;
    let after = started.elapsed();
    assert_eq!(waited.status, 503, "{waited:?}");
    assert_eq!(waited.code(), "OVERLOADED");
    assert!(after >= Duration::from_millis(900), "{after:?}");
    hold.write_all(rest.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut hold).await.status, 200);
    assert!(limited(&server, "queue_full").await >= 1.0);
    assert!(limited(&server, "queue_timeout").await >= 1.0);
}

#[tokio::test]
async fn an_announced_oversized_graphql_body_gets_a_json_413() {
    let (server, _dir) = server(&["--max-request-bytes", "1000"]).await;
    // The head alone: the limit layer answers before the body is read.
    let mut stream = connect(&server).await;
    stream
        .write_all(post_head("/graphql", 5000).as_bytes())
        .await
        .unwrap();
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.code(), "PAYLOAD_TOO_LARGE", "{answer:?}");
    assert!(
        answer.json["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("1000 bytes"),
        "{answer:?}"
    );
    assert!(answer.header("x-request-id").is_some(), "{answer:?}");
    // REST keeps its own shape.
    let mut stream = connect(&server).await;
    stream
        .write_all(post_head("/api/messages/sms", 5000).as_bytes())
        .await
        .unwrap();
    let rest = read_answer(&mut stream).await;
    assert_eq!(rest.status, 413, "{rest:?}");
    assert_eq!(rest.json["code"], "PAYLOAD_TOO_LARGE", "{rest:?}");
}

#[tokio::test]
async fn a_response_over_the_cap_is_replaced_by_a_typed_error() {
    let (server, _dir) = server(&["--max-response-bytes", "1024"]).await;
    let big = request(
        &server,
        &post(
            "/graphql",
            &graphql("{ __schema { types { name description } } }"),
        ),
    )
    .await;
    assert_eq!(big.status, 200, "{big:?}");
    assert_eq!(big.code(), "RESPONSE_TOO_LARGE", "{big:?}");
    assert_eq!(big.json["data"], Value::Null, "{big:?}");
    assert!(big.header("x-request-id").is_some(), "{big:?}");
    let small = request(&server, &post("/graphql", &graphql("{ __typename }"))).await;
    assert_eq!(small.status, 200, "{small:?}");
    assert_eq!(small.json["data"]["__typename"], "Query");
    // REST: a page over the cap is a 400 in the REST shape.
    let message = json!({ "from": "+12016661234", "to": "+18045551234", "type": "sms",
                          "body": "b".repeat(1500), "attachments": null });
    let stored = request(&server, &post("/api/messages/sms", &message.to_string())).await;
    assert_eq!(stored.status, 200, "{stored:?}");
    let id = stored.json["conversation_id"].as_str().unwrap();
    let page = request(
        &server,
        &format!("GET /api/conversations/{id}/messages HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"),
    )
    .await;
    assert_eq!(page.status, 400, "{page:?}");
    assert_eq!(page.json["code"], "RESPONSE_TOO_LARGE", "{page:?}");
    assert!(limited(&server, "response_too_large").await >= 2.0);
}
