//! The shutdown coordinator: one winner, ordered phases, exit hooks, and a watchdog.
//!
//! A process that hosts guests has to end in bounded time however badly the guests (or the
//! host's own exit code) behave. This module is the part of that which needs no guest and no
//! wasmtime: it elects who runs the shutdown, walks the phases in order, runs the embedder's exit
//! hooks, and guarantees with a watchdog that the process ends. The runtime plugs in as a
//! [`Participant`] (it admits calls, owns the domains and their finalizers and handles); an
//! embedding application can use the same [`Shutdown`] for its own native exit work by
//! registering [exit hooks](Shutdown::add_hook).
//!
//! # The model
//!
//! [`Shutdown::exit`] may be called from any thread or task, any number of times, concurrently.
//! The first call wins: its code and [`ExitMode`] become the process's, it starts the sequence
//! and returns [`ExitStart::Started`] at once. Every other call returns
//! [`ExitStart::AlreadyStarted`] with the winner's code and changes nothing. The election is one
//! atomic compare-and-swap, so [`Shutdown::is_exiting`] is true from the instant a winner exists.
//!
//! The sequence, by mode (each phase is announced to [`Participant::phase_changed`] when it is
//! entered, which is where the runtime emits its `shutdown_phase` events):
//!
//! | mode ([`ExitMode`]) | policy action | phases |
//! |---|---|---|
//! | [`Orderly`](ExitMode::Orderly) | `exit-process` | [`StopAdmitting`](Phase::StopAdmitting) → [`ExitHooks`](Phase::ExitHooks) → [`Finalizers`](Phase::Finalizers) → [`CriticalRelease`](Phase::CriticalRelease) → [`Exited`](Phase::Exited) |
//! | [`Fast`](ExitMode::Fast) | `fast-exit-process` | [`StopAdmitting`](Phase::StopAdmitting) → [`CriticalRelease`](Phase::CriticalRelease) → [`Exited`](Phase::Exited) |
//! | [`Rude`](ExitMode::Rude) | `rude-exit-process` | [`Exited`](Phase::Exited), at once, on the caller's thread, calling no participant code |
//!
//! - **Stop admitting**: the participant makes new call-ins fail with `process-exiting`. Calls
//!   already running go on; they are neither unwound nor waited for.
//! - **Exit hooks** run one at a time, in **reverse registration order** (like `atexit`: what was
//!   set up last is torn down first, so a hook can still rely on what was registered before it).
//!   A hook that panics is logged and the next one runs. The hooks share the one bound of the
//!   watchdog: a hook that never returns uses it up, and the hooks after it do not run.
//! - **Finalizers**: the participant runs the guest finalizers of its live domains (bounded by
//!   its own `finalizer-run` policy). No domain is unloaded.
//! - **Critical release**: the participant releases every domain's handles, locks and
//!   reservations. It runs at most once, whoever (sequence or watchdog) gets to it.
//! - **Exit**: the exit function passed to [`Shutdown::new`] is called with the winner's code,
//!   on whichever thread ended the sequence (the sequence's, the watchdog's, or a rude caller's).
//!
//! The participant is held weakly (the runtime may own the `Arc<Shutdown>` without a cycle) and
//! captured, strongly, when a winner is elected. Call admission can read
//! [`Shutdown::is_exiting`] directly: it is true before the first phase is entered.
//!
//! The sequence runs on its own thread (`warden-shutdown`) with its own current-thread tokio
//! runtime for the async parts, so `exit` works from inside or outside a tokio runtime, and from
//! inside a hook or finalizer (where it simply returns `AlreadyStarted`).
//!
//! # The watchdog
//!
//! The winner also starts a watchdog thread (`warden-shutdown-watchdog`) before the sequence. If
//! the sequence has not finished within [`ShutdownConfig::timeout`] (the policy's `process-exit`
//! timeout, measured from the moment the winner was elected) the watchdog takes over and applies
//! [`ShutdownConfig::on_timeout`]:
//!
//! - [`Rude`](ExitMode::Rude) (the default): the exit function is called at once.
//! - [`Fast`](ExitMode::Fast): critical release is run (or, if the sequence is already running
//!   it, awaited) on a helper thread, for at most [`ShutdownConfig::grace`]; then the exit
//!   function is called whether or not the release returned.
//!
//! The watchdog shares no lock with the phases: the sequence and the watchdog meet only on
//! atomics and a channel the watchdog alone receives from, so a hook that blocks its thread, a
//! finalizer that never completes, or a participant that deadlocks cannot stop the watchdog. Once
//! the watchdog has taken over, the sequence starts no further phase. One deadline covers the
//! whole sequence, so every phase is bounded by what is left of it. Should the sequence's own
//! thread die (a coordinator bug; every callout is already guarded), the watchdog applies a
//! fast exit at once rather than at the deadline.
//!
//! [`Shutdown::escalate`] cuts a running sequence short the same way, without waiting for the
//! timeout (a second SIGINT, or a `fatal-runtime` failure during an orderly exit).
//!
//! # What is promised, and what is not
//!
//! - The exit function is called **exactly once** per [`Shutdown`], with the winner's code: by
//!   the sequence's last phase, by the watchdog, or by a rude exit.
//! - With a timeout configured, the exit function is called within `timeout` (plus `grace` for a
//!   [`Fast`](ExitMode::Fast) action) of the winning `exit`, plus scheduling delay, whatever
//!   hooks, finalizers and the participant do. With `timeout: None` there is no bound, and a
//!   hook that never returns keeps the process alive (no preset does this: even `clr` bounds
//!   `process-exit`, at 40 s).
//! - Critical release runs at most once. It is skipped by a rude exit, and by the watchdog's
//!   rude action; the operating system reclaims what is left.
//! - Nothing is promised about code that is still running when the exit function ends the
//!   process: running calls, an abandoned hook, a hung finalizer. A hook or finalizer the
//!   watchdog gave up on keeps its thread; in a real process the exit ends it.
//! - Hooks registered after shutdown started are refused ([`ShutdownStarted`]). A hook accepted
//!   before runs in an orderly exit; fast and rude exits skip all hooks.
//! - Calling [`Shutdown::wait`] or [`Shutdown::wait_blocking`] from inside a hook or finalizer
//!   waits for the sequence that is running that very hook: it returns only when the watchdog
//!   ends the sequence. Do not do that.
//! - The process is not ended by dropping the last `Arc<Shutdown>`; an exit that was never
//!   requested never happens.
//!
//! # Testing
//!
//! The lock-free core (the election, who ends the sequence, who runs critical release,
//! escalation) is model-checked with loom:
//! `RUSTFLAGS="--cfg loom" cargo test -p warden-core --release --lib shutdown::loom`.
//! The integration tests (`tests/shutdown*.rs`) drive the whole coordinator with a recording
//! exit function, including schedule-fuzzing rounds with real threads.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicI32, Ordering};
//! use std::time::Duration;
//! use warden_core::shutdown::{ExitMode, ExitStart, Shutdown, ShutdownConfig};
//!
//! // A real host passes `Arc::new(|code| std::process::exit(code))`.
//! let exited = Arc::new(AtomicI32::new(-1));
//! let seen = exited.clone();
//! let shutdown = Shutdown::new(ShutdownConfig::default(), Arc::new(move |code| {
//!     seen.store(code, Ordering::SeqCst);
//! }));
//! shutdown.add_hook("flush logs", || Box::pin(async { /* flush */ })).unwrap();
//!
//! assert_eq!(shutdown.exit(3, ExitMode::Orderly), ExitStart::Started);
//! assert_eq!(shutdown.exit(9, ExitMode::Rude), ExitStart::AlreadyStarted { code: 3 });
//! let report = shutdown.wait_blocking(Some(Duration::from_secs(10))).unwrap();
//! assert_eq!(report.code, 3);
//! assert!(!report.watchdog_fired);
//! ```

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use self::gate::{Ender, Gate};

/// A boxed, sendable future, as returned by exit hooks and [`Participant::run_finalizers`].
pub type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The function that ends the process, given the exit code (see [`Shutdown::new`]).
pub type ExitFn = Arc<dyn Fn(i32) + Send + Sync>;

/// How the process exits: the three exit actions of the escalation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExitMode {
    /// `exit-process`: every phase, hooks and guest finalizers included.
    Orderly,
    /// `fast-exit-process`: stop admitting, critical release, exit; no hooks, no finalizers.
    Fast,
    /// `rude-exit-process`: exit at once, running nothing.
    Rude,
}

impl ExitMode {
    /// The policy action's name: `exit-process`, `fast-exit-process` or `rude-exit-process`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitMode::Orderly => "exit-process",
            ExitMode::Fast => "fast-exit-process",
            ExitMode::Rude => "rude-exit-process",
        }
    }

    fn to_bits(self) -> u8 {
        match self {
            ExitMode::Orderly => 1,
            ExitMode::Fast => 2,
            ExitMode::Rude => 3,
        }
    }

    fn from_bits(bits: u8) -> Option<ExitMode> {
        match bits {
            1 => Some(ExitMode::Orderly),
            2 => Some(ExitMode::Fast),
            3 => Some(ExitMode::Rude),
            _ => None,
        }
    }
}

impl fmt::Display for ExitMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where shutdown is. Phases only move forward, in declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// No exit has been requested.
    Running,
    /// New call-ins are being refused with `process-exiting`.
    StopAdmitting,
    /// Exit hooks are running (orderly exit only).
    ExitHooks,
    /// Guest finalizers of live domains are running (orderly exit only).
    Finalizers,
    /// Every domain's handles, locks and reservations are being released.
    CriticalRelease,
    /// The sequence is over; the exit function is being (or has been) called.
    Exited,
}

const PHASES: [Phase; 6] = [
    Phase::Running,
    Phase::StopAdmitting,
    Phase::ExitHooks,
    Phase::Finalizers,
    Phase::CriticalRelease,
    Phase::Exited,
];

impl Phase {
    /// The snake_case name used in `shutdown_phase` events: `running`, `stop_admitting`,
    /// `exit_hooks`, `finalizers`, `critical_release`, `exit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::StopAdmitting => "stop_admitting",
            Phase::ExitHooks => "exit_hooks",
            Phase::Finalizers => "finalizers",
            Phase::CriticalRelease => "critical_release",
            Phase::Exited => "exit",
        }
    }

    fn index(self) -> u8 {
        match self {
            Phase::Running => 0,
            Phase::StopAdmitting => 1,
            Phase::ExitHooks => 2,
            Phase::Finalizers => 3,
            Phase::CriticalRelease => 4,
            Phase::Exited => 5,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the runtime plugs into the coordinator.
///
/// Every method is called on a coordinator thread, never under a coordinator lock, and wrapped
/// so that a panic is logged and the sequence goes on. Methods should bound themselves where
/// they can; the watchdog bounds them anyway. None is called in a [`Rude`](ExitMode::Rude) exit.
pub trait Participant: Send + Sync + 'static {
    /// Refuse new call-ins from now on (they fail with `process-exiting`). Must be quick and
    /// must not wait for running calls. [`Shutdown::is_exiting`] is already true when this runs,
    /// so an admission check may read that instead.
    fn stop_admitting(&self);

    /// Run the guest finalizers of live domains (a domain busy with a call skips its own),
    /// each bounded by the `finalizer-run` policy. Runs on the coordinator's current-thread
    /// tokio runtime. Orderly exit only.
    fn run_finalizers(&self) -> BoxFuture<'_>;

    /// Release every domain's handles, locks and reservations. Called at most once per
    /// shutdown, by the sequence or (for a [`Fast`](ExitMode::Fast) timeout action) by the
    /// watchdog's helper thread.
    fn critical_release(&self);

    /// A phase has been entered; `mode` is the mode being applied (the winner's, or the
    /// watchdog's action once it has taken over). The place to emit `shutdown_phase` events.
    /// Must be quick: it is on the exit path.
    fn phase_changed(&self, phase: Phase, mode: ExitMode) {
        let _ = (phase, mode);
    }
}

/// How the shutdown is bounded. Build it from the policy's `process-exit` timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownConfig {
    /// The `process-exit` timeout: how long the whole sequence may take, from the winning
    /// `exit`. `None` is infinite (no watchdog bound). Default 25 s (the `server` preset).
    pub timeout: Option<Duration>,
    /// The timeout's action mapped to a mode. Default [`Rude`](ExitMode::Rude).
    /// [`Orderly`](ExitMode::Orderly) is not a legal timeout action and is treated as
    /// [`Fast`](ExitMode::Fast).
    pub on_timeout: ExitMode,
    /// For a [`Fast`](ExitMode::Fast) timeout action or escalation: how long the watchdog waits
    /// for critical release before it exits anyway. Default 2 s.
    pub grace: Duration,
}

impl ShutdownConfig {
    /// The default `process-exit` timeout (the `server` preset's 25 s).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(25);
    /// The default [`grace`](ShutdownConfig::grace).
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);

    /// A config with the given timeout and action and the default grace.
    pub fn new(timeout: Option<Duration>, on_timeout: ExitMode) -> Self {
        ShutdownConfig {
            timeout,
            on_timeout,
            grace: Self::DEFAULT_GRACE,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig::new(Some(Self::DEFAULT_TIMEOUT), ExitMode::Rude)
    }
}

/// The answer of [`Shutdown::exit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStart {
    /// This call won: shutdown has started with its code and mode.
    Started,
    /// Shutdown had already started; nothing changed.
    AlreadyStarted {
        /// The winner's exit code.
        code: i32,
    },
}

/// Identifies a registered exit hook, for [`Shutdown::remove_hook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HookId(u64);

/// A hook was refused because shutdown has already started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shutdown has already started (exit code {code}); exit hooks can no longer be added")]
pub struct ShutdownStarted {
    /// The winner's exit code.
    pub code: i32,
}

/// What happened, published when the sequence ends (just before the exit function is called).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExitReport {
    /// The code passed to the exit function: the winner's, or the watchdog's code when
    /// the timeout ended the exit and one was set ([`Shutdown::set_watchdog_exit_code`]).
    pub code: i32,
    /// The winner's mode.
    pub mode: ExitMode,
    /// The `process-exit` timeout expired and the watchdog ended the sequence.
    pub watchdog_fired: bool,
    /// [`Shutdown::escalate`] ended the sequence with this mode.
    pub escalated_to: Option<ExitMode>,
    /// The phase the sequence was in when the watchdog or an escalation cut it short.
    pub interrupted_phase: Option<Phase>,
    /// The phases that ran to completion, in order (never [`Phase::Running`] or
    /// [`Phase::Exited`]).
    pub phases_completed: Vec<Phase>,
    /// From the winning `exit` to the end of the sequence.
    pub elapsed: Duration,
}

/// The process's shutdown coordinator. Create one per process with [`Shutdown::new`] and share
/// the `Arc`. See the [module docs](self) for the model.
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Hook {
    id: HookId,
    name: String,
    run: Box<dyn FnOnce() -> BoxFuture<'static> + Send>,
}

#[derive(Default)]
struct Hooks {
    next_id: u64,
    list: Vec<Hook>,
}

enum Msg {
    /// The sequence ended, or an escalation was requested: look at the gate.
    Wake,
}

struct Inner {
    config: ShutdownConfig,
    exit_fn: ExitFn,
    gate: Gate,
    /// `Phase::index` of the current phase; only ever raised (`fetch_max`).
    phase: AtomicU8,
    /// Bit `Phase::index` set when that phase completed.
    completed: AtomicU8,
    started_at: OnceLock<Instant>,
    participant: Mutex<Option<Weak<dyn Participant>>>,
    hooks: Mutex<Hooks>,
    /// Wakes the watchdog; set by the winner before the watchdog starts.
    watchdog_tx: OnceLock<Sender<Msg>>,
    report: OnceLock<ExitReport>,
    /// The code of an exit the `process-exit` timeout ended, if it is not the winner's.
    watchdog_code: OnceLock<i32>,
    notify: Notify,
    done: Mutex<bool>,
    done_cv: Condvar,
}

/// Everything a coordinator thread needs, fixed when the winner is elected, so that neither
/// thread has to take a coordinator lock afterwards.
#[derive(Clone)]
struct Ctx {
    code: i32,
    mode: ExitMode,
    started: Instant,
    participant: Option<Arc<dyn Participant>>,
}

impl Shutdown {
    /// A coordinator that ends the process with `exit_fn`.
    ///
    /// `exit_fn` is called exactly once, with the winner's code, by whoever ends the sequence
    /// (its last phase, the watchdog, or a rude exit). The runtime passes
    /// `Arc::new(|code| std::process::exit(code))`; tests pass a recorder. If it returns (a
    /// recorder does), the coordinator simply stops.
    pub fn new(config: ShutdownConfig, exit_fn: ExitFn) -> Arc<Self> {
        Arc::new(Shutdown {
            inner: Arc::new(Inner {
                config,
                exit_fn,
                gate: Gate::new(),
                phase: AtomicU8::new(Phase::Running.index()),
                completed: AtomicU8::new(0),
                started_at: OnceLock::new(),
                participant: Mutex::new(None),
                hooks: Mutex::new(Hooks::default()),
                watchdog_tx: OnceLock::new(),
                report: OnceLock::new(),
                watchdog_code: OnceLock::new(),
                notify: Notify::new(),
                done: Mutex::new(false),
                done_cv: Condvar::new(),
            }),
        })
    }

    /// Makes an exit that the `process-exit` timeout ends exit with `code` instead of the
    /// winner's, so the process tells that its orderly exit did not finish (Warden: 116).
    /// Only the first setting counts; set it before any exit starts.
    pub fn set_watchdog_exit_code(&self, code: i32) {
        let _ = self.inner.watchdog_code.set(code);
    }

    /// The config this coordinator was built with.
    pub fn config(&self) -> ShutdownConfig {
        self.inner.config
    }

    /// Plug in the runtime. Held **weakly**, so the runtime may own the `Arc<Shutdown>` without
    /// a reference cycle: keep your own `Arc` alive for as long as shutdown should reach you.
    /// The participant is captured when shutdown starts (and then held strongly until the
    /// sequence ends); a later call has no effect on a shutdown in progress. Replaces any
    /// earlier participant.
    pub fn set_participant(&self, participant: Arc<dyn Participant>) {
        let weak = Arc::downgrade(&participant);
        *lock(&self.inner.participant) = Some(weak);
    }

    /// Register an exit hook, run during an orderly exit in reverse registration order.
    ///
    /// `name` appears in logs (e.g. when the hook panics). Refused once shutdown has started;
    /// a hook accepted before the winner was elected runs (orderly exit) even if the election
    /// happens while this call returns.
    pub fn add_hook(
        &self,
        name: &str,
        hook: impl FnOnce() -> BoxFuture<'static> + Send + 'static,
    ) -> Result<HookId, ShutdownStarted> {
        let mut hooks = lock(&self.inner.hooks);
        // Checked under the hooks lock, which the sequence takes to collect the hooks: a hook
        // accepted here is in the list the sequence collects.
        if let Some((code, _)) = self.inner.gate.started() {
            return Err(ShutdownStarted { code });
        }
        hooks.next_id += 1;
        let id = HookId(hooks.next_id);
        hooks.list.push(Hook {
            id,
            name: name.to_owned(),
            run: Box::new(hook),
        });
        Ok(id)
    }

    /// Unregister a hook. `false` when there is no such hook, or the sequence has already
    /// collected the hooks to run them.
    pub fn remove_hook(&self, id: HookId) -> bool {
        let mut hooks = lock(&self.inner.hooks);
        match hooks.list.iter().position(|h| h.id == id) {
            Some(i) => {
                hooks.list.remove(i);
                true
            }
            None => false,
        }
    }

    /// Start shutdown with `code` and `mode`, unless it has already started.
    ///
    /// Exactly one caller ever gets [`ExitStart::Started`]; it returns at once (a
    /// [`Rude`](ExitMode::Rude) winner calls the exit function itself first). Every other
    /// caller gets the winner's code. Safe from any thread, inside or outside a tokio runtime,
    /// and from hooks and finalizers.
    pub fn exit(&self, code: i32, mode: ExitMode) -> ExitStart {
        if let Err((code, _)) = self.inner.gate.start(code, mode) {
            return ExitStart::AlreadyStarted { code };
        }
        let started = Instant::now();
        let _ = self.inner.started_at.set(started);
        tracing::info!(code, mode = mode.as_str(), "shutdown started");
        let ctx = Ctx {
            code,
            mode,
            started,
            participant: self.participant(),
        };
        if mode == ExitMode::Rude {
            self.inner.finish_rude(&ctx, None);
            return ExitStart::Started;
        }
        self.inner.launch(ctx);
        ExitStart::Started
    }

    /// Like [`exit`](Self::exit) when shutdown has not started. When it has, and `mode` is
    /// more severe than the running sequence's ([`Fast`](ExitMode::Fast) over an orderly exit,
    /// [`Rude`](ExitMode::Rude) over either) and the sequence is still running, the watchdog
    /// ends the sequence now with that action (as if the timeout had expired with it) and the
    /// winner's code. A request no more severe than the running exit changes nothing:
    /// escalation only moves up, and a second fast exit must not race the first one's phases.
    /// Returns at once.
    pub fn escalate(&self, code: i32, mode: ExitMode) -> ExitStart {
        let start = self.exit(code, mode);
        if let ExitStart::AlreadyStarted { .. } = start
            && self.exit_mode().is_some_and(|running| mode > running)
        {
            self.inner.wake_watchdog(mode);
        }
        start
    }

    /// True from the moment a winner has been elected (before any phase has run).
    pub fn is_exiting(&self) -> bool {
        self.inner.gate.started().is_some()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.inner.phase()
    }

    /// The winner's code, once shutdown has started.
    pub fn exit_code(&self) -> Option<i32> {
        self.inner.gate.started().map(|(code, _)| code)
    }

    /// The winner's mode, once shutdown has started.
    pub fn exit_mode(&self) -> Option<ExitMode> {
        self.inner.gate.started().map(|(_, mode)| mode)
    }

    /// The report, once the sequence has ended.
    pub fn report(&self) -> Option<ExitReport> {
        self.inner.report.get().cloned()
    }

    /// Wait until the sequence has ended (just before the exit function is called, or when the
    /// watchdog took over) and return its report. Waits for shutdown to start first. Works on
    /// any async runtime.
    pub async fn wait(&self) -> ExitReport {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a report published in between still wakes us.
            notified.as_mut().enable();
            if let Some(report) = self.inner.report.get() {
                return report.clone();
            }
            notified.await;
        }
    }

    /// Block the thread until the sequence has ended, or `timeout` (None: forever) passes.
    /// `None` when it timed out.
    pub fn wait_blocking(&self, timeout: Option<Duration>) -> Option<ExitReport> {
        // A timeout too large to represent is as good as none.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut done = lock(&self.inner.done);
        while !*done {
            done = match deadline {
                None => self
                    .inner
                    .done_cv
                    .wait(done)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.inner
                        .done_cv
                        .wait_timeout(done, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
        self.inner.report.get().cloned()
    }

    fn participant(&self) -> Option<Arc<dyn Participant>> {
        lock(&self.inner.participant)
            .as_ref()
            .and_then(Weak::upgrade)
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("config", &self.inner.config)
            .field("phase", &self.phase())
            .field("exit_code", &self.exit_code())
            .field("exit_mode", &self.exit_mode())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn phase(&self) -> Phase {
        let i = self.phase.load(Ordering::Acquire);
        PHASES.get(usize::from(i)).copied().unwrap_or(Phase::Exited)
    }

    /// Enter `phase` (never moving backwards) and announce it.
    fn enter(&self, phase: Phase, mode: ExitMode, participant: Option<&Arc<dyn Participant>>) {
        self.phase.fetch_max(phase.index(), Ordering::AcqRel);
        tracing::info!(
            phase = phase.as_str(),
            mode = mode.as_str(),
            "shutdown phase"
        );
        if let Some(p) = participant {
            guard("phase_changed", || p.phase_changed(phase, mode));
        }
    }

    fn complete(&self, phase: Phase) {
        self.completed
            .fetch_or(1 << phase.index(), Ordering::AcqRel);
    }

    fn completed(&self) -> Vec<Phase> {
        let bits = self.completed.load(Ordering::Acquire);
        PHASES
            .iter()
            .copied()
            .filter(|p| bits & (1 << p.index()) != 0)
            .collect()
    }

    /// Start the watchdog, then the sequence. If either thread cannot be spawned the process
    /// is in no state for an orderly exit: exit rudely.
    fn launch(self: &Arc<Self>, ctx: Ctx) {
        let (tx, rx) = mpsc::channel();
        let seq_tx = tx.clone();
        let _ = self.watchdog_tx.set(tx);
        let inner = self.clone();
        let wctx = ctx.clone();
        let watchdog = thread::Builder::new()
            .name("warden-shutdown-watchdog".into())
            .spawn(move || inner.watchdog(wctx, rx));
        if let Err(err) = watchdog {
            tracing::error!(%err, "cannot start the shutdown watchdog; exiting rudely");
            self.finish_rude(&ctx, Some(ExitMode::Rude));
            return;
        }
        let inner = self.clone();
        let sctx = ctx.clone();
        let sequence = thread::Builder::new()
            .name("warden-shutdown".into())
            .spawn(move || {
                let escalate = inner.clone();
                // Every callout is guarded, so this is for the coordinator's own bugs: if the
                // sequence dies, the watchdog finishes the job now (fast) instead of at the
                // deadline, or never.
                if catch_unwind(AssertUnwindSafe(|| inner.sequence(sctx, seq_tx))).is_err() {
                    tracing::error!("the shutdown sequence panicked; escalating to a fast exit");
                    escalate.wake_watchdog(ExitMode::Fast);
                }
            });
        if let Err(err) = sequence {
            tracing::error!(%err, "cannot start the shutdown sequence; exiting rudely");
            self.wake_watchdog(ExitMode::Rude);
        }
    }

    /// Ask the watchdog to end the sequence now with `mode`. If it is not listening yet, it
    /// reads the gate when it starts.
    fn wake_watchdog(&self, mode: ExitMode) {
        self.gate.escalate(mode);
        if let Some(tx) = self.watchdog_tx.get() {
            let _ = tx.send(Msg::Wake);
        }
    }

    fn sequence(self: Arc<Self>, ctx: Ctx, tx: Sender<Msg>) {
        let p = ctx.participant.as_ref();
        let mode = ctx.mode;
        self.enter(Phase::StopAdmitting, mode, p);
        if let Some(p) = p {
            guard("stop_admitting", || p.stop_admitting());
        }
        self.complete(Phase::StopAdmitting);

        if mode == ExitMode::Orderly {
            // Building may fail (or, in odd builds of tokio, panic): then hooks and
            // finalizers are skipped, and the rest of the sequence still runs.
            let rt = catch_unwind(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            });
            let rt = match rt {
                Ok(Ok(rt)) => Some(rt),
                Ok(Err(err)) => {
                    tracing::error!(%err, "no runtime for exit hooks and finalizers; skipping them");
                    None
                }
                Err(_) => {
                    tracing::error!("no runtime for exit hooks and finalizers; skipping them");
                    None
                }
            };
            if self.gate.ended().is_some() {
                return;
            }
            self.enter(Phase::ExitHooks, mode, p);
            if let Some(rt) = &rt {
                self.run_hooks(rt);
            }
            self.complete(Phase::ExitHooks);

            if self.gate.ended().is_some() {
                return;
            }
            self.enter(Phase::Finalizers, mode, p);
            if let (Some(rt), Some(p)) = (&rt, p) {
                let p = p.clone();
                let task = rt.spawn(async move { p.run_finalizers().await });
                if let Err(err) = rt.block_on(task) {
                    tracing::error!(%err, "guest finalizers panicked; going on");
                }
            }
            self.complete(Phase::Finalizers);
            // A runtime with a stuck task must not hold up the exit on its drop.
            if let Some(rt) = rt {
                rt.shutdown_background();
            }
        }

        if self.gate.ended().is_some() || !self.gate.claim_release() {
            return;
        }
        self.enter(Phase::CriticalRelease, mode, p);
        if let Some(p) = p {
            guard("critical_release", || p.critical_release());
        }
        self.complete(Phase::CriticalRelease);
        self.gate.release_done();

        if self.gate.end(Ender::Sequence) {
            self.enter(Phase::Exited, mode, p);
            self.publish_and_exit(&ctx, false, None, None);
        }
        let _ = tx.send(Msg::Wake);
    }

    fn run_hooks(&self, rt: &tokio::runtime::Runtime) {
        let hooks = std::mem::take(&mut lock(&self.hooks).list);
        for hook in hooks.into_iter().rev() {
            if self.gate.ended().is_some() {
                return;
            }
            let name = hook.name;
            let run = hook.run;
            // Calling the hook inside the task too, so a panic in either half is caught.
            let task = rt.spawn(async move { run().await });
            match rt.block_on(task) {
                Ok(()) => tracing::debug!(hook = %name, "exit hook ran"),
                Err(err) => tracing::error!(hook = %name, %err, "exit hook failed; going on"),
            }
        }
    }

    fn watchdog(self: Arc<Self>, ctx: Ctx, rx: Receiver<Msg>) {
        // A timeout too large to represent is as good as none.
        let deadline = self.config.timeout.and_then(|t| ctx.started.checked_add(t));
        loop {
            if self.gate.ended().is_some() {
                return;
            }
            if let Some(mode) = self.gate.escalation() {
                return self.take_over(&ctx, mode, false);
            }
            let now = Instant::now();
            let received = match deadline {
                Some(deadline) if now >= deadline => {
                    return self.take_over(&ctx, self.config.on_timeout, true);
                }
                Some(deadline) => rx.recv_timeout(deadline - now),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            if let Err(RecvTimeoutError::Disconnected) = received {
                // Unreachable while `Inner` holds a sender; without one only the deadline is left.
                match deadline {
                    Some(deadline) => thread::sleep(deadline.saturating_duration_since(now)),
                    None => return,
                }
            }
        }
    }

    /// The watchdog ends the sequence with `action`.
    fn take_over(self: &Arc<Self>, ctx: &Ctx, action: ExitMode, timed_out: bool) {
        if !self.gate.end(Ender::Watchdog) {
            return; // the sequence got there first
        }
        let action = match action {
            ExitMode::Orderly => ExitMode::Fast,
            other => other,
        };
        let interrupted = self.phase();
        let escalated = (!timed_out).then_some(action);
        if timed_out {
            tracing::error!(
                phase = interrupted.as_str(),
                action = action.as_str(),
                "process-exit timeout expired; the watchdog ends the shutdown"
            );
        } else {
            tracing::warn!(
                phase = interrupted.as_str(),
                action = action.as_str(),
                "shutdown escalated"
            );
        }
        if action == ExitMode::Fast {
            self.bounded_release(ctx);
        }
        self.phase
            .fetch_max(Phase::Exited.index(), Ordering::AcqRel);
        self.publish_and_exit(ctx, timed_out, escalated, Some(interrupted));
    }

    /// Critical release on a helper thread, waited for at most `grace`: the participant may
    /// hang, and the watchdog must still exit.
    fn bounded_release(self: &Arc<Self>, ctx: &Ctx) {
        let Some(p) = ctx.participant.clone() else {
            return;
        };
        let (tx, rx) = mpsc::channel::<()>();
        let inner = self.clone();
        let grace = self.config.grace;
        let helper = thread::Builder::new()
            .name("warden-shutdown-release".into())
            .spawn(move || {
                if inner.gate.claim_release() {
                    inner.enter(Phase::CriticalRelease, ExitMode::Fast, Some(&p));
                    guard("critical_release", || p.critical_release());
                    inner.complete(Phase::CriticalRelease);
                    inner.gate.release_done();
                } else {
                    // The sequence is releasing: wait for it, within the same grace.
                    let until = Instant::now().checked_add(grace);
                    while !inner.gate.is_release_done() && until.is_none_or(|u| Instant::now() < u)
                    {
                        thread::sleep(Duration::from_millis(1));
                    }
                }
                inner.enter(Phase::Exited, ExitMode::Fast, Some(&p));
                let _ = tx.send(());
            });
        match helper {
            Ok(_) => {
                if rx.recv_timeout(grace).is_err() {
                    tracing::error!("critical release did not finish within the grace; exiting");
                }
            }
            Err(err) => tracing::error!(%err, "cannot run critical release; exiting"),
        }
    }

    /// A rude exit by the winner itself: no thread, no participant code.
    fn finish_rude(&self, ctx: &Ctx, escalated: Option<ExitMode>) {
        if self.gate.end(Ender::Sequence) {
            self.phase
                .fetch_max(Phase::Exited.index(), Ordering::AcqRel);
            self.publish_and_exit(ctx, false, escalated, None);
        }
    }

    /// Called only by whoever won `gate.end`, hence once.
    fn publish_and_exit(
        &self,
        ctx: &Ctx,
        watchdog_fired: bool,
        escalated_to: Option<ExitMode>,
        interrupted_phase: Option<Phase>,
    ) {
        // The timeout ended the exit: the process says so, if a code was set for it.
        let code = match (
            watchdog_fired && escalated_to.is_none(),
            self.watchdog_code.get(),
        ) {
            (true, Some(&code)) => code,
            _ => ctx.code,
        };
        let report = ExitReport {
            code,
            mode: ctx.mode,
            watchdog_fired,
            escalated_to,
            interrupted_phase,
            phases_completed: self.completed(),
            elapsed: ctx.started.elapsed(),
        };
        let _ = self.report.set(report);
        *lock(&self.done) = true;
        self.done_cv.notify_all();
        self.notify.notify_waiters();
        tracing::info!(code, "exiting");
        let exit_fn = self.exit_fn.clone();
        guard("exit_fn", || exit_fn(code));
    }
}

/// Run participant or embedder code; a panic is logged and the sequence goes on.
fn guard(what: &str, f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        tracing::error!(what, "panicked during shutdown; going on");
    }
}

/// Coordinator locks guard plain data, never held across a callout, so a poisoned one is
/// still consistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The atomic core shared by the callers of `exit`, the sequence and the watchdog: the
/// election, who ends the sequence, who runs critical release, and escalation. Lock-free, so
/// no party can block another here; model-checked with loom (`RUSTFLAGS="--cfg loom"`).
mod gate {
    // loom is a dev-dependency: its atomics replace std's only in the model-checking tests.
    #[cfg(all(test, loom))]
    use loom::sync::atomic::{AtomicU8, AtomicU64, Ordering};
    #[cfg(not(all(test, loom)))]
    use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

    use super::ExitMode;

    const STARTED: u64 = 1 << 63;

    /// Who ended the sequence (and so calls the exit function).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Ender {
        Sequence = 1,
        Watchdog = 2,
    }

    const RELEASE_FREE: u8 = 0;
    const RELEASE_CLAIMED: u8 = 1;
    const RELEASE_DONE: u8 = 2;

    pub(super) struct Gate {
        /// 0 before the election; then `STARTED | mode << 32 | code`, set once. Code and mode
        /// are in the same word as the flag so a loser always reads the winner's code.
        word: AtomicU64,
        /// 0, or the `Ender` that won.
        end: AtomicU8,
        release: AtomicU8,
        /// 0, or the most severe escalation requested (`ExitMode::to_bits`).
        escalation: AtomicU8,
    }

    impl Gate {
        pub(super) fn new() -> Self {
            Gate {
                word: AtomicU64::new(0),
                end: AtomicU8::new(0),
                release: AtomicU8::new(RELEASE_FREE),
                escalation: AtomicU8::new(0),
            }
        }

        fn pack(code: i32, mode: ExitMode) -> u64 {
            STARTED | (u64::from(mode.to_bits()) << 32) | u64::from(code as u32)
        }

        fn unpack(word: u64) -> Option<(i32, ExitMode)> {
            if word & STARTED == 0 {
                return None;
            }
            let mode = ExitMode::from_bits(((word >> 32) & 0xff) as u8)?;
            Some((word as u32 as i32, mode))
        }

        /// Elect the winner: `Ok` for exactly one caller, the winner's code and mode otherwise.
        pub(super) fn start(&self, code: i32, mode: ExitMode) -> Result<(), (i32, ExitMode)> {
            match self.word.compare_exchange(
                0,
                Self::pack(code, mode),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => Ok(()),
                // `word` is only ever 0 or a packed winner, so this always unpacks.
                Err(word) => Err(Self::unpack(word).unwrap_or((code, mode))),
            }
        }

        pub(super) fn started(&self) -> Option<(i32, ExitMode)> {
            Self::unpack(self.word.load(Ordering::Acquire))
        }

        /// Claim the end of the sequence: `true` for exactly one caller, who calls exit_fn.
        pub(super) fn end(&self, by: Ender) -> bool {
            self.end
                .compare_exchange(0, by as u8, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        }

        pub(super) fn ended(&self) -> Option<Ender> {
            match self.end.load(Ordering::Acquire) {
                1 => Some(Ender::Sequence),
                2 => Some(Ender::Watchdog),
                _ => None,
            }
        }

        /// Claim critical release: `true` for at most one caller, who runs it.
        pub(super) fn claim_release(&self) -> bool {
            self.release
                .compare_exchange(
                    RELEASE_FREE,
                    RELEASE_CLAIMED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        }

        pub(super) fn release_done(&self) {
            self.release.store(RELEASE_DONE, Ordering::Release);
        }

        pub(super) fn is_release_done(&self) -> bool {
            self.release.load(Ordering::Acquire) == RELEASE_DONE
        }

        pub(super) fn escalate(&self, mode: ExitMode) {
            self.escalation.fetch_max(mode.to_bits(), Ordering::AcqRel);
        }

        pub(super) fn escalation(&self) -> Option<ExitMode> {
            ExitMode::from_bits(self.escalation.load(Ordering::Acquire))
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::gate::{Ender, Gate};
    use super::*;

    #[test]
    fn the_election_word_round_trips_every_code_and_mode() {
        for code in [i32::MIN, -1, 0, 1, i32::MAX] {
            for mode in [ExitMode::Orderly, ExitMode::Fast, ExitMode::Rude] {
                let gate = Gate::new();
                assert_eq!(gate.started(), None);
                assert_eq!(gate.start(code, mode), Ok(()));
                assert_eq!(gate.started(), Some((code, mode)));
                assert_eq!(gate.start(7, ExitMode::Rude), Err((code, mode)));
            }
        }
    }

    #[test]
    fn end_release_and_escalation_are_claimed_once_and_only_rise() {
        let gate = Gate::new();
        assert_eq!(gate.ended(), None);
        assert!(gate.end(Ender::Watchdog));
        assert!(!gate.end(Ender::Sequence));
        assert_eq!(gate.ended(), Some(Ender::Watchdog));

        assert!(!gate.is_release_done());
        assert!(gate.claim_release());
        assert!(!gate.claim_release());
        gate.release_done();
        assert!(gate.is_release_done());
        assert!(!gate.claim_release());

        assert_eq!(gate.escalation(), None);
        gate.escalate(ExitMode::Rude);
        gate.escalate(ExitMode::Fast);
        assert_eq!(gate.escalation(), Some(ExitMode::Rude));
    }

    #[test]
    fn phases_are_ordered_and_indexed_consistently() {
        for (i, phase) in PHASES.iter().enumerate() {
            assert_eq!(usize::from(phase.index()), i);
        }
        assert!(PHASES.windows(2).all(|w| w[0] < w[1]));
        for mode in [ExitMode::Orderly, ExitMode::Fast, ExitMode::Rude] {
            assert_eq!(ExitMode::from_bits(mode.to_bits()), Some(mode));
        }
        assert_eq!(ExitMode::from_bits(0), None);
    }
}

/// Model checks of the lock-free core. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p warden-core --release --lib shutdown::loom`.
#[cfg(all(test, loom))]
mod loom {
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::thread;

    use super::ExitMode;
    use super::gate::{Ender, Gate};

    /// Racing `exit`s plus an observer: one winner; losers and the observer only ever see the
    /// winner's code and mode (never a torn or a loser's value).
    #[test]
    fn one_winner_and_everyone_sees_its_code() {
        loom::model(|| {
            let gate = Arc::new(Gate::new());
            let racers: Vec<_> = [(1, ExitMode::Orderly), (2, ExitMode::Rude)]
                .into_iter()
                .map(|(code, mode)| {
                    let gate = gate.clone();
                    thread::spawn(move || (code, mode, gate.start(code, mode)))
                })
                .collect();
            let observer = {
                let gate = gate.clone();
                thread::spawn(move || gate.started())
            };
            let results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
            let winners: Vec<_> = results.iter().filter(|r| r.2.is_ok()).collect();
            assert_eq!(winners.len(), 1);
            let winner = (winners[0].0, winners[0].1);
            for r in &results {
                if let Err(seen) = r.2 {
                    assert_eq!(seen, winner);
                }
            }
            if let Some(seen) = observer.join().unwrap() {
                assert_eq!(seen, winner);
            }
            assert_eq!(gate.started(), Some(winner));
        });
    }

    /// The sequence's tail (critical release, then end) against the watchdog taking over with
    /// a fast action: the exit function runs exactly once, critical release at most once, and
    /// an exit by the sequence always comes after its release.
    #[test]
    fn exit_fn_once_and_release_at_most_once() {
        loom::model(|| {
            let gate = Arc::new(Gate::new());
            gate.start(5, ExitMode::Orderly).unwrap();
            let exits = Arc::new(AtomicUsize::new(0));
            let releases = Arc::new(AtomicUsize::new(0));

            let sequence = {
                let (gate, exits, releases) = (gate.clone(), exits.clone(), releases.clone());
                thread::spawn(move || {
                    if gate.ended().is_some() || !gate.claim_release() {
                        return;
                    }
                    releases.fetch_add(1, Ordering::SeqCst);
                    gate.release_done();
                    if gate.end(Ender::Sequence) {
                        assert_eq!(releases.load(Ordering::SeqCst), 1);
                        exits.fetch_add(1, Ordering::SeqCst);
                    }
                })
            };
            let watchdog = {
                let (gate, exits, releases) = (gate.clone(), exits.clone(), releases.clone());
                thread::spawn(move || {
                    if !gate.end(Ender::Watchdog) {
                        return;
                    }
                    if gate.claim_release() {
                        releases.fetch_add(1, Ordering::SeqCst);
                        gate.release_done();
                    }
                    exits.fetch_add(1, Ordering::SeqCst);
                })
            };
            sequence.join().unwrap();
            watchdog.join().unwrap();
            assert_eq!(exits.load(Ordering::SeqCst), 1);
            assert_eq!(releases.load(Ordering::SeqCst), 1);
            assert!(gate.is_release_done());
        });
    }

    /// An escalation racing the end of the sequence is either seen by the watchdog or the
    /// sequence had already ended; the most severe escalation wins.
    #[test]
    fn escalations_only_rise() {
        loom::model(|| {
            let gate = Arc::new(Gate::new());
            let threads: Vec<_> = [ExitMode::Rude, ExitMode::Fast]
                .into_iter()
                .map(|mode| {
                    let gate = gate.clone();
                    thread::spawn(move || gate.escalate(mode))
                })
                .collect();
            let seen = gate.escalation();
            assert!(matches!(seen, None | Some(ExitMode::Fast | ExitMode::Rude)));
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(gate.escalation(), Some(ExitMode::Rude));
        });
    }
}
