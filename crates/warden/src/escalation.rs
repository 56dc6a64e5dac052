//! Escalation: turning failures and operations into the policy's actions, and driving guest
//! code under its deadline and the abort escalation timers (DESIGN §3).

use std::sync::Arc;
use std::time::Instant;
use warden_core::abort::AbortKind;
use warden_policy::{Action, Failure, Operation};

use crate::call::{AbortReason, CallCtl, CallError};
use crate::domain::DomainShared;
use crate::events::EventKind;

impl DomainShared {
    /// Decides the policy's action for a call that failed, and carries out what outlives
    /// the call (unload, exit, disable).
    pub(crate) fn decide_failure(self: &Arc<Self>, ctl: &Arc<CallCtl>, err: &CallError) {
        let failure = match err {
            CallError::Trap { .. } => Failure::GuestTrap,
            CallError::StackOverflow { .. } => Failure::StackOverflow,
            CallError::OutOfMemory { .. } => {
                if ctl.abort.is_critical() {
                    Failure::CriticalResource
                } else {
                    Failure::NoncriticalResource
                }
            }
            // Aborts and unloads are operations already decided; admission failures are
            // not failures of the guest.
            _ => return,
        };
        let action = self.decide(ctl, failure);
        if action >= Action::UnloadDomain {
            self.apply_action(Some(ctl), action, AbortReason::Policy);
        }
    }

    /// A lock wait of `ctl` closed a cycle: it is the victim. Its `lock_acquire` returns -2;
    /// the `deadlock` failure is decided by policy, and an action that ends the call marks it
    /// a deadlock victim (it lands once the guest leaves its deferred state, e.g. by releasing
    /// its locks to back out).
    pub(crate) fn deadlock_victim(
        self: &Arc<Self>,
        ctl: &Arc<CallCtl>,
        cycle: &warden_core::locks::DeadlockCycle,
    ) {
        self.rt.events.emit(Some(self.id), Some(ctl.id), || {
            EventKind::DeadlockDetected {
                cycle: cycle.edges.iter().map(describe_edge).collect(),
            }
        });
        let action = self.decide(ctl, Failure::Deadlock);
        // `throw` is the -2 the guest sees; anything stronger also ends the call.
        if action > Action::Throw {
            self.apply_action(Some(ctl), action, AbortReason::Deadlock);
        }
    }

    /// The policy's action for a failure of `ctl`, recorded as an `escalation` event.
    pub(crate) fn decide(&self, ctl: &CallCtl, failure: Failure) -> Action {
        let critical = ctl.abort.is_critical();
        let action = self.rt.policy.decide(failure, critical);
        self.rt
            .events
            .emit(Some(self.id), Some(ctl.id), || EventKind::Escalation {
                failure: Some(failure.to_string()),
                operation: None,
                action: action.to_string(),
                critical,
            });
        action
    }

    /// Carries out an operation's default action (resolved by the policy) on a call.
    pub(crate) fn apply_operation(
        self: &Arc<Self>,
        ctl: &Arc<CallCtl>,
        op: Operation,
        reason: AbortReason,
    ) {
        let critical = ctl.abort.is_critical();
        // A rude abort of a call in a critical region is the `rude-abort-critical` operation.
        let op = if op == Operation::RudeAbort && critical {
            Operation::RudeAbortCritical
        } else {
            op
        };
        let policy = &self.rt.policy;
        let action = policy.resolve_for(policy.operation(op).default, critical);
        self.record_operation(Some(ctl), op, action);
        self.apply_action(Some(ctl), action, reason);
    }

    /// Records an operation's decided action as an `escalation` event (with the call it
    /// concerns, and whether that call was critical).
    pub(crate) fn record_operation(&self, call: Option<&CallCtl>, op: Operation, action: Action) {
        self.rt.events.emit(Some(self.id), call.map(|c| c.id), || {
            EventKind::Escalation {
                failure: None,
                operation: Some(op.to_string()),
                action: action.to_string(),
                critical: call.is_some_and(|c| c.abort.is_critical()),
            }
        });
    }

    /// Carries out an action on this domain (and its call, when one is named).
    pub(crate) fn apply_action(
        self: &Arc<Self>,
        ctl: Option<&Arc<CallCtl>>,
        action: Action,
        reason: AbortReason,
    ) {
        match action {
            Action::None => {}
            // On a running call, failing it means unwinding it.
            Action::Throw | Action::Abort => {
                if let Some(ctl) = ctl {
                    ctl.request_abort(self, AbortKind::Polite, reason);
                }
            }
            Action::RudeAbort => {
                if let Some(ctl) = ctl {
                    ctl.request_abort(self, AbortKind::Rude, reason);
                }
            }
            Action::UnloadDomain | Action::RudeUnloadDomain => {
                if let Some(ctl) = ctl {
                    ctl.set_reason(reason);
                }
                // Synchronously: entry is blocked and the running call's abort requested
                // before the failed call's outcome is reported, so no later call runs in a
                // domain presumed inconsistent, and a guest backing out (a deadlock victim
                // releasing its locks) is unwound where it leaves its deferred state.
                self.start_unload(action == Action::RudeUnloadDomain);
            }
            Action::ExitProcess | Action::FastExitProcess | Action::RudeExitProcess => {
                self.rt.apply_process_action(action)
            }
            // The process stays up, so the failed call must not go on running: a disabled
            // runtime does at least what a rude unload does (escalation only moves up).
            Action::DisableRuntime => {
                self.rt.apply_process_action(action);
                if let Some(ctl) = ctl {
                    ctl.set_reason(reason);
                    self.start_unload(true);
                }
            }
        }
    }

    /// Runs guest code (`fut`, which borrows the store) for `ctl` until it finishes or the
    /// domain is killed, firing the deadline and the abort escalation timers meanwhile.
    pub(crate) async fn drive<T>(
        self: &Arc<Self>,
        ctl: &Arc<CallCtl>,
        fut: impl std::future::Future<Output = wasmtime::Result<T>>,
        deadline: Option<Instant>,
    ) -> Driven<T> {
        let fut = std::pin::pin!(fut);
        // Counts the time the guest spends parked in host waits (`host::HostTimed`).
        let mut fut = crate::host::HostTimed::new(fut, ctl);
        let mut kill = self.kill.subscribe();
        let mut deadline = deadline.map(tokio::time::Instant::from_std);
        // The escalation timer: which operation is being bounded, and until when.
        let mut armed: Option<(Operation, tokio::time::Instant)> = None;
        // Operations whose timeout already fired: each escalates once per call.
        let mut timed_out: Vec<Operation> = Vec::new();
        let policy = &self.rt.policy;
        loop {
            let kicked = ctl.kick.notified();
            let changed = ctl.abort.changed();
            // The host-call layer: the guest is parked (in a host wait, or at an epoch yield)
            // whenever this loop runs, so a deliverable abort lands here, for every import.
            // Dropping the call future unwinds the guest; the store stays usable.
            if let Err(abort) = crate::host::deliver_if_due(self, ctl) {
                return Driven::Finished(Err(abort));
            }
            tokio::select! {
                biased;
                _ = kill.wait_for(|k| *k) => return Driven::Killed,
                r = &mut fut => return Driven::Finished(r),
                _ = sleep_until(deadline) => {
                    deadline = None;
                    let action = self.decide(ctl, Failure::Deadline);
                    self.apply_action(Some(ctl), action, AbortReason::Deadline);
                }
                _ = sleep_until(armed.map(|a| a.1)) => {
                    let (op, _) = armed.take().expect("armed timer fired");
                    timed_out.push(op);
                    let critical = ctl.abort.is_critical();
                    let action = policy.resolve_for(policy.operation(op).on_timeout, critical);
                    self.record_operation(Some(ctl), op, action);
                    let rude_timed_out = op != Operation::Abort;
                    if rude_timed_out && action == Action::RudeUnloadDomain {
                        // Dropping the domain needs no cooperation from the guest.
                        self.set_rude();
                        self.kill.send_replace(true);
                    }
                    self.apply_action(Some(ctl), action, AbortReason::Policy);
                }
                _ = kicked => {}
                _ = changed => {}
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
}

fn describe_edge(e: &warden_core::locks::WaitEdge) -> String {
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

/// How a stretch of guest code ended.
pub(crate) enum Driven<T> {
    Finished(wasmtime::Result<T>),
    Killed,
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
