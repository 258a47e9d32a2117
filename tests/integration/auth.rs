//! Identity and access over HTTP: every endpoint against every kind of token (the table
//! test), provider webhook signatures, the start-up policy, CORS and rate limits. The
//! visibility rule itself is in `visibility.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::auth::Security;
use api::auth::jwt::{Authenticator, JwtOptions};
use api::auth::limit::RateLimits;
use api::auth::webhook::{WebhookSecrets, sign};
use api::config::AppConfig;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use parley_tests::{TestDb, on_both_engines};
use serde_json::{Value, json};
use service::record::{NewMessage, record_message};
use service::{Channel, Direction};
use tower::ServiceExt;

/// The HS256 secret of the test server.
pub(crate) const SECRET: &[u8] = b"test-secret-0123456789-0123456789-abcdef";
/// The audience the test server requires.
pub(crate) const AUDIENCE: &str = "parley-test";
/// Alice's inbox, Bob's inbox, and a third party.
pub(crate) const ALICE: &str = "+12025550101";
pub(crate) const BOB: &str = "+12025550102";
pub(crate) const CAROL: &str = "+12025550199";
const SMS_SECRET_OLD: &str = "sms-secret-old-0123456789";
pub(crate) const SMS_SECRET_NEW: &str = "sms-secret-new-0123456789";
const EMAIL_SECRET: &str = "email-secret-0123456789";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/auth")
        .join(name)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The security of the test server: HS256 and the fixture JWKS, an audience, both webhook
/// providers signed, GraphiQL off, one CORS origin, the given rate limits.
pub(crate) fn security(limits: RateLimits) -> Security {
    let authenticator = Authenticator::new(JwtOptions {
        secret: Some(SECRET.to_vec()),
        jwks_file: Some(fixture("jwks.json")),
        issuer: None,
        audience: Some(AUDIENCE.into()),
        leeway: Duration::from_secs(5),
        region: Default::default(),
    })
    .expect("the test keys load");
    let webhooks = WebhookSecrets::parse(&format!(
        "sms {SMS_SECRET_OLD}\nsms {SMS_SECRET_NEW}\nemail {EMAIL_SECRET}\n"
    ))
    .unwrap();
    Security {
        authenticator: Some(Arc::new(authenticator)),
        webhooks,
        graphiql: false,
        cors_origins: vec![header::HeaderValue::from_static("https://app.example.com")],
        limits,
    }
}

/// The router with authentication on.
pub(crate) fn secured(t: &TestDb, limits: RateLimits) -> axum::Router {
    let config = AppConfig {
        graphql: api::config::GraphqlLimits {
            introspection: false,
            ..Default::default()
        },
        ..Default::default()
    };
    api::router(api::AppState::secured(
        t.db.clone(),
        config,
        security(limits),
    ))
}

/// Standard claims for `sub` with `scope` and `inboxes`, valid for an hour.
pub(crate) fn claims(sub: &str, scope: &str, inboxes: &[&str]) -> Value {
    json!({
        "sub": sub, "scope": scope, "inboxes": inboxes, "aud": AUDIENCE,
        "iat": now(), "exp": now() + 3600,
    })
}

pub(crate) fn hs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET).unwrap(),
    )
    .unwrap()
}

/// A token signed with one of the fixture keys (`rsa-1`, `ec-1`, `ed-1`), naming `kid`.
pub(crate) fn signed(alg: Algorithm, kid: &str, claims: &Value) -> String {
    let key = match alg {
        Algorithm::RS256 => {
            EncodingKey::from_rsa_der(&std::fs::read(fixture("rsa_private.der")).unwrap())
        }
        Algorithm::ES256 => {
            EncodingKey::from_ec_der(&std::fs::read(fixture("ec_private.der")).unwrap())
        }
        Algorithm::EdDSA => {
            EncodingKey::from_ed_der(&std::fs::read(fixture("ed_private.der")).unwrap())
        }
        other => panic!("no fixture key for {other:?}"),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    encode(&header, claims, &key).unwrap()
}

/// Alice's token (read and write, her inbox), by algorithm, so the table covers them all.
pub(crate) fn alice(alg: Algorithm) -> String {
    let c = claims("alice", "conversations:read messages:write", &[ALICE]);
    match alg {
        Algorithm::HS256 => hs256(&c),
        Algorithm::RS256 => signed(alg, "rsa-1", &c),
        Algorithm::ES256 => signed(alg, "ec-1", &c),
        _ => signed(alg, "ed-1", &c),
    }
}

/// An answer with its headers.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

pub(crate) async fn send(app: &axum::Router, mut request: Request<Body>) -> Reply {
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Reply {
        status,
        headers,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

fn with_token(
    mut builder: axum::http::request::Builder,
    token: Option<&str>,
) -> axum::http::request::Builder {
    if let Some(t) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    builder
}

/// POSTs a GraphQL operation with `token`.
pub(crate) async fn gql(
    app: &axum::Router,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Reply {
    let request = with_token(Request::post("/graphql"), token)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({ "query": query, "variables": variables }).to_string(),
        ))
        .unwrap();
    send(app, request).await
}

/// The `code` of a refusal in either shape (GraphQL errors or REST).
fn code_of(json: &Value) -> Option<String> {
    json["errors"][0]["extensions"]["code"]
        .as_str()
        .or_else(|| json["code"].as_str())
        .map(str::to_owned)
}

/// Seeds one conversation of Alice and Carol; returns its global id.
async fn seed(t: &TestDb) -> String {
    let r = record_message(
        &t.db,
        &Default::default(),
        NewMessage {
            channel: Channel::Sms,
            kind: None,
            direction: Direction::Outbound,
            from: ALICE.into(),
            to: vec![CAROL.into()],
            body: "seed".into(),
            attachments: vec![],
            provider_message_id: None,
            sent_at: None,
        },
    )
    .await
    .unwrap();
    api::graphql::ids::encode_id(
        api::graphql::ids::NodeType::Conversation,
        r.conversation.unwrap().id,
    )
    .to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    GraphqlQuery,
    GraphqlMutation,
    GraphqlGet,
    RestConversations,
    RestThread,
    RestWrite,
    WebhookSms,
    WebhookEmail,
    Metrics,
    GraphiQl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    NoToken,
    Malformed,
    Expired,
    NotYetValid,
    WrongAudience,
    AlgNone,
    HsRsConfusion,
    UnknownKid,
    MissingScope,
    OtherInbox,
    Valid,
}

const CASES: [Case; 11] = [
    Case::NoToken,
    Case::Malformed,
    Case::Expired,
    Case::NotYetValid,
    Case::WrongAudience,
    Case::AlgNone,
    Case::HsRsConfusion,
    Case::UnknownKid,
    Case::MissingScope,
    Case::OtherInbox,
    Case::Valid,
];

const ENDPOINTS: [Endpoint; 10] = [
    Endpoint::GraphqlQuery,
    Endpoint::GraphqlMutation,
    Endpoint::GraphqlGet,
    Endpoint::RestConversations,
    Endpoint::RestThread,
    Endpoint::RestWrite,
    Endpoint::WebhookSms,
    Endpoint::WebhookEmail,
    Endpoint::Metrics,
    Endpoint::GraphiQl,
];

/// The token of each case (`None`: no Authorization header).
fn token(case: Case, n: usize) -> Option<String> {
    let algs = [
        Algorithm::HS256,
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ];
    let mut valid = claims("alice", "conversations:read messages:write", &[ALICE]);
    Some(match case {
        Case::NoToken => return None,
        Case::Malformed => "not.a-jwt".into(),
        Case::Expired => {
            valid["exp"] = json!(now() - 3600);
            signed(Algorithm::RS256, "rsa-1", &valid)
        }
        Case::NotYetValid => {
            valid["nbf"] = json!(now() + 3600);
            hs256(&valid)
        }
        Case::WrongAudience => {
            valid["aud"] = json!("someone-else");
            signed(Algorithm::ES256, "ec-1", &valid)
        }
        Case::AlgNone => {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
            let payload = URL_SAFE_NO_PAD.encode(valid.to_string());
            format!("{header}.{payload}.")
        }
        Case::HsRsConfusion => {
            // HS256 "signed" with the RSA public key, as if it were a shared secret.
            let public = std::fs::read(fixture("rsa_public.pem")).unwrap();
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("rsa-1".into());
            encode(&header, &valid, &EncodingKey::from_secret(&public).unwrap()).unwrap()
        }
        Case::UnknownKid => signed(Algorithm::RS256, "rsa-9", &valid),
        Case::MissingScope => hs256(&claims("alice", "", &[ALICE])),
        Case::OtherInbox => hs256(&claims("bob", "conversations:read messages:write", &[BOB])),
        // Each valid request uses the next algorithm, so all four are exercised.
        Case::Valid => alice(algs[n % algs.len()]),
    })
}

/// The request of an endpoint with `token`.
fn request(endpoint: Endpoint, token: Option<&str>, thread: &str, n: usize) -> Request<Body> {
    let json_post = |path: &str, body: Value| {
        with_token(Request::post(path), token)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let get = |path: &str| {
        with_token(Request::get(path), token)
            .body(Body::empty())
            .unwrap()
    };
    let sms = json!({
        "from": ALICE, "to": CAROL, "type": "sms", "body": format!("table {n}"),
    });
    match endpoint {
        Endpoint::GraphqlQuery => json_post(
            "/graphql",
            json!({ "query": "{ conversations(first: 5) { totalCount nodes { id } } }" }),
        ),
        Endpoint::GraphqlMutation => json_post(
            "/graphql",
            json!({
                "query": "mutation($i: RecordMessageInput!) { recordMessage(input: $i) { message { id } } }",
                "variables": { "i": {
                    "channel": "SMS", "direction": "OUTBOUND", "from": ALICE, "to": [CAROL],
                    "body": format!("table {n}"),
                } },
            }),
        ),
        Endpoint::GraphqlGet => {
            get("/graphql?query=%7B%20conversations(first%3A%205)%20%7B%20totalCount%20%7D%20%7D")
        }
        Endpoint::RestConversations => get("/api/conversations"),
        Endpoint::RestThread => get(&format!("/api/conversations/{thread}/messages")),
        Endpoint::RestWrite => json_post("/api/messages/sms", sms),
        Endpoint::WebhookSms => {
            let mut p = sms;
            p["messaging_provider_id"] = json!(format!("table-{n}"));
            json_post("/api/webhooks/sms", p)
        }
        Endpoint::WebhookEmail => json_post(
            "/api/webhooks/email",
            json!({
                "from": "carol@example.com", "to": "alice@example.com", "body": "x",
                "xillio_id": format!("table-{n}"),
            }),
        ),
        Endpoint::Metrics => get("/metrics"),
        Endpoint::GraphiQl => get("/graphql"),
    }
}

/// What each endpoint answers each case: the status, the code, and whether it stores a
/// message.
fn expected(endpoint: Endpoint, case: Case) -> (StatusCode, Option<&'static str>, bool) {
    use Endpoint as E;
    let unauthenticated = (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED"), false);
    let forbidden = (StatusCode::FORBIDDEN, Some("FORBIDDEN"), false);
    match (endpoint, case) {
        // Bearer tokens do not authenticate a provider; its signature does.
        (E::WebhookSms | E::WebhookEmail, _) => unauthenticated,
        // GraphiQL is off with authentication on, whoever asks.
        (E::GraphiQl, _) => (StatusCode::NOT_FOUND, None, false),
        (
            _,
            Case::NoToken
            | Case::Malformed
            | Case::Expired
            | Case::NotYetValid
            | Case::WrongAudience
            | Case::AlgNone
            | Case::HsRsConfusion
            | Case::UnknownKid,
        ) => unauthenticated,
        (E::Metrics, _) => forbidden,
        (_, Case::MissingScope) => forbidden,
        (E::GraphqlMutation | E::RestWrite, Case::OtherInbox) => forbidden,
        (E::RestThread, Case::OtherInbox) => (StatusCode::NOT_FOUND, Some("NOT_FOUND"), false),
        (E::GraphqlMutation | E::RestWrite, Case::Valid) => (StatusCode::OK, None, true),
        (_, Case::OtherInbox | Case::Valid) => (StatusCode::OK, None, false),
    }
}

async fn every_endpoint_answers_every_token_as_the_table_says(t: &TestDb) {
    let app = secured(t, RateLimits::off());
    let thread = seed(t).await;
    let mut table = String::from("endpoint x case -> status code\n");
    let mut failures = Vec::new();
    let mut n = 0;
    for endpoint in ENDPOINTS {
        for case in CASES {
            n += 1;
            let before = t.count("messages").await;
            let token = token(case, n);
            let reply = send(&app, request(endpoint, token.as_deref(), &thread, n)).await;
            let after = t.count("messages").await;
            let (status, code, stores) = expected(endpoint, case);
            let got_code = code_of(&reply.json);
            table.push_str(&format!(
                "{endpoint:?} x {case:?} -> {} {}\n",
                reply.status.as_u16(),
                got_code.as_deref().unwrap_or("-")
            ));
            let stored = after - before;
            if reply.status != status
                || got_code.as_deref() != code && code.is_some()
                || stored != i64::from(stores)
            {
                failures.push(format!(
                    "{endpoint:?} x {case:?}: expected {status} {code:?} stored {stores}, got {} {got_code:?} stored {stored}: {}",
                    reply.status,
                    reply.text.chars().take(300).collect::<String>()
                ));
            }
            if reply.status == StatusCode::UNAUTHORIZED {
                assert_eq!(
                    reply.headers.get(header::WWW_AUTHENTICATE).unwrap(),
                    "Bearer error=\"invalid_token\"",
                    "{endpoint:?} x {case:?}"
                );
            }
            // Nothing of Alice's leaks to Bob (the thread's 404 echoes the id he sent).
            if case == Case::OtherInbox && endpoint != Endpoint::RestThread {
                assert!(
                    !reply.text.contains(&thread),
                    "{endpoint:?}: {}",
                    reply.text
                );
                assert!(!reply.text.contains("seed"), "{endpoint:?}: {}", reply.text);
            }
        }
    }
    // Bob's answer on Alice's thread is the answer on an id that does not exist.
    let bob = token(Case::OtherInbox, 0);
    let unknown =
        api::graphql::ids::encode_id(api::graphql::ids::NodeType::Conversation, 999).to_string();
    let theirs = send(
        &app,
        request(Endpoint::RestThread, bob.as_deref(), &thread, 0),
    )
    .await;
    let none = send(
        &app,
        request(Endpoint::RestThread, bob.as_deref(), &unknown, 0),
    )
    .await;
    assert_eq!(
        (theirs.status, theirs.text.replace(&thread, "ID")),
        (none.status, none.text.replace(&unknown, "ID"))
    );
    println!("{table}");
    assert!(failures.is_empty(), "{}\n\n{table}", failures.join("\n"));
    // What Alice may see, she sees.
    let reply = gql(
        &app,
        Some(&alice(Algorithm::EdDSA)),
        "{ conversations { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(reply.json["data"]["conversations"]["totalCount"], json!(1));
    // The admin may read the metrics.
    let admin = hs256(&claims("ops", "admin", &[]));
    let reply = send(
        &app,
        with_token(Request::get("/metrics"), Some(&admin))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.text.contains("parley_auth_failures_total"));
}

async fn admin_only_fields_are_forbidden_to_others(t: &TestDb) {
    let app = secured(t, RateLimits::off());
    let token = alice(Algorithm::HS256);
    for (query, field) in [
        (
            "{ unassignedMessages { totalCount } }",
            "unassignedMessages",
        ),
        (
            &*format!(
                "{{ normalizeAddresses(channel: SMS, addresses: [\"{ALICE}\", \"{CAROL}\"]) {{ valid conversation {{ id }} }} }}"
            ),
            "conversation",
        ),
    ] {
        let reply = gql(&app, Some(&token), query, json!({})).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
        assert_eq!(code_of(&reply.json).as_deref(), Some("FORBIDDEN"));
        assert_eq!(
            reply.json["errors"][0]["extensions"]["field"],
            json!(field),
            "{}",
            reply.text
        );
    }
    let admin = hs256(&claims("ops", "admin", &[]));
    let reply = gql(
        &app,
        Some(&admin),
        "{ unassignedMessages { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(
        reply.json["data"]["unassignedMessages"]["totalCount"],
        json!(0)
    );
}

async fn an_inbound_write_must_be_addressed_to_an_inbox(t: &TestDb) {
    let app = secured(t, RateLimits::off());
    let token = alice(Algorithm::RS256);
    let record = |from: &str, to: &str| {
        json!({ "i": {
            "channel": "SMS", "direction": "INBOUND", "from": from, "to": [to], "body": "in",
        } })
    };
    let mutation =
        "mutation($i: RecordMessageInput!) { recordMessage(input: $i) { message { id } } }";
    let reply = gql(&app, Some(&token), mutation, record(CAROL, BOB)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    assert_eq!(reply.json["errors"][0]["extensions"]["field"], json!("to"));
    assert_eq!(t.count("messages").await, 0);
    // Another spelling of Alice's number is her inbox all the same.
    let reply = gql(
        &app,
        Some(&token),
        mutation,
        record(CAROL, "(202) 555-0101"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(reply.json.get("errors").is_none(), "{}", reply.text);
    assert_eq!(t.count("messages").await, 1);
}

/// A webhook delivery signed (or not) as `signature` says.
async fn deliver(app: &axum::Router, body: &str, signature: Option<String>) -> Reply {
    let mut builder =
        Request::post("/api/webhooks/sms").header(header::CONTENT_TYPE, "application/json");
    if let Some(s) = signature {
        builder = builder.header("x-parley-signature", s);
    }
    send(app, builder.body(Body::from(body.to_owned())).unwrap()).await
}

async fn webhook_signatures_are_checked_and_nothing_is_stored_without_one(t: &TestDb) {
    let app = secured(t, RateLimits::off());
    let body = json!({
        "from": CAROL, "to": ALICE, "type": "sms", "body": "hello",
        "messaging_provider_id": "provider-1",
    })
    .to_string();
    let tampered = body.replace("hello", "hellO");
    let t0 = now();
    let new = SMS_SECRET_NEW.as_bytes();
    let cases: Vec<(&str, &str, Option<String>)> = vec![
        ("missing", &body, None),
        ("malformed", &body, Some("t=abc,v1=zz".into())),
        (
            "tampered body",
            &tampered,
            Some(sign(new, t0, body.as_bytes())),
        ),
        (
            "tampered timestamp",
            &body,
            Some(sign(new, t0, body.as_bytes()).replacen(
                &format!("t={t0}"),
                &format!("t={}", t0 - 1),
                1,
            )),
        ),
        // Well outside the 300 s window: the server reads its clock later than `t0`, so a
        // time 301 s ahead was 300 s ahead once a second had ticked meanwhile (it failed
        // so under load). The unit tests of `auth::webhook` check the exact edges with a
        // fixed clock.
        ("stale", &body, Some(sign(new, t0 - 330, body.as_bytes()))),
        ("future", &body, Some(sign(new, t0 + 330, body.as_bytes()))),
        (
            "unknown secret",
            &body,
            Some(sign(b"not-our-secret-0123456789", t0, body.as_bytes())),
        ),
        (
            "email secret on sms",
            &body,
            Some(sign(EMAIL_SECRET.as_bytes(), t0, body.as_bytes())),
        ),
    ];
    for (what, payload, signature) in cases {
        let reply = deliver(&app, payload, signature).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            reply.text
        );
        assert_eq!(
            code_of(&reply.json).as_deref(),
            Some("UNAUTHENTICATED"),
            "{what}"
        );
        assert_eq!(t.count("messages").await, 0, "{what}");
    }
    // Either secret of a rotation is accepted; a redelivery is idempotent.
    let reply = deliver(&app, &body, Some(sign(new, t0, body.as_bytes()))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["duplicate"], json!(false));
    let old = SMS_SECRET_OLD.as_bytes();
    let reply = deliver(&app, &body, Some(sign(old, t0 - 200, body.as_bytes()))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["duplicate"], json!(true));
    assert_eq!(t.count("messages").await, 1);
}

async fn a_provider_without_a_secret_is_refused_when_auth_is_on(t: &TestDb) {
    let mut security = security(RateLimits::off());
    security.webhooks = WebhookSecrets::parse(&format!("sms {SMS_SECRET_NEW}")).unwrap();
    let app = api::router(api::AppState::secured(
        t.db.clone(),
        AppConfig::default(),
        security,
    ));
    let body = json!({ "from": "c@example.com", "to": "a@example.com", "body": "x" }).to_string();
    let signature = sign(SMS_SECRET_NEW.as_bytes(), now(), body.as_bytes());
    let reply = send(
        &app,
        Request::post("/api/webhooks/email")
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-parley-signature", signature)
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    assert!(reply.text.contains("--webhook-secrets"), "{}", reply.text);
    assert_eq!(t.count("messages").await, 0);
}

async fn the_rate_limit_is_per_principal_with_retry_after(t: &TestDb) {
    let app = secured(t, RateLimits::new(3, 2));
    let query = "{ conversations { totalCount } }";
    let token = alice(Algorithm::HS256);
    for i in 0..3 {
        let reply = gql(&app, Some(&token), query, json!({})).await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}: {}", reply.text);
    }
    let reply = gql(&app, Some(&token), query, json!({})).await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text
    );
    assert_eq!(code_of(&reply.json).as_deref(), Some("RATE_LIMITED"));
    let retry: u64 = reply.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    // Bob is not held back by Alice.
    let bob = hs256(&claims("bob", "conversations:read", &[BOB]));
    let reply = gql(&app, Some(&bob), query, json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    // REST answers the same code in its own shape.
    let reply = send(
        &app,
        with_token(Request::get("/api/conversations"), Some(&token))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.json["code"], json!("RATE_LIMITED"));
    // Failed authentications are limited per client IP (2 a minute here).
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(gql(&app, Some("garbage"), query, json!({})).await.status);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // Webhook deliveries are limited per client IP too (2 a minute here), signed or not.
    let body = json!({ "from": CAROL, "to": ALICE, "type": "sms", "body": "x" }).to_string();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let signature = sign(SMS_SECRET_NEW.as_bytes(), now(), body.as_bytes());
        statuses.push(deliver(&app, &body, Some(signature)).await.status);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(t.count("messages").await, 2);
}

async fn cors_allows_the_listed_origin_only(t: &TestDb) {
    let app = secured(t, RateLimits::off());
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/graphql")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type",
            )
            .body(Body::empty())
            .unwrap()
    };
    let reply = send(&app, preflight("https://app.example.com")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    let allowed = reply.headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    assert!(
        !reply
            .headers
            .contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
    );
    let reply = send(&app, preflight("https://evil.example.net")).await;
    assert!(
        !reply
            .headers
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
    // An actual cross-origin read from the allowed origin carries the header.
    let request = with_token(Request::post("/graphql"), Some(&alice(Algorithm::ES256)))
        .header(header::ORIGIN, "https://app.example.com")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({ "query": "{ conversations { totalCount } }" }).to_string(),
        ))
        .unwrap();
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
}

/// The middleware wraps the routes as one stack (`api::router`): answers made at every depth
/// of it (the handler, the auth guard, the body limit) and by the routes' own fallbacks (an
/// unknown path, a method a route does not take) all pass its outer layers: the client's
/// request id is echoed, and an allowed origin gets its CORS header.
async fn every_answer_passes_the_whole_middleware(t: &TestDb) {
    let app = secured(t, RateLimits::off());
    let token = alice(Algorithm::ES256);
    let query = || Body::from(json!({ "query": "{ conversations { totalCount } }" }).to_string());
    let json_post = |token: Option<&str>| {
        with_token(Request::post("/graphql"), token)
            .header(header::CONTENT_TYPE, "application/json")
    };
    let cases = vec![
        (
            "handled",
            json_post(Some(&token)).body(query()),
            StatusCode::OK,
        ),
        (
            "no token",
            json_post(None).body(query()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "unknown path",
            with_token(Request::get("/nowhere"), Some(&token)).body(Body::empty()),
            StatusCode::NOT_FOUND,
        ),
        (
            "wrong method",
            with_token(Request::delete("/graphql"), Some(&token)).body(Body::empty()),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "body over the limit",
            json_post(Some(&token))
                .header(header::CONTENT_LENGTH, 64 << 20)
                .body(Body::from(vec![b' '; 64 << 20])),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (what, request, status) in cases {
        let request = {
            let mut r = request.unwrap();
            r.headers_mut()
                .insert(header::ORIGIN, "https://app.example.com".parse().unwrap());
            r.headers_mut()
                .insert("x-request-id", "edge-7".parse().unwrap());
            r
        };
        let reply = send(&app, request).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.text);
        assert_eq!(reply.headers["x-request-id"], "edge-7", "{what}");
        assert_eq!(
            reply.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com",
            "{what}"
        );
    }
    // Without a client id, one is made and echoed.
    let reply = send(&app, json_post(Some(&token)).body(query()).unwrap()).await;
    assert!(!reply.headers["x-request-id"].is_empty());
}

on_both_engines!(
    every_answer_passes_the_whole_middleware,
    every_endpoint_answers_every_token_as_the_table_says,
    admin_only_fields_are_forbidden_to_others,
    an_inbound_write_must_be_addressed_to_an_inbox,
    webhook_signatures_are_checked_and_nothing_is_stored_without_one,
    a_provider_without_a_secret_is_refused_when_auth_is_on,
    the_rate_limit_is_per_principal_with_retry_after,
    cors_allows_the_listed_origin_only,
);

/// `parley serve ARGS`' security, as start-up builds it.
fn start(args: &[&str]) -> anyhow::Result<(Security, AppConfig)> {
    let cli = api::cli::Cli::try_parse_from(["parley", "serve"].iter().chain(args.iter()).copied())
        .unwrap();
    let Some(api::cli::Command::Serve(serve)) = cli.command else {
        panic!("not serve")
    };
    let security = Security::from_args(&serve.security, serve.bind, Default::default())?;
    Ok((security, serve.app_config()))
}

#[test]
fn without_auth_only_loopback_is_served_unless_told_otherwise() {
    let (security, config) = start(&["--bind", "127.0.0.1:0"]).unwrap();
    assert!(!security.auth_enabled());
    assert!(security.graphiql && config.graphql.introspection);
    let (security, _) = start(&["--bind", "[::1]:0"]).unwrap();
    assert!(!security.auth_enabled());
    let err = start(&["--bind", "0.0.0.0:8080"]).unwrap_err().to_string();
    for flag in [
        "--jwt-secret-file",
        "--jwks-file",
        "--insecure-no-auth",
        "--bind",
    ] {
        assert!(err.contains(flag), "{err}");
    }
    let (security, _) = start(&["--bind", "0.0.0.0:8080", "--insecure-no-auth"]).unwrap();
    assert!(!security.auth_enabled());
}

#[test]
fn with_auth_graphiql_and_introspection_are_off_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let secret = secret.to_str().unwrap();
    let (security, config) =
        start(&["--bind", "0.0.0.0:8080", "--jwt-secret-file", secret]).unwrap();
    assert!(security.auth_enabled());
    assert!(!security.graphiql);
    assert!(!config.graphql.introspection);
    assert!(config.auth_required);
    let (security, config) =
        start(&["--jwt-secret-file", secret, "--graphiql", "--introspection"]).unwrap();
    assert!(security.graphiql && config.graphql.introspection);
    let jwks = fixture("jwks.json");
    let (security, _) = start(&["--jwks-file", jwks.to_str().unwrap()]).unwrap();
    assert!(security.auth_enabled());
    // A short secret is refused, saying how to make a good one.
    std::fs::write(dir.path().join("short"), "abc").unwrap();
    let err = start(&[
        "--jwt-secret-file",
        dir.path().join("short").to_str().unwrap(),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("openssl rand"), "{err}");
}

#[test]
fn an_hs256_token_is_refused_by_a_server_with_only_public_keys() {
    let auth = Authenticator::new(JwtOptions {
        jwks_file: Some(fixture("jwks.json")),
        leeway: Duration::from_secs(5),
        ..Default::default()
    })
    .unwrap();
    let public = std::fs::read(fixture("rsa_public.pem")).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let c = claims("mallory", "admin", &["*"]);
    let confused = encode(&header, &c, &EncodingKey::from_secret(&public).unwrap()).unwrap();
    assert_eq!(
        auth.verify(&confused),
        Err(api::auth::jwt::AuthError::Algorithm)
    );
    // An ES256 token naming the RSA key is refused too.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("rsa-1".into());
    let ec = EncodingKey::from_ec_der(&std::fs::read(fixture("ec_private.der")).unwrap());
    let wrong_family = encode(&header, &c, &ec).unwrap();
    assert_eq!(
        auth.verify(&wrong_family),
        Err(api::auth::jwt::AuthError::Algorithm)
    );
    assert!(auth.verify(&signed(Algorithm::EdDSA, "ed-1", &c)).is_ok());
}

#[test]
fn a_minted_token_verifies_and_carries_normalized_inboxes() {
    let options = api::auth::jwt::MintOptions {
        sub: "dev".into(),
        scope: "conversations:read messages:write".into(),
        inboxes: vec!["(202) 555-0101".into(), "Ops@Example.com".into()],
        ttl: Duration::from_secs(60),
        issuer: Some("me".into()),
        audience: Some(AUDIENCE.into()),
    };
    let token = api::auth::jwt::mint(SECRET, &options, Default::default()).unwrap();
    let auth = Authenticator::new(JwtOptions {
        secret: Some(SECRET.to_vec()),
        issuer: Some("me".into()),
        audience: Some(AUDIENCE.into()),
        ..Default::default()
    })
    .unwrap();
    let p = auth.verify(&token).unwrap();
    assert_eq!(&*p.sub, "dev");
    assert_eq!(
        p.inboxes,
        service::access::Inboxes::Only(vec![ALICE.to_owned(), "ops@example.com".to_owned()].into())
    );
    let bad = api::auth::jwt::MintOptions {
        scope: "conversations:write".into(),
        ..options
    };
    assert!(api::auth::jwt::mint(SECRET, &bad, Default::default()).is_err());
    // A token of another issuer is refused.
    let other = Authenticator::new(JwtOptions {
        secret: Some(SECRET.to_vec()),
        issuer: Some("someone-else".into()),
        audience: Some(AUDIENCE.into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(other.verify(&token), Err(api::auth::jwt::AuthError::Issuer));
}

/// The real binary: `parley token` mints what `parley serve --jwt-secret-file` accepts,
/// `--metrics-bind` serves the metrics without a token on its own address while the main
/// one asks for `admin`, and neither the token nor the secret reaches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_accepts_the_tokens_it_mints_and_logs_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef-binary-test\n").unwrap();
    let secret = secret.to_str().unwrap();
    let url = parley_tests::sqlite_url_in(dir.path());
    let minted = parley_tests::run_parley(
        &url,
        &[
            "token",
            "--jwt-secret-file",
            secret,
            "--sub",
            "alice",
            "--scope",
            "conversations:read",
            "--inbox",
            "(202) 555-0101",
            "--ttl",
            "5m",
        ],
    )
    .await;
    assert!(minted.status.success(), "{minted:?}");
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let refused = parley_tests::run_parley(
        &url,
        &[
            "token",
            "--jwt-secret-file",
            secret,
            "--sub",
            "x",
            "--scope",
            "read",
        ],
    )
    .await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown scope `read`"));

    let metrics_port = parley_tests::free_port();
    let metrics_bind = format!("127.0.0.1:{metrics_port}");
    let server = parley_tests::Server::start(
        &url,
        &[],
        &["--jwt-secret-file", secret, "--metrics-bind", &metrics_bind],
    )
    .await;
    let client = reqwest::Client::new();
    let query = json!({ "query": "{ conversations { totalCount } }" });
    let ok = client
        .post(server.url("/graphql"))
        .bearer_auth(&token)
        .json(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.json::<Value>().await.unwrap()["data"]["conversations"]["totalCount"],
        json!(0)
    );
    let no_token = client
        .post(server.url("/graphql"))
        .json(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    let main_metrics = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(main_metrics.status(), 401);
    let internal = client
        .get(format!("http://{metrics_bind}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(internal.status(), 200);
    let text = internal.text().await.unwrap();
    assert!(
        text.contains("parley_auth_failures_total{reason=\"missing\"}"),
        "{text}"
    );
    let logs = server.logs();
    assert!(!logs.contains(&token), "the token was logged:\n{logs}");
    assert!(!logs.contains("0123456789abcdef0123456789abcdef"), "{logs}");
    assert!(!logs.contains("authentication is OFF"), "{logs}");
}

/// Without a key on loopback the binary runs in development mode and says so once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_warns_once_in_development_mode() {
    let dir = tempfile::tempdir().unwrap();
    let url = parley_tests::sqlite_url_in(dir.path());
    let server = parley_tests::Server::start(&url, &[], &[]).await;
    let r = reqwest::Client::new()
        .post(server.url("/graphql"))
        .json(&json!({ "query": "{ conversations { totalCount } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server.logs().matches("authentication is OFF").count(), 1);
}

/// The JWKS file is re-read on SIGHUP: a key added to it is accepted from then on, and a
/// file that no longer parses keeps the keys in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_jwks_file() {
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    let full: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("jwks.json")).unwrap()).unwrap();
    let only_ec = json!({ "keys": [full["keys"][1].clone()] });
    std::fs::write(&jwks_path, only_ec.to_string()).unwrap();
    let url = parley_tests::sqlite_url_in(dir.path());
    let server =
        parley_tests::Server::start(&url, &[], &["--jwks-file", jwks_path.to_str().unwrap()]).await;
    let c = json!({
        "sub": "alice", "scope": "conversations:read", "inboxes": [ALICE], "exp": now() + 600,
    });
    let rs = signed(Algorithm::RS256, "rsa-1", &c);
    let es = signed(Algorithm::ES256, "ec-1", &c);
    let client = reqwest::Client::new();
    let status = |token: String| {
        let client = client.clone();
        let url = server.url("/api/conversations");
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(rs.clone()).await, 401);
    assert_eq!(status(es.clone()).await, 200);
    let hup = |pid: u32| {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP");
    };
    std::fs::write(&jwks_path, full.to_string()).unwrap();
    hup(server.pid());
    let mut accepted = false;
    for _ in 0..100 {
        if status(rs.clone()).await == 200 {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        accepted,
        "the new key was not picked up:\n{}",
        server.logs()
    );
    std::fs::write(&jwks_path, "not json").unwrap();
    hup(server.pid());
    for _ in 0..100 {
        if server.logs().contains("the old keys stay") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server.logs().contains("the old keys stay"),
        "{}",
        server.logs()
    );
    assert_eq!(status(rs).await, 200);
    assert_eq!(status(es).await, 200);
}

/// A verified token is remembered, but never past its `exp`.
#[test]
fn a_remembered_token_still_expires() {
    let auth = Authenticator::new(JwtOptions {
        secret: Some(SECRET.to_vec()),
        leeway: Duration::ZERO,
        ..Default::default()
    })
    .unwrap();
    let mut c = claims("alice", "conversations:read", &[ALICE]);
    c.as_object_mut().unwrap().remove("aud");
    c["exp"] = json!(now() + 1);
    let token = hs256(&c);
    assert!(auth.verify(&token).is_ok());
    assert!(auth.verify(&token).is_ok());
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(auth.verify(&token), Err(api::auth::jwt::AuthError::Expired));
}
