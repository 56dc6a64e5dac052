//! The runtime: the owner of the engine, the policy, the event stream and every domain.

use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use warden_core::budget::{BudgetStats, MemoryBudget, Pressure, PressureHandler};
use warden_core::locks::LockTable;
use warden_core::shutdown::Shutdown;
use warden_policy::{Action, Policy};

use crate::call::CallError;
use crate::domain::{Domain, DomainConfig, DomainShared, DomainState};
use crate::engine::{Allocator, Code, EngineConfig, Module, WardenEngine};
use crate::error::Error;
use crate::events::{Event, EventBus, EventKind};
use crate::exit_code;
use crate::ids::DomainId;
use crate::shutdown::RuntimeParticipant;

/// What ends the process, called once at the end of shutdown with the exit code.
pub type ExitFn = Arc<dyn Fn(i32) + Send + Sync>;

/// Runtime settings.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Engine settings.
    pub engine: EngineConfig,
    /// The escalation policy (default: the `server` preset).
    pub policy: Policy,
    /// Ends the process, called exactly once at the end of shutdown (see
    /// [`Runtime::exit`]): for the policy's exit actions with the code of
    /// [`exit_code`](crate::exit_code), else with the code given to `exit`.
    /// Default: `std::process::exit`.
    pub exit: ExitFn,
    /// The process memory budget for guest memory, in bytes. `None` (the default): what the
    /// machine can give — the cgroup limit, else physical memory less a margin.
    pub memory_budget: Option<u64>,
    /// On memory pressure (the budget's high-water mark), unload the idle domain holding the
    /// most memory (never one with a call in flight). Default false: only the event.
    pub unload_on_pressure: bool,
    /// The embedder's own imports, given to every domain's guests (see
    /// [`HostFunctions`](crate::HostFunctions)). Default: none.
    pub host_functions: crate::HostFunctions,
    /// The host scheduler: a call past its quantum drops to low priority, so short calls
    /// never queue behind runaways (see [`scheduler`](crate::scheduler)). Default on, 10 ms.
    pub scheduler: crate::scheduler::SchedulerConfig,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            engine: EngineConfig::default(),
            policy: Policy::default(),
            exit: Arc::new(|code| std::process::exit(code)),
            memory_budget: None,
            unload_on_pressure: false,
            host_functions: crate::HostFunctions::default(),
            scheduler: crate::scheduler::SchedulerConfig::default(),
        }
    }
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("engine", &self.engine)
            .field("policy", &self.policy)
            .field("scheduler", &self.scheduler)
            .finish_non_exhaustive()
    }
}

/// A guest linked against the runtime's imports, ready to instantiate in a store.
pub(crate) enum Pre {
    Core(wasmtime::InstancePre<DomainState>),
    Component(wasmtime::component::InstancePre<DomainState>),
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: WardenEngine,
    /// Which running call gets a CPU (`scheduler.rs`).
    pub(crate) scheduler: crate::scheduler::Scheduler,
    pub(crate) linker: wasmtime::Linker<DomainState>,
    /// What component guests are linked against: WASI preview2, `warden:host`, the
    /// embedder's interfaces.
    pub(crate) component_linker: wasmtime::component::Linker<DomainState>,
    /// The embedder's imports (for naming a module's unknown imports, and making component
    /// domains' embedder states).
    pub(crate) host_functions: crate::HostFunctions,
    pub(crate) policy: Policy,
    pub(crate) events: EventBus,
    pub(crate) budget: Arc<MemoryBudget>,
    pub(crate) locks: Arc<LockTable>,
    /// Fail-fast reports (`fail_fast.rs`).
    pub(crate) fail_fast: crate::fail_fast::FailFast,
    /// Bounds guests' log lines (`guest_log.rs`).
    pub(crate) guest_log: crate::guest_log::GuestLog,
    /// The embedder's pressure handler, called after the `memory_pressure` event.
    pressure_handler: std::sync::RwLock<Option<PressureHandler>>,
    /// The process's shutdown coordinator; it calls the exit fn.
    pub(crate) shutdown: Arc<Shutdown>,
    /// The coordinator holds it weakly; this is the strong reference that keeps it plugged in.
    _participant: Arc<RuntimeParticipant>,
    disabled: AtomicBool,
    domains: Mutex<FxHashMap<DomainId, Weak<DomainShared>>>,
}

/// A Warden runtime. Cheap to clone; all clones share one engine, policy and set of domains.
///
/// Domains and calls run on the tokio runtime the methods are called from (a multi-threaded
/// one is expected).
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

impl Runtime {
    /// Creates a runtime: the engine (pooling, falling back to on-demand), its epoch ticker,
    /// and the host imports.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, Error> {
        let engine = WardenEngine::new(&config.engine)?;
        let scheduler = crate::scheduler::Scheduler::new(
            &config.scheduler,
            config.engine.tick,
            engine.ticks.clone(),
        )?;
        let mut linker = wasmtime::Linker::new(&engine.engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut DomainState| {
            s.wasi
                .as_mut()
                .expect("a WASI context exists for every module that imports WASI")
        })
        .map_err(|e| Error::Engine(crate::error::cause(e)))?;
        crate::host::link_warden(&mut linker).map_err(|e| Error::Engine(crate::error::cause(e)))?;
        config.host_functions.link(&mut linker)?;
        let mut component_linker = wasmtime::component::Linker::new(&engine.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker)
            .map_err(|e| Error::Engine(crate::error::cause(e)))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component_linker)
            .map_err(|e| Error::Engine(crate::error::cause(e)))?;
        crate::host::link_warden_component(&mut component_linker)
            .map_err(|e| Error::Engine(crate::error::cause(e)))?;
        config
            .host_functions
            .link_components(&mut component_linker)?;
        let budget = match config.memory_budget {
            Some(bytes) => MemoryBudget::new(bytes),
            None => MemoryBudget::from_machine(),
        };
        let shutdown = Shutdown::new(crate::shutdown::config_from(&config.policy), config.exit);
        shutdown.set_watchdog_exit_code(exit_code::POLICY_RUDE_EXIT);
        let inner = Arc::new_cyclic(|weak| RuntimeInner {
            engine,
            scheduler,
            linker,
            component_linker,
            host_functions: config.host_functions,
            policy: config.policy,
            events: EventBus::default(),
            budget,
            locks: LockTable::new(),
            guest_log: Default::default(),
            fail_fast: Default::default(),
            pressure_handler: std::sync::RwLock::new(None),
            shutdown: shutdown.clone(),
            _participant: RuntimeParticipant::new(weak.clone()),
            disabled: AtomicBool::new(false),
            domains: Mutex::new(FxHashMap::default()),
        });
        shutdown.set_participant(inner._participant.clone());
        let weak = Arc::downgrade(&inner);
        let unload = config.unload_on_pressure;
        inner.budget.set_pressure_handler(Arc::new(move |p| {
            if let Some(rt) = weak.upgrade() {
                rt.on_pressure(p, unload);
            }
        }));
        Ok(Runtime { inner })
    }

    /// The process memory budget guests are charged against. Embedders gate their own native
    /// work with it too ([`MemoryBudget::reserve`]).
    pub fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.inner.budget
    }

    /// Installs the embedder's memory-pressure handler: called (on the thread whose
    /// allocation crossed a water mark, after the `memory_pressure` event) once per crossing.
    /// Keep it short; to unload domains from it, spawn a task. Replaces any earlier handler.
    pub fn set_pressure_handler(&self, handler: impl Fn(Pressure) + Send + Sync + 'static) {
        *self
            .inner
            .pressure_handler
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(handler));
    }

    /// The host scheduler: its figures ([`Scheduler::stats`](crate::scheduler::Scheduler::stats)).
    pub fn scheduler(&self) -> &crate::scheduler::Scheduler {
        &self.inner.scheduler
    }

    /// Process-wide memory figures: budget, used, reserved, peak, denials.
    pub fn memory(&self) -> BudgetStats {
        self.inner.budget.stats()
    }

    /// The process-wide host lock table guests' `lock_acquire` uses. Embedders may inspect
    /// it (e.g. `is_held`) or take locks for native work under their own owner ids.
    pub fn locks(&self) -> &Arc<LockTable> {
        &self.inner.locks
    }

    /// Compiles a core module or a component from wasm bytes or WAT text (`(module ..)` or
    /// `(component ..)`), cached by content digest. Which one it is is read from the bytes
    /// ([`Module::is_component`]); both pass the same bounds (size, function count,
    /// compile time).
    ///
    /// With [`EngineConfig::cache_dir`](crate::EngineConfig::cache_dir) set, a module not in
    /// the in-memory cache is looked up in the on-disk precompiled cache first, and loaded
    /// from it only after its integrity check; otherwise it is compiled and the artifact
    /// written (see [`precompiled`](crate::precompiled), and [`Runtime::artifact_cache`] for
    /// the counters).
    pub fn load_module(&self, bytes: &[u8]) -> Result<Module, Error> {
        self.inner.engine.load(bytes, &self.inner.events)
    }

    /// Loads the module `reference` names from `store` (its version, or the latest), as
    /// [`load_module`](Self::load_module) loads bytes. The module's
    /// [`digest`](Module::digest) is the stored bytes' ([`StoredModule::digest`]).
    /// A store's refusal (unknown name or version, invalid name, unreadable file) is
    /// [`Error::Store`]; bytes that do not compile are [`Error::InvalidModule`] as ever.
    ///
    /// [`StoredModule::digest`]: crate::module_store::StoredModule::digest
    pub fn load_from_store(
        &self,
        store: &dyn crate::ModuleStore,
        reference: &crate::ModuleRef,
    ) -> Result<crate::module_store::Loaded, Error> {
        let stored = store.resolve(reference)?;
        let module = self.load_module(&stored.bytes)?;
        Ok(crate::module_store::Loaded {
            name: stored.name,
            version: stored.version,
            module,
        })
    }

    /// The precompiled cache's counters (hits, misses, stale and corrupt artifacts rejected,
    /// writes); `None` when no [`cache_dir`](crate::EngineConfig::cache_dir) is configured.
    pub fn artifact_cache(&self) -> Option<crate::precompiled::CacheStats> {
        self.inner.engine.artifact_stats()
    }

    /// Creates a domain: a new store and one instance of `module`.
    pub async fn create_domain(
        &self,
        module: &Module,
        config: DomainConfig,
    ) -> Result<Domain, Error> {
        Domain::create(&self.inner, module, config).await
    }

    /// Every import of `module` that Warden or the embedder provides, with the
    /// [`Capability`](crate::Capability) it needs ([`capability`](crate::capability)), in the
    /// module's import order. Imports nobody provides are not listed (creating a domain fails
    /// on them anyway).
    pub fn required_capabilities(
        &self,
        module: &Module,
    ) -> Vec<crate::capability::ImportCapability> {
        crate::capability::required(module, &self.inner.host_functions)
    }

    /// Whether a domain of `module` may be created under `grant`: the check
    /// [`create_domain`](Self::create_domain) makes, without creating anything.
    /// [`Error::NotPermitted`] lists every import the grant forbids.
    pub fn check_grant(&self, module: &Module, grant: crate::Grant) -> Result<(), Error> {
        self.inner.check_grant(module, grant)
    }

    /// Subscribes to the event stream. The callback runs on the thread that produced the
    /// event, some events under a domain's lock: keep it short, and do not call into the
    /// runtime or a domain from it (queue the event instead; see `docs/events.md`).
    pub fn subscribe(&self, sink: impl Fn(&Event) + Send + Sync + 'static) {
        self.inner.events.subscribe(Arc::new(sink));
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// How instances are allocated (pooling, or on-demand and why).
    pub fn allocator(&self) -> &Allocator {
        &self.inner.engine.allocator
    }

    /// Domains alive now (loaded or unloading).
    pub fn domain_count(&self) -> usize {
        self.inner.lock_domains().len()
    }

    /// Compiled modules held by the digest cache.
    pub fn cached_modules(&self) -> usize {
        self.inner.engine.cached_modules()
    }

    /// Whether the runtime was disabled by policy (`disable-runtime`).
    pub fn is_disabled(&self) -> bool {
        self.inner.disabled.load(Ordering::SeqCst)
    }
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.engine.stop();
    }
}

impl RuntimeInner {
    pub(crate) fn lock_domains(
        &self,
    ) -> std::sync::MutexGuard<'_, FxHashMap<DomainId, Weak<DomainShared>>> {
        self.domains.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether new guest work may start.
    pub(crate) fn admit(&self) -> Result<(), CallError> {
        if self.shutdown.is_exiting() {
            return Err(CallError::ProcessExiting);
        }
        if self.disabled.load(Ordering::SeqCst) {
            return Err(CallError::RuntimeDisabled);
        }
        Ok(())
    }

    /// Checks a guest's imports against what the runtime provides, naming the first miss;
    /// the guest linked, ready to instantiate.
    pub(crate) fn check_imports(&self, module: &Module) -> Result<Pre, Error> {
        let m = match &module.code {
            Code::Core(m) => m,
            Code::Component(c) => {
                // Each runtime has its own engine (and linker): the cached link is this
                // runtime's exactly when the component was compiled by it.
                if !wasmtime::Engine::same(c.component.engine(), &self.engine.engine) {
                    return Err(Error::Instantiate(
                        "the component was loaded by another runtime".into(),
                    ));
                }
                if let Some(pre) = c.pre.get() {
                    return Ok(Pre::Component(pre.clone()));
                }
                // wasmtime names the import it cannot satisfy (and why).
                let pre = self
                    .component_linker
                    .instantiate_pre(&c.component)
                    .map_err(|e| Error::Instantiate(crate::error::cause(e)))?;
                return Ok(Pre::Component(c.pre.get_or_init(|| pre).clone()));
            }
        };
        for import in m.imports() {
            let known = match import.module() {
                "wasi_snapshot_preview1" => true,
                "warden" => crate::host::IMPORTS.iter().any(|i| i.name == import.name()),
                module => self.host_functions.provides(module, import.name()),
            };
            if !known {
                return Err(Error::UnknownImport {
                    module: import.module().to_string(),
                    name: import.name().to_string(),
                });
            }
        }
        // Types: wasmtime names the mismatching import.
        self.linker
            .instantiate_pre(m)
            .map(Pre::Core)
            .map_err(|e| Error::Instantiate(crate::error::cause(e)))
    }

    /// The grant check of domain creation.
    pub(crate) fn check_grant(&self, module: &Module, grant: crate::Grant) -> Result<(), Error> {
        if grant == crate::Grant::UNSAFE {
            // Everything is allowed: no need to walk the imports.
            return Ok(());
        }
        grant.check(&crate::capability::required(module, &self.host_functions))
    }

    pub(crate) fn register(&self, dom: &Arc<DomainShared>) {
        self.lock_domains().insert(dom.id, Arc::downgrade(dom));
    }

    pub(crate) fn unregister(&self, id: DomainId) {
        self.lock_domains().remove(&id);
    }

    /// Memory pressure: an event, and (when configured) the built-in response.
    fn on_pressure(&self, p: Pressure, unload: bool) {
        let (level, used, reserved, budget) = match p {
            Pressure::High {
                used,
                reserved,
                limit,
            } => ("high", used, reserved, limit),
            Pressure::Relieved {
                used,
                reserved,
                limit,
            } => ("relieved", used, reserved, limit),
        };
        self.events.emit(None, None, || EventKind::MemoryPressure {
            level,
            used,
            reserved,
            budget,
        });
        let handler = self
            .pressure_handler
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(h) = handler {
            h(p);
        }
        if unload && level == "high" {
            self.unload_largest_idle();
        }
    }

    /// Unloads the loaded domain with no admitted call that holds the most memory. "Idle" is
    /// checked and acted on in one lifecycle transition, so a call admitted meanwhile keeps
    /// its domain (the next largest idle one goes instead).
    pub(crate) fn unload_largest_idle(&self) {
        let mut domains: Vec<_> = self
            .lock_domains()
            .values()
            .filter_map(Weak::upgrade)
            .filter(|d| d.life.is_loaded() && d.life.calls() == 0)
            .collect();
        domains.sort_by_key(|d| std::cmp::Reverse(d.account.used()));
        for dom in domains {
            if dom.unload_if_idle() {
                return;
            }
        }
    }

    /// Carries out a process-wide action: the exit actions and `disable-runtime`.
    pub(crate) fn apply_process_action(&self, action: Action) {
        match action {
            Action::DisableRuntime if !self.disabled.swap(true, Ordering::SeqCst) => {
                self.events.emit(None, None, || EventKind::RuntimeDisabled);
            }
            Action::ExitProcess | Action::FastExitProcess | Action::RudeExitProcess => {
                // Through the coordinator: one winner, phases, watchdog. A more severe
                // action during an exit cuts that exit short (escalation only moves up).
                let mode = crate::shutdown::mode_for(action);
                self.shutdown.escalate(exit_code::for_action(action), mode);
            }
            _ => {}
        }
    }
}
