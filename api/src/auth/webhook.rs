//! Provider webhook signatures: `X-Parley-Signature: t=<unix seconds>,v1=<hex>` where the
//! hex is HMAC-SHA256 of `"{t}.{raw body}"` under the provider's shared secret. Up to two
//! secrets per provider are in force at once, so a secret can be rotated without downtime.

use std::path::Path;

use anyhow::Context as _;
use hmac::{Hmac, KeyInit, Mac};
use service::Channel;
use sha2::Sha256;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-parley-signature";

/// How far a signature's timestamp may be from now, either way.
pub const TOLERANCE_SECONDS: i64 = 300;

/// The webhook secrets, per provider (`sms`, `email`).
#[derive(Clone, Default)]
pub struct WebhookSecrets {
    sms: Vec<Vec<u8>>,
    email: Vec<Vec<u8>>,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("WebhookSecrets")
            .field("sms", &self.sms.len())
            .field("email", &self.email.len())
            .finish()
    }
}

/// Why a delivery's signature was refused (each answered 401, nothing stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No secret is configured for this provider while authentication is on.
    #[error("webhooks of this provider are refused: no secret is configured (--webhook-secrets)")]
    NotConfigured,
    /// No `X-Parley-Signature` header.
    #[error(
        "send the X-Parley-Signature header: t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\">"
    )]
    Missing,
    /// The header does not parse.
    #[error("X-Parley-Signature must be t=<unix seconds>,v1=<64 hex digits>")]
    Malformed,
    /// The timestamp is more than five minutes away from now.
    #[error("the signature's timestamp is more than 5 minutes from now; sign each delivery anew")]
    Stale,
    /// No secret of the provider produces this signature.
    #[error("the signature does not match the body")]
    Mismatch,
}

impl SignatureError {
    /// A short label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            SignatureError::NotConfigured => "webhook_not_configured",
            SignatureError::Missing => "webhook_signature_missing",
            SignatureError::Malformed => "webhook_signature_malformed",
            SignatureError::Stale => "webhook_signature_stale",
            SignatureError::Mismatch => "webhook_signature_mismatch",
        }
    }
}

impl WebhookSecrets {
    /// Reads a secrets file: one `PROVIDER SECRET` a line (`sms` or `email`; at most two
    /// lines per provider, for a rotation), blank lines and `#` comments ignored.
    pub fn read(path: &Path) -> anyhow::Result<WebhookSecrets> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the webhook secrets file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses the secrets file's text (see [`WebhookSecrets::read`]).
    pub fn parse(text: &str) -> anyhow::Result<WebhookSecrets> {
        let mut secrets = WebhookSecrets::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(provider), Some(secret), None) = (parts.next(), parts.next(), parts.next())
            else {
                anyhow::bail!(
                    "line {}: write `PROVIDER SECRET` (provider sms or email)",
                    n + 1
                );
            };
            anyhow::ensure!(
                secret.len() >= 16,
                "line {}: the {provider} secret is too short; use at least 16 characters",
                n + 1
            );
            let list = match provider {
                "sms" => &mut secrets.sms,
                "email" => &mut secrets.email,
                other => anyhow::bail!(
                    "line {}: unknown provider `{other}`; providers are sms and email",
                    n + 1
                ),
            };
            anyhow::ensure!(
                list.len() < 2,
                "line {}: at most two {provider} secrets (the old and the new one, during a rotation)",
                n + 1
            );
            list.push(secret.as_bytes().to_vec());
        }
        Ok(secrets)
    }

    /// Whether any secret is configured.
    pub fn is_empty(&self) -> bool {
        self.sms.is_empty() && self.email.is_empty()
    }

    /// The secrets of `channel`'s provider.
    pub fn of(&self, channel: Channel) -> &[Vec<u8>] {
        match channel {
            Channel::Sms => &self.sms,
            Channel::Email => &self.email,
        }
    }

    /// Checks a delivery's signature header against `body` at time `now` (unix seconds).
    pub fn verify(
        &self,
        channel: Channel,
        header: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let secrets = self.of(channel);
        if secrets.is_empty() {
            return Err(SignatureError::NotConfigured);
        }
        let header = header.ok_or(SignatureError::Missing)?;
        let (t, signatures) = parse_header(header)?;
        if (now - t).abs() > TOLERANCE_SECONDS {
            return Err(SignatureError::Stale);
        }
        for secret in secrets {
            for sig in &signatures {
                let mac = hmac(secret, t, body);
                // `verify_slice` compares in constant time.
                if mac.verify_slice(sig).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(SignatureError::Mismatch)
    }
}

fn hmac(secret: &[u8], t: i64, body: &[u8]) -> Hmac<Sha256> {
    // Any key length is valid for HMAC.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `t=..` and every `v1=..` of a header.
fn parse_header(header: &str) -> Result<(i64, Vec<Vec<u8>>), SignatureError> {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match k {
            "t" => t = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            "v1" => {
                let bytes = hex::decode(v).map_err(|_| SignatureError::Malformed)?;
                if bytes.len() != 32 {
                    return Err(SignatureError::Malformed);
                }
                v1.push(bytes);
            }
            // Other schemes (a future v2) are skipped.
            _ => {}
        }
    }
    match (t, v1.is_empty()) {
        (Some(t), false) => Ok((t, v1)),
        _ => Err(SignatureError::Malformed),
    }
}

/// The `X-Parley-Signature` value for `body` at time `t` under `secret` (what a provider
/// sends; used by tests and the README's example).
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let tag = hmac(secret, t, body).finalize().into_bytes();
    format!("t={t},v1={}", hex::encode(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000;

    fn secrets() -> WebhookSecrets {
        WebhookSecrets::parse("# rotation\nsms old-secret-0123456789\nsms new-secret-0123456789\n")
            .unwrap()
    }

    #[test]
    fn a_signature_by_either_secret_verifies_and_anything_else_is_refused() {
        let s = secrets();
        let body = br#"{"from":"+1"}"#;
        let check = |h: &str, body: &[u8], now| s.verify(Channel::Sms, Some(h), body, now);
        let old = sign(b"old-secret-0123456789", NOW, body);
        let new = sign(b"new-secret-0123456789", NOW, body);
        assert_eq!(check(&old, body, NOW), Ok(()));
        assert_eq!(check(&new, body, NOW + 299), Ok(()));
        assert_eq!(
            check(&new, b"{\"from\":\"+2\"}", NOW),
            Err(SignatureError::Mismatch)
        );
        let tampered_t = new.replacen(&format!("t={NOW}"), &format!("t={}", NOW + 1), 1);
        assert_eq!(check(&tampered_t, body, NOW), Err(SignatureError::Mismatch));
        assert_eq!(check(&new, body, NOW + 301), Err(SignatureError::Stale));
        assert_eq!(check(&new, body, NOW - 301), Err(SignatureError::Stale));
        let other = sign(b"another-secret-0123456789", NOW, body);
        assert_eq!(check(&other, body, NOW), Err(SignatureError::Mismatch));
        assert_eq!(check("v1=00", body, NOW), Err(SignatureError::Malformed));
        assert_eq!(
            check("t=1,v1=zz", body, NOW),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            s.verify(Channel::Sms, None, body, NOW),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            s.verify(Channel::Email, Some(&old), body, NOW),
            Err(SignatureError::NotConfigured)
        );
    }

    #[test]
    fn the_readme_worked_example_is_what_sign_computes() {
        let body = br#"{"from":"+18045551234","to":"+12016661234","type":"sms","body":"hi","messaging_provider_id":"m-1"}"#;
        assert_eq!(
            sign(b"whsec-sms-2026-0123456789", 1_764_547_200, body),
            "t=1764547200,v1=77778b4e38b8e2c998f92b8c4829d09690735bf50c38e73cdba62cae7cdee9a1"
        );
    }

    #[test]
    fn the_secrets_file_is_checked_line_by_line() {
        assert!(WebhookSecrets::parse("fax 0123456789abcdef").is_err());
        assert!(WebhookSecrets::parse("sms short").is_err());
        assert!(WebhookSecrets::parse("sms").is_err());
        let three = "sms 0123456789abcdef1\nsms 0123456789abcdef2\nsms 0123456789abcdef3";
        assert!(
            WebhookSecrets::parse(three)
                .unwrap_err()
                .to_string()
                .contains("at most two")
        );
    }
}
