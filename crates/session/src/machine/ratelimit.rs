//! Rate limiting of the machine's answers to bad input: the token bucket
//! behind [`PeerMachine::refuse`](super::PeerMachine), so a peer that
//! floods us with bad PDUs gets at most [`Config::error_burst`] (then
//! [`Config::error_rate`] a second) `protocol-error` replies.
//!
//! [`Config::error_burst`]: crate::Config::error_burst
//! [`Config::error_rate`]: crate::Config::error_rate

use std::time::Instant;

/// Token bucket for `protocol-error` replies.
#[derive(Debug)]
pub(super) struct RateLimit {
    tokens: u32,
    burst: u32,
    per_second: u32,
    last: Option<Instant>,
}

impl RateLimit {
    /// A full bucket of `burst` tokens, refilled at `per_second`.
    pub(super) const fn new(burst: u32, per_second: u32) -> Self {
        Self {
            tokens: burst,
            burst,
            per_second,
            last: None,
        }
    }

    /// Takes a token at `now`, if one is left.
    pub(super) fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let gained = now.saturating_duration_since(last).as_millis() * u128::from(self.per_second) / 1000;
            if gained > 0 {
                self.tokens = self
                    .tokens
                    .saturating_add(u32::try_from(gained).unwrap_or(u32::MAX))
                    .min(self.burst);
                self.last = Some(now);
            }
        } else {
            self.last = Some(now);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}
