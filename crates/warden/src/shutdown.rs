//! Orderly shutdown of the runtime: [`Runtime::exit`] and friends, wired to the process's
//! [`Shutdown`] coordinator (DESIGN §2 "Shutdown").
//!
//! Every runtime owns one coordinator, built from its policy's `process-exit` operation (the
//! timeout bounds the whole sequence; its action, `fast-exit-process` or `rude-exit-process`,
//! is what the watchdog does when the bound passes) and ending the process with
//! [`RuntimeConfig::exit`](crate::RuntimeConfig::exit). Three things start it:
//!
//! - [`Runtime::exit`] (or [`Runtime::exit_with`]) from any task or thread, any number of
//!   times, concurrently: exactly one caller wins and runs the shutdown; every other caller
//!   gets [`ExitStart::AlreadyStarted`] with the winner's code and may
//!   [`wait`](Runtime::wait_exit) for it;
//! - the policy's exit actions (`exit-process`, `fast-exit-process`, `rude-exit-process`),
//!   with the code of [`exit_code::for_action`](crate::exit_code::for_action);
//! - `warden run`, when its foreground calls are done or on SIGTERM/SIGINT.
//!
//! The runtime's part in each phase (each one announced by a `shutdown_phase` event):
//!
//! | phase | what the runtime does |
//! |---|---|
//! | `stop_admitting` | new calls and new domains fail with `process_exiting`, and so does a queued call that had not started; running calls go on, neither unwound nor waited for |
//! | `exit_hooks` | the embedder's [exit hooks](Runtime::add_exit_hook) run, last registered first |
//! | `finalizers` | every loaded, idle domain runs its `warden_on_unload` on its own worker, bounded by the `finalizer-run` policy; a domain busy with a call skips it (`finalizer_ran` with `skipped`); none is unloaded |
//! | `critical_release` | every domain's handles, host locks and memory-gate reservations are released |
//! | `exit` | the exit function is called with the winner's code |
//!
//! `fast-exit-process` skips the hooks and finalizers; `rude-exit-process` calls the exit
//! function at once and emits no event. Whatever hooks and finalizers do, the `process-exit`
//! watchdog ends the sequence (see [`warden_core::shutdown`] for what is and is not promised).
//!
//! A finalizer that ran at exit does not run again if the domain is unloaded afterwards (a
//! test process, or an exit function that does not end the process, may go on).
//!
//! ```no_run
//! # async fn demo() -> Result<(), warden::Error> {
//! use warden::{Runtime, RuntimeConfig};
//! let rt = Runtime::new(RuntimeConfig::default())?;
//! rt.add_exit_hook("flush the journal", || async { /* native clean-up */ })
//!     .expect("shutdown has not started");
//! // Any task or thread, any number of times: one of them wins.
//! rt.exit(0);
//! let report = rt.wait_exit().await; // then the exit function ends the process
//! assert_eq!(report.code, 0);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use warden_core::shutdown::{BoxFuture, Participant, ShutdownConfig};
pub use warden_core::shutdown::{
    ExitMode, ExitReport, ExitStart, HookId, Phase, Shutdown, ShutdownStarted,
};
use warden_policy::{Action, Operation, Policy};

use crate::domain::DomainShared;
use crate::events::EventKind;
use crate::runtime::{Runtime, RuntimeInner};

/// The coordinator's config from the policy's `process-exit` operation. A timeout action that
/// is not an exit (`disable-runtime`) cannot end a shutdown, so it counts as a rude exit:
/// shutdown always ends.
pub(crate) fn config_from(policy: &Policy) -> ShutdownConfig {
    let op = policy.operation(Operation::ProcessExit);
    let on_timeout = match op.on_timeout {
        Action::FastExitProcess => ExitMode::Fast,
        _ => ExitMode::Rude,
    };
    ShutdownConfig::new(op.timeout, on_timeout)
}

/// The exit mode of a policy action. Only the three exit actions are passed here.
pub(crate) fn mode_for(action: Action) -> ExitMode {
    match action {
        Action::FastExitProcess => ExitMode::Fast,
        Action::RudeExitProcess => ExitMode::Rude,
        _ => ExitMode::Orderly,
    }
}

/// The name of a mode in `shutdown_phase` events.
fn mode_name(mode: ExitMode) -> &'static str {
    match mode {
        ExitMode::Orderly => "orderly",
        ExitMode::Fast => "fast",
        ExitMode::Rude => "rude",
    }
}

impl Runtime {
    /// Starts an orderly exit with `code`, unless shutdown has already started; returns at
    /// once. Callable from any task or thread, inside or outside a tokio runtime, any number
    /// of times: exactly one caller ever gets [`ExitStart::Started`], every other one gets
    /// the winner's code. The mode is the policy's: `exit-process` resolved through the
    /// `process-exit` operation's default (so a policy whose default is `fast-exit-process`
    /// makes every exit fast). The exit function of
    /// [`RuntimeConfig::exit`](crate::RuntimeConfig::exit) is called exactly once, with the
    /// winner's code, when the sequence ends; use [`wait_exit`](Self::wait_exit) to wait for
    /// that.
    pub fn exit(&self, code: i32) -> ExitStart {
        let mode = match self.policy().resolve(Action::ExitProcess) {
            a @ (Action::ExitProcess | Action::FastExitProcess | Action::RudeExitProcess) => {
                mode_for(a)
            }
            // `disable-runtime` keeps a process up; an exit that was asked for must exit.
            _ => ExitMode::Orderly,
        };
        self.exit_with(code, mode)
    }

    /// Like [`exit`](Self::exit), with the mode given instead of the policy's. When shutdown
    /// has already started, a [`Fast`](ExitMode::Fast) or [`Rude`](ExitMode::Rude) mode cuts
    /// the running sequence short with that action (the winner's code stays); an
    /// [`Orderly`](ExitMode::Orderly) one changes nothing. A rude winner calls the exit
    /// function before this returns.
    pub fn exit_with(&self, code: i32, mode: ExitMode) -> ExitStart {
        self.inner.shutdown.escalate(code, mode)
    }

    /// Whether shutdown has started: true from the instant a winner was elected, before any
    /// phase ran. From then on no call or domain is admitted (`process_exiting`).
    pub fn is_exiting(&self) -> bool {
        self.inner.shutdown.is_exiting()
    }

    /// Registers an exit hook, run during an orderly exit (not a fast or rude one) after the
    /// runtime stopped admitting calls and before the guest finalizers; hooks run one at a
    /// time, last registered first, all within the one `process-exit` bound (a hook that never
    /// returns uses it up, and the hooks after it do not run). A hook that panics is logged
    /// and the next one runs. Refused once shutdown has started.
    ///
    /// A hook that holds a clone of this [`Runtime`] keeps the runtime alive until the hook
    /// has run (or been [removed](Self::remove_exit_hook)).
    pub fn add_exit_hook<F, Fut>(&self, name: &str, hook: F) -> Result<HookId, ShutdownStarted>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.inner.shutdown.add_hook(name, move || {
            let fut: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(hook());
            fut
        })
    }

    /// Unregisters an exit hook; `false` when there is no such hook or it is already running.
    pub fn remove_exit_hook(&self, id: HookId) -> bool {
        self.inner.shutdown.remove_hook(id)
    }

    /// Waits until shutdown has started and its sequence has ended (just before the exit
    /// function is called, or when the watchdog took over), and returns what happened.
    pub async fn wait_exit(&self) -> ExitReport {
        self.inner.shutdown.wait().await
    }

    /// The runtime's shutdown coordinator, for what the methods above do not cover (the
    /// current [`Phase`], a blocking wait, the report). An embedder's native code registers
    /// its exit hooks here or with [`add_exit_hook`](Self::add_exit_hook): they are the same.
    pub fn shutdown(&self) -> &Arc<Shutdown> {
        &self.inner.shutdown
    }
}

/// The runtime's side of shutdown. Held strongly by the runtime, weakly by the coordinator,
/// and it holds the runtime weakly: no reference cycle.
pub(crate) struct RuntimeParticipant {
    rt: Weak<RuntimeInner>,
}

impl RuntimeParticipant {
    pub(crate) fn new(rt: Weak<RuntimeInner>) -> Arc<Self> {
        Arc::new(RuntimeParticipant { rt })
    }
}

impl RuntimeInner {
    /// The domains registered now (loaded or unloading).
    fn live_domains(&self) -> Vec<Arc<DomainShared>> {
        self.lock_domains()
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }
}

impl Participant for RuntimeParticipant {
    fn stop_admitting(&self) {
        // Admission (`RuntimeInner::admit`, and the worker before a queued call) reads
        // `Shutdown::is_exiting`, which is true before this phase is entered: nothing to do.
    }

    fn run_finalizers(&self) -> BoxFuture<'_> {
        Box::pin(async move {
            let Some(rt) = self.rt.upgrade() else { return };
            // Busy domains first: their `skipped` follows the phase's event at once, before
            // any idle domain's finalizer is started.
            let mut domains = rt.live_domains();
            domains.sort_by_key(|dom| !dom.is_busy());
            let pending: Vec<_> = domains
                .iter()
                .filter_map(|dom| dom.exit_finalizer())
                .collect();
            drop(rt);
            // They run concurrently, each on its own domain's worker; each one is bounded by
            // `finalizer-run`, and all of them by the watchdog.
            for reply in pending {
                let _ = reply.await;
            }
        })
    }

    fn critical_release(&self) {
        let Some(rt) = self.rt.upgrade() else { return };
        for dom in rt.live_domains() {
            dom.critical_release_at_exit();
        }
    }

    fn phase_changed(&self, phase: Phase, mode: ExitMode) {
        let Some(rt) = self.rt.upgrade() else { return };
        rt.events.emit(None, None, || EventKind::ShutdownPhase {
            phase: phase.as_str().to_string(),
            mode: mode_name(mode),
        });
    }
}
