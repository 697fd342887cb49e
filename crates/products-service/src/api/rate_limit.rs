//! Per-client rate limit (a GCRA token bucket per client IP address, from the
//! `governor` crate), shared by REST and gRPC so a client's budget spans both.
//! A refusal tells the client how long to wait.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use governor::{clock::Clock, DefaultKeyedRateLimiter, Quota};

use crate::config::RateLimitSettings;

/// How often (in checks) idle clients are forgotten, bounding memory.
const SWEEP_EVERY: u64 = 4096;

pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<Option<IpAddr>>,
    checks: AtomicU64,
}

impl RateLimiter {
    /// `None` when rate limiting is off.
    pub fn from_settings(settings: &RateLimitSettings) -> Option<Arc<Self>> {
        if !settings.enabled {
            return None;
        }
        let per_second = NonZeroU32::new(settings.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(settings.burst).unwrap_or(per_second);
        Some(Arc::new(Self {
            limiter: DefaultKeyedRateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            ),
            checks: AtomicU64::new(0),
        }))
    }

    /// `Err(wait)` when `client` is over its budget. Requests whose address
    /// is unknown share one bucket.
    pub fn check(&self, client: Option<IpAddr>) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

/// Whole seconds to wait, rounded up and at least 1 (for `Retry-After`).
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_has_its_own_bucket() {
        let limiter = RateLimiter::from_settings(&RateLimitSettings {
            enabled: true,
            per_second: 1,
            burst: 2,
        })
        .unwrap();
        let a = Some(IpAddr::from([127, 0, 0, 1]));
        let b = Some(IpAddr::from([127, 0, 0, 2]));
        assert!(limiter.check(a).is_ok());
        assert!(limiter.check(a).is_ok());
        let wait = limiter.check(a).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check(b).is_ok());
        assert!(limiter.check(None).is_ok());
    }

    #[test]
    fn off_means_no_limiter() {
        assert!(RateLimiter::from_settings(&RateLimitSettings {
            enabled: false,
            per_second: 1,
            burst: 1,
        })
        .is_none());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
    }
}
