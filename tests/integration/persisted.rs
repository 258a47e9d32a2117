//! Persisted documents: automatic persisted queries over POST and GET, and the
//! trusted-documents mode that runs only listed documents, refusing the rest before parsing.

use std::collections::HashMap;

use api::http::persisted::{PersistedDocuments, sha256_hex};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use parley_tests::{AppConfig, TestApp, TestDb, error_code, sqlite_url_in};
use serde_json::{Value, json};
use tower::ServiceExt;

const LIST: &str = "query List { conversations(first: 5) { totalCount } }";
const RECORD: &str = "mutation R { recordMessage(input: { channel: SMS, direction: OUTBOUND, \
     from: \"+12016661234\", to: [\"+18045551234\"], body: \"x\" }) { duplicate } }";

async fn send(app: &TestApp, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn post(app: &TestApp, body: Value) -> (StatusCode, Value) {
    let request = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("accept", "application/graphql-response+json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(app, request).await
}

async fn get(app: &TestApp, query: &str) -> (StatusCode, Value) {
    let request = Request::get(format!("/graphql?{query}"))
        .header("accept", "application/graphql-response+json")
        .body(Body::empty())
        .unwrap();
    send(app, request).await
}

fn apq(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

/// Percent-encodes `text` for a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn automatic_persisted_queries_register_then_run_by_hash_over_post_and_get() {
    let t = TestDb::sqlite().await;
    let app = t.app(AppConfig::default());
    let hash = sha256_hex(LIST);
    // Unknown hash: the client is told to send the text.
    let (status, body) = post(&app, json!({ "extensions": apq(&hash) })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "PERSISTED_QUERY_NOT_FOUND");
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
    assert!(body.get("data").is_none());
    // A text that does not match its hash is refused and not cached.
    let (status, body) = post(
        &app,
        json!({ "query": "{ __typename }", "extensions": apq(&hash) }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "BAD_REQUEST", "{body}");
    // Registration runs it and caches it.
    let (status, body) = post(&app, json!({ "query": LIST, "extensions": apq(&hash) })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["conversations"]["totalCount"], 0);
    // Then the hash alone runs it, over POST and over GET (a small, cacheable URL).
    let (status, body) = post(&app, json!({ "extensions": apq(&hash) })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["conversations"]["totalCount"], 0);
    let (status, body) = get(
        &app,
        &format!("extensions={}", encode(&apq(&hash).to_string())),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["conversations"]["totalCount"], 0);
    // Only version 1 of the protocol.
    let v2 = json!({ "persistedQuery": { "version": 2, "sha256Hash": hash } });
    let (_, body) = post(&app, json!({ "extensions": v2 })).await;
    assert_eq!(error_code(&body), "PERSISTED_QUERY_NOT_SUPPORTED");
    // A registered mutation is still refused over GET, and nothing is written.
    let record = sha256_hex(RECORD);
    let (status, _) = post(&app, json!({ "query": RECORD, "extensions": apq(&record) })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t.count("messages").await, 1);
    let (status, body) = get(
        &app,
        &format!("extensions={}", encode(&apq(&record).to_string())),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(t.count("messages").await, 1);
    // The text limits apply to a registration as to any document.
    let huge = format!("{{{}}}", " __typename".repeat(6000));
    let (_, body) = post(
        &app,
        json!({ "query": huge, "extensions": apq(&sha256_hex(&huge)) }),
    )
    .await;
    assert_eq!(error_code(&body), "QUERY_TOO_COMPLEX", "{body}");
    let (_, body) = post(&app, json!({ "extensions": apq(&sha256_hex(&huge)) })).await;
    assert_eq!(error_code(&body), "PERSISTED_QUERY_NOT_FOUND", "not cached");
}

#[tokio::test]
async fn trusted_documents_mode_runs_only_listed_documents() {
    let t = TestDb::sqlite().await;
    let list = sha256_hex(LIST);
    let trusted = PersistedDocuments::trusted(HashMap::from([(list.clone(), LIST.to_owned())]));
    let app = TestApp {
        router: api::router(
            api::AppState::new(t.db.clone(), AppConfig::default()).with_persisted(trusted),
        ),
    };
    // Listed: by APQ hash, by documentId (with or without the prefix), by its own text,
    // over POST and GET.
    for body in [
        json!({ "extensions": apq(&list) }),
        json!({ "documentId": format!("sha256:{list}") }),
        json!({ "documentId": list }),
        json!({ "query": LIST }),
    ] {
        let (status, answer) = post(&app, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}: {answer}");
        assert_eq!(answer["data"]["conversations"]["totalCount"], 0, "{answer}");
    }
    let (status, answer) = get(&app, &format!("documentId=sha256%3A{list}")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Unknown hash: not found. Any other text, valid or not, even with its own hash (an
    // APQ registration): forbidden, before it is parsed.
    let (status, answer) = post(&app, json!({ "extensions": apq(&sha256_hex("{ x }")) })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&answer), "PERSISTED_QUERY_NOT_FOUND", "{answer}");
    for text in ["{ __typename }", "{", RECORD] {
        let (status, answer) = post(&app, json!({ "query": text })).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{text}: {answer}");
        assert_eq!(error_code(&answer), "FORBIDDEN", "{answer}");
        let (status, answer) = post(
            &app,
            json!({ "query": text, "extensions": apq(&sha256_hex(text)) }),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{text}: {answer}");
        let (status, _) = get(&app, &format!("query={}", encode(text))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    }
    assert_eq!(t.count("messages").await, 0);
}

#[tokio::test]
async fn the_trusted_documents_file_is_checked_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, json!({ sha256_hex("{ a }"): LIST }).to_string()).unwrap();
    let err = PersistedDocuments::load(&bad).err().unwrap().to_string();
    assert!(err.contains("regenerate the file"), "{err}");
    let not_json = dir.path().join("not.json");
    std::fs::write(&not_json, "[]").unwrap();
    assert!(PersistedDocuments::load(&not_json).is_err());

    let file = dir.path().join("trusted.json");
    // graphql-codegen's client preset writes the keys with a `sha256:` prefix.
    std::fs::write(
        &file,
        json!({ format!("sha256:{}", sha256_hex(LIST)): LIST }).to_string(),
    )
    .unwrap();
    let server = parley_tests::Server::start(
        &sqlite_url_in(dir.path()),
        &[],
        &["--trusted-documents", file.to_str().unwrap()],
    )
    .await;
    let client = reqwest::Client::new();
    let ask = |body: Value| {
        client
            .post(server.url("/graphql"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let ok = ask(json!({ "documentId": sha256_hex(LIST) }))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let ok: Value = ok.json().await.unwrap();
    assert_eq!(ok["data"]["conversations"]["totalCount"], 0, "{ok}");
    let no = ask(json!({ "query": "{ __typename }" })).await.unwrap();
    assert_eq!(no.status(), 403);
}
