//! `parley-floor`: the floor of parley's stack for the three reads of issue 17.
//!
//! A benchmark reference, not a product. It answers exactly the three documents the
//! read benchmarks send (`bench/callgrind.py`'s and `parley-bench`'s list, edges and
//! thread) over parley's own PostgreSQL tables, on the stack parley is fixed to (axum 0.8,
//! async-graphql 7, sqlx under sea-orm 2, tokio), with nothing else: no middleware, no
//! authentication, no pricing, no limits, no caches, no metrics, no logging. What it costs
//! per request is what that stack costs at the least for these answers, so parley's figure
//! minus this one is what parley adds.
//!
//! It runs as `parley serve` runs under the benchmark tools (`parley-floor serve` with
//! `DATABASE_URL`, `PARLEY_BIND` and `PARLEY_DB_MAX_CONNECTIONS`; `/healthz` and `/readyz`),
//! on a database that `parley migrate up` created and `parley-bench` seeded. Its own
//! setting, `PARLEY_FLOOR_MODE`, picks what answers `POST /graphql`:
//!
//! - `graphql` (the default): an async-graphql schema of just these fields, executed per
//!   request as async-graphql-axum's extractor and response hand it over (parse, validate,
//!   execute, `Value` tree, serde_json), the rows read with plain sqlx statements.
//! - `graphql-cached`: the same schema, with each document parsed once (kept by its text and
//!   handed to async-graphql already parsed) and `ValidationMode::Fast`: what async-graphql
//!   costs when only its execution runs per request, as parley's remembered documents do.
//! - `json`: the same statements, no GraphQL: the request body's `query` is matched
//!   against the three documents and the answer is written from the rows with serde_json.
//! - `constant`: the three answers read once at start-up (the thread of conversation 1)
//!   and sent as they are: axum and hyper reading a request and writing the same bytes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use anyhow::{Context as _, bail};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{
    Context, EmptyMutation, EmptySubscription, Enum, ID, Object, Schema, SimpleObject,
    ValidationMode,
};
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sea_orm::sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sea_orm::sqlx::{self, Row as _};
use serde::{Deserialize, Serialize, Serializer};

/// The list and edges documents, as the benchmark tools send them.
const LIST: &str =
    "{ conversations(first: 50) { nodes { participants messageCount snippet lastMessageAt } } }";
const EDGES: &str = "{ conversations(first: 50) { edges { cursor node { id channel participants messageCount snippet lastMessageAt } } pageInfo { endCursor hasNextPage } } }";
/// The thread document; its `$id` is a conversation's global id.
const THREAD: &str = "query T($id: ID!) { conversation(id: $id) { messages(last: 50) { nodes { id body sentAt direction } } } }";

/// A page of conversations by last activity, newest first, one row past the page.
const PAGE_SQL: &str = "SELECT id, channel, participants_key, message_count, last_message_at, snippet \
     FROM conversations ORDER BY last_message_at DESC, id DESC LIMIT $1";
/// One conversation by id, the same columns.
const CONVERSATION_SQL: &str = "SELECT id, channel, participants_key, message_count, last_message_at, snippet \
     FROM conversations WHERE id = $1";
/// A thread's last messages, newest first (the caller turns them around).
const THREAD_SQL: &str = "SELECT id, body, sent_at, direction FROM messages \
     WHERE conversation_id = $1 ORDER BY sent_at DESC, id DESC LIMIT $2";

/// What answers `POST /graphql` (`PARLEY_FLOOR_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Graphql,
    GraphqlCached,
    Json,
    Constant,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None | Some("serve") => {}
        Some(other) => bail!(
            "parley-floor only serves (`parley-floor serve`), not `{other}`: create and migrate the database with parley"
        ),
    }
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL is not set")?;
    let bind = std::env::var("PARLEY_BIND").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let pool_size: u32 = match std::env::var("PARLEY_DB_MAX_CONNECTIONS") {
        Ok(n) => n.parse().context("PARLEY_DB_MAX_CONNECTIONS")?,
        // parley's default pool.
        Err(_) => 16,
    };
    let mode = match std::env::var("PARLEY_FLOOR_MODE").as_deref() {
        Err(_) | Ok("graphql") => Mode::Graphql,
        Ok("graphql-cached") => Mode::GraphqlCached,
        Ok("json") => Mode::Json,
        Ok("constant") => Mode::Constant,
        Ok(other) => {
            bail!("PARLEY_FLOOR_MODE={other}: expected graphql, graphql-cached, json or constant")
        }
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(&url, &bind, pool_size, mode))
}

async fn serve(url: &str, bind: &str, pool_size: u32, mode: Mode) -> anyhow::Result<()> {
    // No ping before each acquire: a round trip per request that the floor does not need.
    let pool = PgPoolOptions::new()
        .max_connections(pool_size)
        .test_before_acquire(false)
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let graphql = match mode {
        Mode::Graphql => {
            let schema = Schema::build(Query, EmptyMutation, EmptySubscription)
                .data(pool)
                .finish();
            post(graphql_handler).with_state(schema)
        }
        Mode::GraphqlCached => {
            let build = |mode| {
                Schema::build(Query, EmptyMutation, EmptySubscription)
                    .data(pool.clone())
                    .validation_mode(mode)
                    .finish()
            };
            post(cached_handler).with_state(Arc::new(Cached {
                strict: build(ValidationMode::Strict),
                fast: build(ValidationMode::Fast),
                documents: RwLock::new(HashMap::new()),
            }))
        }
        Mode::Json => post(json_handler).with_state(pool),
        Mode::Constant => post(constant_handler).with_state(Arc::new(Constant::read(&pool).await?)),
    };
    let app = Router::new()
        .route("/graphql", graphql)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding {bind}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// A conversation row: the columns the three documents read.
struct ConversationRow {
    id: i64,
    channel: Channel,
    participants_key: String,
    message_count: i64,
    last_message_at: DateTime<Utc>,
    snippet: String,
}

impl ConversationRow {
    fn from_row(row: &PgRow) -> sqlx::Result<Self> {
        Ok(ConversationRow {
            id: row.try_get(0)?,
            channel: Channel::parse(row.try_get(1)?),
            participants_key: row.try_get(2)?,
            message_count: row.try_get(3)?,
            last_message_at: row.try_get(4)?,
            snippet: row.try_get(5)?,
        })
    }

    /// The participants, split from the key (the addresses joined by U+001F), as parley
    /// reads them.
    fn participant_list(&self) -> Vec<&str> {
        if self.participants_key.is_empty() {
            return Vec::new();
        }
        self.participants_key.split('\u{1f}').collect()
    }

    fn global_id(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("Conversation:{}", self.id))
    }

    /// parley's cursor: `c1:<last_message_at in µs>:<id>` in URL-safe base64.
    fn cursor(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "c1:{}:{}",
            self.last_message_at.timestamp_micros(),
            self.id
        ))
    }
}

/// A message row: the columns the thread reads.
struct MessageRow {
    id: i64,
    body: String,
    sent_at: DateTime<Utc>,
    direction: Direction,
}

impl MessageRow {
    fn from_row(row: &PgRow) -> sqlx::Result<Self> {
        Ok(MessageRow {
            id: row.try_get(0)?,
            body: row.try_get(1)?,
            sent_at: row.try_get(2)?,
            direction: Direction::parse(row.try_get(3)?),
        })
    }

    fn global_id(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("Message:{}", self.id))
    }
}

/// A conversation's channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Channel {
    /// Email.
    Email,
    /// SMS and MMS.
    Sms,
}

impl Channel {
    fn parse(s: &str) -> Self {
        if s == "EMAIL" {
            Channel::Email
        } else {
            Channel::Sms
        }
    }
}

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Direction {
    /// From a customer.
    Inbound,
    /// To a customer.
    Outbound,
}

impl Direction {
    fn parse(s: &str) -> Self {
        if s == "INBOUND" {
            Direction::Inbound
        } else {
            Direction::Outbound
        }
    }
}

/// `first` conversations by last activity and whether more follow.
async fn conversation_page(
    pool: &PgPool,
    first: i64,
) -> sqlx::Result<(Vec<ConversationRow>, bool)> {
    let rows = sqlx::query(PAGE_SQL)
        .bind(first + 1)
        .fetch_all(pool)
        .await?;
    let mut page = rows
        .iter()
        .map(ConversationRow::from_row)
        .collect::<sqlx::Result<Vec<_>>>()?;
    let more = page.len() as i64 > first;
    page.truncate(first as usize);
    Ok((page, more))
}

/// The conversation `id`, if there is one.
async fn find_conversation(pool: &PgPool, id: i64) -> sqlx::Result<Option<ConversationRow>> {
    sqlx::query(CONVERSATION_SQL)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(ConversationRow::from_row)
        .transpose()
}

/// The last `last` messages of conversation `id`, oldest first.
async fn thread_page(pool: &PgPool, id: i64, last: i64) -> sqlx::Result<Vec<MessageRow>> {
    let rows = sqlx::query(THREAD_SQL)
        .bind(id)
        .bind(last)
        .fetch_all(pool)
        .await?;
    let mut page = rows
        .iter()
        .map(MessageRow::from_row)
        .collect::<sqlx::Result<Vec<_>>>()?;
    page.reverse();
    Ok(page)
}

/// A conversation global id's number (`Conversation:<n>` in URL-safe base64).
fn decode_conversation_id(id: &str) -> Option<i64> {
    let raw = URL_SAFE_NO_PAD.decode(id).ok()?;
    std::str::from_utf8(&raw)
        .ok()?
        .strip_prefix("Conversation:")?
        .parse()
        .ok()
}

// The GraphQL floor.

/// The three documents' roots.
struct Query;

#[Object]
impl Query {
    /// Conversations by last activity, newest first.
    async fn conversations(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "How many.")] first: i32,
    ) -> async_graphql::Result<ConversationConnection> {
        let (rows, has_next_page) = conversation_page(
            ctx.data_unchecked::<PgPool>(),
            i64::from(first.clamp(0, 100)),
        )
        .await?;
        Ok(ConversationConnection {
            rows,
            has_next_page,
        })
    }

    /// One conversation by global id.
    async fn conversation(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Its global id.")] id: ID,
    ) -> async_graphql::Result<Option<ConversationRow>> {
        let Some(id) = decode_conversation_id(&id) else {
            return Ok(None);
        };
        Ok(find_conversation(ctx.data_unchecked::<PgPool>(), id).await?)
    }
}

/// A page of conversations.
struct ConversationConnection {
    rows: Vec<ConversationRow>,
    has_next_page: bool,
}

#[Object]
impl ConversationConnection {
    /// The conversations.
    async fn nodes(&self) -> &[ConversationRow] {
        &self.rows
    }

    /// The conversations with their cursors.
    async fn edges(&self) -> Vec<ConversationEdge<'_>> {
        self.rows.iter().map(ConversationEdge).collect()
    }

    /// Where the page ends.
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            end_cursor: self.rows.last().map(ConversationRow::cursor),
            has_next_page: self.has_next_page,
        }
    }
}

/// A conversation and its cursor.
struct ConversationEdge<'a>(&'a ConversationRow);

#[Object]
impl<'a> ConversationEdge<'a> {
    /// The position of this conversation.
    async fn cursor(&self) -> String {
        self.0.cursor()
    }

    /// The conversation.
    async fn node(&self) -> &'a ConversationRow {
        self.0
    }
}

/// Where a page ends.
#[derive(SimpleObject)]
struct PageInfo {
    /// The last row's cursor.
    end_cursor: Option<String>,
    /// Whether more rows follow.
    has_next_page: bool,
}

#[Object(name = "Conversation")]
impl ConversationRow {
    /// Global id.
    async fn id(&self) -> ID {
        ID(self.global_id())
    }

    /// The channel.
    async fn channel(&self) -> Channel {
        self.channel
    }

    /// The normalized participant addresses, sorted.
    async fn participants(&self) -> Vec<&str> {
        self.participant_list()
    }

    /// How many messages it holds.
    async fn message_count(&self) -> i64 {
        self.message_count
    }

    /// A preview of the latest message.
    async fn snippet(&self) -> &str {
        &self.snippet
    }

    /// When its latest message was sent.
    async fn last_message_at(&self) -> DateTime<Utc> {
        self.last_message_at
    }

    /// The last messages, oldest first.
    async fn messages(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "How many.")] last: i32,
    ) -> async_graphql::Result<MessageConnection> {
        let nodes = thread_page(
            ctx.data_unchecked::<PgPool>(),
            self.id,
            i64::from(last.clamp(0, 100)),
        )
        .await?;
        Ok(MessageConnection { nodes })
    }
}

/// A page of messages.
#[derive(SimpleObject)]
struct MessageConnection {
    /// The messages.
    nodes: Vec<MessageRow>,
}

#[Object(name = "Message")]
impl MessageRow {
    /// Global id.
    async fn id(&self) -> ID {
        ID(self.global_id())
    }

    /// The text.
    async fn body(&self) -> &str {
        &self.body
    }

    /// When it was sent.
    async fn sent_at(&self) -> DateTime<Utc> {
        self.sent_at
    }

    /// Which way it went.
    async fn direction(&self) -> Direction {
        self.direction
    }
}

type FloorSchema = Schema<Query, EmptyMutation, EmptySubscription>;

async fn graphql_handler(
    State(schema): State<FloorSchema>,
    req: GraphQLRequest,
) -> GraphQLResponse {
    schema.execute(req.into_inner()).await.into()
}

/// The schemas and the documents already parsed and checked, by their text.
struct Cached {
    /// Runs a document the first time it is seen (full validation).
    strict: FloorSchema,
    /// Runs the documents seen before (`ValidationMode::Fast`).
    fast: FloorSchema,
    documents: RwLock<HashMap<String, ExecutableDocument>>,
}

async fn cached_handler(State(cached): State<Arc<Cached>>, req: GraphQLRequest) -> GraphQLResponse {
    let mut req = req.into_inner();
    let known = cached
        .documents
        .read()
        .ok()
        .and_then(|d| d.get(&req.query).cloned());
    if let Some(doc) = known {
        req.set_parsed_query(doc);
        return cached.fast.execute(req).await.into();
    }
    let query = req.query.clone();
    let doc = req.parsed_query().ok().cloned();
    let response = cached.strict.execute(req).await;
    if response.is_ok()
        && let Some(doc) = doc
        && let Ok(mut documents) = cached.documents.write()
    {
        documents.insert(query, doc);
    }
    response.into()
}

// The floor without GraphQL: the same statements, the answer written from the rows.

/// A request body: the document and the thread's `$id`.
#[derive(Deserialize)]
struct JsonRequest<'a> {
    #[serde(borrow)]
    query: Cow<'a, str>,
    #[serde(default, borrow)]
    variables: Option<JsonVariables<'a>>,
}

#[derive(Deserialize)]
struct JsonVariables<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct Data<T> {
    data: T,
}

#[derive(Serialize)]
struct Conversations<T> {
    conversations: T,
}

#[derive(Serialize)]
struct Nodes<T> {
    nodes: T,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListNode<'a> {
    participants: Vec<&'a str>,
    message_count: i64,
    snippet: &'a str,
    #[serde(serialize_with = "rfc3339")]
    last_message_at: DateTime<Utc>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EdgesPage<'a> {
    edges: Vec<Edge<'a>>,
    page_info: JsonPageInfo,
}

#[derive(Serialize)]
struct Edge<'a> {
    cursor: String,
    node: EdgeNode<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EdgeNode<'a> {
    id: String,
    channel: Channel,
    participants: Vec<&'a str>,
    message_count: i64,
    snippet: &'a str,
    #[serde(serialize_with = "rfc3339")]
    last_message_at: DateTime<Utc>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonPageInfo {
    end_cursor: Option<String>,
    has_next_page: bool,
}

#[derive(Serialize)]
struct ThreadData<'a> {
    conversation: Option<Messages<'a>>,
}

#[derive(Serialize)]
struct Messages<'a> {
    messages: Nodes<Vec<JsonMessage<'a>>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonMessage<'a> {
    id: String,
    body: &'a str,
    #[serde(serialize_with = "rfc3339")]
    sent_at: DateTime<Utc>,
    direction: Direction,
}

/// A timestamp as async-graphql writes one (`DateTime::to_rfc3339`).
fn rfc3339<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339())
}

/// The answer to one of the three documents, as JSON bytes.
async fn answer(pool: &PgPool, body: &[u8]) -> Result<Vec<u8>, Response> {
    let bad = |why: String| {
        (
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "errors": [{ "message": why }] }).to_string(),
        )
            .into_response()
    };
    let internal =
        |e: sqlx::Error| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    let request: JsonRequest = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let json = if request.query == LIST || request.query == EDGES {
        let (rows, more) = conversation_page(pool, 50).await.map_err(internal)?;
        if request.query == LIST {
            let nodes: Vec<ListNode> = rows
                .iter()
                .map(|r| ListNode {
                    participants: r.participant_list(),
                    message_count: r.message_count,
                    snippet: &r.snippet,
                    last_message_at: r.last_message_at,
                })
                .collect();
            serde_json::to_vec(&Data {
                data: Conversations {
                    conversations: Nodes { nodes },
                },
            })
        } else {
            let edges: Vec<Edge> = rows
                .iter()
                .map(|r| Edge {
                    cursor: r.cursor(),
                    node: EdgeNode {
                        id: r.global_id(),
                        channel: r.channel,
                        participants: r.participant_list(),
                        message_count: r.message_count,
                        snippet: &r.snippet,
                        last_message_at: r.last_message_at,
                    },
                })
                .collect();
            let page_info = JsonPageInfo {
                end_cursor: rows.last().map(ConversationRow::cursor),
                has_next_page: more,
            };
            serde_json::to_vec(&Data {
                data: Conversations {
                    conversations: EdgesPage { edges, page_info },
                },
            })
        }
    } else if request.query == THREAD {
        let id = request
            .variables
            .and_then(|v| v.id)
            .ok_or_else(|| bad("the thread needs $id".into()))?;
        let conversation = match decode_conversation_id(&id) {
            Some(id) => find_conversation(pool, id).await.map_err(internal)?,
            None => None,
        };
        let messages = match &conversation {
            Some(c) => Some(thread_page(pool, c.id, 50).await.map_err(internal)?),
            None => None,
        };
        let conversation = messages.as_ref().map(|m| Messages {
            messages: Nodes {
                nodes: m
                    .iter()
                    .map(|m| JsonMessage {
                        id: m.global_id(),
                        body: &m.body,
                        sent_at: m.sent_at,
                        direction: m.direction,
                    })
                    .collect(),
            },
        });
        serde_json::to_vec(&Data {
            data: ThreadData { conversation },
        })
    } else {
        return Err(bad(format!(
            "parley-floor answers only the benchmark's three documents, not {:.80}",
            request.query
        )));
    };
    json.map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

fn json_response(body: impl Into<axum::body::Body>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.into()).into_response()
}

async fn json_handler(State(pool): State<PgPool>, body: Bytes) -> Response {
    match answer(&pool, &body).await {
        Ok(json) => json_response(json),
        Err(response) => response,
    }
}

// The constant floor.

/// The three answers, read once.
struct Constant {
    list: Bytes,
    edges: Bytes,
    thread: Bytes,
}

impl Constant {
    async fn read(pool: &PgPool) -> anyhow::Result<Constant> {
        let read = async |body: serde_json::Value| {
            answer(pool, body.to_string().as_bytes())
                .await
                .map(Bytes::from)
                .map_err(|r| anyhow::anyhow!("reading a constant answer failed: {}", r.status()))
        };
        Ok(Constant {
            list: read(serde_json::json!({ "query": LIST })).await?,
            edges: read(serde_json::json!({ "query": EDGES })).await?,
            thread: read(serde_json::json!({
                "query": THREAD,
                "variables": { "id": URL_SAFE_NO_PAD.encode("Conversation:1") },
            }))
            .await?,
        })
    }
}

async fn constant_handler(State(answers): State<Arc<Constant>>, body: Bytes) -> Response {
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    let answer = if has(b"messages(") {
        &answers.thread
    } else if has(b"edges") {
        &answers.edges
    } else {
        &answers.list
    };
    json_response(answer.clone())
}
