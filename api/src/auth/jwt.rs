//! Bearer tokens: JWTs verified with `jsonwebtoken`, HS256 with a shared secret or
//! RS256/ES256/EdDSA with the public keys of a JWKS file (the token's `kid` selects one).
//! A token's algorithm must be one of those four and must match its key's family, so
//! `alg: none` and an HS256 token signed with a public key are refused.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation, decode,
    decode_header, encode,
};
use serde::{Deserialize, Serialize};
use service::access::{Inboxes, Principal, Scopes};
use service::normalize::Region;

/// Why a request was not authenticated. Each is answered 401 `UNAUTHENTICATED`; the
/// [`AuthError::reason`] labels `parley_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("send a token: `Authorization: Bearer <JWT>`")]
    Missing,
    /// Not a JWT, or its header does not parse (`alg: none` included).
    #[error("the bearer token is not a well-formed JWT")]
    Malformed,
    /// The algorithm is not accepted, or does not match the key it names.
    #[error("the token's algorithm is not accepted for its key")]
    Algorithm,
    /// The `kid` names no key of the JWKS (or an RS/ES/EdDSA token has no `kid`).
    #[error("the token's key id (kid) names no configured key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature does not verify")]
    Signature,
    /// `exp` has passed.
    #[error("the token has expired; get a new one")]
    Expired,
    /// `nbf` is still ahead.
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    /// `aud` is not this server's audience.
    #[error("the token is not meant for this server (aud)")]
    Audience,
    /// `iss` is not the configured issuer.
    #[error("the token is not from the configured issuer (iss)")]
    Issuer,
    /// A claim is missing or unusable (`sub`, `exp`, `scope`, `inboxes`).
    #[error("the token's claims are missing or invalid (sub, exp, scope, inboxes)")]
    Claims,
}

impl AuthError {
    /// A short label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Algorithm => "algorithm",
            AuthError::UnknownKey => "unknown_kid",
            AuthError::Signature => "signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Audience => "audience",
            AuthError::Issuer => "issuer",
            AuthError::Claims => "claims",
        }
    }
}

/// How tokens are checked.
#[derive(Debug, Clone, Default)]
pub struct JwtOptions {
    /// The HS256 shared secret, if HS256 tokens are accepted.
    pub secret: Option<Vec<u8>>,
    /// The JWKS file of public keys, if RS256/ES256/EdDSA tokens are accepted.
    pub jwks_file: Option<PathBuf>,
    /// The required `iss`, when set.
    pub issuer: Option<String>,
    /// The required `aud`, when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// The region inboxes written without `+country` are read in.
    pub region: Region,
}

/// A public key of the JWKS, with what it may verify.
struct PublicKey {
    key: DecodingKey,
    family: AlgorithmFamily,
    alg: Option<Algorithm>,
}

/// How many verified tokens are remembered (the cache is emptied when it is full).
const CACHE_CAPACITY: usize = 4096;

/// Verifies bearer tokens into [`Principal`]s.
pub struct Authenticator {
    /// Tokens already verified, with their principal and `exp`: a client's next requests
    /// skip the signature check and the claims' parsing (about 60,000 instructions, a
    /// twentieth of a thread page). Emptied when the keys change.
    verified: Mutex<HashMap<Box<str>, (Principal, u64)>>,
    secret: Option<DecodingKey>,
    jwks_file: Option<PathBuf>,
    keys: RwLock<Arc<HashMap<String, PublicKey>>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    region: Region,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Authenticator")
            .field("hs256", &self.secret.is_some())
            .field("jwks_file", &self.jwks_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The claims parley reads.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    inboxes: Vec<String>,
}

impl Authenticator {
    /// An authenticator with `options`; reads the JWKS file now. At least one of the secret
    /// and the JWKS file must be given.
    pub fn new(options: JwtOptions) -> anyhow::Result<Authenticator> {
        anyhow::ensure!(
            options.secret.is_some() || options.jwks_file.is_some(),
            "no token key: give --jwt-secret-file (HS256) or --jwks-file (RS256/ES256/EdDSA)"
        );
        let secret = match &options.secret {
            Some(s) => {
                anyhow::ensure!(
                    s.len() >= 32,
                    "the HS256 secret is {} bytes; use at least 32 random bytes \
                     (e.g. `openssl rand -hex 32`)",
                    s.len()
                );
                Some(DecodingKey::from_secret(s).context("reading the HS256 secret")?)
            }
            None => None,
        };
        let keys = match &options.jwks_file {
            Some(path) => read_jwks(path)?,
            None => HashMap::new(),
        };
        Ok(Authenticator {
            verified: Mutex::new(HashMap::new()),
            secret,
            jwks_file: options.jwks_file,
            keys: RwLock::new(Arc::new(keys)),
            issuer: options.issuer,
            audience: options.audience,
            leeway: options.leeway.as_secs(),
            region: options.region,
        })
    }

    /// Reads the JWKS file again (on SIGHUP), keeping the old keys when the new file does
    /// not parse. Returns how many keys are now in force.
    pub fn reload_jwks(&self) -> anyhow::Result<usize> {
        let Some(path) = &self.jwks_file else {
            return Ok(0);
        };
        let keys = read_jwks(path)?;
        let n = keys.len();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        // A key taken out of the file must stop vouching for its tokens at once.
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(n)
    }

    /// Verifies a bearer token (without the `Bearer ` prefix). A token verified before is
    /// taken from the cache while its `exp` (with the leeway) has not passed; its `nbf` had
    /// passed already, and its signature and claims cannot have changed.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some((principal, exp)) = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            && now <= exp.saturating_add(self.leeway)
        {
            return Ok(principal.clone());
        }
        let (principal, exp) = self.verify_uncached(token)?;
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= CACHE_CAPACITY {
            verified.clear();
        }
        verified.insert(token.into(), (principal.clone(), exp));
        Ok(principal)
    }

    fn verify_uncached(&self, token: &str) -> Result<(Principal, u64), AuthError> {
        let header = decode_header(token).map_err(|_| AuthError::Malformed)?;
        let keys;
        let key = match header.alg {
            Algorithm::HS256 => self.secret.as_ref().ok_or(AuthError::Algorithm)?,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA => {
                let kid = header.kid.as_deref().ok_or(AuthError::UnknownKey)?;
                keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
                let k = keys.get(kid).ok_or(AuthError::UnknownKey)?;
                if k.family != header.alg.family() || k.alg.is_some_and(|a| a != header.alg) {
                    return Err(AuthError::Algorithm);
                }
                &k.key
            }
            _ => return Err(AuthError::Algorithm),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let data = decode::<Claims>(token, key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidAudience => AuthError::Audience,
            ErrorKind::InvalidIssuer => AuthError::Issuer,
            ErrorKind::InvalidSignature => AuthError::Signature,
            ErrorKind::InvalidAlgorithm => AuthError::Algorithm,
            ErrorKind::MissingRequiredClaim(_)
            | ErrorKind::InvalidClaimFormat(_)
            | ErrorKind::Json(_) => AuthError::Claims,
            _ => AuthError::Malformed,
        })?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(AuthError::Claims);
        }
        let principal = Principal {
            sub: claims.sub.into(),
            scopes: Scopes::parse(&claims.scope).map_err(|_| AuthError::Claims)?,
            inboxes: Inboxes::parse(&claims.inboxes, self.region).map_err(|_| AuthError::Claims)?,
        };
        Ok((principal, claims.exp))
    }
}

/// Reads a JWKS file: every key must have a `kid` and be a public RSA, EC (P-256) or
/// Ed25519 key; symmetric keys belong in `--jwt-secret-file`.
fn read_jwks(path: &Path) -> anyhow::Result<HashMap<String, PublicKey>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the JWKS file {}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JWKS (`{{\"keys\": [...]}}`)", path.display()))?;
    let mut keys = HashMap::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let kid = jwk
            .common
            .key_id
            .clone()
            .with_context(|| format!("{}: keys[{i}] has no kid", path.display()))?;
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
            AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
            AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
            _ => anyhow::bail!(
                "{}: key {kid} is not a public RSA, EC or Ed25519 key (an HS256 secret goes \
                 in --jwt-secret-file)",
                path.display()
            ),
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
            Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
            Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
            Some(other) => anyhow::bail!(
                "{}: key {kid} is for {other:?}; parley accepts RS256, ES256 and EdDSA",
                path.display()
            ),
        };
        let key = DecodingKey::from_jwk(jwk)
            .with_context(|| format!("{}: key {kid} does not parse", path.display()))?;
        keys.insert(kid, PublicKey { key, family, alg });
    }
    Ok(keys)
}

/// What `parley token` puts in a token.
#[derive(Debug, Clone)]
pub struct MintOptions {
    /// `sub`.
    pub sub: String,
    /// The scopes, space-separated.
    pub scope: String,
    /// `inboxes`, as given (normalized when verified).
    pub inboxes: Vec<String>,
    /// Lifetime from now.
    pub ttl: Duration,
    /// `iss`, when the server requires one.
    pub issuer: Option<String>,
    /// `aud`, when the server requires one.
    pub audience: Option<String>,
}

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    scope: &'a str,
    inboxes: &'a [String],
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Mints an HS256 token with `secret`. The scopes and inboxes are checked as the server
/// will check them, so a token that would be refused is not minted.
pub fn mint(secret: &[u8], options: &MintOptions, region: Region) -> anyhow::Result<String> {
    Scopes::parse(&options.scope).map_err(anyhow::Error::msg)?;
    Inboxes::parse(&options.inboxes, region).map_err(anyhow::Error::msg)?;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = MintClaims {
        sub: &options.sub,
        scope: &options.scope,
        inboxes: &options.inboxes,
        iat: now,
        exp: now + options.ttl.as_secs(),
        iss: options.issuer.as_deref(),
        aud: options.audience.as_deref(),
    };
    let key = EncodingKey::from_secret(secret).context("reading the HS256 secret")?;
    encode(&Header::new(Algorithm::HS256), &claims, &key).context("signing the token")
}

/// `parley token`: mint an HS256 token for development, tests and the README's examples.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// File holding the HS256 secret (the server's --jwt-secret-file).
    #[arg(long, env = "PARLEY_JWT_SECRET_FILE")]
    pub jwt_secret_file: PathBuf,
    /// The principal's name (`sub`), shown in logs and used for its rate limit.
    #[arg(long)]
    pub sub: String,
    /// A scope: conversations:read, messages:write or admin (repeatable, or
    /// space-separated).
    #[arg(long = "scope", required = true)]
    pub scopes: Vec<String>,
    /// An address the principal acts for (repeatable), or `*` for every address.
    #[arg(long = "inbox")]
    pub inboxes: Vec<String>,
    /// Lifetime: seconds, or a number with s, m, h or d (`1h`, `30m`, `7d`).
    #[arg(long, default_value = "1h", value_parser = ttl)]
    pub ttl: Duration,
    /// `iss`, when the server requires one (--jwt-issuer).
    #[arg(long, env = "PARLEY_JWT_ISSUER")]
    pub issuer: Option<String>,
    /// `aud`, when the server requires one (--jwt-audience).
    #[arg(long, env = "PARLEY_JWT_AUDIENCE")]
    pub audience: Option<String>,
    /// Region for inbox phone numbers written without a country code.
    #[arg(long, env = "PARLEY_DEFAULT_REGION", default_value = "US")]
    pub default_region: Region,
}

/// Parses a lifetime: `3600`, `90s`, `30m`, `1h`, `7d` (1 second to 365 days).
fn ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: write a number with s, m, h or d, e.g. 1h"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    if !(1..=365 * 86_400).contains(&seconds) {
        return Err(format!("{s:?}: between 1 second and 365 days"));
    }
    Ok(Duration::from_secs(seconds))
}

/// Mints the token `args` describe and prints it.
pub fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let secret = std::fs::read_to_string(&args.jwt_secret_file)
        .with_context(|| format!("reading the JWT secret {}", args.jwt_secret_file.display()))?;
    let secret = secret.trim().as_bytes();
    anyhow::ensure!(
        secret.len() >= 32,
        "the HS256 secret is {} bytes; use at least 32 random bytes (e.g. `openssl rand -hex 32`)",
        secret.len()
    );
    let options = MintOptions {
        sub: args.sub.clone(),
        scope: args.scopes.join(" "),
        inboxes: args.inboxes.clone(),
        ttl: args.ttl,
        issuer: args.issuer.clone(),
        audience: args.audience.clone(),
    };
    println!("{}", mint(secret, &options, args.default_region)?);
    Ok(())
}
