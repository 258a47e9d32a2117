//! Identity and access at the HTTP edge: who is asking ([`jwt`]: bearer tokens), provider
//! webhooks ([`webhook`]: signatures), the start-up policy (development mode on loopback
//! only), and the one middleware ([`guard::Guard`]) that puts a [`Principal`] on every request
//! or answers `UNAUTHENTICATED` / `FORBIDDEN`. What a principal may see is decided in
//! `service::access`.

pub mod guard;
pub mod jwt;
pub mod limit;
pub mod metrics;
pub mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::{HeaderValue, header};
use clap::Args;
use service::normalize::Region;

use self::jwt::{Authenticator, JwtOptions};
use self::limit::RateLimits;
use self::webhook::WebhookSecrets;

/// Authentication, browser and abuse settings of `parley serve`.
#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    /// File holding the HS256 secret tokens are signed with (at least 32 bytes; surrounding
    /// whitespace is ignored). Turns authentication on.
    #[arg(long, env = "PARLEY_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// JWKS file of the public keys (RS256, ES256, EdDSA; each with a `kid`) tokens are
    /// signed with; re-read on SIGHUP. Turns authentication on.
    #[arg(long, env = "PARLEY_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "PARLEY_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "PARLEY_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf` (0 to 300).
    #[arg(long, env = "PARLEY_JWT_LEEWAY", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    pub jwt_leeway: u64,
    /// Serve without authentication on a non-loopback address (every request acts as
    /// admin). Only for a network you trust completely.
    #[arg(long, env = "PARLEY_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Serve GraphiQL at GET /graphql even with authentication on.
    #[arg(long, env = "PARLEY_GRAPHIQL")]
    pub graphiql: bool,
    /// Allow introspection even with authentication on (--no-introspection still wins).
    #[arg(long, env = "PARLEY_INTROSPECTION")]
    pub introspection: bool,
    /// File of provider webhook secrets, one `PROVIDER SECRET` a line (`sms`, `email`; two
    /// lines for one provider during a rotation).
    #[arg(long, env = "PARLEY_WEBHOOK_SECRETS")]
    pub webhook_secrets: Option<PathBuf>,
    /// An origin (`https://app.example.com`) whose pages may call the API; repeatable. None
    /// by default.
    #[arg(
        long = "cors-origin",
        env = "PARLEY_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// Also serve GET /metrics, without a token, on this separate (internal) address; on
    /// the main address it needs an `admin` token whenever authentication is on.
    #[arg(long, env = "PARLEY_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
    /// Requests per minute one principal (`sub`) may make (0 turns the limit off).
    #[arg(long, env = "PARLEY_RATE_LIMIT", default_value_t = 600)]
    pub rate_limit: u32,
    /// Requests per minute one client IP may make to the webhooks, and failed
    /// authentications per minute one client IP may make (0 turns the limit off).
    #[arg(long, env = "PARLEY_IP_RATE_LIMIT", default_value_t = 120)]
    pub ip_rate_limit: u32,
}

impl SecurityArgs {
    /// Whether these flags turn authentication on (a key is configured).
    pub fn auth_on(&self) -> bool {
        self.jwt_secret_file.is_some() || self.jwks_file.is_some()
    }
}

/// What the HTTP edge enforces; built once at start-up.
#[derive(Debug, Clone)]
pub struct Security {
    /// Verifies bearer tokens; `None` is development mode (every request is admin).
    pub authenticator: Option<Arc<Authenticator>>,
    /// The webhook secrets (deliveries of a provider with none are refused when
    /// authentication is on).
    pub webhooks: WebhookSecrets,
    /// Whether GET /graphql serves GraphiQL.
    pub graphiql: bool,
    /// Allowed CORS origins.
    pub cors_origins: Vec<HeaderValue>,
    /// Rate limits.
    pub limits: RateLimits,
}

impl Security {
    /// Development mode: no authentication, GraphiQL on, no CORS origin, no rate limit.
    pub fn development() -> Security {
        Security {
            authenticator: None,
            webhooks: WebhookSecrets::default(),
            graphiql: true,
            cors_origins: Vec::new(),
            limits: RateLimits::off(),
        }
    }

    /// Whether requests must authenticate.
    pub fn auth_enabled(&self) -> bool {
        self.authenticator.is_some()
    }

    /// Builds the security of `serve` from its flags, reading the key and secret files.
    /// Refuses to serve a non-loopback `bind` without authentication unless
    /// `--insecure-no-auth`.
    pub fn from_args(
        args: &SecurityArgs,
        bind: SocketAddr,
        region: Region,
    ) -> anyhow::Result<Security> {
        let authenticator = if args.jwt_secret_file.is_some() || args.jwks_file.is_some() {
            let secret = match &args.jwt_secret_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading the JWT secret {}", path.display()))?
                        .trim()
                        .as_bytes()
                        .to_vec(),
                ),
                None => None,
            };
            Some(Arc::new(Authenticator::new(JwtOptions {
                secret,
                jwks_file: args.jwks_file.clone(),
                issuer: args.jwt_issuer.clone(),
                audience: args.jwt_audience.clone(),
                leeway: Duration::from_secs(args.jwt_leeway),
                region,
            })?))
        } else {
            None
        };
        if authenticator.is_none() && !bind.ip().is_loopback() && !args.insecure_no_auth {
            anyhow::bail!(
                "refusing to serve {bind} without authentication: give --jwt-secret-file \
                 (PARLEY_JWT_SECRET_FILE) or --jwks-file (PARLEY_JWKS_FILE), bind a loopback \
                 address (--bind 127.0.0.1:8080), or pass --insecure-no-auth if every client \
                 of this network may read and write everything"
            );
        }
        let webhooks = match &args.webhook_secrets {
            Some(path) => WebhookSecrets::read(path)?,
            None => WebhookSecrets::default(),
        };
        let cors_origins = args
            .cors_origins
            .iter()
            .map(|o| {
                let o = o.trim().trim_end_matches('/');
                anyhow::ensure!(
                    (o.starts_with("https://") || o.starts_with("http://")) && o != "*",
                    "--cors-origin {o:?}: give an origin such as https://app.example.com"
                );
                HeaderValue::from_str(o).with_context(|| format!("--cors-origin {o:?}"))
            })
            .collect::<anyhow::Result<_>>()?;
        let auth = authenticator.is_some();
        Ok(Security {
            authenticator,
            webhooks,
            graphiql: !auth || args.graphiql,
            cors_origins,
            limits: RateLimits::new(args.rate_limit, args.ip_rate_limit),
        })
    }
}

/// The CORS layer for `origins`: those origins only, any method the routes take,
/// `Authorization` and `Content-Type` allowed, no credentials (tokens travel in headers).
/// With no origin it allows none, so browsers keep the same-origin policy.
pub fn cors(origins: &[HeaderValue]) -> tower_http::cors::CorsLayer {
    use axum::http::Method;
    use tower_http::cors::{AllowOrigin, CorsLayer};
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}

/// Logs development mode once at start.
pub fn warn_if_development(security: &Security, bind: SocketAddr) {
    if !security.auth_enabled() {
        tracing::warn!(
            address = %bind,
            "authentication is OFF (development mode): every request acts as admin; set \
             --jwt-secret-file or --jwks-file before exposing this server"
        );
    }
}

/// Background upkeep of the security settings: the rate limiters forget idle keys every
/// minute, and SIGHUP re-reads the JWKS file (a file that does not parse keeps the old
/// keys, with an error logged).
pub fn spawn_upkeep(security: &Security) {
    let limits = security.limits.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            limits.shrink();
        }
    });
    #[cfg(unix)]
    if let Some(auth) = security.authenticator.clone() {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        match auth.reload_jwks() {
                            Ok(keys) => tracing::info!(keys, "SIGHUP: JWKS file re-read"),
                            Err(e) => tracing::error!(
                                error = format!("{e:#}"),
                                "SIGHUP: the JWKS file could not be read; the old keys stay"
                            ),
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
        }
    }
}
