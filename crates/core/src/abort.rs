//! The per-call abort state machine: requested → deferred → delivered.
//!
//! A call can be aborted at any wasm instruction, but not at any *moment*: while the call is
//! half-way through changing shared state (a guest-declared critical region, a held host lock)
//! a polite abort is **deferred**, and it is delivered the moment the call leaves the last of
//! those states. A rude abort ignores critical regions and locks, but still waits for a
//! **constrained region** (the CLR's CER). [`AbortState`] is the shared record of one call's
//! position in that protocol; the runtime consults it at every epoch check, in every host
//! function that ends a deferral, and in every host wait.
//!
//! Ordering argument (why no abort is lost): [`AbortState::request`] publishes the request and
//! then reads the deferral counters; the guest side decrements a counter and then reads the
//! request (both `SeqCst`). At least one side sees the other, so either the requester sees the
//! call deliverable (and forces an epoch check), or the guest sees the request inside
//! `critical_exit` / `lock_release` and unwinds there. The periodic epoch check is a third net.
//!
//! What this does not do: it does not stop code. Delivery is the runtime's job (an epoch
//! callback or a host function returning the abort as an error); this type only answers "is
//! there an abort, and may it land now?".

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering::SeqCst};
use tokio::sync::Notify;

/// How hard an abort is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AbortKind {
    /// Deferred by critical regions, held host locks, constrained regions and host functions.
    Polite,
    /// Deferred only by constrained regions.
    Rude,
}

/// Why an abort cannot land yet.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Deferral {
    /// The call is inside a constrained region (defers polite and rude aborts).
    Constrained,
    /// The call is inside a guest-declared critical region.
    Critical,
    /// The call holds one or more host locks.
    Lock,
    /// The call is inside a host function (the abort lands when it returns to wasm).
    HostCall,
}

impl Deferral {
    /// The name used in `abort_deferred` events.
    pub fn as_str(self) -> &'static str {
        match self {
            Deferral::Constrained => "constrained_region",
            Deferral::Critical => "critical_region",
            Deferral::Lock => "lock_held",
            Deferral::HostCall => "host_call",
        }
    }
}

/// A region exit with no matching enter (a guest bug; the runtime traps the call).
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("region exit without a matching enter")]
pub struct Unbalanced;

/// What [`AbortState::request`] found.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The abort may land now.
    Deliverable,
    /// The abort is recorded and waits for the call to leave the given state.
    Deferred(Deferral),
    /// An abort at least this hard was already requested; nothing changed.
    AlreadyRequested,
    /// The call has already been unwound by an abort.
    AlreadyDelivered,
}

const NONE: u8 = 0;
const POLITE: u8 = 1;
const RUDE: u8 = 2;

/// One call's abort record. Shared (behind an `Arc`) between the call's own task, which moves
/// the deferral counters, and any task that requests an abort.
#[derive(Debug, Default)]
pub struct AbortState {
    requested: AtomicU8,
    delivered: AtomicU8,
    critical: AtomicU32,
    constrained: AtomicU32,
    locks: AtomicU32,
    host: AtomicU32,
    wake: Notify,
}

impl AbortState {
    /// A fresh state: nothing requested, no deferral.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests an abort of the given kind. A rude request upgrades a pending polite one; a
    /// polite request never downgrades a rude one. Wakes host waits so they can re-check.
    pub fn request(&self, kind: AbortKind) -> RequestOutcome {
        if self.delivered.load(SeqCst) != NONE {
            return RequestOutcome::AlreadyDelivered;
        }
        let want = match kind {
            AbortKind::Polite => POLITE,
            AbortKind::Rude => RUDE,
        };
        let before = self.requested.fetch_max(want, SeqCst);
        self.wake.notify_waiters();
        if before >= want {
            return RequestOutcome::AlreadyRequested;
        }
        // Host functions are not reported as a deferral: waits are woken, and any other host
        // function returns to wasm, where the next epoch check delivers.
        match self.deferral_for(kind, false) {
            None => RequestOutcome::Deliverable,
            Some(d) => RequestOutcome::Deferred(d),
        }
    }

    /// The pending abort, if any (what the guest's `abort_requested()` reports).
    pub fn requested(&self) -> Option<AbortKind> {
        match self.requested.load(SeqCst) {
            POLITE => Some(AbortKind::Polite),
            RUDE => Some(AbortKind::Rude),
            _ => None,
        }
    }

    /// Why the pending abort (or one of `kind`) cannot land now; `None` when it can.
    /// `count_host` says whether being inside a host function defers it (true for the epoch
    /// check, false for host waits, which are the abortable exception).
    pub fn deferral_for(&self, kind: AbortKind, count_host: bool) -> Option<Deferral> {
        if self.constrained.load(SeqCst) > 0 {
            return Some(Deferral::Constrained);
        }
        if kind == AbortKind::Rude {
            return None;
        }
        if self.critical.load(SeqCst) > 0 {
            return Some(Deferral::Critical);
        }
        if self.locks.load(SeqCst) > 0 {
            return Some(Deferral::Lock);
        }
        if count_host && self.host.load(SeqCst) > 0 {
            return Some(Deferral::HostCall);
        }
        None
    }

    /// The kind of abort that may land at this point, if any. `in_wait` is true inside an
    /// abortable host wait (sleep, lock wait), where being in a host function does not defer.
    pub fn deliverable(&self, in_wait: bool) -> Option<AbortKind> {
        let kind = self.requested()?;
        if self.delivered.load(SeqCst) != NONE {
            return None;
        }
        self.deferral_for(kind, !in_wait).is_none().then_some(kind)
    }

    /// Marks the abort as delivered (the caller is about to unwind the call). Returns the kind
    /// delivered, or `None` if nothing was deliverable or it was already delivered.
    pub fn take_delivery(&self, in_wait: bool) -> Option<AbortKind> {
        let kind = self.deliverable(in_wait)?;
        let code = if kind == AbortKind::Rude {
            RUDE
        } else {
            POLITE
        };
        self.delivered
            .compare_exchange(NONE, code, SeqCst, SeqCst)
            .ok()
            .map(|_| kind)
    }

    /// The abort that unwound the call, if one did.
    pub fn delivered(&self) -> Option<AbortKind> {
        match self.delivered.load(SeqCst) {
            POLITE => Some(AbortKind::Polite),
            RUDE => Some(AbortKind::Rude),
            _ => None,
        }
    }

    /// Enters a critical region.
    pub fn critical_enter(&self) {
        self.critical.fetch_add(1, SeqCst);
    }

    /// Leaves a critical region. `Err` when none was entered (an unbalanced exit).
    pub fn critical_exit(&self) -> Result<(), Unbalanced> {
        dec(&self.critical)
    }

    /// Enters a constrained region.
    pub fn constrained_enter(&self) {
        self.constrained.fetch_add(1, SeqCst);
    }

    /// Leaves a constrained region. `Err` when none was entered.
    pub fn constrained_exit(&self) -> Result<(), Unbalanced> {
        let r = dec(&self.constrained);
        // A rude abort may have become deliverable to a waiting host call.
        self.wake.notify_waiters();
        r
    }

    /// Records that the call now holds one more host lock.
    pub fn lock_taken(&self) {
        self.locks.fetch_add(1, SeqCst);
    }

    /// Records that the call released a host lock.
    pub fn lock_dropped(&self) {
        let _ = dec(&self.locks);
    }

    /// Marks entry into a host function (polite aborts land when it returns).
    pub fn host_enter(&self) {
        self.host.fetch_add(1, SeqCst);
    }

    /// Marks the return from a host function.
    pub fn host_exit(&self) {
        let _ = dec(&self.host);
    }

    /// Whether a failure now would hit the call in a critical state (a critical or constrained
    /// region, or holding host locks): the policy's `critical-escalation` floor applies.
    pub fn is_critical(&self) -> bool {
        self.critical.load(SeqCst) > 0
            || self.constrained.load(SeqCst) > 0
            || self.locks.load(SeqCst) > 0
    }

    /// Current depth of critical regions.
    pub fn critical_depth(&self) -> u32 {
        self.critical.load(SeqCst)
    }

    /// Current depth of constrained regions.
    pub fn constrained_depth(&self) -> u32 {
        self.constrained.load(SeqCst)
    }

    /// Resolves the next time an abort is requested or a deferral may have ended. Create the
    /// future before checking [`deliverable`](Self::deliverable) to avoid missing a wake-up
    /// (see `tokio::sync::Notify::notified`).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }
}

fn dec(counter: &AtomicU32) -> Result<(), Unbalanced> {
    counter
        .fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1))
        .map(|_| ())
        .map_err(|_| Unbalanced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polite_abort_is_deferred_by_critical_and_locks_but_not_rude() {
        let s = AbortState::new();
        s.critical_enter();
        assert_eq!(
            s.request(AbortKind::Polite),
            RequestOutcome::Deferred(Deferral::Critical)
        );
        assert_eq!(s.deliverable(false), None);
        s.lock_taken();
        s.critical_exit().unwrap();
        assert_eq!(s.deliverable(false), None, "still holds a lock");
        s.lock_dropped();
        assert_eq!(s.deliverable(false), Some(AbortKind::Polite));

        let s = AbortState::new();
        s.critical_enter();
        s.lock_taken();
        assert_eq!(s.request(AbortKind::Rude), RequestOutcome::Deliverable);
        assert_eq!(s.take_delivery(false), Some(AbortKind::Rude));
        assert_eq!(s.take_delivery(false), None, "delivered once");
        assert_eq!(s.request(AbortKind::Rude), RequestOutcome::AlreadyDelivered);
    }

    #[test]
    fn constrained_region_defers_even_rude() {
        let s = AbortState::new();
        s.constrained_enter();
        assert_eq!(
            s.request(AbortKind::Rude),
            RequestOutcome::Deferred(Deferral::Constrained)
        );
        assert_eq!(s.deliverable(true), None);
        s.constrained_exit().unwrap();
        assert_eq!(s.deliverable(true), Some(AbortKind::Rude));
    }

    #[test]
    fn host_calls_defer_only_outside_waits() {
        let s = AbortState::new();
        s.host_enter();
        assert_eq!(s.request(AbortKind::Polite), RequestOutcome::Deliverable);
        assert_eq!(s.deliverable(false), None);
        assert_eq!(s.deliverable(true), Some(AbortKind::Polite));
        s.host_exit();
        assert_eq!(s.deliverable(false), Some(AbortKind::Polite));
    }

    #[test]
    fn rude_upgrades_polite_and_polite_never_downgrades() {
        let s = AbortState::new();
        s.critical_enter();
        assert!(matches!(
            s.request(AbortKind::Polite),
            RequestOutcome::Deferred(_)
        ));
        assert_eq!(
            s.request(AbortKind::Polite),
            RequestOutcome::AlreadyRequested
        );
        assert_eq!(s.request(AbortKind::Rude), RequestOutcome::Deliverable);
        assert_eq!(
            s.request(AbortKind::Polite),
            RequestOutcome::AlreadyRequested
        );
        assert_eq!(s.requested(), Some(AbortKind::Rude));
    }

    #[test]
    fn unbalanced_exits_are_errors_and_leave_counters_at_zero() {
        let s = AbortState::new();
        assert!(s.critical_exit().is_err());
        assert!(s.constrained_exit().is_err());
        s.lock_dropped();
        assert!(!s.is_critical());
    }

    /// Many racing requesters against a guest entering and leaving critical regions: whenever
    /// the guest ends outside any region, the abort is deliverable — none is lost.
    #[test]
    fn request_racing_critical_exit_is_never_lost() {
        for _ in 0..2000 {
            let s = std::sync::Arc::new(AbortState::new());
            s.critical_enter();
            let r = {
                let s = s.clone();
                std::thread::spawn(move || s.request(AbortKind::Polite))
            };
            let exited_sees = {
                s.critical_exit().unwrap();
                s.deliverable(false)
            };
            let outcome = r.join().unwrap();
            // Either side saw the other, and afterwards it is certainly deliverable.
            assert!(
                exited_sees.is_some() || outcome == RequestOutcome::Deliverable,
                "abort lost: {outcome:?}"
            );
            assert_eq!(s.deliverable(false), Some(AbortKind::Polite));
        }
    }

    #[tokio::test]
    async fn changed_wakes_a_waiter_on_request() {
        let s = std::sync::Arc::new(AbortState::new());
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move {
                loop {
                    let n = s.changed();
                    if s.deliverable(true).is_some() {
                        return;
                    }
                    n.await;
                }
            })
        };
        tokio::task::yield_now().await;
        s.request(AbortKind::Polite);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("waiter woken")
            .unwrap();
    }
}
