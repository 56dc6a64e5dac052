//! Unload: the end of a domain. Polite (block entry, abort politely, finalizer, release,
//! drop) or rude (block entry, rude abort, release, drop), bounded by the policy's
//! `unload-domain` and `rude-unload-domain` operations (DESIGN §2 "Domains and unload").

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::sync::mpsc;
use warden_core::abort::AbortKind;
use warden_policy::{Action, Operation};

use crate::call::{AbortReason, CallCtl, CallError};
use crate::domain::{
    CallRequest, DomainShared, DomainState, LOADED, UNLOADED, UNLOADING, UnloadReport,
};
use crate::escalation::Driven;
use crate::events::EventKind;

impl DomainShared {
    pub(crate) fn set_rude(&self) {
        self.rude.store(1, Ordering::SeqCst);
    }

    pub(crate) fn is_rude(&self) -> bool {
        self.rude.load(Ordering::SeqCst) != 0
    }

    /// An unload asked for by the embedder (or by dropping the last handle): the policy's
    /// `unload-domain` / `rude-unload-domain` operation decides what it becomes, then the
    /// unload runs. An `escalation` event records the decision when the policy changes it.
    pub(crate) async fn request_unload(self: &Arc<Self>, rude: bool) -> UnloadReport {
        let mut rude = rude;
        if self.is_loaded() {
            let op = if rude {
                Operation::RudeUnloadDomain
            } else {
                Operation::UnloadDomain
            };
            let asked = if rude {
                Action::RudeUnloadDomain
            } else {
                Action::UnloadDomain
            };
            let policy = &self.rt.policy;
            let action = policy.resolve(policy.operation(op).default);
            if action != asked {
                self.record_operation(self.current().as_deref(), op, action);
                rude |= action >= Action::RudeUnloadDomain;
                // The process action is taken; the unload still runs so that its callers
                // are answered when the process does not end (an embedder's exit hook).
                if action >= Action::ExitProcess {
                    self.rt.apply_process_action(action);
                }
            }
        }
        self.unload(rude).await
    }

    /// Unloads the domain (see [`Domain::unload`]); every caller gets the one report.
    pub(crate) async fn unload(self: &Arc<Self>, rude: bool) -> UnloadReport {
        self.start_unload(rude);
        self.wait_unloaded().await
    }

    /// Starts an unload now: when this returns, entry is blocked and the in-flight call's
    /// abort requested. Only the first caller begins the protocol; a rude request escalates
    /// a polite unload in progress.
    pub(crate) fn start_unload(self: &Arc<Self>, rude: bool) {
        let mut in_flight = None;
        let won = self.state.send_if_modified(|s| {
            let was_loaded = *s == LOADED;
            if was_loaded {
                // Before the new state wakes the worker, which (when idle) goes straight to
                // finish_unload: that must already see the unload as rude, and the call to
                // abort is the one running now, never the finalizer the worker starts next.
                if rude {
                    self.set_rude();
                }
                in_flight = self.current();
                *s = UNLOADING;
            }
            was_loaded
        });
        if rude && !self.is_rude() && *self.state.borrow() == UNLOADING {
            self.escalate_rude();
        }
        if won {
            self.begin_unload_of(rude, in_flight);
            // Without a tokio runtime (an abort from a plain thread) the worker still
            // unloads; only the policy's bounds on it are not watched.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let dom = self.clone();
                handle.spawn(async move { dom.watch_unload().await });
            }
        }
    }

    /// Block entry and abort the in-flight call (the worker does the rest).
    pub(crate) fn begin_unload(self: &Arc<Self>, rude: bool) {
        self.begin_unload_of(rude, self.current());
    }

    /// [`begin_unload`](Self::begin_unload), aborting `in_flight`: the call that was running
    /// when the unload won.
    fn begin_unload_of(self: &Arc<Self>, rude: bool, in_flight: Option<Arc<CallCtl>>) {
        if rude {
            self.set_rude();
        }
        self.rt
            .events
            .emit(Some(self.id), None, || EventKind::DomainUnloading {
                mode: if rude { "rude" } else { "polite" },
            });
        self.block_entry();
        if let Some(ctl) = in_flight {
            let kind = if rude {
                AbortKind::Rude
            } else {
                AbortKind::Polite
            };
            ctl.request_abort(self, kind, AbortReason::Unload);
        }
        self.unload_begun.send_replace(true);
    }

    fn escalate_rude(self: &Arc<Self>) {
        self.set_rude();
        if let Some(ctl) = self.current() {
            ctl.request_abort(self, AbortKind::Rude, AbortReason::Unload);
        }
    }

    /// Bounds the unload by the policy's `unload-domain` and `rude-unload-domain` timeouts.
    async fn watch_unload(self: Arc<Self>) {
        let policy = &self.rt.policy;
        for op in [Operation::UnloadDomain, Operation::RudeUnloadDomain] {
            if op == Operation::UnloadDomain && self.is_rude() {
                continue;
            }
            let bound = policy.operation(op).timeout;
            let finished = match bound {
                Some(t) => tokio::time::timeout(t, self.wait_unloaded()).await.is_ok(),
                None => {
                    self.wait_unloaded().await;
                    true
                }
            };
            if finished {
                return;
            }
            let action = policy.resolve(policy.operation(op).on_timeout);
            self.record_operation(self.current().as_deref(), op, action);
            match action {
                Action::RudeUnloadDomain => {
                    self.escalate_rude();
                    // A rude unload that must end now: drop the store.
                    if op == Operation::RudeUnloadDomain {
                        self.kill.send_replace(true);
                    }
                }
                other => {
                    self.kill.send_replace(true);
                    self.rt.apply_process_action(other);
                }
            }
        }
    }

    pub(crate) async fn wait_unloaded(&self) -> UnloadReport {
        let mut rx = self.done.subscribe();
        match rx.wait_for(|d| d.is_some()).await {
            Ok(r) => r.clone().unwrap_or_default(),
            Err(_) => UnloadReport::default(),
        }
    }

    /// The worker's last act: fail queued calls, run the finalizer, release, drop the store.
    pub(crate) async fn finish_unload(
        self: &Arc<Self>,
        mut store: wasmtime::Store<DomainState>,
        instance: wasmtime::Instance,
        mut rx: mpsc::UnboundedReceiver<CallRequest>,
    ) {
        // The worker sees the state leave LOADED before the unloader has emitted
        // `domain_unloading` and aborted the call in flight; no guest code runs until it has,
        // so the events keep their order and that abort never lands on the finalizer.
        // (`begin_unload` runs synchronously right after the state changes, so this is short.)
        let _ = self.unload_begun.subscribe().wait_for(|begun| *begun).await;
        rx.close();
        while let Ok(req) = rx.try_recv() {
            self.calls_failed.fetch_add(1, Ordering::Relaxed);
            self.finish(
                &req.ctl,
                Err(CallError::DomainUnloaded),
                Instant::now(),
                req.reply,
            );
        }
        let mut finalizer_ran = false;
        if !self.is_rude() && !*self.kill.borrow() {
            finalizer_ran = self.run_finalizer(&mut store, &instance).await;
        } else if instance.get_func(&mut store, "warden_on_unload").is_some() {
            self.rt
                .events
                .emit(Some(self.id), None, || EventKind::FinalizerRan {
                    result: "skipped",
                });
        }
        let memory_released = store.data().memory.used();
        // Critical release: after all guest code, never skipped, never timed out.
        let handles_released = self.release_handles();
        drop(store);
        let report = UnloadReport {
            rude: self.is_rude(),
            calls_failed: self.calls_failed.load(Ordering::Relaxed),
            finalizer_ran,
            handles_released,
            locks_released: self.locks_released.load(Ordering::Relaxed),
            reservations_released: self.reservations_released.load(Ordering::Relaxed),
            memory_released,
        };
        self.state.send_replace(UNLOADED);
        self.rt.unregister(self.id);
        self.rt
            .events
            .emit(Some(self.id), None, || EventKind::DomainUnloaded {
                calls_failed: report.calls_failed,
                handles_released: report.handles_released,
                locks_released: report.locks_released,
                reservations_released: report.reservations_released,
                memory_released: report.memory_released,
            });
        self.done.send_replace(Some(report));
    }

    /// Runs `warden_on_unload` if exported, bounded by the `finalizer-run` operation; at
    /// most once per domain (at exit or at unload, whichever comes first).
    pub(crate) async fn run_finalizer(
        self: &Arc<Self>,
        store: &mut wasmtime::Store<DomainState>,
        instance: &wasmtime::Instance,
    ) -> bool {
        let Some(func) = instance.get_func(&mut *store, "warden_on_unload") else {
            return false;
        };
        let Ok(func) = func.typed::<(), ()>(&*store) else {
            self.rt
                .events
                .emit(Some(self.id), None, || EventKind::FinalizerRan {
                    result: "skipped",
                });
            return false;
        };
        if !self.claim_finalizer() {
            return false;
        }
        let ctl = CallCtl::new(self.id, false);
        store.data_mut().call = Some(ctl.clone());
        self.set_current(Some(ctl.clone()));
        store.set_epoch_deadline(1);
        let bound = self.rt.policy.operation(Operation::FinalizerRun);
        let ran = {
            let fut = func.call_async(&mut *store, ());
            let timer = async {
                match bound.timeout {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending().await,
                }
                let action = self.rt.policy.resolve(bound.on_timeout);
                self.record_operation(Some(&ctl), Operation::FinalizerRun, action);
                if action != Action::None {
                    self.apply_action(Some(&ctl), action, AbortReason::Policy);
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                r = self.drive(&ctl, fut, None) => r,
                _ = timer => unreachable!("the timer never completes"),
            }
        };
        self.set_current(None);
        store.data_mut().call = None;
        self.end_of_call(&ctl);
        let result = match &ran {
            Driven::Finished(Ok(())) => "ok",
            Driven::Finished(Err(_)) if ctl.abort.delivered().is_some() => "timeout",
            Driven::Finished(Err(_)) => "trap",
            Driven::Killed => "timeout",
        };
        self.rt
            .events
            .emit(Some(self.id), Some(ctl.id), || EventKind::FinalizerRan {
                result,
            });
        matches!(ran, Driven::Finished(Ok(())))
    }
}
