//! Escalation: from a failure or an operation to the policy's action, and from the action to
//! the [`Effect`] that the domain or the runtime carries out (DESIGN §3).
//!
//! Deciding is separate from doing. [`Escalation`] asks the policy, records the decision as an
//! `escalation` event and returns an [`Effect`]; it never touches a store, a call or a domain,
//! so its logic is tested here without a guest. The domain carries effects out
//! (`DomainShared::carry_out`), and [`drive`] is the one place a stretch of guest code is
//! driven: under its deadline, the abort escalation timers, and the domain's kill switch.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use warden_core::abort::AbortKind;
use warden_policy::{Action, Failure, Operation, Policy};

use crate::call::{AbortReason, CallCtl, CallError};
use crate::domain::DomainShared;
use crate::events::{EventBus, EventKind};
use crate::ids::DomainId;

/// What a decision asks for, beyond the call's own outcome.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Nothing outlives the call.
    None,
    /// Unwind the call, politely or rudely (on a running call, failing it means unwinding it).
    Abort(AbortKind),
    /// Unload the domain; with `kill`, drop its store now (that needs no guest cooperation).
    Unload { rude: bool, kill: bool },
    /// A process-wide action: an exit (any mode) or `disable-runtime`.
    Process(Action),
}

impl Effect {
    /// The effect of `action` on a running call and its domain.
    pub(crate) fn of(action: Action) -> Effect {
        match action {
            Action::None => Effect::None,
            Action::Throw | Action::Abort => Effect::Abort(AbortKind::Polite),
            Action::RudeAbort => Effect::Abort(AbortKind::Rude),
            Action::UnloadDomain => Effect::Unload {
                rude: false,
                kill: false,
            },
            Action::RudeUnloadDomain => Effect::Unload {
                rude: true,
                kill: false,
            },
            Action::ExitProcess
            | Action::FastExitProcess
            | Action::RudeExitProcess
            | Action::DisableRuntime => Effect::Process(action),
        }
    }

    /// Only what outlives the call: for a call that has already ended.
    fn beyond_the_call(self) -> Effect {
        match self {
            Effect::None | Effect::Abort(_) => Effect::None,
            other => other,
        }
    }
}

/// The failure a call's error is, for the policy; `None` for errors that are no failure of the
/// guest (aborts and unloads are operations already decided; admission refusals).
pub(crate) fn failure_of(err: &CallError, critical: bool) -> Option<Failure> {
    Some(match err {
        CallError::Trap { .. } => Failure::GuestTrap,
        CallError::StackOverflow { .. } => Failure::StackOverflow,
        CallError::OutOfMemory { .. } if critical => Failure::CriticalResource,
        CallError::OutOfMemory { .. } => Failure::NoncriticalResource,
        _ => return None,
    })
}

/// The policy's decisions for one domain, each recorded as an `escalation` event.
pub(crate) struct Escalation<'a> {
    pub(crate) policy: &'a Policy,
    pub(crate) events: &'a EventBus,
    pub(crate) domain: DomainId,
}

impl Escalation<'_> {
    /// The action for a failure of `call`, recorded.
    pub(crate) fn failure(&self, call: &CallCtl, failure: Failure) -> Action {
        let critical = call.abort.is_critical();
        let action = self.policy.decide(failure, critical);
        self.events
            .emit(Some(self.domain), Some(call.id), || EventKind::Escalation {
                failure: Some(failure.to_string()),
                operation: None,
                action: action.to_string(),
                critical,
            });
        action
    }

    /// Records an operation's decided action (with the call it concerns, if any).
    pub(crate) fn record(&self, call: Option<&CallCtl>, op: Operation, action: Action) {
        self.events.emit(Some(self.domain), call.map(|c| c.id), || {
            EventKind::Escalation {
                failure: None,
                operation: Some(op.to_string()),
                action: action.to_string(),
                critical: call.is_some_and(|c| c.abort.is_critical()),
            }
        });
    }

    /// A call ended with `err`: what outlives it (unload, exit, disable).
    pub(crate) fn call_failed(&self, call: &CallCtl, err: &CallError) -> Effect {
        match failure_of(err, call.abort.is_critical()) {
            Some(failure) => Effect::of(self.failure(call, failure)).beyond_the_call(),
            None => Effect::None,
        }
    }

    /// A call ended still holding host locks (released poisoned): `orphaned-lock`.
    pub(crate) fn orphaned_locks(&self, call: &CallCtl) -> Effect {
        Effect::of(self.failure(call, Failure::OrphanedLock)).beyond_the_call()
    }

    /// A call passed its deadline.
    pub(crate) fn deadline(&self, call: &CallCtl) -> Effect {
        Effect::of(self.failure(call, Failure::Deadline))
    }

    /// A lock wait of `call` was chosen as a deadlock victim: `throw` is the -2 the guest
    /// sees; anything stronger also ends the call.
    pub(crate) fn deadlock(&self, call: &CallCtl) -> Effect {
        match self.failure(call, Failure::Deadlock) {
            Action::None | Action::Throw => Effect::None,
            action => Effect::of(action),
        }
    }

    /// The embedder asked for `op` (abort or rude abort) on `call`; its default action.
    pub(crate) fn operation(&self, call: &CallCtl, op: Operation) -> Effect {
        let critical = call.abort.is_critical();
        // A rude abort of a call in a critical region is the `rude-abort-critical` operation.
        let op = if op == Operation::RudeAbort && critical {
            Operation::RudeAbortCritical
        } else {
            op
        };
        let action = self
            .policy
            .resolve_for(self.policy.operation(op).default, critical);
        self.record(Some(call), op, action);
        Effect::of(action)
    }

    /// The timeout of `op` (an abort being deferred) passed for `call`. A rude abort that
    /// times out into `rude-unload-domain` kills the domain: dropping it needs no cooperation.
    pub(crate) fn abort_timed_out(&self, call: &CallCtl, op: Operation) -> Effect {
        let critical = call.abort.is_critical();
        let action = self
            .policy
            .resolve_for(self.policy.operation(op).on_timeout, critical);
        self.record(Some(call), op, action);
        match Effect::of(action) {
            Effect::Unload { rude: true, .. } if op != Operation::Abort => Effect::Unload {
                rude: true,
                kill: true,
            },
            effect => effect,
        }
    }

    /// The embedder asked for an unload: whether it runs rude, and the process action the
    /// policy adds (the unload still runs, so its callers are answered if the process stays).
    pub(crate) fn unload_requested(
        &self,
        in_flight: Option<&CallCtl>,
        rude: bool,
    ) -> (bool, Option<Action>) {
        let (op, asked) = if rude {
            (Operation::RudeUnloadDomain, Action::RudeUnloadDomain)
        } else {
            (Operation::UnloadDomain, Action::UnloadDomain)
        };
        let action = self.policy.resolve(self.policy.operation(op).default);
        if action == asked {
            return (rude, None);
        }
        self.record(in_flight, op, action);
        let rude = rude || action >= Action::RudeUnloadDomain;
        (rude, (action >= Action::ExitProcess).then_some(action))
    }

    /// An unload did not finish within `op`'s timeout: either it turns rude (and, past the
    /// rude bound, kills the domain) or the domain is killed and a process action taken.
    pub(crate) fn unload_timed_out(&self, in_flight: Option<&CallCtl>, op: Operation) -> Effect {
        let action = self.policy.resolve(self.policy.operation(op).on_timeout);
        self.record(in_flight, op, action);
        match action {
            Action::RudeUnloadDomain => Effect::Unload {
                rude: true,
                kill: op == Operation::RudeUnloadDomain,
            },
            other => Effect::Process(other),
        }
    }

    /// The finalizer overran `finalizer-run`: the action on it (none, or an abort and up).
    pub(crate) fn finalizer_timed_out(&self, call: &CallCtl) -> Effect {
        let bound = self.policy.operation(Operation::FinalizerRun);
        let action = self.policy.resolve(bound.on_timeout);
        self.record(Some(call), Operation::FinalizerRun, action);
        Effect::of(action)
    }
}

/// How a stretch of guest code ended.
pub(crate) enum Driven<T> {
    Finished(wasmtime::Result<T>),
    Killed,
}

impl<T> Driven<T> {
    /// The same end, with a finished value mapped.
    pub(crate) fn map_ok<U>(self, f: impl FnOnce(T) -> U) -> Driven<U> {
        match self {
            Driven::Finished(r) => Driven::Finished(r.map(f)),
            Driven::Killed => Driven::Killed,
        }
    }
}

/// Runs guest code (`fut`, which borrows the store) for `ctl` until it finishes or the domain
/// is killed, firing the deadline and the abort escalation timers meanwhile. Every stretch of
/// guest code (start function, call, finalizer) is driven here, on whichever task holds the
/// store.
pub(crate) async fn drive<T>(
    dom: &Arc<DomainShared>,
    ctl: &Arc<CallCtl>,
    fut: impl std::future::Future<Output = wasmtime::Result<T>>,
    deadline: Option<Instant>,
) -> Driven<T> {
    drive_pinned(dom, ctl, std::pin::pin!(fut), deadline).await
}

/// [`drive`] of a future the caller pinned: its state is then held once, by the caller, not
/// also as this function's argument (a warm call's future stays smaller).
pub(crate) async fn drive_pinned<T, F>(
    dom: &Arc<DomainShared>,
    ctl: &Arc<CallCtl>,
    fut: std::pin::Pin<&mut F>,
    deadline: Option<Instant>,
) -> Driven<T>
where
    F: std::future::Future<Output = wasmtime::Result<T>>,
{
    // Counts the time the guest spends parked in host waits (`host::HostTimed`).
    let mut fut = crate::host::HostTimed::new(fut, ctl);
    // Most calls end within their first poll: try one before setting up the wake-ups the
    // wait needs. Nothing is missed by it: a kick meanwhile is kept as a permit, and the loop
    // checks for a deliverable abort after creating its futures, before it waits.
    if dom.life.is_killed() {
        return Driven::Killed;
    }
    if let Err(abort) = crate::host::deliver_if_due(dom, ctl) {
        return Driven::Finished(Err(abort));
    }
    // A call starts at normal priority: the scheduler holds runaways back for it.
    dom.rt.scheduler.note_normal();
    let first =
        std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut fut).poll(cx)));
    if let std::task::Poll::Ready(r) = first.await {
        return Driven::Finished(r);
    }
    // The wait, with its timers and wake-ups, is boxed: a call that ends at its first poll
    // (and the future of every call, which holds this one) does not carry its state.
    Box::pin(wait(dom, ctl, &mut fut, deadline)).await
}

/// The rest of [`drive`], after a first poll that did not finish.
async fn wait<T, F>(
    dom: &Arc<DomainShared>,
    ctl: &Arc<CallCtl>,
    fut: &mut crate::host::HostTimed<'_, F>,
    deadline: Option<Instant>,
) -> Driven<T>
where
    F: std::future::Future<Output = wasmtime::Result<T>>,
{
    let mut fut = std::pin::Pin::new(fut);
    let mut deadline = deadline.map(tokio::time::Instant::from_std);
    // The escalation timer: which operation is being bounded, and until when.
    let mut armed: Option<(Operation, tokio::time::Instant)> = None;
    // Operations whose timeout already fired: each escalates once per call.
    let mut timed_out: Vec<Operation> = Vec::new();
    let policy = &dom.rt.policy;
    loop {
        // A kill is seen here: `DomainShared::kill` marks the lifecycle, then kicks the call
        // running now (a kick before this iteration's wait is kept as a permit).
        if dom.life.is_killed() {
            return Driven::Killed;
        }
        let kicked = ctl.kick.notified();
        let changed = ctl.abort.changed();
        // The host-call layer: the guest is parked (in a host wait, or at an epoch yield)
        // whenever this loop runs, so a deliverable abort lands here, for every import.
        // Dropping the call future unwinds the guest; the store stays usable.
        if let Err(abort) = crate::host::deliver_if_due(dom, ctl) {
            return Driven::Finished(Err(abort));
        }
        if deadline.is_none() && armed.is_none() {
            // Nothing to time (the common case): only the guest, the kick, the abort state.
            tokio::select! {
                biased;
                r = &mut fut => return Driven::Finished(r),
                _ = kicked => {}
                _ = changed => {}
            }
        } else {
            tokio::select! {
            biased;
            r = &mut fut => return Driven::Finished(r),
            _ = sleep_until(deadline) => {
                deadline = None;
                let effect = dom.escalation().deadline(ctl);
                dom.carry_out(Some(ctl), effect, AbortReason::Deadline);
            }
            _ = sleep_until(armed.map(|a| a.1)) => {
                if let Some((op, _)) = armed.take() {
                    timed_out.push(op);
                    let effect = dom.escalation().abort_timed_out(ctl, op);
                    dom.carry_out(Some(ctl), effect, AbortReason::Policy);
                }
            }
            _ = kicked => {}
            _ = changed => {}
            }
        }
        // (Re-)arm the escalation timer for the abort now pending, if it is deferred.
        if let Some(kind) = ctl.abort.requested()
            && ctl.abort.delivered().is_none()
        {
            let op = match kind {
                AbortKind::Polite => Operation::Abort,
                AbortKind::Rude if ctl.abort.is_critical() => Operation::RudeAbortCritical,
                AbortKind::Rude => Operation::RudeAbort,
            };
            let rearm = match armed {
                None => true,
                Some((current, _)) => current == Operation::Abort && op != current,
            };
            if rearm && !timed_out.contains(&op) {
                armed = policy
                    .operation(op)
                    .timeout
                    // A timeout too long to represent never fires.
                    .and_then(|t| Some((op, tokio::time::Instant::now().checked_add(t)?)));
            }
        }
    }
}

/// How a deadlock cycle reads in the `deadlock_detected` event.
pub(crate) fn describe_edge(e: &warden_core::locks::WaitEdge) -> String {
    match &e.on {
        warden_core::locks::WaitTarget::Lock(name) => format!(
            "call {} waits for lock `{}` held by call {}",
            e.waiter, name, e.owner
        ),
        warden_core::locks::WaitTarget::Owner(o) => {
            format!("call {} waits for call {}", e.waiter, o)
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use warden_policy::Preset;

    fn decide<R>(policy: &Policy, f: impl FnOnce(&Escalation<'_>, &CallCtl) -> R) -> R {
        let events = EventBus::default();
        let esc = Escalation {
            policy,
            events: &events,
            domain: DomainId::next(),
        };
        let call = CallCtl::new(esc.domain, false);
        f(&esc, &call)
    }

    #[test]
    fn a_trap_under_server_costs_only_the_call() {
        let trap = CallError::Trap {
            message: "unreachable".into(),
            backtrace: String::new(),
        };
        let e = decide(&Policy::default(), |esc, call| esc.call_failed(call, &trap));
        assert_eq!(e, Effect::None);
    }

    #[test]
    fn out_of_memory_in_a_critical_region_unloads_the_domain() {
        let oom = CallError::OutOfMemory { detail: "x".into() };
        let e = decide(&Policy::default(), |esc, call| {
            call.abort.critical_enter().unwrap();
            esc.call_failed(call, &oom)
        });
        assert_eq!(
            e,
            Effect::Unload {
                rude: false,
                kill: false
            }
        );
    }

    #[test]
    fn fail_fast_turns_an_orphaned_lock_into_a_rude_exit() {
        let policy = Policy::preset(Preset::FailFast);
        let e = decide(&policy, |esc, call| esc.orphaned_locks(call));
        assert_eq!(e, Effect::Process(Action::RudeExitProcess));
    }

    #[test]
    fn a_deadline_aborts_and_a_deadlock_victim_is_only_told() {
        let policy = Policy::default();
        assert_eq!(
            decide(&policy, |esc, call| esc.deadline(call)),
            Effect::Abort(AbortKind::Polite)
        );
        assert_eq!(
            decide(&policy, |esc, call| esc.deadlock(call)),
            Effect::None
        );
    }

    #[test]
    fn a_rude_abort_that_times_out_kills_the_domain_but_a_polite_one_turns_rude() {
        let policy = Policy::default();
        assert_eq!(
            decide(&policy, |esc, call| esc
                .abort_timed_out(call, Operation::RudeAbort)),
            Effect::Unload {
                rude: true,
                kill: true
            }
        );
        assert_eq!(
            decide(&policy, |esc, call| esc
                .abort_timed_out(call, Operation::Abort)),
            Effect::Abort(AbortKind::Rude)
        );
    }

    #[test]
    fn an_unload_past_its_rude_bound_exits_under_server() {
        let policy = Policy::default();
        let e = decide(&policy, |esc, _| {
            esc.unload_timed_out(None, Operation::RudeUnloadDomain)
        });
        assert_eq!(e, Effect::Process(Action::ExitProcess));
        let e = decide(&policy, |esc, _| {
            esc.unload_timed_out(None, Operation::UnloadDomain)
        });
        assert_eq!(
            e,
            Effect::Unload {
                rude: true,
                kill: false
            }
        );
    }

    #[test]
    fn a_policy_can_make_every_unload_rude() {
        let mut policy = Policy::default();
        policy
            .set_default(Operation::UnloadDomain, Action::RudeUnloadDomain)
            .unwrap();
        let (rude, process) = decide(&policy, |esc, _| esc.unload_requested(None, false));
        assert!(rude);
        assert_eq!(process, None);
        // And the finalizer's bound: `abort` under server.
        let e = decide(&Policy::default(), |esc, call| {
            esc.finalizer_timed_out(call)
        });
        assert_eq!(e, Effect::Abort(AbortKind::Polite));
        let _ = Duration::ZERO;
    }
}
