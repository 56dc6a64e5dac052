//! Domains: one store, one instance of one module or component, one call at a time.
//!
//! A domain is made of parts, each with one owner, so that a change to one of them does not
//! need the others read first:
//!
//! - [`Domain`] is the embedder's handle; the last one dropped unloads the domain politely.
//! - `DomainShared` (this module) is what the handles, the calls and the guest's host
//!   functions share: the domain's identity, its [`Lifecycle`] word, its **slot** (the parked
//!   worker, the queue of admitted calls, the call in flight), its memory account and its
//!   handle table. Its methods are the lifecycle's steps: admit a call, queue it or take the
//!   idle worker, hand the worker back, begin an unload, carry out an escalation effect,
//!   publish the unload report. Each step that ends something releases what it owes before it
//!   returns, so dropping any future (create, call, join, unload) never skips a release.
//! - [`Lifecycle`] (in `warden-core`, model-checked with loom) is the one state word: loaded →
//!   unloading {polite, rude} → killed → unloaded, the count of admitted calls, and the claim
//!   on the finalizer. "Idle, so unload me" is one transition of it.
//! - The `Worker` (`worker.rs`) owns the store and the instance and runs calls, the finalizer
//!   and the end of unload. On an idle domain it runs on the caller's task (no hop).
//! - `CriticalRelease` (`release.rs`) gives back locks, reservations and handles, in
//!   DESIGN's order, for every path that ends a call or a domain (unload and exit alike).
//! - `Escalation` (`escalation.rs`) decides; it returns an effect that
//!   `DomainShared::carry_out` (or the runtime) carries out.
//! - The unload's bounds are watched by `unload.rs`.
//!
//! Unload blocks entry, aborts the in-flight call (politely or rudely, per policy), fails
//! queued calls with `domain_unloaded`, runs the guest's `warden_on_unload` finalizer (polite
//! unload only), releases everything the domain held, and drops the store. A call that will
//! not yield to a rude abort (it sits in a constrained region) is ended by killing the domain:
//! its future is dropped and the store goes with it, so no guest can hold its domain past the
//! policy's bounds.
//!
//! A domain holds a core module or a component (see [`component`](crate::component)): the
//! store, the worker, `drive`, the lifecycle and every release are the same for both; only
//! instantiation, export lookup and the WASI context (preview1 or preview2) differ.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};
use warden_core::abort::AbortKind;
use warden_core::budget::{AccountStats, MemoryAccount};
use warden_core::lifecycle::{Lifecycle, UnloadStep};
use warden_policy::{Action, Operation};

pub use crate::wasi::WasiConfig;

use crate::call::{
    AbortReason, CallCtl, CallError, CallHandle, CallOptions, CallOutput, CallResult, kind_str,
};
use crate::engine::{Code, Module};
use crate::error::Error;
use crate::escalation::{Driven, Effect, Escalation, drive};
use crate::events::EventKind;
use crate::handles::DomainHandles;
use crate::ids::DomainId;
use crate::memory::GuestMemory;
use crate::release::{CriticalRelease, Tally};
use crate::runtime::{Pre, RuntimeInner};
use crate::scheduler::AtTick;
use crate::signature::{LastSignature, Signature};
use crate::worker::{Args, CallRequest, Detach, GuestInstance, Next, Worker};

/// Per-domain limits and environment.
#[derive(Clone, Debug)]
pub struct DomainConfig {
    /// Linear memory the domain may hold, summed over its memories. Default 1 GiB.
    pub max_memory: u64,
    /// Elements any one table may hold. Default 1,000,000.
    pub max_table_elements: usize,
    /// Core instances the domain may create. A core module is one; a component instantiates
    /// each core module inside it (its code, and the shims and adapters tools add for its
    /// imports). Default 16.
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
    /// WASI settings, for modules that import `wasi_snapshot_preview1` and for components
    /// (preview2); see [`wasi`](crate::wasi).
    pub wasi: WasiConfig,
    /// HTTP options for a `wasi:http/proxy` component (see [`http`](crate::http)): by
    /// default every outbound request is denied.
    pub http: crate::http::HttpConfig,
    /// What the guest may import ([`capability`](crate::capability)), checked before any
    /// guest code runs. Default [`Grant::UNSAFE`](crate::Grant::UNSAFE): everything, as before
    /// grants existed; `warden run` defaults to `external`, `warden serve` apps to `safe`.
    pub grant: crate::capability::Grant,
}

impl Default for DomainConfig {
    fn default() -> Self {
        DomainConfig {
            max_memory: 1 << 30,
            max_table_elements: 1_000_000,
            max_instances: 16,
            max_memories: 1,
            max_tables: 4,
            start_deadline: Some(Duration::from_secs(10)),
            max_handles: 4096,
            wasi: WasiConfig::default(),
            http: crate::http::HttpConfig::default(),
            grant: crate::capability::Grant::default(),
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

/// The store's data: everything a domain's guest code can reach through the host. Opaque:
/// the embedder names it only as the type of the component linker its interfaces are linked
/// into, and reaches its own state through [`ComponentHost`](crate::host::ComponentHost).
pub struct DomainState {
    pub(crate) wasi: Option<wasmtime_wasi::p1::WasiP1Ctx>,
    /// A component's preview2 WASI context and resource table.
    pub(crate) wasi_p2: Option<Box<crate::component::WasiP2>>,
    pub(crate) memory: GuestMemory,
    /// The call running now (read by the epoch callback and host functions).
    pub(crate) call: Option<Arc<CallCtl>>,
    pub(crate) dom: Arc<DomainShared>,
    /// The embedder's per-domain states of a component domain (`host/typed.rs`).
    pub(crate) embedder: crate::host::EmbedderStates,
}

/// The worker when parked, the queue of admitted calls, and the call in flight; one lock, so
/// that taking the worker, queueing behind it and beginning an unload are ordered.
#[derive(Default)]
struct Slot {
    /// `Some` exactly when the domain is idle (then the queue is empty).
    worker: Option<Box<Worker>>,
    queue: VecDeque<CallRequest>,
    /// The guest code running now (a call, the start function or the finalizer). A call is
    /// published here when the worker is handed it, under this lock and only while the domain
    /// is loaded, so an unload (which begins under this lock) always finds the call it must
    /// abort; `Worker::serve` clears it at the call's end.
    current: Option<Arc<CallCtl>>,
}

/// What a domain's handles, its worker, its calls and its host functions share. See the
/// [module docs](self).
pub(crate) struct DomainShared {
    pub(crate) id: DomainId,
    pub(crate) rt: Arc<RuntimeInner>,
    pub(crate) module: Module,
    /// The domain's one state word.
    pub(crate) life: Lifecycle,
    slot: Mutex<Slot>,
    /// The unload report, once unloaded, and its waiters.
    report: OnceLock<UnloadReport>,
    unloaded: Notify,
    /// Calls that failed `domain_unloaded`, for the unload report.
    calls_failed: AtomicU64,
    /// Held by the unloader while it fails the queue it took, after the slot lock: the report
    /// waits for it, since a busy worker may finish the unload meanwhile, and the queue's
    /// calls belong in the report's `calls_failed` (and their events before `domain_unloaded`).
    failing_queue: Mutex<()>,
    /// What critical releases gave back, for the unload report.
    pub(crate) tally: Tally,
    /// Bytes of linear memory and tables the domain holds now (mirrors its account).
    pub(crate) memory_used: AtomicU64,
    /// The domain's account with the process memory budget.
    pub(crate) account: Arc<MemoryAccount>,
    /// The domain's host resources (see `handles.rs`).
    pub(crate) handles: DomainHandles,
    /// The tokio runtime the domain was created on: where detached work runs.
    tokio: tokio::runtime::Handle,
    /// The last export signature looked up (the module keeps them all: `signature.rs`).
    last_signature: LastSignature,
    /// The domains this one's guest may call (`domain_call`), by link name.
    pub(crate) links: crate::domain_call::Links,
}

/// A handle to a domain. Cloning shares the domain; when the last `Domain` handle is dropped
/// the domain is unloaded politely: at once when it is idle and has no finalizer and no
/// handle open, else in the background.
#[derive(Clone)]
pub struct Domain {
    pub(crate) shared: Arc<DomainShared>,
    _owner: Arc<Owner>,
}

/// Unloads the domain when the last embedder handle goes.
struct Owner(Arc<DomainShared>);

impl Drop for Owner {
    fn drop(&mut self) {
        // Begun here, synchronously. An idle domain with no finalizer and no handle open
        // ends here too (`unload_dropped`); else the rest runs on a task that owns the
        // worker, so even a tokio runtime that is gone (the task is dropped unrun) drops the
        // store with it.
        let rude = self.0.resolve_unload(false);
        self.0.unload_dropped(rude);
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

/// Ends a start that its caller abandoned (the `create` future was dropped mid-start): the
/// start function's locks and reservations are released, and the domain is gone.
struct StartGuard {
    dom: Arc<DomainShared>,
    ctl: Arc<CallCtl>,
    armed: bool,
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if self.armed {
            self.dom.set_current(None);
            self.dom.end_guest_code(&self.ctl);
            self.dom.life.kill();
            self.dom.publish_report(UnloadReport::default());
        }
    }
}

impl Domain {
    pub(crate) async fn create(
        rt: &Arc<RuntimeInner>,
        module: &Module,
        config: DomainConfig,
    ) -> Result<Domain, Error> {
        rt.admit().map_err(Error::Call)?;
        let pre = rt.check_imports(module)?;
        // After linking (an unknown import is that error), before anything of the domain.
        rt.check_grant(module, config.grant)?;
        if !config.wasi.preopens.is_empty()
            && !config
                .grant
                .allows(crate::capability::Capability::Filesystem)
        {
            // Preview1's descriptor calls (stdio's) would reach a preopened directory too.
            return Err(Error::Config(format!(
                "wasi.preopens: {} preopened directories, but the grant `{}` does not include \
                 `filesystem`",
                config.wasi.preopens.len(),
                config.grant
            )));
        }
        // Before anything of the domain exists, so a bad grant leaves nothing behind.
        let (wasi, wasi_p2) = match &module.code {
            Code::Core(m) => match m.imports().any(|i| i.module() == "wasi_snapshot_preview1") {
                true => (Some(crate::wasi::builder(&config.wasi)?.build_p1()), None),
                false => (None, None),
            },
            Code::Component(c) => (
                None,
                Some(Box::new(crate::component::WasiP2 {
                    ctx: match c.imports_wasi {
                        true => Some(crate::wasi::builder(&config.wasi)?.build()),
                        false => None,
                    },
                    table: wasmtime::component::ResourceTable::new(),
                    http: crate::http::HttpState::new(&config.http),
                })),
            ),
        };
        let id = DomainId::next();
        let shared = Arc::new(DomainShared {
            id,
            rt: rt.clone(),
            module: module.clone(),
            life: Lifecycle::new(),
            slot: Mutex::new(Slot::default()),
            report: OnceLock::new(),
            unloaded: Notify::new(),
            calls_failed: AtomicU64::new(0),
            failing_queue: Mutex::new(()),
            tally: Tally::default(),
            memory_used: AtomicU64::new(0),
            account: Arc::new(rt.budget.account_limited(config.max_memory)),
            handles: DomainHandles::new(config.max_handles, id, Arc::downgrade(rt)),
            tokio: tokio::runtime::Handle::current(),
            last_signature: LastSignature::default(),
            links: Default::default(),
        });
        let embedder = match &module.code {
            Code::Component(_) => rt.host_functions.make_states(id)?,
            Code::Core(_) => Default::default(),
        };
        let state = DomainState {
            wasi,
            wasi_p2,
            memory: GuestMemory::new(shared.clone(), &config),
            call: None,
            dom: shared.clone(),
            embedder,
        };
        #[cfg(feature = "failpoints")]
        warden_core::failpoint!(
            "store-create",
            Err(Error::Engine("failpoint store-create".into()))
        );
        let mut store = wasmtime::Store::new(&rt.engine.engine, state);
        store.limiter(|s| s);
        store.epoch_deadline_callback(epoch_check);
        store.set_epoch_deadline(1);

        // Instantiation runs the start function: guest code, so it runs as a call, with the
        // call's outcome and `call_finished` when it fails; a dropped `create` future ends it
        // like any other call (the guard).
        let ctl = CallCtl::new(id, false);
        let mut start = StartGuard {
            dom: shared.clone(),
            ctl: ctl.clone(),
            armed: true,
        };
        store.data_mut().call = Some(ctl.clone());
        ctl.running.store(true, Ordering::Release);
        shared.set_current(Some(ctl.clone()));
        let started = Instant::now();
        let deadline = config.start_deadline.and_then(|d| started.checked_add(d));
        let ran = match &pre {
            Pre::Core(pre) => {
                let fut = pre.instantiate_async(&mut store);
                drive(&shared, &ctl, fut, deadline)
                    .await
                    .map_ok(GuestInstance::Core)
            }
            Pre::Component(pre) => {
                let fut = std::pin::pin!(pre.instantiate_async(&mut store));
                drive(&shared, &ctl, crate::host::contain_panics(fut), deadline)
                    .await
                    .map_ok(GuestInstance::Component)
            }
        };
        // Failpoint: the instantiation fails as a start function does (after it ran).
        #[cfg(feature = "failpoints")]
        let ran = match warden_core::failpoints::eval("instantiate") {
            true => Driven::Finished(Err(wasmtime::Error::msg("failpoint instantiate"))),
            false => ran,
        };
        start.armed = false;
        shared.set_current(None);
        store.data_mut().call = None;
        shared.end_guest_code(&ctl);
        let instance = match ran {
            Driven::Finished(Ok(instance)) => instance,
            Driven::Finished(Err(e)) => {
                let refused = store.data().memory.initial_refused;
                let (result, err) = crate::start::failed(&ctl, e, refused);
                shared.life.kill();
                shared.publish_report(UnloadReport::default());
                // A failing start function is a failure like any other (the domain is gone
                // already, so only the process actions have anything left to do).
                if let Err(call_err) = &result
                    && let Effect::Process(action) = shared.escalation().call_failed(&ctl, call_err)
                {
                    rt.apply_process_action(action);
                }
                shared.report_start(&ctl, &result, started);
                return Err(err);
            }
            Driven::Killed => {
                shared.publish_report(UnloadReport::default());
                let result = Err(CallError::DomainUnloaded);
                shared.report_start(&ctl, &result, started);
                return Err(Error::Call(CallError::DomainUnloaded));
            }
        };
        rt.register(&shared);
        rt.events.emit(Some(id), None, || EventKind::DomainLoaded {
            module: module.digest().to_string(),
        });
        // The start's control block is the first call's, renewed (if nothing kept it).
        drop(start);
        let worker = Worker::new(shared.clone(), store, instance, ctl);
        shared.lock_slot().worker = Some(Box::new(worker));
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
        self.shared.life.is_loaded()
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
    ///
    /// The call runs on a task of the domain's own (it goes on whether or not the handle is
    /// joined); [`invoke`](Self::invoke) is the faster way to run a call and wait for it.
    pub fn call(
        &self,
        export: &str,
        args: &[wasmtime::Val],
        options: CallOptions,
    ) -> Result<CallHandle, Error> {
        self.shared.call(export, Args::Core(args.to_vec()), options)
    }

    /// Runs a call to completion: like [`call`](Self::call) then [`CallHandle::join`], but on
    /// an idle domain the guest runs on the caller's task, with no cross-thread hop.
    ///
    /// Dropping the returned future before it completes is the embedder's abort (the policy's
    /// `abort` operation): the call goes on, on its own task, until the abort lands (deferral
    /// honoured, bounded by the policy) or it finishes. It ends `aborted` (or `ok`) in its
    /// `call_finished` event, its locks and reservations are released, and the domain stays
    /// loaded.
    pub async fn invoke(
        &self,
        export: &str,
        args: &[wasmtime::Val],
        options: CallOptions,
    ) -> Result<CallOutput, Error> {
        self.shared
            .invoke(export, Args::Core(args.to_vec()), options)
            .await
    }

    /// Starts a call of a component's export `export` with typed `args`: like
    /// [`call`](Self::call), for a domain that holds a component. The name may be a path
    /// (`pkg:iface/func`, `wasi:cli/run@0.2.0#run`) or a function's own name when only one
    /// function has it (see [`component`](crate::component)). Its results come back in
    /// [`CallOutput::component_values`].
    pub fn call_component(
        &self,
        export: &str,
        args: &[wasmtime::component::Val],
        options: CallOptions,
    ) -> Result<CallHandle, Error> {
        self.shared
            .call(export, Args::Component(args.to_vec()), options)
    }

    /// Runs a call of a component's export to completion: like [`invoke`](Self::invoke)
    /// (same fast path, same abort on drop), with typed values; results in
    /// [`CallOutput::component_values`].
    ///
    /// Core modules and components have separate methods because their values are different
    /// types (`wasmtime::Val` and `wasmtime::component::Val`); calling the other kind's
    /// method is [`Error::NoSuchExport`], naming the method to use.
    pub async fn invoke_component(
        &self,
        export: &str,
        args: &[wasmtime::component::Val],
        options: CallOptions,
    ) -> Result<CallOutput, Error> {
        self.shared
            .invoke(export, Args::Component(args.to_vec()), options)
            .await
    }

    /// Starts a byte call of a core export `export: (ptr i32, len i32) -> i64`: `input` is
    /// copied into the guest's memory (where its `warden_alloc` export says), and the region
    /// the export returns is copied out into [`CallOutput::bytes`]. This is what a guest's
    /// `domain_call` makes in its callee; see [`domain_call`](crate::domain_call) for the ABI.
    pub fn call_bytes(
        &self,
        export: &str,
        input: &[u8],
        options: CallOptions,
    ) -> Result<CallHandle, Error> {
        self.shared
            .call(export, Args::Bytes(input.to_vec()), options)
    }

    /// Lets this domain's guest call `callee` by the name `name` (`domain_call`). Replaces an
    /// earlier link of that name. The link does not keep `callee` loaded: once it is
    /// unloaded, calls through the link fail `-9`. A name must be 1 to 256 bytes.
    pub fn link(&self, name: &str, callee: &Domain) -> Result<(), Error> {
        if !crate::domain_call::valid_link_name(name) {
            return Err(Error::Config(format!(
                "link name must be 1 to {} bytes, got {}",
                crate::domain_call::MAX_LINK_NAME,
                name.len()
            )));
        }
        self.shared.links.insert(name, &callee.shared);
        Ok(())
    }

    /// Removes the link `name` (calls through it fail `-5` from now on); whether it existed.
    pub fn unlink(&self, name: &str) -> bool {
        self.shared.links.remove(name)
    }

    /// Unloads the domain politely: block entry, abort the in-flight call (deferral
    /// honoured), run `warden_on_unload`, release everything, drop the store. This is the
    /// policy's `unload-domain` operation: its default action may make the unload rude (or
    /// an exit action, which is taken before the unload runs), and its timeout bounds it.
    /// Concurrent and repeated unloads all get the one result; dropping the future does not
    /// stop the unload.
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

/// Aborts a queued call whose caller stopped waiting for its answer (a dropped `invoke`).
struct AbortUnlessAnswered(Option<(Arc<DomainShared>, Arc<CallCtl>)>);

impl Drop for AbortUnlessAnswered {
    fn drop(&mut self) {
        if let Some((dom, ctl)) = self.0.take() {
            dom.operation(&ctl, Operation::Abort, AbortReason::Embedder);
        }
    }
}

/// Where an admitted call goes.
enum Queued {
    /// Behind the running work.
    Waiting,
    /// The domain was idle: run it now, with this worker.
    Run(Box<Worker>, CallRequest),
    /// The domain began unloading meanwhile.
    Refused(CallRequest),
}

impl DomainShared {
    fn lock_slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The policy's decisions for this domain.
    pub(crate) fn escalation(&self) -> Escalation<'_> {
        Escalation {
            policy: &self.rt.policy,
            events: &self.rt.events,
            domain: self.id,
        }
    }

    pub(crate) fn is_busy(&self) -> bool {
        let slot = self.lock_slot();
        slot.current
            .as_ref()
            .is_some_and(|c| c.running.load(Ordering::Acquire))
    }

    /// Publishes the guest code running now. False when the domain is no longer loaded (an
    /// unload that began before this could not abort `ctl`: the caller aborts it).
    pub(crate) fn set_current(&self, ctl: Option<Arc<CallCtl>>) -> bool {
        let mut slot = self.lock_slot();
        slot.current = ctl;
        self.life.is_loaded()
    }

    pub(crate) fn current(&self) -> Option<Arc<CallCtl>> {
        self.lock_slot().current.clone()
    }

    /// The signature of `export`, checked against `args` (the request's own errors).
    fn checked(&self, export: &str, args: &Args) -> Result<Arc<Signature>, Error> {
        let sig = self
            .module
            .signatures
            .get(&self.module.code, export, &self.last_signature)?;
        sig.check(export, args)?;
        Ok(sig)
    }

    /// Admission: the runtime admits guest work, the lifecycle counts the call, and the
    /// memory gate grants its declared reservation.
    fn admit(&self, ctl: &CallCtl, options: &CallOptions) -> Result<(), CallError> {
        self.rt.admit()?;
        self.life.admit().map_err(|_| CallError::DomainUnloaded)?;
        // Release, not SeqCst (a plain store on x86): the call reaches whoever may end it
        // through the slot lock or a channel, which orders this store before their swap.
        ctl.admitted.store(true, Ordering::Release);
        if let Some(bytes) = options.reserve {
            // The memory gate: a soft OOM before any work starts, never an escalation.
            let r = self
                .account
                .reserve(bytes)
                .map_err(|e| CallError::InsufficientMemory {
                    requested: e.requested,
                    available: e.available,
                })?;
            ctl.gate().keep_declared(r);
        }
        Ok(())
    }

    pub(crate) fn request(
        &self,
        export: &str,
        args: Args,
        options: &CallOptions,
        reply: Option<oneshot::Sender<CallResult>>,
    ) -> Result<CallRequest, Error> {
        let sig = self.checked(export, &args)?;
        Ok(CallRequest {
            ctl: CallCtl::new(self.id, options.background),
            sig,
            args,
            deadline: options.deadline,
            reply,
        })
    }

    /// Ends a call that never ran: released, counted, reported, answered.
    fn refuse(self: &Arc<Self>, req: CallRequest, err: CallError) -> CallResult {
        let result = Err(err);
        self.finish_call(&req.ctl, &result, None, false);
        match req.reply {
            Some(reply) => {
                let _ = reply.send(result);
                Err(CallError::DomainUnloaded)
            }
            None => result,
        }
    }

    /// Queues an admitted call, or takes the worker when the domain is idle.
    fn enqueue(&self, req: CallRequest) -> Queued {
        let mut slot = self.lock_slot();
        if !self.life.is_loaded() {
            return Queued::Refused(req);
        }
        match slot.worker.take() {
            Some(worker) => {
                slot.current = Some(req.ctl.clone());
                Queued::Run(worker, req)
            }
            None => {
                slot.queue.push_back(req);
                Queued::Waiting
            }
        }
    }

    pub(crate) fn call(
        self: &Arc<Self>,
        export: &str,
        args: Args,
        options: CallOptions,
    ) -> Result<CallHandle, Error> {
        let (reply, rx) = oneshot::channel();
        let req = self.request(export, args, &options, Some(reply))?;
        let handle = CallHandle {
            ctl: req.ctl.clone(),
            domain: self.clone(),
            rx,
            started: Instant::now(),
        };
        if let Err(e) = self.admit(&req.ctl, &options) {
            let _ = self.refuse(req, e);
            return Ok(handle);
        }
        match self.enqueue(req) {
            Queued::Waiting => {}
            Queued::Run(worker, req) => {
                self.tokio.spawn(worker.drain(req));
            }
            Queued::Refused(req) => {
                let _ = self.refuse(req, CallError::DomainUnloaded);
            }
        }
        Ok(handle)
    }

    /// The fast path: on an idle domain the call runs here, on the caller's task.
    async fn invoke(
        self: &Arc<Self>,
        export: &str,
        args: Args,
        options: CallOptions,
    ) -> Result<CallOutput, Error> {
        let sig = self.checked(export, &args)?;
        // Idle: the worker is taken and the call published as current in one lock, and the
        // call runs under the control block the worker kept from its last call.
        let taken = {
            let mut slot = self.lock_slot();
            match self.life.is_loaded() {
                true => slot.worker.take(),
                false => None,
            }
            .map(|mut worker| {
                let ctl = worker.call_ctl(self.id, options.background);
                slot.current = Some(ctl.clone());
                (worker, ctl)
            })
        };
        let (worker, ctl) = match taken {
            Some((worker, ctl)) => (Some(worker), ctl),
            None => (None, CallCtl::new(self.id, options.background)),
        };
        let req = CallRequest {
            ctl,
            sig,
            args,
            deadline: options.deadline,
            reply: None,
        };
        let Some(worker) = worker else {
            return self.invoke_request(req, &options).await;
        };
        if let Err(e) = self.admit(&req.ctl, &options) {
            // Refused after all: the worker goes back (to the queue, or to an unload that
            // began meanwhile) once the call is ended.
            self.set_current(None);
            let result = self.refuse(req, e);
            self.hand_back(worker);
            return Ok(result?);
        }
        let result = self.run_here(worker, req).await;
        Ok(result.unwrap_or(Err(CallError::DomainUnloaded))?)
    }

    /// [`invoke`](Self::invoke) of a request already made (its call id is known).
    pub(crate) async fn invoke_request(
        self: &Arc<Self>,
        mut req: CallRequest,
        options: &CallOptions,
    ) -> Result<CallOutput, Error> {
        if let Err(e) = self.admit(&req.ctl, options) {
            return Ok(self.refuse(req, e)?);
        }
        let worker = {
            let mut slot = self.lock_slot();
            match self.life.is_loaded() {
                true => slot
                    .worker
                    .take()
                    .inspect(|_| slot.current = Some(req.ctl.clone())),
                false => None,
            }
        };
        let Some(worker) = worker else {
            // Busy: queue behind the running work and wait for the answer. Dropping this
            // wait is the embedder's abort, as it is on the fast path.
            let (reply, rx) = oneshot::channel();
            req.reply = Some(reply);
            let mut waiting = AbortUnlessAnswered(Some((self.clone(), req.ctl.clone())));
            match self.enqueue(req) {
                Queued::Waiting => {}
                Queued::Run(worker, req) => {
                    self.tokio.spawn(worker.drain(req));
                }
                Queued::Refused(req) => {
                    let _ = self.refuse(req, CallError::DomainUnloaded);
                }
            }
            let answer = rx.await;
            waiting.0 = None;
            return Ok(answer.unwrap_or(Err(CallError::DomainUnloaded))?);
        };
        let result = self.run_here(worker, req).await;
        Ok(result.unwrap_or(Err(CallError::DomainUnloaded))?)
    }

    /// The fast path's work, built and boxed in a plain function: the call's future (several
    /// KiB) then lives only in its box, not also in `invoke`'s future and each one awaiting
    /// it (each would copy it on every call).
    fn run_here(
        self: &Arc<Self>,
        mut worker: Box<Worker>,
        req: CallRequest,
    ) -> Detach<Option<CallResult>> {
        let dom = self.clone();
        Detach::call(
            self.clone(),
            req.ctl.id,
            Box::pin(async move {
                let result = worker.serve(req).await;
                dom.hand_back(worker);
                result
            }),
        )
    }

    /// The end of a call, however it ended (ran, refused, drained, dropped): released, then
    /// what outlives it escalated, counted in the lifecycle, reported by `call_finished`.
    pub(crate) fn finish_call(
        self: &Arc<Self>,
        ctl: &Arc<CallCtl>,
        result: &CallResult,
        started: Option<Instant>,
        ran: bool,
    ) {
        if ran {
            self.end_guest_code(ctl);
        } else {
            CriticalRelease::of(self).call(ctl);
        }
        // Admitted: queued or in flight (a caller turned away at the door never was).
        let admitted = ctl.admitted.load(Ordering::Acquire);
        if let Err(e) = result {
            if admitted && e.outcome() == crate::call::Outcome::DomainUnloaded {
                self.calls_failed.fetch_add(1, Ordering::Relaxed);
            }
            if ran {
                let effect = self.escalation().call_failed(ctl, e);
                self.carry_out(Some(ctl), effect, AbortReason::Policy);
            }
        }
        // A load and a store, not a swap: a call is finished once, by whoever holds its
        // request (run, refused or drained), and only `admit` and this touch the flag.
        if admitted {
            ctl.admitted.store(false, Ordering::Relaxed);
            self.life.call_ended();
        }
        self.emit_call_finished(ctl, result, started, || match result {
            Ok(out) => out.exit_code.map(|c| format!("exit code {c}")),
            Err(e) => e.detail(),
        });
    }

    /// The one `call_finished` event of a call (or of a start function that gave no domain).
    /// Its `detail` (a trap's message and backtrace) is formatted only for a subscriber.
    pub(crate) fn emit_call_finished(
        &self,
        ctl: &CallCtl,
        result: &CallResult,
        started: Option<Instant>,
        detail: impl FnOnce() -> Option<String>,
    ) {
        let outcome = match result {
            Ok(_) => crate::call::Outcome::Ok,
            Err(e) => e.outcome(),
        };
        self.rt
            .events
            .emit(Some(self.id), Some(ctl.id), || EventKind::CallFinished {
                outcome,
                elapsed_ms: started.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1000.0),
                host_ms: ctl.host_nanos.load(Ordering::Relaxed) as f64 / 1e6,
                detail: detail(),
                memory_used: self.account.used(),
            });
    }

    /// Owed at the end of every stretch of guest code (call, start function, finalizer): the
    /// critical release of what it holds, and the `orphaned-lock` decision if it held locks.
    pub(crate) fn end_guest_code(self: &Arc<Self>, ctl: &Arc<CallCtl>) {
        if CriticalRelease::of(self).call(ctl).locks > 0 {
            let effect = self.escalation().orphaned_locks(ctl);
            self.carry_out(Some(ctl), effect, AbortReason::Policy);
        }
    }

    /// Gives the worker back after work: it runs the queue, finishes an unload, or parks.
    pub(crate) fn hand_back(self: &Arc<Self>, worker: Box<Worker>) {
        match self.after_work(worker) {
            Next::Parked => {}
            Next::Call(worker, req) => {
                self.tokio.spawn(worker.drain(req));
            }
            Next::Unload(worker) => {
                self.tokio.spawn(worker.finish_unload());
            }
        }
    }

    /// Under the slot lock: what the worker does next.
    pub(crate) fn after_work(&self, worker: Box<Worker>) -> Next {
        let mut slot = self.lock_slot();
        if !self.life.is_loaded() {
            return Next::Unload(worker);
        }
        match slot.queue.pop_front() {
            Some(req) => {
                slot.current = Some(req.ctl.clone());
                Next::Call(worker, req)
            }
            None => {
                slot.worker = Some(worker);
                Next::Parked
            }
        }
    }

    /// Carries out an escalation effect on this domain (and its call, when one is named).
    pub(crate) fn carry_out(
        self: &Arc<Self>,
        ctl: Option<&Arc<CallCtl>>,
        effect: Effect,
        reason: AbortReason,
    ) {
        match effect {
            Effect::None => {}
            Effect::Abort(kind) => {
                if let Some(ctl) = ctl {
                    ctl.request_abort(self, kind, reason);
                }
            }
            Effect::Unload { rude, kill } => {
                if let Some(ctl) = ctl {
                    ctl.set_reason(reason);
                }
                // Synchronously: entry is blocked and the running call's abort requested
                // before the failed call's outcome is reported, so no later call runs in a
                // domain presumed inconsistent, and a guest backing out (a deadlock victim
                // releasing its locks) is unwound where it leaves its deferred state.
                self.unload_in_background(rude);
                if kill {
                    self.kill();
                }
            }
            // The process stays up under `disable-runtime`, so the failed call must not go on
            // running: it does at least what a rude unload does (escalation only moves up).
            Effect::Process(Action::DisableRuntime) => {
                self.rt.apply_process_action(Action::DisableRuntime);
                if let Some(ctl) = ctl {
                    ctl.set_reason(reason);
                    self.unload_in_background(true);
                }
            }
            Effect::Process(action) => self.rt.apply_process_action(action),
        }
    }

    /// The embedder's abort or rude abort of `ctl`: the operation's default action.
    pub(crate) fn operation(
        self: &Arc<Self>,
        ctl: &Arc<CallCtl>,
        op: Operation,
        reason: AbortReason,
    ) {
        let effect = self.escalation().operation(ctl, op);
        self.carry_out(Some(ctl), effect, reason);
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
                cycle: cycle
                    .edges
                    .iter()
                    .map(crate::escalation::describe_edge)
                    .collect(),
            }
        });
        let effect = self.escalation().deadlock(ctl);
        self.carry_out(Some(ctl), effect, AbortReason::Deadlock);
    }

    /// An unload asked for by the embedder (or by dropping the last handle): the policy's
    /// `unload-domain` / `rude-unload-domain` operation decides what it becomes, then it runs.
    pub(crate) async fn request_unload(self: &Arc<Self>, rude: bool) -> UnloadReport {
        let rude = self.resolve_unload(rude);
        self.unload(rude).await
    }

    /// The policy's say on an unload asked for: whether it runs rude. A process action it adds
    /// is taken now; the unload still runs, so that its callers are answered when the process
    /// does not end (an embedder's exit hook).
    fn resolve_unload(&self, rude: bool) -> bool {
        if !self.life.is_loaded() {
            return rude;
        }
        let (rude, process) = self
            .escalation()
            .unload_requested(self.current().as_deref(), rude);
        if let Some(action) = process {
            self.rt.apply_process_action(action);
        }
        rude
    }

    /// Unloads the domain; every caller gets the one report. When the domain is idle the
    /// end of unload runs on this task (and goes on by itself if this future is dropped).
    pub(crate) async fn unload(self: &Arc<Self>, rude: bool) -> UnloadReport {
        match self.start_unload(rude) {
            Some(Some(mut worker)) if !self.module.has_finalizer() => worker.finish_unload_now(),
            Some(Some(worker)) => {
                let dom = self.clone();
                Detach::new(async move {
                    tokio::join!(worker.finish_unload(), crate::unload::watch(dom));
                })
                .await;
            }
            Some(None) => self.finish_in_background(None),
            None => {}
        }
        self.wait_unloaded().await
    }

    /// The unload of a domain whose last handle went: it ends here too when it was idle and
    /// there is no finalizer to wait for and no handle whose release function would run in
    /// the embedder's `drop` (it might take a lock the dropper holds), else in the background.
    fn unload_dropped(self: &Arc<Self>, rude: bool) {
        match self.start_unload(rude) {
            Some(Some(mut worker)) if !self.module.has_finalizer() && self.handles.none_live() => {
                worker.finish_unload_now()
            }
            Some(began) => self.finish_in_background(began),
            None => {}
        }
    }

    /// Starts an unload now and lets it finish in the background.
    pub(crate) fn unload_in_background(self: &Arc<Self>, rude: bool) {
        if let Some(began) = self.start_unload(rude) {
            self.finish_in_background(began);
        }
    }

    /// The rest of an unload this caller began: the end of unload on its own task if the
    /// worker was parked (else the worker finishes it after its call), the bounds watched.
    fn finish_in_background(self: &Arc<Self>, worker: Option<Box<Worker>>) {
        let dom = self.clone();
        match worker {
            Some(worker) => self.tokio.spawn(async move {
                tokio::join!(worker.finish_unload(), crate::unload::watch(dom));
            }),
            None => self.tokio.spawn(crate::unload::watch(dom)),
        };
    }

    /// Starts an unload now: when this returns, entry is blocked, the in-flight call's abort
    /// requested and the queue failed. Only the first caller begins it (`Some`, with the
    /// worker when the domain was idle: the caller then finishes the unload with it); a rude
    /// request makes a polite unload in progress rude.
    pub(crate) fn start_unload(self: &Arc<Self>, rude: bool) -> Option<Option<Box<Worker>>> {
        let slot = self.lock_slot();
        match self.life.unload(rude) {
            UnloadStep::Began { rude } => Some(self.begin_unload(slot, rude)),
            UnloadStep::MadeRude => {
                if let Some(ctl) = &slot.current {
                    ctl.request_abort(self, AbortKind::Rude, AbortReason::Unload);
                }
                None
            }
            UnloadStep::AlreadyUnloading => None,
        }
    }

    /// Memory pressure's step: unloads the domain politely if, and only if, it is idle (no
    /// admitted call), in one lifecycle transition. Whether it began.
    pub(crate) fn unload_if_idle(self: &Arc<Self>) -> bool {
        let slot = self.lock_slot();
        if !self.life.unload_if_idle() {
            return false;
        }
        let worker = self.begin_unload(slot, false);
        self.finish_in_background(worker);
        true
    }

    /// The unload's first steps, by the one caller that began it, under the slot lock: the
    /// event, the in-flight call's abort, the queue taken (and failed after the lock).
    /// Returns the worker if it was parked.
    fn begin_unload(
        self: &Arc<Self>,
        mut slot: MutexGuard<'_, Slot>,
        rude: bool,
    ) -> Option<Box<Worker>> {
        self.rt
            .events
            .emit(Some(self.id), None, || EventKind::DomainUnloading {
                mode: if rude { "rude" } else { "polite" },
            });
        if let Some(ctl) = &slot.current {
            let kind = if rude {
                AbortKind::Rude
            } else {
                AbortKind::Polite
            };
            ctl.request_abort(self, kind, AbortReason::Unload);
        }
        let queued = std::mem::take(&mut slot.queue);
        let worker = slot.worker.take();
        // Taken before the slot lock is let go, so no report can be published in between.
        let failing = (!queued.is_empty())
            .then(|| self.failing_queue.lock().unwrap_or_else(|p| p.into_inner()));
        drop(slot);
        for req in queued {
            let _ = self.refuse(req, CallError::DomainUnloaded);
        }
        drop(failing);
        worker
    }

    /// No more guest code: the running code is dropped (and the store with it) by whoever
    /// drives it.
    pub(crate) fn kill(&self) {
        // The lifecycle says so first; the kick wakes `drive` for the code running now, which
        // then sees it (code that starts later sees it before it runs).
        if self.life.kill()
            && let Some(ctl) = self.current()
        {
            ctl.kick.notify_one();
        }
    }

    pub(crate) async fn wait_unloaded(&self) -> UnloadReport {
        // An idle domain's unload has mostly ended by now: no waiter to set up.
        if let Some(report) = self.report.get() {
            return report.clone();
        }
        loop {
            let mut notified = std::pin::pin!(self.unloaded.notified());
            notified.as_mut().enable();
            if let Some(report) = self.report.get() {
                return report.clone();
            }
            notified.await;
        }
    }

    fn publish_report(&self, report: UnloadReport) {
        self.life.finish();
        let _ = self.report.set(report);
        self.unloaded.notify_waiters();
    }

    /// The unload's last act, after the store was dropped: the report and its event.
    pub(crate) fn publish_unloaded(
        &self,
        finalizer_ran: bool,
        handles_released: u64,
        memory_released: u64,
    ) {
        // The queue the unloader took is failed (and counted) first.
        drop(self.failing_queue.lock().unwrap_or_else(|p| p.into_inner()));
        let report = UnloadReport {
            rude: self.life.is_rude(),
            calls_failed: self.calls_failed.load(Ordering::Relaxed),
            finalizer_ran,
            handles_released,
            locks_released: self.tally.locks.load(Ordering::Relaxed),
            reservations_released: self.tally.reservations.load(Ordering::Relaxed),
            memory_released,
        };
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
        self.publish_report(report);
    }

    /// The worker was dropped without finishing the unload (see `Worker`'s `Drop`): the
    /// domain ends here, with nothing left behind; a panic is Warden's own broken invariant,
    /// the `fatal-runtime` failure.
    pub(crate) fn worker_lost(self: &Arc<Self>, memory_released: u64, panicked: bool) {
        if self.report.get().is_some() {
            return;
        }
        if panicked {
            tracing::error!("the worker of {} ended unexpectedly", self.id);
        }
        self.kill();
        let (queued, current) = {
            let mut slot = self.lock_slot();
            (std::mem::take(&mut slot.queue), slot.current.take())
        };
        for req in queued {
            let _ = self.refuse(req, CallError::DomainUnloaded);
        }
        let released = CriticalRelease::of(self).domain(current.as_deref());
        self.publish_unloaded(false, released.handles, memory_released);
        if panicked {
            let failure = warden_policy::Failure::FatalRuntime;
            let action = self.rt.policy.decide(failure, false);
            self.rt
                .events
                .emit(Some(self.id), None, || EventKind::Escalation {
                    failure: Some(failure.to_string()),
                    operation: None,
                    action: action.to_string(),
                    critical: false,
                });
            self.rt.fatal(
                "a domain's worker ended unexpectedly (it panicked)",
                Some(self.id),
                current.map(|c| c.id),
                action,
            );
        }
    }

    /// At exit: runs the finalizer on an idle domain's worker, without unloading. `None` when
    /// there is nothing to wait for: no finalizer, a domain not loaded (its unload runs the
    /// finalizer), or a domain busy with a call (it skips its finalizer, and says so).
    pub(crate) fn exit_finalizer(self: &Arc<Self>) -> Option<oneshot::Receiver<bool>> {
        if !self.module.has_finalizer() {
            return None;
        }
        let worker = {
            let mut slot = self.lock_slot();
            if !self.life.is_loaded() {
                return None;
            }
            slot.worker.take()
        };
        let Some(mut worker) = worker else {
            self.rt
                .events
                .emit(Some(self.id), None, || EventKind::FinalizerRan {
                    result: "skipped",
                });
            return None;
        };
        let (tx, rx) = oneshot::channel();
        let dom = self.clone();
        self.tokio.spawn(async move {
            let ran = worker.finalize().await;
            dom.hand_back(worker);
            let _ = tx.send(ran);
        });
        Some(rx)
    }

    /// The exit's critical release: every handle, and the locks and reservations of the call
    /// in flight (calls are neither unwound nor waited for at exit). Quick, never runs guest
    /// code, safe to repeat.
    pub(crate) fn critical_release_at_exit(&self) {
        let current = self.current();
        CriticalRelease::of(self).domain(current.as_deref());
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
/// otherwise yields to the executor — or, for a call past its quantum while short calls
/// want the CPUs, parks it until the scheduler's next slot for it (`scheduler.rs`).
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
    let Some(ctl) = &cx.data().call else {
        return Ok(wasmtime::UpdateDeadline::Yield(1));
    };
    // Parked in guest code, not in a host call: not host time.
    ctl.at_yield.store(true, Ordering::Relaxed);
    Ok(match cx.data().dom.rt.scheduler.at_tick(ctl) {
        AtTick::Yield => wasmtime::UpdateDeadline::Yield(1),
        AtTick::Park(until) => wasmtime::UpdateDeadline::YieldCustom(1, until),
    })
}

/// Turns a failed guest run into the call's outcome.
pub(crate) fn classify(ctl: &CallCtl, e: wasmtime::Error) -> CallResult {
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return Ok(CallOutput {
            exit_code: Some(exit.0),
            ..CallOutput::core(Vec::new())
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
