//! Quarantine: an app whose domains keep failing stops being served for a while.
//!
//! Every unload of one of the app's domains caused by a failed request is recorded. More than
//! the app's `restart-intensity.unloads` within `restart-intensity.within` (Erlang's restart
//! intensity) quarantines it: its requests are answered 503 with `Retry-After` until
//! `cool-down` has passed, or an operator restores it (`POST /admin/apps/NAME/restore`).
//! Unloads recorded while quarantined are not counted; a lifted quarantine starts afresh.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::config::Intensity;

/// One app's quarantine state.
#[derive(Debug)]
pub struct Quarantine {
    intensity: Intensity,
    cool_down: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Unloads within the window, oldest first.
    unloads: VecDeque<Instant>,
    /// Quarantined until then.
    until: Option<Instant>,
}

impl Quarantine {
    /// A quarantine that trips past `intensity` and lasts `cool_down`.
    pub fn new(intensity: Intensity, cool_down: Duration) -> Quarantine {
        Quarantine {
            intensity,
            cool_down,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a failure unload at `now`; true when it quarantined the app.
    pub fn record_unload(&self, now: Instant) -> bool {
        let mut s = self.state();
        if s.until.is_some_and(|u| now < u) {
            return false;
        }
        s.until = None;
        while s
            .unloads
            .front()
            .is_some_and(|&t| now.duration_since(t) > self.intensity.within)
        {
            s.unloads.pop_front();
        }
        s.unloads.push_back(now);
        if s.unloads.len() > self.intensity.unloads as usize {
            s.unloads.clear();
            s.until = Some(now + self.cool_down);
            return true;
        }
        false
    }

    /// How long the quarantine still lasts at `now`, if the app is quarantined.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        let mut s = self.state();
        match s.until {
            Some(u) if now < u => Some(u - now),
            Some(_) => {
                s.until = None;
                None
            }
            None => None,
        }
    }

    /// Lifts the quarantine (and forgets the unloads); true if the app was quarantined.
    pub fn restore(&self) -> bool {
        let mut s = self.state();
        s.unloads.clear();
        s.until.take().is_some_and(|u| Instant::now() < u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn q() -> Quarantine {
        Quarantine::new(
            Intensity {
                unloads: 2,
                within: 10 * S,
            },
            5 * S,
        )
    }

    #[test]
    fn more_unloads_than_the_intensity_within_the_window_quarantine_until_the_cool_down() {
        let q = q();
        let t = Instant::now();
        assert!(!q.record_unload(t));
        assert!(!q.record_unload(t + S));
        assert_eq!(q.remaining(t + S), None);
        assert!(q.record_unload(t + 2 * S), "the third of 2 allowed");
        assert_eq!(q.remaining(t + 3 * S), Some(4 * S));
        assert!(!q.record_unload(t + 3 * S), "not counted while quarantined");
        assert_eq!(q.remaining(t + 7 * S), None, "cooled down");
        assert!(
            !q.record_unload(t + 8 * S),
            "a lifted quarantine starts afresh"
        );
    }

    #[test]
    fn unloads_outside_the_window_do_not_count() {
        let q = q();
        let t = Instant::now();
        q.record_unload(t);
        q.record_unload(t + S);
        assert!(
            !q.record_unload(t + 12 * S),
            "the first two left the window"
        );
    }

    #[test]
    fn restore_lifts_a_quarantine() {
        let q = q();
        let t = Instant::now();
        for i in 0..3 {
            q.record_unload(t + i * Duration::from_millis(1));
        }
        assert!(q.remaining(Instant::now()).is_some());
        assert!(q.restore());
        assert_eq!(q.remaining(Instant::now()), None);
        assert!(!q.restore(), "nothing left to lift");
    }
}
