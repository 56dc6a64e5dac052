//! The worker: the one owner of a domain's wasmtime store and instance. It runs calls, the
//! finalizer and the end of unload; nothing else touches the store.
//!
//! A [`Worker`] is a value, not a thread. While the domain is idle it is **parked** in the
//! domain's slot; whoever starts work takes it out, runs the work on its own task and hands it
//! back. That is the fast path: `Domain::invoke` on an idle domain runs the guest on the
//! caller's task, with no cross-thread hop. Only when work is already running does a call wait
//! in the domain's queue, and the task holding the worker runs the queue down before parking
//! it (`Worker::drain`, spawned when `Domain::call` finds the worker parked).
//!
//! A caller may drop its future at any point; [`Detach`] makes that safe. It runs the work on
//! the caller's task while the caller polls it, and if the caller drops it first, the rest
//! goes on as a task of its own — so no release, hand-back or report is ever skipped. For a
//! call, being dropped counts as the embedder's abort (the policy's `abort` operation): the
//! call ends `aborted` (or `ok`, if it finished first), its locks and reservations are
//! released, and the domain stays loaded for the next call.
//!
//! If a worker is dropped anyway (a panic in Warden, or a tokio runtime shut down under it), its
//! `Drop` ends the domain: killed, queue failed, critical release, report.

use crate::typed_call::TypedCore;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use warden_core::abort::AbortKind;
use warden_core::lifecycle::FinalizerClaim;
use warden_policy::Operation;

use crate::call::{AbortReason, CallCtl, CallError, CallOutput, CallResult};
use crate::domain::{DomainShared, DomainState, classify};
use crate::escalation::{Driven, Effect, drive, drive_pinned};
use crate::events::EventKind;
use crate::release::CriticalRelease;
use crate::signature::{SigKind, Signature};

/// The guest finalizer's export name (a core module's; a component's is
/// [`component::FINALIZER`](crate::component::FINALIZER)).
pub(crate) const FINALIZER: &str = "warden_on_unload";

/// One admitted call, waiting for (or given to) the worker.
pub(crate) struct CallRequest {
    pub(crate) ctl: Arc<CallCtl>,
    /// The export, checked against `args`.
    pub(crate) sig: Arc<Signature>,
    pub(crate) args: Args,
    pub(crate) deadline: Option<Duration>,
    /// Where the result goes; `None` on the fast path, where it is returned instead.
    pub(crate) reply: Option<oneshot::Sender<CallResult>>,
}

/// A call's arguments: core values for a core module, typed values for a component.
pub(crate) enum Args {
    Core(Vec<wasmtime::Val>),
    Component(Vec<wasmtime::component::Val>),
    /// A byte call of a core export (`domain_call`, `Domain::call_bytes`): the argument.
    Bytes(Vec<u8>),
    /// A `wasi:http/incoming-handler#handle` call: the request, and where the guest's
    /// `response-outparam` sends its answer.
    Http {
        request: Box<hyper::Request<crate::http::HyperIncomingBody>>,
        sender: oneshot::Sender<crate::http::Answer>,
        /// Told how the handler ended, so that a body it never finished ends in an error.
        ending: Arc<crate::http::Ending>,
    },
}

/// A domain's instance.
pub(crate) enum GuestInstance {
    Core(wasmtime::Instance),
    Component(wasmtime::component::Instance),
}

/// An export's function handle (valid as long as the store it came from).
#[derive(Copy, Clone)]
enum GuestFunc {
    Core(wasmtime::Func),
    Component(wasmtime::component::Func),
}

/// The exports (by [`Signature::slot`]) whose function handles a worker keeps.
const CACHED_FUNCS: usize = 64;

struct Parts {
    store: wasmtime::Store<DomainState>,
    instance: GuestInstance,
    /// Function handles of the exports called so far, by [`Signature::slot`]: looking a
    /// function up in the instance costs more than the rest of a warm call's bookkeeping.
    funcs: Vec<Option<GuestFunc>>,
    /// Typed handles of the core exports among them whose signature has one (same index):
    /// called without wasmtime's per-call type lookup (see `typed_call`).
    typed: Vec<Option<TypedCore>>,
    /// A core callee's byte-call ABI (`warden_alloc`, `memory`), looked up at its first byte
    /// call.
    bytes_abi: Option<crate::domain_call::BytesAbi>,
    /// A component whose guest code failed (trapped, was aborted, exited) cannot be entered
    /// again (the component model's rule; see `component.rs`).
    spent: bool,
}

impl Parts {
    /// The function `sig` names, from the cache or looked up once (`None`: not a function of
    /// this instance, or the arguments' kind is not the instance's).
    fn func(&mut self, sig: &Signature) -> Option<GuestFunc> {
        if let Some(Some(f)) = self.funcs.get(sig.slot) {
            return Some(*f);
        }
        // Slots are dense per module, not per domain: past this, a domain that calls one of
        // a big module's later exports would hold a cache the size of the module's.
        let cache = sig.slot < CACHED_FUNCS;
        let found = match (&self.instance, &sig.kind) {
            (GuestInstance::Core(i), SigKind::Core { shape, .. }) => {
                let func = i.get_func(&mut self.store, &sig.name)?;
                if let Some(shape) = shape.filter(|_| cache) {
                    if self.typed.len() <= sig.slot {
                        self.typed.resize_with(sig.slot + 1, || None);
                    }
                    self.typed[sig.slot] = TypedCore::of(shape, func, &self.store);
                }
                GuestFunc::Core(func)
            }
            (GuestInstance::Component(i), SigKind::Component { index, .. }) => {
                GuestFunc::Component(i.get_func(&mut self.store, index)?)
            }
            _ => return None,
        };
        if cache {
            if self.funcs.len() <= sig.slot {
                self.funcs.resize(sig.slot + 1, None);
            }
            self.funcs[sig.slot] = Some(found);
        }
        Some(found)
    }
}

/// The owner of a domain's store. See the [module docs](self).
pub(crate) struct Worker {
    dom: Arc<DomainShared>,
    /// Taken by `finish_unload`; still here when the worker is dropped means it was lost.
    parts: Option<Parts>,
    /// The control block of the last call, when nothing else kept it: renewed for the next
    /// call on the fast path instead of allocating one (see [`call_ctl`](Self::call_ctl)).
    spare_ctl: Option<Arc<CallCtl>>,
}

/// What the worker does after a call, decided under the domain's slot lock.
pub(crate) enum Next {
    /// It was parked: the domain is idle.
    Parked,
    /// Run this queued call next.
    Call(Box<Worker>, CallRequest),
    /// The domain is unloading: finish it.
    Unload(Box<Worker>),
}

impl Worker {
    pub(crate) fn new(
        dom: Arc<DomainShared>,
        store: wasmtime::Store<DomainState>,
        instance: GuestInstance,
        spare_ctl: Arc<CallCtl>,
    ) -> Self {
        Worker {
            dom,
            parts: Some(Parts {
                store,
                instance,
                funcs: Vec::new(),
                typed: Vec::new(),
                bytes_abi: None,
                spent: false,
            }),
            spare_ctl: Some(spare_ctl),
        }
    }

    /// A control block for a new call: the spare one renewed when no one else holds it (a
    /// handle, a timer, a host function that kept it), else a new one. A renewed block is a
    /// new call in every way (new id, no abort, nothing held); only its memory is reused.
    pub(crate) fn call_ctl(
        &mut self,
        domain: crate::ids::DomainId,
        background: bool,
    ) -> Arc<CallCtl> {
        if let Some(mut ctl) = self.spare_ctl.take()
            && let Some(block) = Arc::get_mut(&mut ctl)
        {
            block.renew(domain, background);
            return ctl;
        }
        CallCtl::new(domain, background)
    }

    fn parts(&mut self) -> &mut Parts {
        self.split().1
    }

    /// The domain and the parts, borrowed apart: a call uses both without cloning the
    /// domain's `Arc` (each clone is an atomic read-modify-write, a warm call's main cost).
    fn split(&mut self) -> (&Arc<DomainShared>, &mut Parts) {
        match &mut self.parts {
            Some(parts) => (&self.dom, parts),
            // Only `finish_unload` takes them, and it consumes the worker.
            None => unreachable!("a worker is used after its unload"),
        }
    }

    /// Runs one call to its end and reports it (`call_finished`, then the reply). Returns the
    /// result when the request has no reply channel (the fast path).
    pub(crate) async fn serve(&mut self, mut req: CallRequest) -> Option<CallResult> {
        let (dom, parts) = self.split();
        // Fields used in place, not moved to locals: the call's future holds `req` once.
        let ctl = &req.ctl;
        // The clock is read for a deadline or an event only (a warm call's path is short
        // enough for it to show).
        let started = (req.deadline.is_some() || dom.rt.events.listening()).then(Instant::now);
        let (result, ran) = if let Some(kind) = ctl.abort.take_delivery() {
            // Aborted while still queued: it never runs.
            (Err(ctl.abort_error(kind)), false)
        } else if !dom.life.is_loaded() {
            (Err(CallError::DomainUnloaded), false)
        } else if dom.rt.shutdown.is_exiting() {
            // Queued before the exit began, not started: a new call-in all the same.
            (Err(CallError::ProcessExiting), false)
        } else {
            let result = run(
                dom,
                parts,
                ctl,
                &req.sig,
                &mut req.args,
                req.deadline,
                started,
            );
            (result.await, true)
        };
        // Published when the worker was handed the call, run or not.
        dom.set_current(None);
        if ran && parts.spent {
            // The instance cannot be entered again: the domain ends here, before the outcome
            // is reported, so no later call is admitted to it.
            dom.unload_in_background(false);
        }
        dom.finish_call(ctl, &result, started, ran);
        let out = match req.reply {
            Some(reply) => {
                let _ = reply.send(result);
                None
            }
            None => Some(result),
        };
        if Arc::strong_count(&req.ctl) == 1 {
            self.spare_ctl = Some(req.ctl);
        }
        out
    }
}

/// One call's guest code, from `call_started` to the call's result (see [`Worker::serve`]).
async fn run(
    dom: &Arc<DomainShared>,
    parts: &mut Parts,
    ctl: &Arc<CallCtl>,
    sig: &Signature,
    // Borrowed from the request, which the caller's state holds anyway: moved in, it
    // would be held twice.
    args: &mut Args,
    deadline: Option<Duration>,
    // `Some` when there is a deadline.
    started: Option<Instant>,
) -> CallResult {
    let export: &str = &sig.name;
    dom.rt
        .events
        .emit(Some(dom.id), Some(ctl.id), || EventKind::CallStarted {
            export: export.to_string(),
        });
    let func = parts.func(sig);
    let Parts {
        store,
        spent,
        instance,
        bytes_abi,
        typed,
        ..
    } = parts;
    // Already published as the domain's current call, when the worker was handed it; busy
    // from now.
    ctl.running
        .store(true, std::sync::atomic::Ordering::Release);
    store.data_mut().call = Some(ctl.clone());
    store.set_epoch_deadline(1);
    // A deadline too far to represent never comes.
    let deadline = deadline.and_then(|d| started?.checked_add(d));
    let no_func = || {
        Err(CallError::Trap {
            message: format!("no exported function `{export}`"),
            backtrace: String::new(),
        })
    };
    let ended = |ran: Driven<()>, output: CallOutput| match ran {
        Driven::Finished(Ok(())) => Ok(output),
        Driven::Finished(Err(e)) => classify(ctl, e),
        Driven::Killed => Err(ctl.abort_error(AbortKind::Rude)),
    };
    // A call's future is as large as its largest arm, and the fast path boxes it once per
    // call. Core and component calls pin their guest future in place (no box of their
    // own); the other kinds' futures are boxed where they are made (written inline, not
    // bound to a local that would stay in this state). So the call's box stays within the
    // allocator's small, cached sizes (992 bytes today, checked with `size_of_val`; glibc
    // caches up to 1,032).
    let result = match (func, &mut *args) {
        (Some(GuestFunc::Core(func)), Args::Core(args)) => {
            let mut results = vec![wasmtime::Val::I32(0); sig.results];
            let ran = match typed.get(sig.slot).and_then(Option::as_ref) {
                Some(typed) => {
                    let fut = std::pin::pin!(typed.call(&mut *store, args, &mut results));
                    drive_pinned(dom, ctl, fut, deadline).await
                }
                None => {
                    let fut = std::pin::pin!(func.call_async(&mut *store, args, &mut results));
                    drive_pinned(dom, ctl, fut, deadline).await
                }
            };
            ended(ran, CallOutput::core(results))
        }
        (Some(GuestFunc::Component(func)), Args::Component(args)) => {
            let mut results = vec![wasmtime::component::Val::Bool(false); sig.results];
            // An embedder's component host function that panics traps this call. Pinned
            // in place like a core call's, so this arm is no larger than the core one and
            // needs no box of its own.
            let ran = {
                let call = std::pin::pin!(func.call_async(&mut *store, args, &mut results));
                let fut = std::pin::pin!(crate::host::contain_panics(call));
                drive_pinned(dom, ctl, fut, deadline).await
            };
            *spent = !matches!(ran, Driven::Finished(Ok(())));
            ended(ran, CallOutput::component(results))
        }
        (Some(GuestFunc::Core(func)), Args::Bytes(input)) => match &*instance {
            GuestInstance::Core(instance) => {
                let ran = Box::pin(drive(
                    dom,
                    ctl,
                    crate::domain_call::run_bytes(
                        &mut *store,
                        *instance,
                        bytes_abi,
                        func,
                        std::mem::take(input),
                    ),
                    deadline,
                ))
                .await;
                let mut bytes = Vec::new();
                let ran = ran.map_ok(|b| bytes = b);
                ended(
                    ran,
                    CallOutput {
                        bytes,
                        ..CallOutput::core(Vec::new())
                    },
                )
            }
            GuestInstance::Component(_) => no_func(),
        },
        (_, Args::Http { .. }) => match &*instance {
            // `DomainShared::request` refused an HTTP call to a core module.
            GuestInstance::Core(_) => no_func(),
            GuestInstance::Component(instance) => {
                let Args::Http {
                    request,
                    sender,
                    ending,
                } = std::mem::replace(args, Args::Bytes(Vec::new()))
                else {
                    unreachable!("the arm matched an HTTP call's arguments")
                };
                let ran = Box::pin(async {
                    let handle = std::pin::pin!(crate::http::handle(
                        store,
                        &dom.module,
                        instance,
                        *request,
                        sender,
                    ));
                    drive(dom, ctl, crate::host::contain_panics(handle), deadline).await
                })
                .await;
                *spent = !matches!(ran, Driven::Finished(Ok(())));
                // Before the store (and the body's sender with it) can be dropped.
                ending.set(!*spent);
                ended(ran, CallOutput::component(Vec::new()))
            }
        },
        // `DomainShared::request` matched the arguments to the module's kind.
        _ => no_func(),
    };
    store.data_mut().call = None;
    result
}

impl Worker {
    /// Runs `warden_on_unload` if exported and the lifecycle grants its one claim (at exit, or
    /// in a polite unload), bounded by the `finalizer-run` operation. Whether it ran to its end.
    pub(crate) async fn finalize(&mut self) -> bool {
        if !self.dom.module.has_finalizer() {
            return false;
        }
        let dom = self.dom.clone();
        let Parts {
            store,
            instance,
            spent,
            ..
        } = self.parts();
        let skipped = || {
            dom.rt
                .events
                .emit(Some(dom.id), None, || EventKind::FinalizerRan {
                    result: "skipped",
                })
        };
        let func: Finalizer = match instance {
            GuestInstance::Core(instance) => {
                let Some(func) = instance.get_func(&mut *store, FINALIZER) else {
                    return false;
                };
                let Ok(func) = func.typed::<(), ()>(&*store) else {
                    skipped();
                    return false;
                };
                Finalizer::Core(func)
            }
            GuestInstance::Component(instance) => {
                let index = match &dom.module.code {
                    crate::engine::Code::Component(c) => c.finalizer,
                    crate::engine::Code::Core(_) => None,
                };
                let Some(func) = index.and_then(|i| instance.get_func(&mut *store, i)) else {
                    return false;
                };
                if *spent {
                    // It would only fail with "cannot enter component instance".
                    skipped();
                    return false;
                }
                Finalizer::Component(func)
            }
        };
        // Published before the claim: an unload turned rude after a polite claim then finds
        // the finalizer to abort (published after, it would find nothing, and the finalizer
        // would run on, bounded only by the policy).
        let ctl = CallCtl::new(dom.id, false);
        ctl.running
            .store(true, std::sync::atomic::Ordering::Release);
        dom.set_current(Some(ctl.clone()));
        match dom.life.claim_finalizer() {
            FinalizerClaim::Run => {}
            claim => {
                dom.set_current(None);
                if claim == FinalizerClaim::Skip {
                    skipped();
                }
                return false;
            }
        }
        store.data_mut().call = Some(ctl.clone());
        store.set_epoch_deadline(1);
        let bound = dom.rt.policy.operation(Operation::FinalizerRun);
        let ran = {
            let fut = async {
                match func {
                    Finalizer::Core(f) => f.call_async(&mut *store, ()).await,
                    Finalizer::Component(f) => {
                        let call = std::pin::pin!(f.call_async(&mut *store, &[], &mut []));
                        crate::host::contain_panics(call).await
                    }
                }
            };
            let timer = async {
                match bound.timeout {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending().await,
                }
                let effect = dom.escalation().finalizer_timed_out(&ctl);
                if effect != Effect::None {
                    dom.carry_out(Some(&ctl), effect, AbortReason::Policy);
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                r = drive(&dom, &ctl, fut, None) => r,
                _ = timer => unreachable!("the timer never completes"),
            }
        };
        dom.set_current(None);
        store.data_mut().call = None;
        // Not a call of the embedder's: released like one, reported as `finalizer_ran`.
        dom.end_guest_code(&ctl);
        let result = match &ran {
            Driven::Finished(Ok(())) => "ok",
            Driven::Finished(Err(_)) if ctl.abort.delivered().is_some() => "timeout",
            Driven::Finished(Err(_)) => "trap",
            Driven::Killed => "timeout",
        };
        dom.rt
            .events
            .emit(Some(dom.id), Some(ctl.id), || EventKind::FinalizerRan {
                result,
            });
        matches!(ran, Driven::Finished(Ok(())))
    }

    /// The slow path's task: runs `first`, then the queue, until the domain is idle (the
    /// worker parks) or unloading (the worker finishes the unload).
    pub(crate) async fn drain(mut self: Box<Self>, first: CallRequest) {
        let mut req = first;
        loop {
            self.serve(req).await;
            let dom = self.dom.clone();
            match dom.after_work(self) {
                Next::Parked => return,
                Next::Call(worker, next) => {
                    self = worker;
                    req = next;
                }
                Next::Unload(worker) => return worker.finish_unload().await,
            }
        }
    }

    /// The end of unload, after the unloader blocked entry, aborted the call in flight and
    /// drained the queue: the finalizer (polite and not killed), the critical release, the
    /// store dropped, the report.
    pub(crate) async fn finish_unload(mut self: Box<Self>) {
        let finalizer_ran = self.finalize().await;
        self.release_and_drop(finalizer_ran);
    }

    /// [`finish_unload`](Self::finish_unload) with no finalizer to run: nothing waits, so
    /// it ends before it returns (no task, no watch over its bounds).
    pub(crate) fn finish_unload_now(&mut self) {
        debug_assert!(!self.dom.module.has_finalizer());
        self.release_and_drop(false);
    }

    /// The unload's end after all guest code: critical release, the store dropped, the
    /// report published.
    fn release_and_drop(&mut self, finalizer_ran: bool) {
        let dom = self.dom.clone();
        let Some(parts) = self.parts.take() else {
            return;
        };
        let memory_released = parts.store.data().memory.used();
        // Critical release: after all guest code, never skipped, never timed out.
        let released = CriticalRelease::of(&dom).domain(None);
        drop(parts);
        dom.publish_unloaded(finalizer_ran, released.handles, memory_released);
    }
}

/// A finalizer found in the instance.
enum Finalizer {
    Core(wasmtime::TypedFunc<(), ()>),
    Component(wasmtime::component::Func),
}

impl Drop for Worker {
    fn drop(&mut self) {
        let Some(parts) = self.parts.take() else {
            return;
        };
        // The store goes without the unload protocol: a bug in Warden (a panic), or a tokio
        // runtime that ended under the domain. Nothing may be left behind either way.
        let memory_released = parts.store.data().memory.used();
        drop(parts);
        self.dom
            .worker_lost(memory_released, std::thread::panicking());
    }
}

/// Work that runs on its caller's task while polled, and on a task of its own if the caller
/// drops it first. See the [module docs](self).
pub(crate) struct Detach<T: Send + 'static> {
    work: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
    /// The call to abort if the caller goes away (the embedder's `abort` operation): the
    /// domain's current call while the work is pending (its id, not a clone of its control
    /// block, so that the worker can reuse the block once the call ends).
    call: Option<(Arc<DomainShared>, crate::ids::CallId)>,
}

impl<T: Send + 'static> Detach<T> {
    /// `work`, which must finish what it starts even when no one waits for its output.
    pub(crate) fn new(work: impl Future<Output = T> + Send + 'static) -> Self {
        Detach {
            work: Some(Box::pin(work)),
            call: None,
        }
    }

    /// Like [`new`](Self::new), for a call: if the caller goes away, the call is aborted.
    pub(crate) fn call(
        dom: Arc<DomainShared>,
        call: crate::ids::CallId,
        work: Pin<Box<dyn Future<Output = T> + Send>>,
    ) -> Self {
        Detach {
            work: Some(work),
            call: Some((dom, call)),
        }
    }
}

impl<T: Send + 'static> Future for Detach<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let Some(work) = self.work.as_mut() else {
            return Poll::Pending;
        };
        let out = std::task::ready!(work.as_mut().poll(cx));
        self.work = None;
        Poll::Ready(out)
    }
}

impl<T: Send + 'static> Drop for Detach<T> {
    fn drop(&mut self) {
        let Some(work) = self.work.take() else {
            return;
        };
        // Pending work has not reached the end of its call (`Worker::serve` clears the
        // current call, then returns without waiting), so the current call is this one.
        if let Some((dom, id)) = self.call.take()
            && let Some(ctl) = dom.current().filter(|c| c.id == id)
        {
            dom.operation(&ctl, Operation::Abort, AbortReason::Embedder);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    work.await;
                });
            }
            // No runtime to finish on: dropping the work drops the worker inside it, whose
            // `Drop` ends the domain (wasmtime unwinds a suspended guest stack on drop).
            Err(_) => drop(work),
        }
    }
}
