//! The event stream: every decision and state change the runtime makes, as typed events.
//!
//! Embedders subscribe with [`Runtime::subscribe`](crate::Runtime::subscribe); the callback
//! runs synchronously on the thread that produced the event, so it must be quick and must not
//! call back into the runtime in a way that waits for it (queue the event and return instead).
//! Nothing is dropped and nothing is buffered: with no subscriber, events cost one atomic load.
//! `warden run --events json` is one such subscriber, writing [`Event::to_json`] lines to stderr.

use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::call::Outcome;
use crate::ids::{CallId, DomainId};

/// One event: what happened, where (domain and call ids), and when.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch, with microsecond precision.
    pub ts: f64,
    /// The domain the event concerns; absent for process-wide events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainId>,
    /// The call the event concerns, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<CallId>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// One JSON object on one line, with an `"event"` field naming the kind (DESIGN §5).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!(r#"{{"event":"event_encoding_failed","error":"{e}"}}"#))
    }
}

/// What happened. The serialized names (`"event": "call_finished"`, …) are a contract that
/// tools rely on; see DESIGN §5.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A domain was created and its module instantiated.
    DomainLoaded {
        /// The module's content digest (hex SHA-256).
        module: String,
    },
    /// A call began running guest code.
    CallStarted {
        /// The export invoked.
        export: String,
    },
    /// A call asked another domain for a call (`domain_call`): one hop of a cross-domain call.
    DomainCall {
        /// The domain called.
        callee_domain: crate::ids::DomainId,
        /// The call made there (its own `call_started` / `call_finished` follow in that domain).
        callee_call: crate::ids::CallId,
        /// The export called.
        export: String,
    },
    /// A cross-domain call came back to its caller (the event's `call`).
    DomainCallReturned {
        /// The call made in the callee domain.
        callee_call: crate::ids::CallId,
        /// What `domain_call` returned: `0` ok, else its negative code.
        code: i32,
    },
    /// A call ended; exactly one per call.
    CallFinished {
        /// How it ended.
        outcome: Outcome,
        /// Wall time of the call in milliseconds.
        elapsed_ms: f64,
        /// Of that, milliseconds the guest spent parked in host calls (waits in WASI,
        /// `warden` and embedder imports; synchronous host code is not timed).
        host_ms: f64,
        /// Details (trap message and backtrace, exit code), when there are any.
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Linear memory and table bytes the domain holds after the call.
        memory_used: u64,
    },
    /// An abort of a call was requested.
    AbortRequested {
        /// `polite` or `rude`.
        kind: &'static str,
        /// Who asked: `embedder`, `deadline`, `unload`, `policy`.
        reason: &'static str,
    },
    /// A requested abort cannot land yet.
    AbortDeferred {
        /// `polite` or `rude`.
        kind: &'static str,
        /// `critical_region`, `lock_held`, `constrained_region` or `host_call`.
        why: &'static str,
    },
    /// An abort landed: the call's guest stack is being unwound.
    AbortDelivered {
        /// `polite` or `rude`.
        kind: &'static str,
    },
    /// The policy decided an action for a failure or an operation.
    Escalation {
        /// The failure, when a failure was decided (e.g. `guest-trap`).
        #[serde(skip_serializing_if = "Option::is_none")]
        failure: Option<String>,
        /// The operation, when an operation's default or timeout was decided (e.g. `abort`).
        #[serde(skip_serializing_if = "Option::is_none")]
        operation: Option<String>,
        /// The action taken (kebab-case, e.g. `unload-domain`).
        action: String,
        /// Whether the call was in a critical region or held locks (the floor applied).
        critical: bool,
    },
    /// A `memory.grow` (or table growth) was denied.
    MemoryDenied {
        /// Bytes requested beyond the current size.
        requested: u64,
        /// Which limit denied it: `domain`, `budget` or `module` (past the declared maximum).
        limit: &'static str,
    },
    /// Process memory crossed a water mark.
    MemoryPressure {
        /// `high` or `relieved`.
        level: &'static str,
        /// Bytes used by guests.
        used: u64,
        /// Bytes reserved through the memory gate.
        reserved: u64,
        /// The process budget.
        budget: u64,
    },
    /// A wait closed a cycle in the wait-for graph; the victim's wait failed.
    DeadlockDetected {
        /// The cycle, victim first: `call N waits for LOCK held by call M`.
        cycle: Vec<String>,
    },
    /// Host locks were left held by a call that ended; they are now poisoned.
    LocksOrphaned {
        /// The lock names.
        locks: Vec<String>,
    },
    /// The lock table's bound on poison marks dropped the oldest ones to make room for new
    /// orphaned locks: those locks are acquired clean from now on (a warning for the host).
    PoisonMarkDropped {
        /// Marks dropped.
        dropped: u64,
        /// The oldest lock whose mark was dropped.
        oldest: String,
        /// Marks the table keeps at most.
        limit: usize,
    },
    /// A guest log line (`log` import).
    GuestLog {
        /// The level the guest gave.
        level: i32,
        /// The message (lossy UTF-8).
        message: String,
    },
    /// Unload of a domain began.
    DomainUnloading {
        /// `polite` or `rude`.
        mode: &'static str,
    },
    /// The domain's `warden_on_unload` finalizer ended.
    FinalizerRan {
        /// `ok`, `trap`, `timeout`, or `skipped`.
        result: &'static str,
    },
    /// One handle's release function ran.
    HandleReleased {
        /// The handle value.
        handle: u32,
    },
    /// A domain is gone; everything it held was released.
    DomainUnloaded {
        /// Queued calls that failed with `domain_unloaded`.
        calls_failed: u64,
        /// Handles released.
        handles_released: u64,
        /// Host locks released (poisoned).
        locks_released: u64,
        /// Memory-gate bytes returned.
        reservations_released: u64,
        /// Linear memory and table bytes returned to the budget.
        memory_released: u64,
    },
    /// Shutdown entered a phase.
    ShutdownPhase {
        /// `stop_admitting`, `exit_hooks`, `finalizers`, `critical_release`, `exit`.
        phase: String,
        /// `orderly`, `fast` or `rude`.
        mode: &'static str,
    },
    /// The runtime was disabled by policy; no further guest work is admitted.
    RuntimeDisabled,
    /// The engine fell back from the pooling allocator to on-demand allocation.
    AllocatorFallback {
        /// Why pooling was not available.
        reason: String,
    },
    /// A precompiled artifact failed its integrity check and was not used; the module was
    /// compiled from source instead (see [`precompiled`](crate::precompiled)).
    ArtifactRejected {
        /// The module's content digest (hex SHA-256 of its source).
        module: String,
        /// `stale` (another engine or configuration) or `corrupt` (truncated, tampered).
        reason: &'static str,
        /// What the check found.
        detail: String,
    },
}

type Sink = Arc<dyn Fn(&Event) + Send + Sync>;

/// Fan-out of events to subscribers.
#[derive(Default)]
pub(crate) struct EventBus {
    any: AtomicBool,
    sinks: RwLock<Vec<Sink>>,
}

impl EventBus {
    pub(crate) fn subscribe(&self, sink: Sink) {
        let mut sinks = self.sinks.write().unwrap_or_else(|p| p.into_inner());
        sinks.push(sink);
        self.any.store(true, Ordering::Release);
    }

    /// Emits an event built only when someone listens.
    /// Whether any sink listens: work done only for an event (reading the clock) can be
    /// skipped when none does.
    pub(crate) fn listening(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    pub(crate) fn emit(
        &self,
        domain: Option<DomainId>,
        call: Option<CallId>,
        kind: impl FnOnce() -> EventKind,
    ) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as f64 / 1000.0)
            .unwrap_or(0.0);
        let event = Event {
            ts,
            domain,
            call,
            kind: kind(),
        };
        // Clone the list so a sink may subscribe another sink without deadlocking.
        let sinks = self.sinks.read().unwrap_or_else(|p| p.into_inner()).clone();
        for sink in sinks {
            sink(&event);
        }
    }
}
