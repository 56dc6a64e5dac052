//! Calls: one invocation of a guest export, and the one outcome it ends in.
//!
//! A call is started with [`Domain::call`](crate::Domain::call), which returns a
//! [`CallHandle`]. The handle can abort the call from any task ([`CallHandle::abort`] follows
//! the policy's `abort` operation; [`CallHandle::rude_abort`] its `rude-abort`) and
//! [`join`](CallHandle::join) it. Every call ends in exactly one [`Outcome`], reported by
//! `join` and by one `call_finished` event.

use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};
use warden_core::abort::{AbortKind, AbortState, RequestOutcome};
use warden_core::budget::Reservation;

use crate::domain::DomainShared;
use crate::events::EventKind;
use crate::ids::{CallId, DomainId};

/// How a call ended. The serialized names are the `outcome` field of `call_finished`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The export returned (or a WASI command called `proc_exit`).
    Ok,
    /// The guest trapped.
    Trap,
    /// The guest exhausted its wasm stack.
    StackOverflow,
    /// A memory or table growth was denied and the call then failed.
    OutOfMemory,
    /// The call passed its deadline.
    Timeout,
    /// A polite abort unwound the call.
    Aborted,
    /// A rude abort unwound the call.
    RudeAborted,
    /// The call's lock wait was chosen as a deadlock victim and the call was ended for it.
    DeadlockVictim,
    /// The domain was unloaded before or while the call ran.
    DomainUnloaded,
    /// The memory gate refused the call's declared size.
    InsufficientMemory,
    /// The runtime is shutting down and admits no new calls.
    ProcessExiting,
    /// The runtime was disabled by policy (`disable-runtime`) and admits no guest work.
    RuntimeDisabled,
}

impl Outcome {
    /// The snake_case name used in events and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Trap => "trap",
            Outcome::StackOverflow => "stack_overflow",
            Outcome::OutOfMemory => "out_of_memory",
            Outcome::Timeout => "timeout",
            Outcome::Aborted => "aborted",
            Outcome::RudeAborted => "rude_aborted",
            Outcome::DeadlockVictim => "deadlock_victim",
            Outcome::DomainUnloaded => "domain_unloaded",
            Outcome::InsufficientMemory => "insufficient_memory",
            Outcome::ProcessExiting => "process_exiting",
            Outcome::RuntimeDisabled => "runtime_disabled",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A call that did not end [`Outcome::Ok`].
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum CallError {
    /// The guest trapped.
    #[error("guest trapped: {message}")]
    Trap {
        /// The trap message (e.g. `wasm trap: integer divide by zero`).
        message: String,
        /// The guest backtrace, one frame a line.
        backtrace: String,
    },
    /// The guest exhausted its wasm stack.
    #[error("guest overflowed its stack")]
    StackOverflow {
        /// The guest backtrace (top frames).
        backtrace: String,
    },
    /// A growth was denied and the call then failed.
    #[error("out of memory: {detail}")]
    OutOfMemory {
        /// What was denied and how the call then failed.
        detail: String,
    },
    /// The call passed its deadline.
    #[error("call passed its deadline")]
    Timeout,
    /// A polite abort unwound the call.
    #[error("call was aborted")]
    Aborted,
    /// A rude abort unwound the call.
    #[error("call was rudely aborted")]
    RudeAborted,
    /// The call was ended as a deadlock victim.
    #[error("call was chosen as a deadlock victim")]
    DeadlockVictim,
    /// The domain was unloaded.
    #[error("domain was unloaded")]
    DomainUnloaded,
    /// The memory gate refused the call.
    #[error("insufficient memory: {requested} bytes requested, {available} available")]
    InsufficientMemory {
        /// Bytes asked for.
        requested: u64,
        /// Bytes the budget had left.
        available: u64,
    },
    /// The runtime is shutting down.
    #[error("process is exiting")]
    ProcessExiting,
    /// The runtime was disabled by policy.
    #[error("runtime is disabled")]
    RuntimeDisabled,
}

impl CallError {
    /// The outcome this error reports.
    pub fn outcome(&self) -> Outcome {
        match self {
            CallError::Trap { .. } => Outcome::Trap,
            CallError::StackOverflow { .. } => Outcome::StackOverflow,
            CallError::OutOfMemory { .. } => Outcome::OutOfMemory,
            CallError::Timeout => Outcome::Timeout,
            CallError::Aborted => Outcome::Aborted,
            CallError::RudeAborted => Outcome::RudeAborted,
            CallError::DeadlockVictim => Outcome::DeadlockVictim,
            CallError::DomainUnloaded => Outcome::DomainUnloaded,
            CallError::InsufficientMemory { .. } => Outcome::InsufficientMemory,
            CallError::ProcessExiting => Outcome::ProcessExiting,
            CallError::RuntimeDisabled => Outcome::RuntimeDisabled,
        }
    }

    pub(crate) fn detail(&self) -> Option<String> {
        match self {
            CallError::Trap { message, backtrace } => Some(format!("{message}\n{backtrace}")),
            CallError::StackOverflow { backtrace } => Some(backtrace.clone()),
            CallError::OutOfMemory { detail } => Some(detail.clone()),
            _ => None,
        }
    }
}

/// What a successful call returned.
#[derive(Clone, Debug)]
pub struct CallOutput {
    /// A core export's results (empty for a component's).
    pub values: Vec<wasmtime::Val>,
    /// A component export's results (empty for a core module's): see
    /// [`Domain::invoke_component`](crate::Domain::invoke_component).
    pub component_values: Vec<wasmtime::component::Val>,
    /// For a WASI command that called `proc_exit`: its code.
    pub exit_code: Option<i32>,
    /// A byte call's result ([`Domain::call_bytes`](crate::Domain::call_bytes); empty
    /// otherwise).
    pub bytes: Vec<u8>,
}

impl CallOutput {
    pub(crate) fn core(values: Vec<wasmtime::Val>) -> Self {
        CallOutput {
            values,
            component_values: Vec::new(),
            exit_code: None,
            bytes: Vec::new(),
        }
    }

    pub(crate) fn component(values: Vec<wasmtime::component::Val>) -> Self {
        CallOutput {
            values: Vec::new(),
            component_values: values,
            exit_code: None,
            bytes: Vec::new(),
        }
    }
}

/// The result of a call.
pub type CallResult = Result<CallOutput, CallError>;

/// Options for one call.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Passing this is a `deadline` failure (default action: abort; outcome `timeout`). It
    /// counts from when the call starts running, not from when it was queued behind the
    /// domain's running call.
    pub deadline: Option<Duration>,
    /// A background call does not keep `warden run` alive (DESIGN §2 "Shutdown").
    pub background: bool,
    /// Memory gate: reserve this many bytes against the process budget before the call is
    /// admitted; the call fails `insufficient_memory` at once when they are not there. The
    /// call's own growth spends the reservation first; what remains is returned at call end.
    /// Bounded by the domain's own memory limit less what it holds, like the guest's
    /// `gate_reserve`.
    pub reserve: Option<u64>,
}

/// Why an abort was requested; decides the outcome of the unwound call.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum AbortReason {
    Embedder = 1,
    Deadline = 2,
    Unload = 3,
    Policy = 4,
    Deadlock = 5,
}

impl AbortReason {
    fn as_str(self) -> &'static str {
        match self {
            AbortReason::Embedder => "embedder",
            AbortReason::Deadline => "deadline",
            AbortReason::Unload => "unload",
            AbortReason::Policy => "policy",
            AbortReason::Deadlock => "deadlock",
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => AbortReason::Embedder,
            2 => AbortReason::Deadline,
            3 => AbortReason::Unload,
            4 => AbortReason::Policy,
            5 => AbortReason::Deadlock,
            _ => return None,
        })
    }
}

pub(crate) fn kind_str(kind: AbortKind) -> &'static str {
    match kind {
        AbortKind::Polite => "polite",
        AbortKind::Rude => "rude",
    }
}

/// The control block of one call, shared by its handle, its domain's worker and the host
/// functions it calls. (The start function and the finalizer run under one too.)
pub(crate) struct CallCtl {
    pub(crate) id: CallId,
    pub(crate) domain: DomainId,
    pub(crate) abort: AbortState,
    /// The first reason an abort was requested for; it names the outcome.
    reason: AtomicU8,
    /// A growth was denied during this call (hard OOM, if the call then fails).
    pub(crate) memory_denied: AtomicBool,
    /// Wakes the worker so it can start escalation timers for a new request.
    pub(crate) kick: Notify,
    pub(crate) background: bool,
    /// Counted by the domain's lifecycle (admitted) and not yet ended.
    pub(crate) admitted: AtomicBool,
    /// Memory-gate reservations the call holds, by token; returned when the call ends.
    pub(crate) gate: Mutex<Gate>,
    /// Whether `gate` was ever locked: most calls hold no reservation, and their end then
    /// skips the lock (see [`release_gate`](Self::release_gate)).
    gate_used: AtomicBool,
    /// Nanoseconds the call spent in host calls (see `host::HostTimed`).
    pub(crate) host_nanos: AtomicU64,
    /// Set by the epoch callback when it parks the guest at a yield (not a host call).
    pub(crate) at_yield: AtomicBool,
    /// Epoch checks the call reached: its run time in ticks, for the scheduler.
    pub(crate) ticks: AtomicU64,
    /// Its guest code has begun: a call is published as its domain's current one when the
    /// worker is handed it, and is busy (`Domain::is_busy`) from here.
    pub(crate) running: AtomicBool,
    /// The call this one waits for in a `domain_call`: an abort of this call is passed on to
    /// it at once, down the whole chain, before any of their tasks runs again.
    callee: Mutex<Option<Callee>>,
}

/// A callee's call, in its domain.
type Callee = (Arc<DomainShared>, Arc<CallCtl>);

/// Clears a call's callee when its `domain_call` wait ends.
pub(crate) struct CalleeGuard<'a>(&'a CallCtl);

impl Drop for CalleeGuard<'_> {
    fn drop(&mut self) {
        *self.0.callee_slot() = None;
    }
}

/// A call's memory-gate reservations: the one its options declared (token 0) and those the
/// guest took with `gate_reserve` (positive tokens).
#[derive(Default)]
pub(crate) struct Gate {
    next: i32,
    held: Vec<(i32, Reservation)>,
}

impl Gate {
    /// Keeps a reservation; returns its token (positive), or `None` when tokens ran out.
    pub(crate) fn keep(&mut self, r: Reservation) -> Option<i32> {
        self.next = self.next.checked_add(1)?;
        self.held.push((self.next, r));
        Some(self.next)
    }

    pub(crate) fn keep_declared(&mut self, r: Reservation) {
        self.held.push((0, r));
    }

    /// Returns the reservation with `token` to the budget; false when there is none.
    pub(crate) fn release(&mut self, token: i32) -> bool {
        match self.held.iter().position(|(t, _)| *t == token && token > 0) {
            Some(i) => {
                self.held.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// How many reservations the call holds.
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// Every reservation, for growth to spend first.
    pub(crate) fn reservations(&self) -> Vec<&Reservation> {
        self.held.iter().map(|(_, r)| r).collect()
    }

    /// Returns everything; the bytes returned.
    pub(crate) fn release_all(&mut self) -> u64 {
        let bytes = self.held.iter().map(|(_, r)| r.bytes()).sum();
        self.held.clear();
        bytes
    }
}

impl CallCtl {
    pub(crate) fn new(domain: DomainId, background: bool) -> Arc<Self> {
        Arc::new(Self::fresh(domain, background))
    }

    /// Makes this block a new call's (see `Worker::call_ctl`): what the old call left in it
    /// is dropped.
    pub(crate) fn renew(&mut self, domain: DomainId, background: bool) {
        *self = Self::fresh(domain, background);
    }

    fn fresh(domain: DomainId, background: bool) -> Self {
        CallCtl {
            id: CallId::next(),
            domain,
            abort: AbortState::new(),
            reason: AtomicU8::new(0),
            memory_denied: AtomicBool::new(false),
            kick: Notify::new(),
            background,
            admitted: AtomicBool::new(false),
            gate: Mutex::new(Gate::default()),
            gate_used: AtomicBool::new(false),
            host_nanos: AtomicU64::new(0),
            at_yield: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            running: AtomicBool::new(false),
            callee: Mutex::new(None),
        }
    }

    fn callee_slot(&self) -> std::sync::MutexGuard<'_, Option<Callee>> {
        self.callee.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that this call waits for `callee` (a `domain_call`) until the guard drops. An
    /// abort already requested is passed on now.
    pub(crate) fn wait_on(&self, callee: Callee) -> CalleeGuard<'_> {
        *self.callee_slot() = Some(callee);
        if let Some(kind) = self.abort.requested() {
            self.abort_callee(kind);
        }
        CalleeGuard(self)
    }

    /// Passes an abort of this call on to the call it waits for. A plain request, not the
    /// policy's `abort` operation: this runs wherever the caller's abort was requested, which
    /// may be under the caller's domain's slot lock (an unload), and the operation could take
    /// the callee's (a self-link, or two domains unloading each other). The callee's worker
    /// still bounds the abort by the operation's timeout, as it bounds every request.
    fn abort_callee(&self, kind: AbortKind) {
        let Some((dom, ctl)) = self.callee_slot().clone() else {
            return;
        };
        ctl.request_abort(&dom, kind, AbortReason::Embedder);
    }

    /// The call's reservations. Every way to add one goes through here, so a call whose
    /// gate was never locked holds none.
    pub(crate) fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate_used.store(true, Ordering::Release);
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns every reservation of the call (its end's critical release); the bytes.
    pub(crate) fn release_gate(&self) -> u64 {
        // Reservations are added by the call's own steps (admission, its guest's host calls,
        // its growth), each ordered before the call's end: a gate never locked is empty.
        if !self.gate_used.load(Ordering::Acquire) {
            return 0;
        }
        self.gate().release_all()
    }

    pub(crate) fn reason(&self) -> Option<AbortReason> {
        AbortReason::from_u8(self.reason.load(Ordering::SeqCst))
    }

    /// Records why the call is being ended, unless a reason was recorded already.
    pub(crate) fn set_reason(&self, reason: AbortReason) {
        let _ = self
            .reason
            .compare_exchange(0, reason as u8, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Requests an abort, records why, emits the events, and makes delivery prompt.
    pub(crate) fn request_abort(&self, dom: &DomainShared, kind: AbortKind, reason: AbortReason) {
        self.set_reason(reason);
        let outcome = self.abort.request(kind);
        if matches!(
            outcome,
            RequestOutcome::AlreadyDelivered | RequestOutcome::AlreadyRequested
        ) {
            return;
        }
        self.abort_callee(kind);
        let events = &dom.rt.events;
        events.emit(Some(self.domain), Some(self.id), || {
            EventKind::AbortRequested {
                kind: kind_str(kind),
                reason: reason.as_str(),
            }
        });
        if let RequestOutcome::Deferred(why) = outcome {
            events.emit(Some(self.domain), Some(self.id), || {
                EventKind::AbortDeferred {
                    kind: kind_str(kind),
                    why: why.as_str(),
                }
            });
        } else {
            // Make every running store check its epoch deadline now, not at the next tick.
            dom.rt.engine.poke();
        }
        self.kick.notify_one();
    }

    /// The error a call unwound by an abort reports.
    pub(crate) fn abort_error(&self, kind: AbortKind) -> CallError {
        match (self.reason(), kind) {
            (Some(AbortReason::Deadline), _) => CallError::Timeout,
            (Some(AbortReason::Deadlock), _) => CallError::DeadlockVictim,
            (Some(AbortReason::Unload), _) => CallError::DomainUnloaded,
            (_, AbortKind::Polite) => CallError::Aborted,
            (_, AbortKind::Rude) => CallError::RudeAborted,
        }
    }
}

/// A started call: abort it, or wait for its outcome.
pub struct CallHandle {
    pub(crate) ctl: Arc<CallCtl>,
    pub(crate) domain: Arc<DomainShared>,
    pub(crate) rx: oneshot::Receiver<CallResult>,
    pub(crate) started: Instant,
}

impl CallHandle {
    /// The call's id (as in events).
    pub fn id(&self) -> CallId {
        self.ctl.id
    }

    /// The domain the call runs in.
    pub fn domain_id(&self) -> DomainId {
        self.ctl.domain
    }

    /// Requests an abort through the policy's `abort` operation (by default a polite abort,
    /// deferred while the call is in a critical region or holds host locks, bounded by the
    /// operation's timeout). Returns at once; [`join`](Self::join) to see the outcome.
    pub fn abort(&self) {
        self.domain.operation(
            &self.ctl,
            warden_policy::Operation::Abort,
            AbortReason::Embedder,
        );
    }

    /// Requests a rude abort through the policy's `rude-abort` operation (ignores critical
    /// regions and locks, waits only for constrained regions).
    pub fn rude_abort(&self) {
        self.domain.operation(
            &self.ctl,
            warden_policy::Operation::RudeAbort,
            AbortReason::Embedder,
        );
    }

    /// Whether the call was started as a background call ([`CallOptions::background`]).
    pub fn is_background(&self) -> bool {
        self.ctl.background
    }

    /// Whether an abort has been requested for this call.
    pub fn abort_requested(&self) -> bool {
        self.ctl.abort.requested().is_some()
    }

    /// Waits for the call's outcome.
    pub async fn join(self) -> CallResult {
        // The worker always answers; a dropped sender means the domain went away with the
        // request still queued.
        self.rx.await.unwrap_or(Err(CallError::DomainUnloaded))
    }

    /// How long ago the call was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl std::fmt::Debug for CallHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallHandle")
            .field("id", &self.ctl.id)
            .field("domain", &self.ctl.domain)
            .finish()
    }
}
