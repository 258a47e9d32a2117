//! Test harness shared by parley's black-box tests: a fresh migrated database per test on
//! SQLite and, when `TEST_DATABASE_URL` is set, on PostgreSQL (created from a migrated
//! template), an in-process router to send GraphQL and HTTP requests through, and for
//! the operational tests the real `parley` binary ([`Server`]) and a throwaway PostgreSQL
//! cluster ([`TempCluster`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// Pool options for test databases: production's, with generous waits. These tests check
/// invariants, not latency, and a shared 2-core machine under load can take longer than
/// production's fail-fast 2 s to hand out a connection or the SQLite write lock.
pub fn test_db_options() -> service::db::DbOptions {
    service::db::DbOptions {
        acquire_timeout: std::time::Duration::from_secs(30),
        sqlite_busy_timeout: std::time::Duration::from_secs(30),
        ..Default::default()
    }
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
        let db = api::database::connect_migrated(&url, &test_db_options())
            .await
            .expect("opening and migrating SQLite");
        TestDb {
            db,
            engine: Engine::Sqlite,
            url,
            pg_name: None,
            _dir: Some(dir),
        }
    }

    /// A migrated PostgreSQL database of its own, or `None` (with a note on stderr) when
    /// `TEST_DATABASE_URL` is not set; in CI ([`in_ci`]) an unset URL fails the test.
    pub async fn postgres() -> Option<TestDb> {
        let Some(url) = postgres_url() else {
            skip_or_fail(
                "the PostgreSQL run",
                "set TEST_DATABASE_URL (see README) to run it",
            );
            // Once per run, past the harness's output capture (which hides what passing
            // tests print), so a plain `cargo test` says what it did not run.
            static NOTE: std::sync::Once = std::sync::Once::new();
            NOTE.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "\nnote: TEST_DATABASE_URL is not set, so every `::postgres` storage test \
                     passes WITHOUT running (SKIPPED); set it, e.g. \
                     TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test, to run them\n"
                );
            });
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
        let db = service::db::connect(&test_url, &test_db_options())
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

    /// The ids of `table`'s rows in insertion (id) order.
    pub async fn ids(&self, table: &str) -> Vec<i64> {
        self.db
            .query_all_raw(Statement::from_string(
                self.db.get_database_backend(),
                format!("SELECT id FROM {table} ORDER BY id"),
            ))
            .await
            .expect("ids")
            .iter()
            .map(|row| row.try_get("", "id").expect("id"))
            .collect()
    }

    /// Zeroes `counter`, a statement counter ([`service::db::counting`] on this database),
    /// once the SQLite checkpoint and index merge tasks that earlier writes
    /// started are done: their statements run on the same pool and are not the next
    /// request's.
    pub async fn count_statements_from_zero(&self, counter: &AtomicUsize) {
        service::db::background_work_done(&self.db).await;
        counter.store(0, Ordering::SeqCst);
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

/// The cursor a list must hand out for the row `id` positioned at `at` (RFC 3339): the
/// expected value of a cursor assertion, computed from what the test inserted and the id
/// the database gave the row, never from the response under test.
pub fn expected_cursor(kind: service::cursor::CursorKind, at: &str, id: i64) -> String {
    let at = chrono::DateTime::parse_from_rfc3339(at)
        .unwrap_or_else(|e| panic!("{at}: {e}"))
        .to_utc();
    service::cursor::encode_cursor(kind, service::cursor::Cursor { at, id })
}

/// Runs each named `async fn(&TestDb)` as two tests: `NAME::sqlite` and `NAME::postgres`
/// (which reports itself skipped when `TEST_DATABASE_URL` is not set, and fails in CI).
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

/// The `parley` binary of this build, next to the test executable
/// (`target/<profile>/parley`). Under `cargo test` (which sets `CARGO`) it is built first,
/// once per test process, so a plain `cargo test` works on a fresh checkout.
pub fn parley_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(build_parley) {
        Ok(path) => path,
        Err(why) => panic!("cannot provide the parley binary: {why}"),
    }
}

fn build_parley() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // target/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not in target/<profile>/deps", exe.display()))?;
    let binary = profile_dir.join(format!("parley{}", std::env::consts::EXE_SUFFIX));
    let Some(cargo) = std::env::var_os("CARGO") else {
        // Run outside cargo: use what is there.
        return if binary.exists() {
            Ok(binary)
        } else {
            Err(format!(
                "{} is missing and CARGO is not set to build it",
                binary.display()
            ))
        };
    };
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| format!("{} has no parent", profile_dir.display()))?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the tests crate has no parent directory")?;
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace)
        .args(["build", "--quiet", "-p", "parley-api", "--bin", "parley"])
        .arg("--target-dir")
        .arg(target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(other) => {
            build.args(["--profile", other]);
        }
        None => return Err(format!("odd profile dir {}", profile_dir.display())),
    }
    let out = build
        .output()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p parley-api --bin parley failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if binary.exists() {
        Ok(binary)
    } else {
        Err(format!("built, but {} is missing", binary.display()))
    }
}

/// The environment variables of this process that `parley` would read settings from
/// (`DATABASE_URL`, `PARLEY_*`), which a test's `parley` must not inherit from the shell.
fn parley_env() -> Vec<std::ffi::OsString> {
    std::env::vars_os()
        .map(|(key, _)| key)
        .filter(|key| {
            key.to_str()
                .is_some_and(|k| k == "DATABASE_URL" || k.starts_with("PARLEY_"))
        })
        .collect()
}

/// Runs the real binary to completion, `parley --database-url URL ARGS..` (a subcommand
/// and its flags), and returns its exit status and output.
pub async fn run_parley(database_url: &str, args: &[&str]) -> std::process::Output {
    let binary = tokio::task::spawn_blocking(parley_binary)
        .await
        .expect("building parley");
    let mut cmd = tokio::process::Command::new(binary);
    for var in parley_env() {
        cmd.env_remove(var);
    }
    cmd.args(["--database-url", database_url])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running parley")
}

/// The URL of a SQLite database file `parley.sqlite` in `dir` (created on first use).
pub fn sqlite_url_in(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("parley.sqlite").display())
}

/// A free TCP port on 127.0.0.1 (free when asked; callers retry on a lost race).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// A `parley serve` process of the real binary on a free local port, logging JSON to a
/// file; killed on drop.
pub struct Server {
    child: std::process::Child,
    /// The port it listens on.
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `parley --database-url URL --log-format json GLOBAL.. serve --bind .. SERVE..`
    /// and waits until `/healthz` answers. Panics, with the server's log, when it does not
    /// come up within 60 s.
    pub async fn start(database_url: &str, global: &[&str], serve: &[&str]) -> Server {
        let binary = tokio::task::spawn_blocking(parley_binary)
            .await
            .expect("building parley");
        let mut last_log = String::new();
        // A port found free can be taken before the server binds it: try a few.
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = dir.path().join("parley.log");
            let port = free_port();
            let stderr = std::fs::File::create(&log).expect("log file");
            let mut cmd = Command::new(binary);
            for var in parley_env() {
                cmd.env_remove(var);
            }
            cmd.env("RUST_LOG", "info")
                .current_dir(dir.path())
                .args(["--database-url", database_url, "--log-format", "json"])
                .args(global)
                .arg("serve")
                .args(["--bind", &format!("127.0.0.1:{port}")])
                .args(serve)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr);
            let child = cmd.spawn().expect("spawning parley");
            let mut server = Server {
                child,
                port,
                base: format!("http://127.0.0.1:{port}"),
                log,
                _dir: dir,
            };
            if server.wait_healthy(Duration::from_secs(60)).await {
                return server;
            }
            last_log = server.logs();
            if !last_log.contains("binding") {
                break;
            }
        }
        panic!("parley did not come up; its log:\n{last_log}");
    }

    async fn wait_healthy(&mut self, within: Duration) -> bool {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            let url = format!("{}/healthz", self.base);
            if let Ok(r) = client.get(url).send().await
                && r.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything the server logged so far (stderr).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `within` for the process to exit; its status, or `None` if it is still
    /// running.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether the tests run in CI: `CI` is set to anything but empty, `0` or `false` (CI
/// services set `CI=true`; so does `.ci/run`).
pub fn in_ci() -> bool {
    ci_flag(std::env::var("CI").ok().as_deref())
}

/// [`in_ci`] for a given value of `CI`.
pub fn ci_flag(value: Option<&str>) -> bool {
    value.is_some_and(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE" | "False"))
}

/// Reports that `what` did not run because of `why`: a SKIPPED note on stderr on a
/// developer's machine, but a panic (a failed test) in CI, where a missing prerequisite is
/// a broken pipeline, not a reason to pass.
pub fn skip_or_fail(what: &str, why: &str) {
    if in_ci() {
        panic!("{what} cannot run in CI: {why}");
    }
    eprintln!("SKIPPED {what}: {why}");
}

/// Where the installed PostgreSQL server programs (`initdb`, `pg_ctl`) live: the folder
/// `pg_config --bindir` names, else the newest version under `/usr/lib/postgresql` (Debian
/// and Ubuntu install each major version side by side there, and `pg_config` may belong to
/// a client-only package).
pub fn postgres_bindir() -> Result<PathBuf, String> {
    let pg_config = run_capture("pg_config", &["--bindir"])
        .ok()
        .map(|out| PathBuf::from(out.trim()));
    find_postgres_bindir(pg_config, Path::new("/usr/lib/postgresql"))
}

/// [`postgres_bindir`] from what `pg_config --bindir` said (if it ran) and the folder that
/// holds one subfolder per installed version.
pub fn find_postgres_bindir(
    pg_config_bindir: Option<PathBuf>,
    versions_root: &Path,
) -> Result<PathBuf, String> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let mut tried = Vec::new();
    if let Some(dir) = pg_config_bindir {
        if has_server(&dir) {
            return Ok(dir);
        }
        tried.push(format!("{} (from pg_config --bindir)", dir.display()));
    }
    let newest = std::fs::read_dir(versions_root)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = postgres_version(entry.file_name().to_str()?)?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .max();
    if let Some((_, bin)) = newest {
        return Ok(bin);
    }
    tried.push(format!("{}/<version>/bin", versions_root.display()));
    Err(format!(
        "no PostgreSQL server programs (initdb, pg_ctl) in {}",
        tried.join(" or ")
    ))
}

/// A version folder's name as numbers to order by (`9.6` before `10`), or `None` when the
/// name is not a version.
pub fn postgres_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// A throwaway PostgreSQL cluster the test starts itself: `initdb` in a temp dir, listening
/// on a free port of 127.0.0.1 only (and a Unix socket in the temp dir), so it never
/// touches a shared server. PostgreSQL refuses to run as root, so when the tests do, every
/// command runs as the `postgres` OS user (`runuser`) and the temp dir is handed to it.
/// Stopped (immediately) and removed on drop.
pub struct TempCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The port it listens on.
    pub port: u16,
    as_postgres: bool,
}

impl TempCluster {
    /// Creates and starts a cluster with the installed PostgreSQL ([`postgres_bindir`]), or
    /// says why it cannot (no PostgreSQL server installed, no `postgres` user while running
    /// as root, a cluster that does not start) so the caller can skip or fail.
    pub async fn start() -> Result<TempCluster, String> {
        let bin = postgres_bindir()?;
        let as_postgres = run_capture("id", &["-u"])?.trim() == "0";
        let dir = tempfile::Builder::new()
            .prefix("parley-pg-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        if as_postgres {
            let uid = run_capture("id", &["-u", "postgres"])
                .map_err(|e| format!("running as root and no postgres user: {e}"))?;
            let gid = run_capture("id", &["-g", "postgres"])?;
            let parse = |s: &str| s.trim().parse::<u32>().map_err(|e| format!("{s}: {e}"));
            std::os::unix::fs::chown(dir.path(), Some(parse(&uid)?), Some(parse(&gid)?))
                .map_err(|e| format!("chown {}: {e}", dir.path().display()))?;
        }
        let mut cluster = TempCluster {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        let data = cluster.data();
        cluster
            .pg(
                "initdb",
                &[
                    "-D",
                    &data,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            )
            .await?;
        let mut last = String::new();
        for _attempt in 0..3 {
            cluster.port = free_port();
            // After a crash PostgreSQL fsyncs every file of the data directory before redo;
            // syncfs does it in one call (seconds faster on a busy disk), fsync stays on.
            let conf = format!(
                "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
                 recovery_init_sync_method = syncfs\n",
                cluster.port,
                cluster.dir.path().display()
            );
            // Later settings win, so a retry's port overrides the previous one.
            std::fs::OpenOptions::new()
                .append(true)
                .open(Path::new(&data).join("postgresql.conf"))
                .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
                .map_err(|e| format!("writing postgresql.conf: {e}"))?;
            match cluster.start_again().await {
                Ok(()) => return Ok(cluster),
                Err(e) => last = e,
            }
        }
        Err(format!("the temporary cluster did not start: {last}"))
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn log(&self) -> String {
        self.dir.path().join("server.log").display().to_string()
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Kills the server the way a crash would: `pg_ctl stop -m immediate` (no checkpoint;
    /// the next start replays the WAL).
    pub async fn stop_immediate(&self) -> Result<(), String> {
        self.pg(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
        .await
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub async fn start_again(&self) -> Result<(), String> {
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &self.log(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        )
        .await
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args).current_dir(self.dir.path());
        cmd
    }

    async fn pg(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let out = tokio::process::Command::from(self.command(program, args))
            .output()
            .await
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} {args:?}: {}\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = self
            .command(
                "pg_ctl",
                &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
            )
            .output();
    }
}

fn run_capture(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The value of one Prometheus series in `/metrics` text: `name` with exactly `labels`
/// (in any order); `None` when the series is absent.
pub fn prometheus_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    want.sort();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, mut got) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}')?)?),
                None => (series, Vec::new()),
            };
            got.sort();
            (series_name == name && got == want)
                .then(|| value.parse().ok())
                .flatten()
        })
}

fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => value.push(chars.next()?.1),
                (_, c) => value.push(c),
            }
        };
        out.push((key.trim_start_matches(',').to_owned(), value));
        rest = &after[end + 1..];
    }
    Some(out)
}
