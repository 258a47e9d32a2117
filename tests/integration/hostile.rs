//! Hostile input: every limit passes at N and rejects N+1 with a code, and the server
//! still answers afterwards. These need no particular engine: they run on SQLite.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use parley_tests::{AppConfig, TestApp, TestDb, error_code};
use serde_json::{Value, json};

async fn app(config: AppConfig) -> (TestDb, TestApp) {
    let t = TestDb::sqlite().await;
    let app = t.app(config);
    (t, app)
}

async fn still_healthy(app: &TestApp) {
    let h = app.get("/healthz").await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.text, "ok");
}

/// `{ c0: conversation(id: "x") { id } c1: ... }`: each alias costs 2.
fn aliases(n: usize) -> String {
    let mut q = String::from("{");
    for i in 0..n {
        q.push_str(&format!(" c{i}: conversation(id: \"x\") {{ id }}"));
    }
    q.push('}');
    q
}

/// A selection `depth` fields deep.
fn deep(depth: usize) -> String {
    // conversation -> lastMessage -> conversation -> ... -> id
    let mut q = String::from("{ conversation(id: \"x\") {");
    let mut open = 1;
    for i in 1..depth - 1 {
        q.push_str(if i % 2 == 1 {
            " lastMessage {"
        } else {
            " conversation {"
        });
        open += 1;
    }
    q.push_str(" id");
    q.push_str(&" }".repeat(open));
    q.push_str(" }");
    q
}

#[tokio::test]
async fn body_size_is_capped_before_parsing() {
    let limit = 4096;
    let (_t, app) = app(AppConfig {
        max_request_bytes: limit,
        ..Default::default()
    })
    .await;
    let body = |len: usize| {
        let mut s = json!({ "query": "{ conversations(first: 1) { totalCount } }" }).to_string();
        s.insert_str(1, &" ".repeat(len - s.len()));
        s
    };
    let send = |b: String| {
        let app = app.clone();
        async move {
            app.send(
                Request::post("/graphql")
                    .header("content-type", "application/json")
                    .body(Body::from(b))
                    .unwrap(),
            )
            .await
        }
    };
    // The in-process router sees no Content-Length (hyper would add one on a socket), so
    // these exercise the streaming cut-off; a Content-Length over the limit is refused by
    // the layer before the body is read.
    let announced = app
        .send(
            Request::post("/graphql")
                .header("content-type", "application/json")
                .header("content-length", (limit + 1).to_string())
                .body(Body::from(body(limit + 1)))
                .unwrap(),
        )
        .await;
    assert_eq!(announced.status, StatusCode::PAYLOAD_TOO_LARGE);
    let at = send(body(limit)).await;
    assert_eq!(at.status, StatusCode::OK, "{}", at.text);
    assert!(at.json.get("errors").is_none());
    let over = send(body(limit + 1)).await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&over.json), "PAYLOAD_TOO_LARGE");
    // A streamed body without Content-Length is cut off at the limit too.
    let stream = futures::stream::iter(
        body(limit + 1)
            .into_bytes()
            .chunks(512)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let streamed = app
        .send(
            Request::post("/graphql")
                .header("content-type", "application/json")
                .body(Body::from_stream(stream))
                .unwrap(),
        )
        .await;
    assert_eq!(
        streamed.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        streamed.text
    );
    still_healthy(&app).await;
}

#[tokio::test]
async fn deeply_nested_literals_are_refused_before_the_parser_sees_them() {
    let (_t, app) = app(AppConfig::default()).await;
    // 2000 nested brackets in 4 KB: unprotected, this overflows the parser's stack and
    // aborts the whole test process.
    let bomb = format!(
        "{{ normalizeAddresses(channel: SMS, addresses: {}{}) {{ valid }} }}",
        "[".repeat(2000),
        "]".repeat(2000)
    );
    let body = app.graphql(&bomb, json!({})).await;
    assert_eq!(error_code(&body), "QUERY_TOO_COMPLEX");
    // Unbalanced, too.
    let body = app.graphql(&"[".repeat(100_000), json!({})).await;
    assert_eq!(error_code(&body), "QUERY_TOO_COMPLEX");
    // At the limit (32 levels, braces included) it reaches validation, which refuses the
    // type, not the nesting.
    let max = AppConfig::default().graphql.max_nesting;
    let at = |levels: usize| {
        format!(
            "{{ normalizeAddresses(channel: SMS, addresses: {}\"+12016661234\"{}) {{ valid }} }}",
            "[".repeat(levels),
            "]".repeat(levels)
        )
    };
    // `{` + `(` + brackets + `{` of the selection: brackets = max - 2 reach exactly max.
    let ok = app.graphql(&at(max - 2), json!({})).await;
    assert_ne!(error_code(&ok), "QUERY_TOO_COMPLEX", "{ok:#}");
    let over = app.graphql(&at(max - 1), json!({})).await;
    assert_eq!(error_code(&over), "QUERY_TOO_COMPLEX");
    still_healthy(&app).await;
}

#[tokio::test]
async fn query_depth_is_limited() {
    let (_t, app) = app(AppConfig::default()).await;
    let max = AppConfig::default().graphql.max_depth;
    let ok = app.graphql(&deep(max), json!({})).await;
    assert!(ok.get("errors").is_none(), "{ok:#}");
    let over = app.graphql(&deep(max + 1), json!({})).await;
    assert_eq!(error_code(&over), "QUERY_TOO_COMPLEX", "{over:#}");
    still_healthy(&app).await;
}

#[tokio::test]
async fn complexity_counts_aliases() {
    // The price counts values (each alias: its field, its object and `id`: 3); a small
    // budget keeps the flood under the token limit, which refuses larger ones first.
    let mut config = AppConfig::default();
    config.graphql.max_complexity = 300;
    let (_t, app) = app(config).await;
    let max = config.graphql.max_complexity;
    let ok = app.graphql(&aliases(max / 3), json!({})).await;
    assert!(ok.get("errors").is_none(), "{ok}");
    let ok_cost = &ok["extensions"]["analyzer"]["complexity"];
    assert_eq!(ok_cost, max, "the Analyzer reports the cost");
    assert_eq!(ok["extensions"]["cost"]["requested"], max, "{ok}");
    let over = app.graphql(&aliases(max / 3 + 1), json!({})).await;
    assert_eq!(error_code(&over), "QUERY_TOO_COMPLEX");
    assert_eq!(over["extensions"]["cost"]["requested"], max + 3, "{over}");
    let ten_thousand = app.graphql(&aliases(10_000), json!({})).await;
    assert_eq!(error_code(&ten_thousand), "QUERY_TOO_COMPLEX");
    // Page size counts: 100 conversations with 10 fields each is over the limit.
    let wide = app
        .graphql(
            "{ conversations(first: 100) { nodes { id channel participants key messageCount firstMessageAt lastMessageAt createdAt snippet lastMessage { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&wide), "QUERY_TOO_COMPLEX");
    still_healthy(&app).await;
}

#[tokio::test]
async fn directives_per_field_are_limited() {
    let (_t, app) = app(AppConfig::default()).await;
    let max = AppConfig::default().graphql.max_directives;
    // @skip and @include are the only executable directives, so a field never needs more
    // than the default 2; more can only be repeats, refused before validation runs.
    let q = |n: usize| {
        let d: Vec<&str> = ["@skip(if: false)", "@include(if: true)"]
            .iter()
            .copied()
            .cycle()
            .take(n)
            .collect();
        format!(
            "{{ conversations(first: 1) {{ totalCount {} }} }}",
            d.join(" ")
        )
    };
    let ok = app.graphql(&q(max), json!({})).await;
    assert!(ok.get("errors").is_none(), "{ok:#}");
    let over = app.graphql(&q(max + 1), json!({})).await;
    assert_eq!(error_code(&over), "QUERY_TOO_COMPLEX", "{over:#}");
    still_healthy(&app).await;
}

#[tokio::test]
async fn batches_are_capped() {
    let (_t, app) = app(AppConfig::default()).await;
    let max = AppConfig::default().graphql.max_batch;
    let batch = |n: usize| {
        Value::Array(vec![
            json!({ "query": "{ conversations(first: 1) { totalCount } }" });
            n
        ])
    };
    let ok = app.post_json("/graphql", &batch(max)).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json.as_array().unwrap().len(), max);
    assert!(
        ok.json
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["data"]["conversations"]["totalCount"] == 0)
    );
    let over = app.post_json("/graphql", &batch(max + 1)).await;
    assert_eq!(over.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&over.json), "QUERY_TOO_COMPLEX");
    still_healthy(&app).await;
}

#[tokio::test]
async fn mutations_are_refused_over_get() {
    let (t, app) = app(AppConfig::default()).await;
    let q = |query: &str| format!("/graphql?query={}", urlencode(query));
    let read = app
        .get(&q("{ conversations(first: 1) { totalCount } }"))
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert_eq!(read.json["data"]["conversations"]["totalCount"], 0);
    let write = app
        .get(&q(r#"mutation { recordMessage(input: { channel: SMS, direction: OUTBOUND, from: "+12016661234", to: ["+18045551234"], body: "x" }) { duplicate } }"#))
        .await;
    assert_eq!(write.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&write.json), "METHOD_NOT_ALLOWED");
    assert_eq!(t.count("messages").await, 0);
    let page = app
        .send(
            Request::get("/graphql")
                .header("accept", "text/html")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("graphiql"), "GraphiQL page");
    still_healthy(&app).await;
}

#[tokio::test]
async fn page_size_is_capped_at_the_configured_maximum() {
    let (_t, app) = app(AppConfig::default()).await;
    for (q, ok) in [
        ("{ conversations(first: 100) { totalCount } }", true),
        ("{ conversations(first: 101) { totalCount } }", false),
        ("{ conversations(last: 100) { totalCount } }", true),
        ("{ conversations(last: 101) { totalCount } }", false),
        ("{ unassignedMessages(first: 101) { totalCount } }", false),
    ] {
        let body = app.graphql(q, json!({})).await;
        if ok {
            assert!(body.get("errors").is_none(), "{q}: {body:#}");
        } else {
            assert_eq!(error_code(&body), "BAD_USER_INPUT", "{q}");
        }
    }
    still_healthy(&app).await;
}

#[tokio::test]
async fn introspection_and_suggestions_can_be_turned_off() {
    let introspect = "{ __schema { queryType { name } } }";
    let typo = "{ conversation(id: \"x\") { messageCont } }";
    let (_t, open) = app(AppConfig::default()).await;
    let on = open.graphql(introspect, json!({})).await;
    assert_eq!(on["data"]["__schema"]["queryType"]["name"], "Query");
    let hint = open.graphql(typo, json!({})).await;
    assert!(
        hint["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Did you mean"),
        "{hint:#}"
    );

    let mut config = AppConfig::default();
    config.graphql.introspection = false;
    config.graphql.suggestions = false;
    let (_t2, closed) = app(config).await;
    let off = closed.graphql(introspect, json!({})).await;
    assert!(
        off.get("errors").is_some() || off["data"]["__schema"].is_null(),
        "{off:#}"
    );
    let no_hint = closed.graphql(typo, json!({})).await;
    assert!(
        !no_hint["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Did you mean"),
        "{no_hint:#}"
    );
    still_healthy(&closed).await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// graphql-js's `getIntrospectionQuery()`, as GraphiQL and codegen tools send it.
const INTROSPECTION_QUERY: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) {
    name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
}"#;

#[tokio::test]
async fn tools_standard_introspection_query_passes_the_depth_limit() {
    let (_t, app) = app(AppConfig::default()).await;
    let body = app.graphql(INTROSPECTION_QUERY, json!({})).await;
    assert!(body.get("errors").is_none(), "{}", &body.to_string()[..300]);
    let depth = body["extensions"]["analyzer"]["depth"].as_u64().unwrap();
    assert!(
        depth > AppConfig::default().graphql.max_depth as u64,
        "{depth}"
    );
    let types = body["data"]["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "Conversation"));
    // Data queries keep the ordinary limit, even with introspection fields beside them.
    let mixed = format!(
        "{{ __typename {} }}",
        deep(AppConfig::default().graphql.max_depth + 1)
            .trim_start_matches('{')
            .trim_end_matches('}')
    );
    let over = app.graphql(&mixed, json!({})).await;
    assert_eq!(error_code(&over), "QUERY_TOO_COMPLEX", "{over:#}");
}
