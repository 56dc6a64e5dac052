//! The per-call abort state machine: requested → deferred → delivered.
//!
//! A call can be aborted at any wasm instruction, but not at any *moment*: while the call is
//! half-way through changing shared state (a guest-declared critical region, a held host lock)
//! a polite abort is **deferred**, and it is delivered the moment the call leaves the last of
//! those states, or while it runs host code that must not be interrupted (an uninterruptible
//! host function). A rude abort ignores critical regions, locks and host calls, but still
//! waits for a **constrained region** (the CLR's CER). [`AbortState`] is the shared record of one call's
//! position in that protocol; the runtime consults it at every epoch check, in every host
//! function that ends a deferral, and in every host wait.
//!
//! Why no abort is lost: the request, the delivery mark and the four deferral counters are one
//! atomic word, and every transition is a single read-modify-write of it. So a request and a
//! deferral ending are totally ordered: either the request comes first and the guest sees it
//! at its exit (`critical_exit`, `lock_release` unwind there), or the exit comes first and the
//! requester sees the call deliverable (and forces an epoch check). The periodic epoch check is
//! a third net. A loom model checks this in every interleaving (`abort::loom_tests`).
//!
//! What this does not do: it does not stop code. Delivery is the runtime's job (an epoch
//! callback or a host function returning the abort as an error); this type only answers "is
//! there an abort, and may it land now?".

// Under the loom model (tests only) the word is loom's, so every interleaving of a request
// with a deferral ending is explored.
use crate::sync::{AtomicU64, SeqCst};
use tokio::sync::Notify;

/// How hard an abort is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AbortKind {
    /// Deferred by critical regions, held host locks and constrained regions.
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
    /// The call is inside host code that must not be interrupted (an uninterruptible host
    /// function). Defers a polite abort only.
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

/// A region, lock or host-call count would pass its bound ([`MAX_DEPTH`], [`MAX_LOCKS`],
/// [`MAX_HOST_DEPTH`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many nested regions, held host locks or uninterruptible host calls")]
pub struct TooDeep;

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

/// Deepest nesting of critical or constrained regions one call may hold.
pub const MAX_DEPTH: u64 = (1 << 20) - 1;

/// Most host locks one call may hold, as far as this record counts them (the runtime's own
/// bound is far lower).
pub const MAX_LOCKS: u64 = (1 << 16) - 1;

/// Deepest nesting of uninterruptible host calls (a host function that, uninterruptibly,
/// runs another one).
pub const MAX_HOST_DEPTH: u64 = (1 << 4) - 1;

// The whole state is one word, so that every transition is one read-modify-write of one
// location: a request and a deferral ending are totally ordered, whatever the memory model.
//   bits  0..20  critical depth      bits 40..56  held host locks
//   bits 20..40  constrained depth   bits 56..60  uninterruptible host-call depth
//   bits 60..62  requested (0 none, 1 polite, 2 rude)
//   bits 62..64  delivered (same coding)
const CRITICAL: u32 = 0;
const CONSTRAINED: u32 = 20;
const LOCKS: u32 = 40;
const HOST: u32 = 56;
const REQUESTED: u32 = 60;
const DELIVERED: u32 = 62;
const NONE: u64 = 0;
const POLITE: u64 = 1;
const RUDE: u64 = 2;

/// The largest value the field at `at` can hold.
fn max_of(at: u32) -> u64 {
    match at {
        LOCKS => MAX_LOCKS,
        HOST => MAX_HOST_DEPTH,
        _ => MAX_DEPTH,
    }
}

fn field(word: u64, at: u32) -> u64 {
    (word >> at) & max_of(at)
}

fn kind_of(code: u64) -> Option<AbortKind> {
    match code {
        POLITE => Some(AbortKind::Polite),
        RUDE => Some(AbortKind::Rude),
        _ => None,
    }
}

fn code_of(kind: AbortKind) -> u64 {
    match kind {
        AbortKind::Polite => POLITE,
        AbortKind::Rude => RUDE,
    }
}

fn requested_in(word: u64) -> u64 {
    (word >> REQUESTED) & 3
}

fn delivered_in(word: u64) -> u64 {
    (word >> DELIVERED) & 3
}

fn deferral_in(word: u64, kind: AbortKind) -> Option<Deferral> {
    if field(word, CONSTRAINED) > 0 {
        return Some(Deferral::Constrained);
    }
    if kind == AbortKind::Rude {
        return None;
    }
    if field(word, CRITICAL) > 0 {
        return Some(Deferral::Critical);
    }
    if field(word, LOCKS) > 0 {
        return Some(Deferral::Lock);
    }
    if field(word, HOST) > 0 {
        return Some(Deferral::HostCall);
    }
    None
}

/// The abort that may land in state `word`, if any.
fn deliverable_in(word: u64) -> Option<AbortKind> {
    if delivered_in(word) != NONE {
        return None;
    }
    let kind = kind_of(requested_in(word))?;
    deferral_in(word, kind).is_none().then_some(kind)
}

/// One call's abort record. Shared (behind an `Arc`) between the call's own task, which moves
/// the deferral counters, and any task that requests an abort.
#[derive(Debug, Default)]
pub struct AbortState {
    word: AtomicU64,
    wake: Notify,
}

impl AbortState {
    /// A fresh state: nothing requested, no deferral.
    pub fn new() -> Self {
        Self::default()
    }

    fn update(&self, f: impl Fn(u64) -> Option<u64>) -> Result<u64, u64> {
        self.word.fetch_update(SeqCst, SeqCst, f)
    }

    /// Requests an abort of the given kind. A rude request upgrades a pending polite one; a
    /// polite request never downgrades a rude one. Wakes host waits so they can re-check.
    pub fn request(&self, kind: AbortKind) -> RequestOutcome {
        let want = code_of(kind);
        let before = self.update(|w| {
            (delivered_in(w) == NONE && requested_in(w) < want)
                .then_some((w & !(3 << REQUESTED)) | (want << REQUESTED))
        });
        self.wake.notify_waiters();
        match before {
            Err(w) if delivered_in(w) != NONE => RequestOutcome::AlreadyDelivered,
            Err(_) => RequestOutcome::AlreadyRequested,
            // The deferral is judged on the same word the request was written into.
            Ok(w) => match deferral_in(w, kind) {
                None => RequestOutcome::Deliverable,
                Some(d) => RequestOutcome::Deferred(d),
            },
        }
    }

    /// The pending abort, if any (what the guest's `abort_requested()` reports).
    pub fn requested(&self) -> Option<AbortKind> {
        kind_of(requested_in(self.word.load(SeqCst)))
    }

    /// Why an abort of `kind` could not land now; `None` when it could.
    pub fn deferral_for(&self, kind: AbortKind) -> Option<Deferral> {
        deferral_in(self.word.load(SeqCst), kind)
    }

    /// The kind of abort that may land at this point, if any.
    pub fn deliverable(&self) -> Option<AbortKind> {
        deliverable_in(self.word.load(SeqCst))
    }

    /// Marks the abort as delivered (the caller is about to unwind the call). Returns the kind
    /// delivered, or `None` if nothing was deliverable or it was already delivered.
    pub fn take_delivery(&self) -> Option<AbortKind> {
        self.update(|w| deliverable_in(w).map(|k| w | (code_of(k) << DELIVERED)))
            .ok()
            .and_then(deliverable_in)
    }

    /// The abort that unwound the call, if one did.
    pub fn delivered(&self) -> Option<AbortKind> {
        kind_of(delivered_in(self.word.load(SeqCst)))
    }

    fn enter(&self, at: u32) -> Result<(), TooDeep> {
        self.update(|w| (field(w, at) < max_of(at)).then(|| w + (1 << at)))
            .map(drop)
            .map_err(|_| TooDeep)
    }

    fn exit(&self, at: u32) -> Result<(), Unbalanced> {
        let r = self
            .update(|w| (field(w, at) > 0).then(|| w - (1 << at)))
            .map(drop)
            .map_err(|_| Unbalanced);
        // An abort may have become deliverable to a waiting host call.
        self.wake.notify_waiters();
        r
    }

    /// Enters a critical region.
    pub fn critical_enter(&self) -> Result<(), TooDeep> {
        self.enter(CRITICAL)
    }

    /// Leaves a critical region. `Err` when none was entered (an unbalanced exit).
    pub fn critical_exit(&self) -> Result<(), Unbalanced> {
        self.exit(CRITICAL)
    }

    /// Enters a constrained region.
    pub fn constrained_enter(&self) -> Result<(), TooDeep> {
        self.enter(CONSTRAINED)
    }

    /// Leaves a constrained region. `Err` when none was entered.
    pub fn constrained_exit(&self) -> Result<(), Unbalanced> {
        self.exit(CONSTRAINED)
    }

    /// Records that the call now holds one more host lock.
    pub fn lock_taken(&self) -> Result<(), TooDeep> {
        self.enter(LOCKS)
    }

    /// Records that the call released a host lock.
    pub fn lock_dropped(&self) {
        let _ = self.exit(LOCKS);
    }

    /// Enters host code that must not be interrupted: a polite abort waits until the
    /// matching [`host_exit`](Self::host_exit) (a rude one does not).
    pub fn host_enter(&self) -> Result<(), TooDeep> {
        self.enter(HOST)
    }

    /// Leaves uninterruptible host code. `Err` when none was entered.
    pub fn host_exit(&self) -> Result<(), Unbalanced> {
        self.exit(HOST)
    }

    /// Current depth of uninterruptible host calls.
    pub fn host_depth(&self) -> u64 {
        field(self.word.load(SeqCst), HOST)
    }

    /// Whether a failure now would hit the call in a critical state (a critical or constrained
    /// region, or holding host locks): the policy's `critical-escalation` floor applies.
    pub fn is_critical(&self) -> bool {
        let w = self.word.load(SeqCst);
        field(w, CRITICAL) > 0 || field(w, CONSTRAINED) > 0 || field(w, LOCKS) > 0
    }

    /// Current depth of critical regions.
    pub fn critical_depth(&self) -> u64 {
        field(self.word.load(SeqCst), CRITICAL)
    }

    /// Current depth of constrained regions.
    pub fn constrained_depth(&self) -> u64 {
        field(self.word.load(SeqCst), CONSTRAINED)
    }

    /// Host locks the call holds, as far as this record knows.
    pub fn locks_held(&self) -> u64 {
        field(self.word.load(SeqCst), LOCKS)
    }

    /// Resolves the next time an abort is requested or a deferral may have ended. Create the
    /// future before checking [`deliverable`](Self::deliverable) to avoid missing a wake-up
    /// (see `tokio::sync::Notify::notified`).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }
}

/// Model check (run with `RUSTFLAGS="--cfg loom" cargo test -p warden-core --release --lib
/// abort::loom`): in every interleaving of a requester with a guest leaving its last
/// deferral, either the requester sees the call deliverable or the guest sees the request at
/// its exit — no abort is lost — and it is delivered exactly once.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    fn race(guest_holds_lock: bool) {
        loom::model(move || {
            let s = Arc::new(AbortState::new());
            s.critical_enter().unwrap();
            if guest_holds_lock {
                s.lock_taken().unwrap();
            }
            let requester = {
                let s = s.clone();
                loom::thread::spawn(move || s.request(AbortKind::Polite))
            };
            // The guest leaves its regions; at each exit it checks for a deliverable abort,
            // as critical_exit and lock_release do.
            s.critical_exit().unwrap();
            let mut delivered = s.take_delivery().is_some();
            if guest_holds_lock {
                s.lock_dropped();
                delivered |= s.take_delivery().is_some();
            }
            let outcome = requester.join().unwrap();
            assert!(
                delivered || outcome == RequestOutcome::Deliverable,
                "abort lost: {outcome:?}"
            );
            // The epoch check afterwards delivers at most once more, and only if no exit did.
            let at_epoch = s.take_delivery().is_some();
            assert!(delivered ^ at_epoch, "delivered exactly once");
        });
    }

    #[test]
    fn request_racing_critical_exit() {
        race(false);
    }

    #[test]
    fn request_racing_the_last_lock_release() {
        race(true);
    }

    /// An uninterruptible host call returning while a polite abort is requested: the host-call
    /// layer checks for delivery right after `host_exit`, so the abort lands exactly once.
    #[test]
    fn request_racing_host_exit() {
        loom::model(|| {
            let s = Arc::new(AbortState::new());
            s.host_enter().unwrap();
            let requester = {
                let s = s.clone();
                loom::thread::spawn(move || s.request(AbortKind::Polite))
            };
            s.host_exit().unwrap();
            let delivered = s.take_delivery().is_some();
            let outcome = requester.join().unwrap();
            assert!(
                delivered || outcome == RequestOutcome::Deliverable,
                "abort lost: {outcome:?}"
            );
            let later = s.take_delivery().is_some();
            assert!(delivered ^ later, "delivered exactly once");
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn polite_abort_is_deferred_by_critical_and_locks_but_not_rude() {
        let s = AbortState::new();
        s.critical_enter().unwrap();
        assert_eq!(
            s.request(AbortKind::Polite),
            RequestOutcome::Deferred(Deferral::Critical)
        );
        assert_eq!(s.deliverable(), None);
        s.lock_taken().unwrap();
        s.critical_exit().unwrap();
        assert_eq!(s.deliverable(), None, "still holds a lock");
        s.lock_dropped();
        assert_eq!(s.deliverable(), Some(AbortKind::Polite));

        let s = AbortState::new();
        s.critical_enter().unwrap();
        s.lock_taken().unwrap();
        assert_eq!(s.request(AbortKind::Rude), RequestOutcome::Deliverable);
        assert_eq!(s.take_delivery(), Some(AbortKind::Rude));
        assert_eq!(s.take_delivery(), None, "delivered once");
        assert_eq!(s.request(AbortKind::Rude), RequestOutcome::AlreadyDelivered);
    }

    #[test]
    fn uninterruptible_host_call_defers_polite_but_not_rude() {
        let s = AbortState::new();
        s.host_enter().unwrap();
        assert_eq!(
            s.request(AbortKind::Polite),
            RequestOutcome::Deferred(Deferral::HostCall)
        );
        assert_eq!(s.take_delivery(), None);
        assert!(!s.is_critical(), "host code is not a guest critical state");
        s.host_exit().unwrap();
        assert_eq!(s.take_delivery(), Some(AbortKind::Polite));
        assert!(s.host_exit().is_err(), "unbalanced");

        let s = AbortState::new();
        s.host_enter().unwrap();
        assert_eq!(s.request(AbortKind::Rude), RequestOutcome::Deliverable);
        for _ in 1..MAX_HOST_DEPTH {
            s.host_enter().unwrap();
        }
        assert_eq!(s.host_enter(), Err(TooDeep));
        assert_eq!(s.host_depth(), MAX_HOST_DEPTH);
        assert_eq!(s.locks_held(), 0, "never spills into the lock count");
    }

    #[test]
    fn lock_count_is_bounded_and_never_spills() {
        let s = AbortState::new();
        for _ in 0..MAX_LOCKS {
            s.lock_taken().unwrap();
        }
        assert_eq!(s.lock_taken(), Err(TooDeep));
        assert_eq!(s.host_depth(), 0);
        assert_eq!(s.requested(), None);
    }

    #[test]
    fn constrained_region_defers_even_rude() {
        let s = AbortState::new();
        s.constrained_enter().unwrap();
        assert_eq!(
            s.request(AbortKind::Rude),
            RequestOutcome::Deferred(Deferral::Constrained)
        );
        assert_eq!(s.deliverable(), None);
        s.constrained_exit().unwrap();
        assert_eq!(s.deliverable(), Some(AbortKind::Rude));
    }

    #[test]
    fn rude_upgrades_polite_and_polite_never_downgrades() {
        let s = AbortState::new();
        s.critical_enter().unwrap();
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
    fn nesting_is_bounded_and_never_spills_into_other_fields() {
        let s = AbortState::new();
        for _ in 0..MAX_DEPTH {
            s.critical_enter().unwrap();
        }
        assert_eq!(s.critical_enter(), Err(TooDeep));
        assert_eq!(s.critical_depth(), MAX_DEPTH);
        assert_eq!(s.constrained_depth(), 0);
        assert_eq!(s.requested(), None);
        assert_eq!(s.request(AbortKind::Rude), RequestOutcome::Deliverable);
        assert_eq!(s.critical_depth(), MAX_DEPTH);
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
            s.critical_enter().unwrap();
            let r = {
                let s = s.clone();
                std::thread::spawn(move || s.request(AbortKind::Polite))
            };
            let exited_sees = {
                s.critical_exit().unwrap();
                s.deliverable()
            };
            let outcome = r.join().unwrap();
            // Either side saw the other, and afterwards it is certainly deliverable.
            assert!(
                exited_sees.is_some() || outcome == RequestOutcome::Deliverable,
                "abort lost: {outcome:?}"
            );
            assert_eq!(s.deliverable(), Some(AbortKind::Polite));
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
                    if s.deliverable().is_some() {
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
