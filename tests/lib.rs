//! Test harness shared by parley's black-box tests: a fresh migrated database per test on
//! SQLite and, when `TEST_DATABASE_URL` is set, on PostgreSQL (created from a migrated
//! template), and an in-process router to send GraphQL and HTTP requests through.

use std::sync::atomic::{AtomicU32, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tower::ServiceExt;

pub use api::AppConfig;

/// Which engine a test database runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite, in a temporary file.
    Sqlite,
    /// PostgreSQL, in a database of its own.
    Postgres,
}

/// A fresh, migrated database for one test.
pub struct TestDb {
    /// The connection pool.
    pub db: DatabaseConnection,
    /// The engine.
    pub engine: Engine,
    /// The URL the pool was opened with (for a second process or pool).
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

static SERIAL: AtomicU32 = AtomicU32::new(0);
static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// The PostgreSQL server URL for tests, if configured.
pub fn postgres_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let base = match base.rfind('/') {
        Some(i) if i > base.find("://").map_or(0, |s| s + 2) => &base[..i],
        _ => base,
    };
    format!("{base}/{name}{query}")
}

async fn admin(url: &str) -> DatabaseConnection {
    Database::connect(url).await.unwrap_or_else(|e| {
        panic!("TEST_DATABASE_URL is set but PostgreSQL is unreachable at {url}: {e}")
    })
}

async fn exec(db: &DatabaseConnection, sql: &str) {
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Creates the migrated template database once per test process, after dropping test
/// databases left behind by processes that are gone.
async fn template(url: &str) -> String {
    TEMPLATE
        .get_or_init(|| async {
            let admin = admin(url).await;
            let rows = admin
                .query_all_raw(Statement::from_string(
                    admin.get_database_backend(),
                    "SELECT datname FROM pg_database WHERE datname LIKE 'parley\\_t%'",
                ))
                .await
                .expect("listing databases");
            for row in rows {
                let name: String = row.try_get("", "datname").expect("datname");
                let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
                    exec(
                        &admin,
                        &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                    )
                    .await;
                }
            }
            let name = format!("parley_tpl_{}", std::process::id());
            exec(
                &admin,
                &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            )
            .await;
            exec(&admin, &format!("CREATE DATABASE \"{name}\"")).await;
            let tpl = Database::connect(with_database(url, &name))
                .await
                .expect("connecting to the template");
            Migrator::up(&tpl, None)
                .await
                .expect("migrating the template");
            tpl.close().await.expect("closing the template");
            admin.close().await.ok();
            name
        })
        .await
        .clone()
}

impl TestDb {
    /// A migrated SQLite database in a temporary file (WAL, like production).
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("parley.sqlite").display()
        );
        let db = service::db::connect(&url, &Default::default())
            .await
            .expect("opening SQLite");
        Migrator::up(&db, None).await.expect("migrating SQLite");
        TestDb {
            db,
            engine: Engine::Sqlite,
            url,
            pg_name: None,
            _dir: Some(dir),
        }
    }

    /// A migrated PostgreSQL database of its own, or `None` (with a note on stderr) when
    /// `TEST_DATABASE_URL` is not set.
    pub async fn postgres() -> Option<TestDb> {
        let Some(url) = postgres_url() else {
            eprintln!("SKIPPED the PostgreSQL run: set TEST_DATABASE_URL (see README) to run it");
            return None;
        };
        let template = template(&url).await;
        let name = format!(
            "parley_t_{}_{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let admin = admin(&url).await;
        exec(
            &admin,
            &format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""),
        )
        .await;
        admin.close().await.ok();
        let test_url = with_database(&url, &name);
        let db = service::db::connect(&test_url, &Default::default())
            .await
            .expect("connecting to the test database");
        Some(TestDb {
            db,
            engine: Engine::Postgres,
            url: test_url,
            pg_name: Some(name),
            _dir: None,
        })
    }

    /// Drops the PostgreSQL database (SQLite's file goes with the temp dir).
    pub async fn cleanup(self) {
        let TestDb { db, pg_name, .. } = self;
        db.close().await.ok();
        if let (Some(name), Some(url)) = (pg_name, postgres_url()) {
            let admin = admin(&url).await;
            exec(
                &admin,
                &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            )
            .await;
            admin.close().await.ok();
        }
    }

    /// An in-process app over this database with `config`.
    pub fn app(&self, config: AppConfig) -> TestApp {
        TestApp {
            router: api::router(api::AppState::new(self.db.clone(), config)),
        }
    }

    /// Counts rows of `table`.
    pub async fn count(&self, table: &str) -> i64 {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                self.db.get_database_backend(),
                format!("SELECT COUNT(*) AS n FROM {table}"),
            ))
            .await
            .expect("count")
            .expect("a row");
        row.try_get("", "n").expect("n")
    }
}

/// Runs each named `async fn(&TestDb)` as two tests: `NAME::sqlite` and `NAME::postgres`
/// (which reports itself skipped when `TEST_DATABASE_URL` is not set).
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = $crate::TestDb::sqlite().await;
                super::$name(&db).await;
                db.cleanup().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(db) = $crate::TestDb::postgres().await {
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            }
        }
    )* };
}

/// The router in process, to send requests through without a socket.
#[derive(Clone)]
pub struct TestApp {
    /// The router under test.
    pub router: axum::Router,
}

/// An HTTP answer: status, headers and body (JSON when it parses).
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub json: Value,
    /// The body as text.
    pub text: String,
}

impl TestApp {
    /// Sends a request.
    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Answer {
            status,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    /// POSTs a JSON body to `path`.
    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.send(
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .expect("request"),
        )
        .await
    }

    /// GETs `path`.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(Request::get(path).body(Body::empty()).expect("request"))
            .await
    }

    /// Runs a GraphQL operation over POST and returns the whole response body.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        let answer = self
            .post_json(
                "/graphql",
                &json!({ "query": query, "variables": variables }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json
    }

    /// Runs a GraphQL operation that must succeed and returns its `data`.
    pub async fn data(&self, query: &str, variables: Value) -> Value {
        let body = self.graphql(query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
        body["data"].clone()
    }
}

/// The `extensions.code` of the first error of a GraphQL response.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body:#}"))
}
