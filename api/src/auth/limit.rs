//! Rate limits (`governor`, GCRA): per principal on authenticated requests, per client IP
//! on webhooks and on failed authentication. A limit of N a minute lets a burst of N
//! through, then one request every 60/N seconds.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// The limiters; each is off when its rate is 0.
#[derive(Clone, Default)]
pub struct RateLimits {
    per_principal: Option<Arc<Keyed<Arc<str>>>>,
    per_ip: Option<Arc<Keyed<IpAddr>>>,
    failed_auth: Option<Arc<Keyed<IpAddr>>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("per_principal", &self.per_principal.is_some())
            .field("per_ip", &self.per_ip.is_some())
            .finish()
    }
}

fn keyed<K: std::hash::Hash + Eq + Clone>(per_minute: u32) -> Option<Arc<Keyed<K>>> {
    NonZeroU32::new(per_minute).map(|n| Arc::new(RateLimiter::keyed(Quota::per_minute(n))))
}

fn check<K: std::hash::Hash + Eq + Clone>(
    limiter: &Option<Arc<Keyed<K>>>,
    key: &K,
) -> Result<(), Duration> {
    match limiter {
        None => Ok(()),
        Some(l) => l
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now())),
    }
}

impl RateLimits {
    /// No limits.
    pub fn off() -> RateLimits {
        RateLimits::default()
    }

    /// `per_principal` requests a minute per `sub`, `per_ip` webhook deliveries and failed
    /// authentications a minute per client IP (0: no limit).
    pub fn new(per_principal: u32, per_ip: u32) -> RateLimits {
        RateLimits {
            per_principal: keyed(per_principal),
            per_ip: keyed(per_ip),
            failed_auth: keyed(per_ip),
        }
    }

    /// One request of principal `sub`; `Err` with the wait when it is over its rate.
    pub fn check_principal(&self, sub: &Arc<str>) -> Result<(), Duration> {
        check(&self.per_principal, sub)
    }

    /// One webhook delivery from `ip`.
    pub fn check_ip(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        ip.map_or(Ok(()), |ip| check(&self.per_ip, &ip))
    }

    /// One failed authentication from `ip`.
    pub fn check_failed_auth(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        ip.map_or(Ok(()), |ip| check(&self.failed_auth, &ip))
    }

    /// Forgets keys that are back to a full burst (called periodically, so the key stores
    /// do not grow with every principal and address ever seen).
    pub fn shrink(&self) {
        if let Some(l) = &self.per_principal {
            l.retain_recent();
        }
        for l in [&self.per_ip, &self.failed_auth].into_iter().flatten() {
            l.retain_recent();
        }
    }
}
