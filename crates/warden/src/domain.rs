//! Domains: one store, one instance of one module, one call at a time.
//!
//! Each domain is owned by a worker task that holds its wasmtime `Store`. Calls are queued to
//! the worker and run one after another; concurrency comes from many domains. The worker is
//! also where a domain ends: unload blocks entry, aborts the in-flight call (politely or
//! rudely, per policy), fails queued calls with `domain_unloaded`, runs the guest's
//! `warden_on_unload` finalizer (polite unload only), releases everything the domain held,
//! and drops the store. A call that will not yield to a rude abort (it sits in a constrained
//! region) is ended by dropping its future — the store goes with it — so no guest can hold
//! its domain past the policy's bounds.

use crate::escalation::Driven;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use warden_core::abort::AbortKind;
use warden_core::budget::{AccountStats, MemoryAccount};

use crate::call::{
    AbortReason, CallCtl, CallError, CallHandle, CallOptions, CallOutput, CallResult, kind_str,
};
use crate::engine::Module;
use crate::error::Error;
use crate::events::EventKind;
use crate::handles::DomainHandles;
use crate::ids::DomainId;
use crate::memory::GuestMemory;
use crate::runtime::RuntimeInner;

/// Per-domain limits and environment.
#[derive(Clone, Debug)]
pub struct DomainConfig {
    /// Linear memory the domain may hold, summed over its memories. Default 1 GiB.
    pub max_memory: u64,
    /// Elements any one table may hold. Default 1,000,000.
    pub max_table_elements: usize,
    /// Instances the domain may create. Default 1 (a domain is one instance of one module).
    pub max_instances: usize,
    /// Memories the domain may create. Default 1.
    pub max_memories: usize,
    /// Tables the domain may create. Default 4.
    pub max_tables: usize,
    /// Bound on instantiation (a start function is guest code too). Default 10 s.
    pub start_deadline: Option<Duration>,
    /// Live handles the domain's handle table may hold (open, or closed but still borrowed);
    /// clamped to [`warden_core::handles::MAX_QUOTA`]. Default 4096.
    pub max_handles: usize,
    /// WASI settings, for modules that import `wasi_snapshot_preview1`.
    pub wasi: WasiConfig,
}

impl Default for DomainConfig {
    fn default() -> Self {
        DomainConfig {
            max_memory: 1 << 30,
            max_table_elements: 1_000_000,
            max_instances: 1,
            max_memories: 1,
            max_tables: 4,
            start_deadline: Some(Duration::from_secs(10)),
            max_handles: 4096,
            wasi: WasiConfig::default(),
        }
    }
}

/// WASI preview1 settings. Environment is off unless given; stdout and stderr are inherited
/// (through bounded buffers: see [`stdio`](crate::stdio)).
#[derive(Clone, Debug)]
pub struct WasiConfig {
    /// `argv`, program name first.
    pub args: Vec<String>,
    /// Environment variables the guest sees.
    pub env: Vec<(String, String)>,
    /// Inherit the host's stdout and stderr (default true).
    pub inherit_stdio: bool,
    /// Inherit the host's stdin (default false: a server's stdin is not the guest's).
    pub inherit_stdin: bool,
    /// The guest's stdin, fed by the embedder (overrides `inherit_stdin`).
    pub stdin: Option<crate::stdio::GuestInput>,
    /// Where the guest's stdout goes (overrides `inherit_stdio` for stdout).
    pub stdout: Option<crate::stdio::GuestOutput>,
    /// Where the guest's stderr goes (overrides `inherit_stdio` for stderr).
    pub stderr: Option<crate::stdio::GuestOutput>,
}

impl Default for WasiConfig {
    fn default() -> Self {
        WasiConfig {
            args: Vec::new(),
            env: Vec::new(),
            inherit_stdio: true,
            inherit_stdin: false,
            stdin: None,
            stdout: None,
            stderr: None,
        }
    }
}

/// What an unload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnloadReport {
    /// Whether the unload ended rude (requested rude, or escalated to it).
    pub rude: bool,
    /// Queued or in-flight calls that failed with `domain_unloaded`.
    pub calls_failed: u64,
    /// Whether the guest finalizer ran to completion.
    pub finalizer_ran: bool,
    /// Handles closed by the critical release. Each is released then, or when the host use
    /// that borrows it (a [`HandleGuard`](crate::HandleGuard)) ends.
    pub handles_released: u64,
    /// Host locks released (poisoned).
    pub locks_released: u64,
    /// Memory-gate bytes returned.
    pub reservations_released: u64,
    /// Linear memory and table bytes returned to the budget.
    pub memory_released: u64,
}

pub(crate) const LOADED: u8 = 0;
pub(crate) const UNLOADING: u8 = 1;
pub(crate) const UNLOADED: u8 = 2;

/// The store's data: everything a domain's guest code can reach through the host.
pub(crate) struct DomainState {
    pub(crate) wasi: Option<wasmtime_wasi::p1::WasiP1Ctx>,
    pub(crate) memory: GuestMemory,
    /// The call running now (read by the epoch callback and host functions).
    pub(crate) call: Option<Arc<CallCtl>>,
    pub(crate) dom: Arc<DomainShared>,
}

pub(crate) struct CallRequest {
    pub(crate) ctl: Arc<CallCtl>,
    pub(crate) export: String,
    pub(crate) args: Vec<wasmtime::Val>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) reply: oneshot::Sender<CallResult>,
}

/// State shared by a domain's handles, its worker and its calls.
pub(crate) struct DomainShared {
    pub(crate) id: DomainId,
    pub(crate) rt: Arc<RuntimeInner>,
    pub(crate) module: Module,
    pub(crate) state: watch::Sender<u8>,
    pub(crate) rude: AtomicU8,
    pub(crate) kill: watch::Sender<bool>,
    pub(crate) tx: Mutex<Option<mpsc::UnboundedSender<CallRequest>>>,
    pub(crate) current: Mutex<Option<Arc<CallCtl>>>,
    pub(crate) done: watch::Sender<Option<UnloadReport>>,
    pub(crate) calls_failed: AtomicU64,
    /// Bytes of linear memory and tables the domain holds now (mirrors its account).
    pub(crate) memory_used: AtomicU64,
    /// The domain's account with the process memory budget.
    pub(crate) account: Arc<MemoryAccount>,
    /// Host locks its calls left held (released poisoned), for the unload report.
    pub(crate) locks_released: AtomicU64,
    /// Memory-gate bytes returned by calls the unload ended, for the unload report.
    pub(crate) reservations_released: AtomicU64,
    /// Requests to run the finalizer at process exit, without unloading (shutdown.rs).
    pub(crate) at_exit: mpsc::UnboundedSender<oneshot::Sender<bool>>,
    /// The finalizer has been claimed (it runs at most once: at exit or at unload).
    pub(crate) finalized: AtomicBool,
    /// The domain's host resources (see `handles.rs`).
    pub(crate) handles: DomainHandles,
    /// Set when `begin_unload` is done; the worker waits for it before running any more
    /// guest code, so the finalizer never races the abort meant for the call in flight.
    pub(crate) unload_begun: watch::Sender<bool>,
}

/// A handle to a domain. Cloning shares the domain; when the last `Domain` handle is dropped
/// the domain is unloaded politely in the background.
#[derive(Clone)]
pub struct Domain {
    pub(crate) shared: Arc<DomainShared>,
    _owner: Arc<Owner>,
}

/// Unloads the domain when the last embedder handle goes.
struct Owner(Arc<DomainShared>);

impl Drop for Owner {
    fn drop(&mut self) {
        let shared = self.0.clone();
        if shared.is_loaded() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    shared.request_unload(false).await;
                });
            } else {
                // No runtime to run the protocol on: closing the queue makes the worker
                // (if it still runs) unload by itself.
                shared.block_entry();
            }
        }
    }
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain")
            .field("id", &self.shared.id)
            .field("module", &self.shared.module.digest())
            .finish()
    }
}

impl Domain {
    pub(crate) async fn create(
        rt: &Arc<RuntimeInner>,
        module: &Module,
        config: DomainConfig,
    ) -> Result<Domain, Error> {
        rt.admit().map_err(Error::Call)?;
        rt.check_imports(module)?;
        let id = DomainId::next();
        let (tx, rx) = mpsc::unbounded_channel();
        let (at_exit, at_exit_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(DomainShared {
            id,
            rt: rt.clone(),
            module: module.clone(),
            state: watch::Sender::new(LOADED),
            rude: AtomicU8::new(0),
            kill: watch::Sender::new(false),
            tx: Mutex::new(Some(tx)),
            current: Mutex::new(None),
            done: watch::Sender::new(None),
            calls_failed: AtomicU64::new(0),
            memory_used: AtomicU64::new(0),
            account: Arc::new(rt.budget.account_limited(config.max_memory)),
            locks_released: AtomicU64::new(0),
            reservations_released: AtomicU64::new(0),
            at_exit,
            finalized: AtomicBool::new(false),
            handles: DomainHandles::new(config.max_handles, id, Arc::downgrade(rt)),
            unload_begun: watch::Sender::new(false),
        });
        let wasi = module
            .inner
            .imports()
            .any(|i| i.module() == "wasi_snapshot_preview1")
            .then(|| build_wasi(&config.wasi));
        let state = DomainState {
            wasi,
            memory: GuestMemory::new(shared.clone(), &config),
            call: None,
            dom: shared.clone(),
        };
        let mut store = wasmtime::Store::new(&rt.engine.engine, state);
        store.limiter(|s| s);
        store.epoch_deadline_callback(epoch_check);
        store.set_epoch_deadline(1);

        // Instantiation runs the start function: guest code, so it runs as a call, with
        // the call's outcome and `call_finished` when it fails.
        let ctl = CallCtl::new(id, false);
        store.data_mut().call = Some(ctl.clone());
        shared.set_current(Some(ctl.clone()));
        let started = Instant::now();
        let deadline = config.start_deadline.and_then(|d| started.checked_add(d));
        let linker = &rt.linker;
        let inner_module = &module.inner;
        let ran = {
            let fut = linker.instantiate_async(&mut store, inner_module);
            shared.drive(&ctl, fut, deadline).await
        };
        shared.set_current(None);
        store.data_mut().call = None;
        shared.end_of_call(&ctl);
        let instance = match ran {
            Driven::Finished(Ok(instance)) => instance,
            Driven::Finished(Err(e)) => {
                let refused = store.data().memory.initial_refused;
                let (result, err) = crate::start::failed(&ctl, e, refused);
                shared.mark_unloaded();
                if let Err(call_err) = &result {
                    // A failing start function is a failure like any other (the domain is
                    // gone already, so only the process actions have anything left to do).
                    shared.decide_failure(&ctl, call_err);
                }
                shared.report_start(&ctl, &result, started);
                return Err(err);
            }
            Driven::Killed => {
                shared.mark_unloaded();
                let result = Err(CallError::DomainUnloaded);
                shared.report_start(&ctl, &result, started);
                return Err(Error::Call(CallError::DomainUnloaded));
            }
        };
        rt.register(&shared);
        rt.events.emit(Some(id), None, || EventKind::DomainLoaded {
            module: module.digest().to_string(),
        });
        let worker = shared.clone();
        tokio::spawn(async move { worker.run(store, instance, rx, at_exit_rx).await });
        Ok(Domain {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        })
    }

    /// The domain's id (as in events).
    pub fn id(&self) -> DomainId {
        self.shared.id
    }

    /// The module this domain instantiates.
    pub fn module(&self) -> &Module {
        &self.shared.module
    }

    /// Whether the domain still admits calls.
    pub fn is_loaded(&self) -> bool {
        self.shared.is_loaded()
    }

    /// Bytes of linear memory and tables the domain holds now.
    pub fn memory_used(&self) -> u64 {
        self.shared.memory_used.load(Ordering::Relaxed)
    }

    /// The domain's memory figures: linear memory and tables charged to the process budget
    /// (`used`, `peak`), memory-gate bytes it holds (`reserved`), growths denied.
    pub fn memory_stats(&self) -> AccountStats {
        self.shared.account.stats()
    }

    /// Whether a call is running in the domain now.
    pub fn is_busy(&self) -> bool {
        self.shared.is_busy()
    }

    /// Starts a call of `export` with `args`. The call queues behind the domain's running call.
    /// Errors here are about the request itself (no such export, wrong arguments); every
    /// outcome of the call, including admission failures, comes from [`CallHandle::join`].
    pub fn call(
        &self,
        export: &str,
        args: &[wasmtime::Val],
        options: CallOptions,
    ) -> Result<CallHandle, Error> {
        self.shared.call(export, args, options)
    }

    /// Runs a call to completion: [`call`](Self::call) then [`CallHandle::join`].
    pub async fn invoke(
        &self,
        export: &str,
        args: &[wasmtime::Val],
        options: CallOptions,
    ) -> Result<CallOutput, Error> {
        Ok(self.call(export, args, options)?.join().await?)
    }

    /// Unloads the domain politely: block entry, abort the in-flight call (deferral
    /// honoured), run `warden_on_unload`, release everything, drop the store. This is the
    /// policy's `unload-domain` operation: its default action may make the unload rude (or
    /// an exit action, which is taken before the unload runs), and its timeout bounds it.
    /// Concurrent and repeated unloads all get the one result.
    pub async fn unload(&self) -> UnloadReport {
        self.shared.request_unload(false).await
    }

    /// Unloads the domain rudely: block entry, rude abort, no finalizer, release, drop.
    /// This is the policy's `rude-unload-domain` operation (its default action applies).
    pub async fn rude_unload(&self) -> UnloadReport {
        self.shared.request_unload(true).await
    }

    /// Waits until the domain has been unloaded (by anyone) and returns the report.
    pub async fn unloaded(&self) -> UnloadReport {
        self.shared.wait_unloaded().await
    }
}

impl DomainShared {
    pub(crate) fn is_loaded(&self) -> bool {
        *self.state.borrow() == LOADED
    }

    pub(crate) fn is_busy(&self) -> bool {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    pub(crate) fn set_current(&self, ctl: Option<Arc<CallCtl>>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = ctl;
    }

    pub(crate) fn current(&self) -> Option<Arc<CallCtl>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn block_entry(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    pub(crate) fn mark_unloaded(&self) {
        self.block_entry();
        self.state.send_replace(UNLOADED);
        self.done.send_replace(Some(UnloadReport::default()));
    }

    fn call(
        self: &Arc<Self>,
        export: &str,
        args: &[wasmtime::Val],
        options: CallOptions,
    ) -> Result<CallHandle, Error> {
        check_signature(&self.module, export, args)?;
        let ctl = CallCtl::new(self.id, options.background);
        let (reply, rx) = oneshot::channel();
        let handle = CallHandle {
            ctl: ctl.clone(),
            domain: self.clone(),
            rx,
            started: Instant::now(),
        };
        let refuse = |err: CallError, reply: oneshot::Sender<CallResult>| {
            self.finish(&ctl, Err(err), Instant::now(), reply);
        };
        if let Err(e) = self.rt.admit() {
            refuse(e, reply);
            return Ok(handle);
        }
        if let Some(bytes) = options.reserve {
            // The memory gate: a soft OOM before any work starts, never an escalation.
            match self.account.reserve(bytes) {
                Ok(r) => ctl.gate().keep_declared(r),
                Err(e) => {
                    refuse(
                        CallError::InsufficientMemory {
                            requested: e.requested,
                            available: e.available,
                        },
                        reply,
                    );
                    return Ok(handle);
                }
            }
        }
        let req = CallRequest {
            ctl: ctl.clone(),
            export: export.to_string(),
            args: args.to_vec(),
            deadline: options.deadline,
            reply,
        };
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match tx {
            Some(tx) => {
                if let Err(mpsc::error::SendError(req)) = tx.send(req) {
                    refuse(CallError::DomainUnloaded, req.reply);
                }
            }
            None => refuse(CallError::DomainUnloaded, req.reply),
        }
        Ok(handle)
    }

    /// Reports a call's result exactly once: the `call_finished` event and the reply.
    pub(crate) fn finish(
        &self,
        ctl: &CallCtl,
        result: CallResult,
        started: Instant,
        reply: oneshot::Sender<CallResult>,
    ) {
        let outcome = match &result {
            Ok(_) => crate::call::Outcome::Ok,
            Err(e) => e.outcome(),
        };
        self.rt
            .events
            .emit(Some(self.id), Some(ctl.id), || EventKind::CallFinished {
                outcome,
                elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
                host_ms: ctl.host_nanos.load(Ordering::Relaxed) as f64 / 1e6,
                detail: match &result {
                    Ok(out) => out.exit_code.map(|c| format!("exit code {c}")),
                    Err(e) => e.detail(),
                },
                memory_used: self.account.used(),
            });
        let _ = reply.send(result);
    }

    /// The worker: runs queued calls until unload, then carries the unload out.
    async fn run(
        self: Arc<Self>,
        mut store: wasmtime::Store<DomainState>,
        instance: wasmtime::Instance,
        mut rx: mpsc::UnboundedReceiver<CallRequest>,
        mut at_exit: mpsc::UnboundedReceiver<oneshot::Sender<bool>>,
    ) {
        let _guard = WorkerGuard(self.clone());
        let mut state = self.state.subscribe();
        loop {
            let req = tokio::select! {
                biased;
                _ = state.wait_for(|s| *s != LOADED) => None,
                Some(reply) = at_exit.recv() => Some(Err(reply)),
                r = rx.recv() => r.map(Ok),
            };
            let req = match req {
                None => break,
                Some(Ok(req)) => req,
                Some(Err(reply)) => {
                    self.finalize_at_exit(&mut store, &instance, reply).await;
                    if *self.kill.borrow() {
                        break;
                    }
                    continue;
                }
            };
            self.run_call(&mut store, &instance, req).await;
            if *self.kill.borrow() {
                break;
            }
        }
        // Whether the queue closed (last handle dropped) or unload began: unload now.
        if self.state.send_if_modified(|s| {
            let was_loaded = *s == LOADED;
            if was_loaded {
                *s = UNLOADING;
            }
            was_loaded
        }) {
            self.begin_unload(false);
        }
        self.finish_unload(store, instance, rx).await;
    }

    async fn run_call(
        self: &Arc<Self>,
        store: &mut wasmtime::Store<DomainState>,
        instance: &wasmtime::Instance,
        req: CallRequest,
    ) {
        let CallRequest {
            ctl,
            export,
            args,
            deadline,
            reply,
        } = req;
        let started = Instant::now();
        if let Some(kind) = ctl.abort.take_delivery() {
            // Aborted while still queued: it never runs.
            self.finish(&ctl, Err(ctl.abort_error(kind)), started, reply);
            return;
        }
        if !self.is_loaded() {
            self.calls_failed.fetch_add(1, Ordering::Relaxed);
            self.finish(&ctl, Err(CallError::DomainUnloaded), started, reply);
            return;
        }
        if self.rt.shutdown.is_exiting() {
            // Queued before the exit began, not started: a new call-in all the same.
            self.finish(&ctl, Err(CallError::ProcessExiting), started, reply);
            return;
        }
        self.rt
            .events
            .emit(Some(self.id), Some(ctl.id), || EventKind::CallStarted {
                export: export.clone(),
            });
        store.data_mut().call = Some(ctl.clone());
        self.set_current(Some(ctl.clone()));
        // An unload may have started between the check above and publishing `current`.
        if !self.is_loaded() {
            ctl.request_abort(self, AbortKind::Polite, AbortReason::Unload);
        }
        store.set_epoch_deadline(1);
        let result = match instance.get_func(&mut *store, &export) {
            None => Err(CallError::Trap {
                message: format!("no exported function `{export}`"),
                backtrace: String::new(),
            }),
            Some(func) => {
                let n = func.ty(&*store).results().len();
                let mut results = vec![wasmtime::Val::I32(0); n];
                // A deadline too far to represent never comes.
                let deadline = deadline.and_then(|d| started.checked_add(d));
                let ran = {
                    let fut = func.call_async(&mut *store, &args, &mut results);
                    self.drive(&ctl, fut, deadline).await
                };
                match ran {
                    Driven::Finished(Ok(())) => Ok(CallOutput {
                        values: results,
                        exit_code: None,
                    }),
                    Driven::Finished(Err(e)) => classify(&ctl, e),
                    Driven::Killed => Err(ctl.abort_error(AbortKind::Rude)),
                }
            }
        };
        self.set_current(None);
        store.data_mut().call = None;
        self.end_of_call(&ctl);
        if let Err(e) = &result {
            if e.outcome() == crate::call::Outcome::DomainUnloaded {
                self.calls_failed.fetch_add(1, Ordering::Relaxed);
            }
            self.decide_failure(&ctl, e);
        }
        self.finish(&ctl, result, started, reply);
    }

    /// Clean-up owed at the end of every call, however it ended (even when its future was
    /// dropped): its memory-gate reservations go back, and host locks it still holds are
    /// released, poisoned, and decided as an `orphaned-lock` failure.
    pub(crate) fn end_of_call(self: &Arc<Self>, ctl: &Arc<CallCtl>) {
        let returned = ctl.gate().release_all();
        if !self.is_loaded() {
            // Returned by the unload (the in-flight call it ended), for its report.
            self.reservations_released
                .fetch_add(returned, Ordering::Relaxed);
        }
        if !self.release_orphaned_locks(ctl) {
            return;
        }
        let action = self.decide(ctl, warden_policy::Failure::OrphanedLock);
        if action >= warden_policy::Action::UnloadDomain {
            self.apply_action(Some(ctl), action, AbortReason::Policy);
        }
    }
}

/// If the worker ever ends without finishing its unload, the domain is marked unloaded so no
/// one waits forever. If it panicked (a bug in Warden, not in the guest), the `fatal-runtime`
/// failure is decided by policy (default: rude exit); if it was cancelled (the embedder shut
/// its async runtime down), nothing broke: no fail-fast.
struct WorkerGuard(Arc<DomainShared>);

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        let dom = &self.0;
        if dom.done.borrow().is_some() {
            return;
        }
        dom.mark_unloaded();
        dom.rt.unregister(dom.id);
        if !std::thread::panicking() {
            tracing::debug!(
                "the worker of {} was cancelled (its async runtime ended)",
                dom.id
            );
            return;
        }
        tracing::error!("the worker of {} ended unexpectedly", dom.id);
        let action = dom
            .rt
            .policy
            .decide(warden_policy::Failure::FatalRuntime, false);
        dom.rt
            .events
            .emit(Some(dom.id), None, || EventKind::Escalation {
                failure: Some(warden_policy::Failure::FatalRuntime.to_string()),
                operation: None,
                action: action.to_string(),
                critical: false,
            });
        dom.rt.fatal(
            "a domain's worker ended unexpectedly (it panicked)",
            Some(dom.id),
            dom.current().map(|c| c.id),
            action,
        );
    }
}

/// The error by which an abort unwinds the guest stack.
#[derive(Debug)]
pub(crate) struct AbortSignal(pub(crate) AbortKind);

impl std::fmt::Display for AbortSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} abort delivered", kind_str(self.0))
    }
}

impl std::error::Error for AbortSignal {}

/// Called at every epoch tick (and at every forced check): delivers a deliverable abort,
/// otherwise yields to the executor so many domains share the host's threads fairly.
fn epoch_check(
    cx: wasmtime::StoreContextMut<'_, DomainState>,
) -> wasmtime::Result<wasmtime::UpdateDeadline> {
    if let Some(ctl) = &cx.data().call
        && let Some(kind) = ctl.abort.take_delivery()
    {
        cx.data()
            .dom
            .rt
            .events
            .emit(Some(ctl.domain), Some(ctl.id), || {
                EventKind::AbortDelivered {
                    kind: kind_str(kind),
                }
            });
        return Err(AbortSignal(kind).into());
    }
    if let Some(ctl) = &cx.data().call {
        // Parked in guest code, not in a host call: not host time.
        ctl.at_yield.store(true, Ordering::Relaxed);
    }
    Ok(wasmtime::UpdateDeadline::Yield(1))
}

/// Turns a failed guest run into the call's outcome.
pub(crate) fn classify(ctl: &CallCtl, e: wasmtime::Error) -> CallResult {
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return Ok(CallOutput {
            values: Vec::new(),
            exit_code: Some(exit.0),
        });
    }
    if let Some(kind) = e
        .downcast_ref::<AbortSignal>()
        .map(|s| s.0)
        .or_else(|| ctl.abort.delivered())
    {
        return Err(ctl.abort_error(kind));
    }
    let backtrace = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|b| b.to_string())
        .unwrap_or_default();
    if let Some(wasmtime::Trap::StackOverflow) = e.downcast_ref::<wasmtime::Trap>() {
        return Err(CallError::StackOverflow { backtrace });
    }
    let message = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{}", e.root_cause()),
    };
    if ctl.memory_denied.load(Ordering::SeqCst) {
        return Err(CallError::OutOfMemory {
            detail: format!("memory growth was denied, then: {message}"),
        });
    }
    Err(CallError::Trap { message, backtrace })
}

fn build_wasi(cfg: &WasiConfig) -> wasmtime_wasi::p1::WasiP1Ctx {
    let mut b = wasmtime_wasi::WasiCtxBuilder::new();
    b.args(&cfg.args);
    for (k, v) in &cfg.env {
        b.env(k, v);
    }
    // Through bounded buffers and writer threads (`stdio.rs`): a stalled reader makes guest
    // writes wait abortably, and never holds a thread or std's stdout lock.
    use crate::stdio::GuestOutput;
    let inherit = |o: GuestOutput| cfg.inherit_stdio.then_some(o);
    if let Some(out) = cfg
        .stdout
        .clone()
        .or_else(|| inherit(GuestOutput::stdout()))
    {
        b.stdout(out);
    }
    if let Some(err) = cfg
        .stderr
        .clone()
        .or_else(|| inherit(GuestOutput::stderr()))
    {
        b.stderr(err);
    }
    if let Some(input) = &cfg.stdin {
        b.stdin(input.clone());
    } else if cfg.inherit_stdin {
        b.inherit_stdin();
    }
    b.build_p1()
}

/// Checks that `export` is a function taking `args`' types.
fn check_signature(module: &Module, export: &str, args: &[wasmtime::Val]) -> Result<(), Error> {
    let Some(wasmtime::ExternType::Func(ty)) = module.inner.get_export(export) else {
        return Err(Error::NoSuchExport(export.to_string()));
    };
    // Compared without allocating: this runs on every call.
    let fits =
        ty.params().len() == args.len() && ty.params().zip(args).all(|(p, a)| fits_param(&p, a));
    if !fits {
        let expected: Vec<String> = ty.params().map(|p| p.to_string()).collect();
        let given: Vec<String> = args.iter().map(val_type_name).collect();
        return Err(Error::BadArguments {
            name: export.to_string(),
            expected: expected.join(", "),
            given: given.join(", "),
        });
    }
    Ok(())
}

/// Whether `arg` can be passed for a parameter of type `param` (references are checked by
/// wasmtime itself, against the store they belong to).
fn fits_param(param: &wasmtime::ValType, arg: &wasmtime::Val) -> bool {
    use wasmtime::{Val, ValType};
    match param {
        ValType::I32 => matches!(arg, Val::I32(_)),
        ValType::I64 => matches!(arg, Val::I64(_)),
        ValType::F32 => matches!(arg, Val::F32(_)),
        ValType::F64 => matches!(arg, Val::F64(_)),
        ValType::V128 => matches!(arg, Val::V128(_)),
        ValType::Ref(_) => !matches!(
            arg,
            Val::I32(_) | Val::I64(_) | Val::F32(_) | Val::F64(_) | Val::V128(_)
        ),
    }
}

fn val_type_name(v: &wasmtime::Val) -> String {
    match v {
        wasmtime::Val::I32(_) => "i32".into(),
        wasmtime::Val::I64(_) => "i64".into(),
        wasmtime::Val::F32(_) => "f32".into(),
        wasmtime::Val::F64(_) => "f64".into(),
        wasmtime::Val::V128(_) => "v128".into(),
        _ => "ref".into(),
    }
}
