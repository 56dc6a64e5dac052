//! A domain's lifecycle: loaded → unloading {polite, rude} → killed → unloaded, with the count
//! of calls it has admitted and the claim on its finalizer, in one atomic word.
//!
//! Every step that ends something is a transition of [`Lifecycle`], and each transition is one
//! read-modify-write of that word, so two steps racing each other are always ordered and the
//! method that performed a transition tells its caller what it now owes:
//!
//! | transition | from | caller then |
//! |---|---|---|
//! | [`admit`](Lifecycle::admit) | loaded | runs or queues the call, and ends it with [`call_ended`](Lifecycle::call_ended) |
//! | [`unload`](Lifecycle::unload) | loaded, or polite unloading | on [`UnloadStep::Began`]: blocks entry, aborts the call in flight, drains the queue; on [`UnloadStep::MadeRude`]: aborts the call in flight rudely |
//! | [`unload_if_idle`](Lifecycle::unload_if_idle) | loaded with no admitted call | as `Began`, politely (memory pressure's "idle, so unload me": never a check followed by an act) |
//! | [`kill`](Lifecycle::kill) | loaded or unloading | drops the running guest code and the store: no more guest code |
//! | [`claim_finalizer`](Lifecycle::claim_finalizer) | loaded (exit) or polite unloading | runs the guest finalizer, at most once per domain |
//! | [`finish`](Lifecycle::finish) | any | publishes the unload report |
//!
//! What this does not do: it runs nothing and waits for nothing. It is the record that makes
//! the runtime's steps (in `warden`'s domain, worker and unload modules) agree on who does what;
//! a loom model checks the races that matter (`lifecycle::loom_tests`).

use crate::sync::{AtomicU64, SeqCst};

/// Where a domain is in its life.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Admits calls.
    Loaded,
    /// Unload has begun: entry is blocked; guest code still runs (the call in flight while
    /// it is being aborted, then the finalizer of a polite unload).
    Unloading,
    /// No more guest code: the running code and the store are being dropped.
    Killed,
    /// Gone; the unload report is final.
    Unloaded,
}

/// What [`Lifecycle::unload`] did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum UnloadStep {
    /// This caller began the unload (`rude` as given): it carries out its first steps.
    Began {
        /// Whether the unload is rude.
        rude: bool,
    },
    /// A polite unload in progress became rude: abort the call in flight rudely.
    MadeRude,
    /// An unload at least this hard is in progress or done: nothing to do but wait.
    AlreadyUnloading,
}

/// What [`Lifecycle::claim_finalizer`] decided.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FinalizerClaim {
    /// Run it: this caller holds the domain's one claim.
    Run,
    /// Skip it: the unload is rude, or the domain was killed or unloaded.
    Skip,
    /// It was claimed before (it already ran, at exit or at unload).
    AlreadyClaimed,
}

/// A call refused because the domain no longer admits calls.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the domain is not loaded")]
pub struct NotLoaded;

// The word:  bits 0..2 phase · bit 2 rude · bit 3 finalizer claimed · bits 32..64 admitted calls.
const PHASE: u64 = 0b11;
const LOADED: u64 = 0;
const UNLOADING: u64 = 1;
const KILLED: u64 = 2;
const UNLOADED: u64 = 3;
const RUDE: u64 = 1 << 2;
const CLAIMED: u64 = 1 << 3;
const CALLS_AT: u32 = 32;
const ONE_CALL: u64 = 1 << CALLS_AT;

fn phase_of(word: u64) -> Phase {
    match word & PHASE {
        LOADED => Phase::Loaded,
        UNLOADING => Phase::Unloading,
        KILLED => Phase::Killed,
        _ => Phase::Unloaded,
    }
}

fn with_phase(word: u64, phase: u64) -> u64 {
    (word & !PHASE) | phase
}

/// One domain's lifecycle word. See the [module docs](self).
#[derive(Debug)]
pub struct Lifecycle {
    word: AtomicU64,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A loaded domain with no calls.
    pub fn new() -> Self {
        Lifecycle {
            word: AtomicU64::new(LOADED),
        }
    }

    /// Applies `f` to the word until it sticks; `f` returns the new word, or `None` to leave
    /// it. Returns the word `f` saw last and whether it changed it.
    fn update(&self, mut f: impl FnMut(u64) -> Option<u64>) -> (u64, bool) {
        let mut seen = self.word.load(SeqCst);
        loop {
            let Some(next) = f(seen) else {
                return (seen, false);
            };
            match self.word.compare_exchange(seen, next, SeqCst, SeqCst) {
                Ok(_) => return (seen, true),
                Err(now) => seen = now,
            }
        }
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        phase_of(self.word.load(SeqCst))
    }

    /// Whether the domain admits calls.
    pub fn is_loaded(&self) -> bool {
        self.phase() == Phase::Loaded
    }

    /// Whether the unload is (or became) rude.
    pub fn is_rude(&self) -> bool {
        self.word.load(SeqCst) & RUDE != 0
    }

    /// Whether guest code may no longer run (killed or unloaded).
    pub fn is_killed(&self) -> bool {
        self.phase() >= Phase::Killed
    }

    /// Calls admitted and not yet ended (queued or running).
    pub fn calls(&self) -> u64 {
        self.word.load(SeqCst) >> CALLS_AT
    }

    /// Admits a call: counted until [`call_ended`](Self::call_ended). Refused unless loaded.
    pub fn admit(&self) -> Result<(), NotLoaded> {
        let (_, admitted) = self.update(|w| (w & PHASE == LOADED).then(|| w + ONE_CALL));
        if admitted { Ok(()) } else { Err(NotLoaded) }
    }

    /// An admitted call ended (however it ended).
    pub fn call_ended(&self) {
        self.update(|w| (w >> CALLS_AT > 0).then(|| w - ONE_CALL));
    }

    /// Begins an unload, or makes a polite one rude.
    pub fn unload(&self, rude: bool) -> UnloadStep {
        let (seen, changed) = self.update(|w| match w & PHASE {
            LOADED => Some(with_phase(w, UNLOADING) | if rude { RUDE } else { 0 }),
            UNLOADING if rude && w & RUDE == 0 => Some(w | RUDE),
            _ => None,
        });
        match (changed, seen & PHASE) {
            (true, LOADED) => UnloadStep::Began { rude },
            (true, _) => UnloadStep::MadeRude,
            (false, _) => UnloadStep::AlreadyUnloading,
        }
    }

    /// Begins a polite unload if, and only if, the domain is loaded and has no admitted call:
    /// one transition, so a call admitted at the same moment either comes first (and this
    /// returns false) or is refused.
    pub fn unload_if_idle(&self) -> bool {
        self.update(|w| {
            (w & PHASE == LOADED && w >> CALLS_AT == 0).then(|| with_phase(w, UNLOADING))
        })
        .1
    }

    /// No more guest code: the unload becomes rude and killed. False when it already was
    /// killed or unloaded.
    pub fn kill(&self) -> bool {
        self.update(|w| (w & PHASE < KILLED).then(|| with_phase(w, KILLED) | RUDE))
            .1
    }

    /// Claims the domain's one finalizer run: at exit (the domain is loaded) or in a polite
    /// unload. A rude or killed domain skips it.
    pub fn claim_finalizer(&self) -> FinalizerClaim {
        let (seen, claimed) = self.update(|w| {
            let may = match w & PHASE {
                LOADED => true,
                UNLOADING => w & RUDE == 0,
                _ => false,
            };
            (may && w & CLAIMED == 0).then_some(w | CLAIMED)
        });
        if claimed {
            FinalizerClaim::Run
        } else if seen & CLAIMED != 0 {
            FinalizerClaim::AlreadyClaimed
        } else {
            FinalizerClaim::Skip
        }
    }

    /// The end: unloaded. Returns whether the unload was rude.
    pub fn finish(&self) -> bool {
        let (seen, _) = self.update(|w| Some(with_phase(w, UNLOADED)));
        seen & RUDE != 0
    }
}

/// Model check (run with `RUSTFLAGS="--cfg loom" cargo test -p warden-core --release --lib
/// lifecycle::loom`): the races between the lifecycle's steps, in every interleaving.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    #[test]
    fn an_admitted_call_is_never_unloaded_as_idle() {
        loom::model(|| {
            let life = Arc::new(Lifecycle::new());
            let pressure = {
                let life = life.clone();
                loom::thread::spawn(move || life.unload_if_idle())
            };
            let admitted = life.admit().is_ok();
            let unloaded = pressure.join().unwrap();
            assert!(admitted ^ unloaded, "exactly one wins");
            if admitted {
                assert!(life.is_loaded());
                life.call_ended();
                assert_eq!(life.calls(), 0);
            }
        });
    }

    #[test]
    fn racing_unloads_begin_once_and_rude_wins() {
        loom::model(|| {
            let life = Arc::new(Lifecycle::new());
            let rude = {
                let life = life.clone();
                loom::thread::spawn(move || life.unload(true))
            };
            let polite = life.unload(false);
            let rude = rude.join().unwrap();
            let began = [polite, rude]
                .iter()
                .filter(|s| matches!(s, UnloadStep::Began { .. }))
                .count();
            assert_eq!(began, 1);
            assert!(life.is_rude(), "the rude request is never lost");
            // Whoever began politely learns of the rude request, or the rude one began.
            assert!(matches!(
                rude,
                UnloadStep::Began { rude: true } | UnloadStep::MadeRude
            ));
        });
    }

    #[test]
    fn the_finalizer_runs_at_most_once_and_never_after_a_kill() {
        loom::model(|| {
            let life = Arc::new(Lifecycle::new());
            let exit = {
                let life = life.clone();
                loom::thread::spawn(move || life.claim_finalizer())
            };
            let killer = {
                let life = life.clone();
                loom::thread::spawn(move || {
                    life.unload(false);
                    life.kill()
                })
            };
            let unload = life.claim_finalizer();
            let exit = exit.join().unwrap();
            assert!(killer.join().unwrap());
            let runs = [exit, unload]
                .iter()
                .filter(|c| **c == FinalizerClaim::Run)
                .count();
            assert!(runs <= 1);
            assert_eq!(
                life.claim_finalizer(),
                if runs == 1 {
                    FinalizerClaim::AlreadyClaimed
                } else {
                    FinalizerClaim::Skip
                }
            );
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_polite_unload_runs_its_finalizer_once_then_ends() {
        let life = Lifecycle::new();
        life.admit().unwrap();
        assert!(!life.unload_if_idle(), "a call is admitted");
        assert_eq!(life.unload(false), UnloadStep::Began { rude: false });
        assert_eq!(life.admit(), Err(NotLoaded));
        life.call_ended();
        assert_eq!(life.claim_finalizer(), FinalizerClaim::Run);
        assert_eq!(life.claim_finalizer(), FinalizerClaim::AlreadyClaimed);
        assert!(!life.finish());
        assert_eq!(life.phase(), Phase::Unloaded);
    }

    #[test]
    fn a_rude_unload_skips_the_finalizer() {
        let life = Lifecycle::new();
        assert_eq!(life.unload(false), UnloadStep::Began { rude: false });
        assert_eq!(life.unload(true), UnloadStep::MadeRude);
        assert_eq!(life.unload(true), UnloadStep::AlreadyUnloading);
        assert_eq!(life.claim_finalizer(), FinalizerClaim::Skip);
        assert!(life.kill());
        assert!(!life.kill());
        assert!(life.is_killed());
        assert!(life.finish());
    }

    #[test]
    fn an_exit_finalizer_claim_holds_for_a_later_unload() {
        let life = Lifecycle::new();
        assert_eq!(life.claim_finalizer(), FinalizerClaim::Run);
        assert!(life.unload_if_idle());
        assert_eq!(life.claim_finalizer(), FinalizerClaim::AlreadyClaimed);
    }
}
