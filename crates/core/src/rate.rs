//! A rate limit for what the host writes on a guest's behalf (log lines, repeated warnings),
//! so that no guest can fill the host's disk.
//!
//! A [`RateLimit`] is a token bucket: it admits a burst of `burst` units at once and then
//! `per_second` units a second (units are whatever the caller counts: bytes, lines). What it
//! refuses is counted, and the next admission reports how much was suppressed since the last
//! one, so the output can say "N suppressed" instead of going silent. Cheap: one short mutex
//! hold per check, no allocation.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// A token bucket; see the [module documentation](self).
#[derive(Debug)]
pub struct RateLimit {
    burst: u64,
    per_second: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: u64,
    last: Instant,
    /// Refused since the last admission: (checks, units).
    suppressed: (u64, u64),
}

/// The verdict of [`RateLimit::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead. `suppressed` checks (of `suppressed_units` units) were refused since the last
    /// admission: say so.
    Yes {
        /// Checks refused since the last admission.
        suppressed: u64,
        /// Their units.
        suppressed_units: u64,
    },
    /// Over the rate: drop it (it is counted).
    No,
}

impl RateLimit {
    /// A bucket that starts full (`burst` units) and refills at `per_second` units a second.
    pub fn new(burst: u64, per_second: u64) -> Self {
        RateLimit {
            burst,
            per_second,
            state: Mutex::new(State {
                tokens: burst,
                last: Instant::now(),
                suppressed: (0, 0),
            }),
        }
    }

    /// Whether `units` more may go out now. A cost above `burst` is never admitted.
    pub fn admit(&self, units: u64) -> Admit {
        self.admit_with(units, || units)
    }

    /// [`admit`](Self::admit) for a cost that is dear to compute: refused at once (and
    /// counted as `at_least`) when not even `at_least` units are left, so what is dropped
    /// costs no more than the check; otherwise `exact()` (at least `at_least`) is charged.
    pub fn admit_with(&self, at_least: u64, exact: impl FnOnce() -> u64) -> Admit {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(s.last);
        // Whole units only, so a stream of tiny checks cannot round its way past the rate.
        let refill = (u128::from(self.per_second) * elapsed.as_nanos() / 1_000_000_000)
            .min(u128::from(u64::MAX)) as u64;
        if refill > 0 {
            s.tokens = s.tokens.saturating_add(refill).min(self.burst);
            s.last = now;
        }
        let units = if at_least <= s.tokens {
            exact().max(at_least)
        } else {
            at_least
        };
        if units <= s.tokens {
            s.tokens -= units;
            let (suppressed, suppressed_units) = std::mem::take(&mut s.suppressed);
            Admit::Yes {
                suppressed,
                suppressed_units,
            }
        } else {
            s.suppressed.0 += 1;
            s.suppressed.1 = s.suppressed.1.saturating_add(units);
            Admit::No
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals_counted_and_reported() {
        let limit = RateLimit::new(10, 0);
        assert_eq!(
            limit.admit(6),
            Admit::Yes {
                suppressed: 0,
                suppressed_units: 0
            }
        );
        assert_eq!(limit.admit(6), Admit::No);
        assert_eq!(limit.admit(11), Admit::No);
        assert_eq!(
            limit.admit(4),
            Admit::Yes {
                suppressed: 2,
                suppressed_units: 17
            }
        );
        assert_eq!(limit.admit(1), Admit::No);
    }

    #[test]
    fn a_dear_cost_is_computed_only_when_it_may_pass() {
        let limit = RateLimit::new(10, 0);
        let mut computed = 0;
        assert!(matches!(
            limit.admit_with(2, || {
                computed += 1;
                8
            }),
            Admit::Yes { .. }
        ));
        // 2 left: a check that needs at least 3 is refused without computing its cost.
        assert_eq!(
            limit.admit_with(3, || {
                computed += 1;
                3
            }),
            Admit::No
        );
        assert_eq!(computed, 1);
    }
}
