//! Token buckets: the one behind [`PeerMachine::refuse`](super::PeerMachine),
//! so a peer that floods us with bad PDUs gets at most
//! [`Config::error_burst`] (then [`Config::error_rate`] a second)
//! `protocol-error` replies; and a peer's allowance of one-time KeyPackages
//! ([`PoolConfig::claim_burst`], one more every
//! [`PoolConfig::claim_interval`]).
//!
//! [`Config::error_burst`]: crate::Config::error_burst
//! [`Config::error_rate`]: crate::Config::error_rate
//! [`PoolConfig::claim_burst`]: crate::PoolConfig::claim_burst
//! [`PoolConfig::claim_interval`]: crate::PoolConfig::claim_interval

use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens, one more per `interval`.
#[derive(Debug)]
pub(super) struct RateLimit {
    tokens: u32,
    burst: u32,
    /// `None`: never refilled.
    interval: Option<Duration>,
    last: Option<Instant>,
}

impl RateLimit {
    /// A full bucket of `burst` tokens, refilled at `per_second`.
    pub(super) fn new(burst: u32, per_second: u32) -> Self {
        Self::every(burst, (per_second > 0).then(|| Duration::from_secs(1) / per_second))
    }

    /// A full bucket of `burst` tokens, one more per `interval`.
    pub(super) const fn every(burst: u32, interval: Option<Duration>) -> Self {
        Self {
            tokens: burst,
            burst,
            interval,
            last: None,
        }
    }

    /// Takes a token at `now`, if one is left.
    pub(super) fn allow(&mut self, now: Instant) -> bool {
        let last = *self.last.get_or_insert(now);
        if let Some(interval) = self.interval.filter(|i| !i.is_zero()) {
            let gained = now.saturating_duration_since(last).as_nanos() / interval.as_nanos();
            if gained > 0 {
                let gained = u32::try_from(gained).unwrap_or(u32::MAX);
                self.tokens = self.tokens.saturating_add(gained).min(self.burst);
                // Whole intervals only: the part of one already elapsed
                // still counts towards the next token.
                self.last = Some(last + interval * gained);
            }
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refills_one_token_per_interval() {
        let t0 = Instant::now();
        let mut b = RateLimit::every(2, Some(Duration::from_secs(60)));
        assert!(b.allow(t0) && b.allow(t0));
        assert!(!b.allow(t0 + Duration::from_secs(59)));
        assert!(b.allow(t0 + Duration::from_secs(61)));
        assert!(!b.allow(t0 + Duration::from_secs(100)));
        // 61 s + 59 s: the second token, though neither wait alone was 60 s.
        assert!(b.allow(t0 + Duration::from_secs(120)));
        // Idle for long: the bucket holds its burst, no more.
        let later = t0 + Duration::from_secs(3600);
        assert!(b.allow(later) && b.allow(later) && !b.allow(later));
        let mut never = RateLimit::new(1, 0);
        assert!(never.allow(t0) && !never.allow(later));
    }
}
