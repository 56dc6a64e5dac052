//! Scenarios shared by the criterion bench (`runtime.rs`) and the ratio table (`ratios.rs`).
//!
//! Every scenario has a Warden side and a bare-wasmtime side. The bare side runs on an engine
//! built the way `crates/warden/src/engine.rs` builds Warden's (async, epoch interruption with
//! one ticker thread, the pooling allocator, the same wasm and fiber stack sizes, all taken from
//! [`EngineConfig::default`]) and stores set up the way a domain's store is (a resource limiter,
//! an epoch callback that yields), so a ratio measures what Warden adds on top of wasmtime, not
//! a difference in engine settings.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use warden::warden_core::budget::MemoryBudget;
use warden::warden_core::handles::HandleTable;
use warden::warden_core::locks::LockTable;
use warden::{Allocator, CallOptions, Domain, DomainConfig, EngineConfig, Runtime, RuntimeConfig};

/// The guest of every scenario: a trivial export, a spinning one, and one that grows memory.
pub const GUEST: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "answer") (result i32) (i32.const 42))
  (func (export "spin") (loop $l (br $l)))
  ;; Grows memory by one page `n` times; returns the final size in pages.
  (func (export "grow") (param $n i32) (result i32)
    (block $done
      (loop $l
        (br_if $done (i32.eqz (local.get $n)))
        (drop (memory.grow (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $l)))
    (memory.size)))
"#;

/// Pages `grow` adds in the memory scenario (16 MiB).
pub const GROW_PAGES: i32 = 256;

/// The tokio runtime every scenario runs on: multi-threaded, as Warden expects.
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `fut` as a task of `rt` (not on the blocking thread), the way a server's request
/// handler runs, and waits for it.
pub fn run<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    fut: impl Future<Output = T> + Send + 'static,
) -> T {
    rt.block_on(rt.spawn(fut)).expect("bench task panicked")
}

/// Warden's side: a runtime with the default engine and policy, and the compiled guest.
#[derive(Clone)]
pub struct WardenSide {
    pub rt: Runtime,
    pub module: warden::Module,
}

impl WardenSide {
    pub fn new() -> Self {
        let config = RuntimeConfig {
            // Nothing here should exit the process; if something does, say so loudly.
            exit: Arc::new(|code| panic!("bench guest triggered a process exit ({code})")),
            ..RuntimeConfig::default()
        };
        let rt = Runtime::new(config).expect("warden runtime");
        let module = rt.load_module(GUEST.as_bytes()).expect("guest compiles");
        WardenSide { rt, module }
    }

    pub fn pooling(&self) -> bool {
        *self.rt.allocator() == Allocator::Pooling
    }

    pub async fn domain(&self) -> Domain {
        self.rt
            .create_domain(&self.module, DomainConfig::default())
            .await
            .expect("domain")
    }

    /// (a) create a domain, make one call, unload it.
    pub async fn create_call_unload(&self) {
        let d = self.domain().await;
        let out = d
            .invoke("answer", &[], CallOptions::default())
            .await
            .expect("call");
        assert_eq!(out.values[0].unwrap_i32(), 42);
        d.unload().await;
    }

    /// (f) unload of a domain holding `handles` live host handles: the time from `unload()`
    /// to its report (finalizer-free guest, so it is the critical release that is measured).
    pub async fn unload_with_handles(&self, handles: usize) -> Duration {
        let config = DomainConfig {
            max_handles: handles.max(1),
            ..DomainConfig::default()
        };
        let d = self
            .rt
            .create_domain(&self.module, config)
            .await
            .expect("domain");
        for i in 0..handles {
            d.insert_handle(i as u64, |v| {
                std::hint::black_box(v);
            })
            .expect("handle");
        }
        let t0 = Instant::now();
        let report = d.unload().await;
        let took = t0.elapsed();
        assert_eq!(report.handles_released, handles as u64);
        took
    }

    /// (b) one call on a warm domain.
    pub async fn warm_call(d: &Domain) {
        let out = d
            .invoke("answer", &[], CallOptions::default())
            .await
            .expect("call");
        assert_eq!(out.values[0].unwrap_i32(), 42);
    }

    /// (c) one abort of a spinning call: the time from `abort()` to `join()` returning.
    pub async fn abort_latency(d: &Domain) -> Duration {
        let call = d
            .call("spin", &[], CallOptions::default())
            .expect("call starts");
        // Abort a call that is running guest code, not one still in the queue.
        while !d.is_busy() {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
        let t0 = Instant::now();
        call.abort();
        let r = call.join().await;
        let took = t0.elapsed();
        assert_eq!(
            r.expect_err("aborted").outcome(),
            warden::Outcome::Aborted,
            "the spin ends by abort"
        );
        took
    }

    /// (d) create a domain, grow its memory one page at a time, drop it.
    pub async fn grow_and_drop(&self, pages: i32) {
        let d = self.domain().await;
        let out = d
            .invoke("grow", &[pages.into()], CallOptions::default())
            .await
            .expect("call");
        assert_eq!(out.values[0].unwrap_i32(), pages + 1);
        d.unload().await;
    }
}

/// What a bare store carries: the abort flag its epoch callback checks.
pub struct BareState {
    abort: Arc<AtomicBool>,
}

/// A resource limiter that allows everything (the bare side of the memory scenario).
impl wasmtime::ResourceLimiter for BareState {
    fn memory_growing(&mut self, _: usize, _: usize, _: Option<usize>) -> wasmtime::Result<bool> {
        Ok(true)
    }

    fn table_growing(&mut self, _: usize, _: usize, _: Option<usize>) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

/// The error the bare epoch callback unwinds a spinning guest with.
#[derive(Debug)]
struct BareAbort;

impl std::fmt::Display for BareAbort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("aborted")
    }
}

impl std::error::Error for BareAbort {}

/// Bare wasmtime: Warden's engine settings, Warden's ticker, no Warden.
#[derive(Clone)]
pub struct BareSide {
    pub engine: wasmtime::Engine,
    pub module: wasmtime::Module,
    pub linker: Arc<wasmtime::Linker<BareState>>,
    _ticker: Arc<Ticker>,
}

impl BareSide {
    pub fn new(pooling: bool) -> Self {
        Self::with_guest(pooling, GUEST)
    }

    /// Like [`new`](Self::new), with another guest (wasm or WAT).
    pub fn with_guest(pooling: bool, guest: impl AsRef<[u8]>) -> Self {
        // Mirrors WardenEngine::new (crates/warden/src/engine.rs), with the same defaults.
        let cfg = EngineConfig::default();
        let mut c = wasmtime::Config::new();
        c.epoch_interruption(true)
            .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(32))
            .max_wasm_stack(cfg.max_wasm_stack)
            .async_stack_size(cfg.max_wasm_stack + cfg.host_stack_headroom);
        if pooling {
            let mut pool = wasmtime::PoolingAllocationConfig::new();
            pool.total_core_instances(cfg.pool_slots)
                .total_memories(cfg.pool_slots)
                .total_tables(cfg.pool_slots)
                .total_stacks(cfg.pool_slots)
                .max_memory_size(cfg.pool_max_memory)
                .linear_memory_keep_resident(0)
                .table_keep_resident(0);
            c.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = wasmtime::Engine::new(&c).expect("bare engine");
        let module = wasmtime::Module::new(&engine, guest).expect("guest compiles");
        let linker = Arc::new(wasmtime::Linker::new(&engine));
        let ticker = Arc::new(Ticker::start(engine.clone(), cfg.tick));
        BareSide {
            engine,
            module,
            linker,
            _ticker: ticker,
        }
    }

    /// A store set up like a domain's: a limiter, and an epoch callback that unwinds when the
    /// abort flag is set and otherwise yields to the executor.
    pub fn store(&self) -> wasmtime::Store<BareState> {
        let abort = Arc::new(AtomicBool::new(false));
        let mut store = wasmtime::Store::new(&self.engine, BareState { abort });
        store.limiter(|s| s);
        store.epoch_deadline_callback(|cx| {
            if cx.data().abort.load(Ordering::Acquire) {
                return Err(BareAbort.into());
            }
            Ok(wasmtime::UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        store
    }

    pub async fn instance(&self, store: &mut wasmtime::Store<BareState>) -> wasmtime::Instance {
        self.linker
            .instantiate_async(&mut *store, &self.module)
            .await
            .expect("instantiate")
    }

    /// (a) new store, instantiate, one call, drop.
    pub async fn create_call_unload(&self) {
        let mut store = self.store();
        let instance = self.instance(&mut store).await;
        let answer = Self::answer(&mut store, &instance);
        let v = Self::call_answer(&mut store, &answer).await;
        assert_eq!(v, 42);
    }

    /// The `answer` export's handle, looked up once per instance (as Warden does per domain).
    pub fn answer(
        store: &mut wasmtime::Store<BareState>,
        instance: &wasmtime::Instance,
    ) -> wasmtime::Func {
        instance.get_func(&mut *store, "answer").expect("export")
    }

    /// (b) one call on a warm instance (untyped, like Warden's calls), of the handle
    /// [`answer`](Self::answer) looked up.
    pub async fn call_answer(store: &mut wasmtime::Store<BareState>, func: &wasmtime::Func) -> i32 {
        store.set_epoch_deadline(1);
        let mut results = [wasmtime::Val::I32(0)];
        func.call_async(&mut *store, &[], &mut results)
            .await
            .expect("call");
        results[0].unwrap_i32()
    }

    /// A warm instance owned by its own task, called through a channel and answered through
    /// a oneshot: the shape of a domain's worker, without anything else Warden does. Calls
    /// through it separate the cost of the task hop from the cost of Warden's bookkeeping.
    pub async fn worker(&self) -> tokio::sync::mpsc::UnboundedSender<oneshot::Sender<i32>> {
        let mut store = self.store();
        let instance = self.instance(&mut store).await;
        let answer = Self::answer(&mut store, &instance);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<oneshot::Sender<i32>>();
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(Self::call_answer(&mut store, &answer).await);
            }
        });
        tx
    }

    /// (b, for reference) one call through [`BareSide::worker`].
    pub async fn call_via_worker(
        worker: &tokio::sync::mpsc::UnboundedSender<oneshot::Sender<i32>>,
    ) {
        let (reply, rx) = oneshot::channel();
        worker.send(reply).expect("worker runs");
        assert_eq!(rx.await.expect("worker answers"), 42);
    }

    /// (c) one abort of a spinning call running in its own task: set the flag and bump the
    /// epoch (what Warden's `abort()` does at its core), then wait for the task to end.
    /// Returns the latency and the store, for the next sample.
    pub async fn abort_latency(
        store: wasmtime::Store<BareState>,
        instance: wasmtime::Instance,
        engine: &wasmtime::Engine,
    ) -> (Duration, wasmtime::Store<BareState>) {
        let abort = store.data().abort.clone();
        abort.store(false, Ordering::Release);
        let running = Arc::new(AtomicBool::new(false));
        let started = running.clone();
        let task = tokio::spawn(async move {
            let mut store = store;
            store.set_epoch_deadline(1);
            let func = instance.get_func(&mut store, "spin").expect("export");
            started.store(true, Ordering::Release);
            let r = func.call_async(&mut store, &[], &mut []).await;
            (r, store)
        });
        while !running.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
        let t0 = Instant::now();
        abort.store(true, Ordering::Release);
        engine.increment_epoch();
        let (r, store) = task.await.expect("spin task");
        let took = t0.elapsed();
        let err = r.expect_err("aborted");
        assert!(err.downcast_ref::<BareAbort>().is_some(), "{err:#}");
        (took, store)
    }

    /// (d) new store with a no-op limiter, grow memory one page at a time, drop.
    pub async fn grow_and_drop(&self, pages: i32) {
        let mut store = self.store();
        let instance = self.instance(&mut store).await;
        store.set_epoch_deadline(1);
        let func = instance.get_func(&mut store, "grow").expect("export");
        let mut results = [wasmtime::Val::I32(0)];
        func.call_async(&mut store, &[pages.into()], &mut results)
            .await
            .expect("call");
        assert_eq!(results[0].unwrap_i32(), pages + 1);
    }
}

/// The bare engine's epoch ticker, like Warden's: one thread, one increment per tick.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: wasmtime::Engine, tick: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Acquire) {
                std::thread::park_timeout(tick);
                engine.increment_epoch();
            }
        });
        Ticker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// (e) Memory gate: reserve 64 KiB against the process budget, release it.
pub fn gate_reserve_release(budget: &Arc<MemoryBudget>) {
    let r = budget.reserve(64 << 10).expect("budget has room");
    std::hint::black_box(&r);
    drop(r);
}

/// (e) Host lock: uncontended acquire and release (the acquire is ready at its first poll).
pub fn lock_acquire_release(table: &LockTable, owner: u64) {
    let acquired = poll_ready(table.acquire(owner, "bench", None)).expect("uncontended");
    std::hint::black_box(acquired);
    table.release(owner, "bench").expect("held");
}

/// (e) Handle table: insert a value and close its handle (the release runs at the close).
pub fn handle_insert_close(table: &HandleTable<u64>) {
    let h = table.insert(7, |v| {
        std::hint::black_box(v);
    });
    table.close(h.expect("under quota")).expect("open");
}

/// Polls a future once; it must be ready.
fn poll_ready<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an uncontended acquire is ready at once"),
    }
}

/// (c) `n` abort-latency samples of each side, taken in turn on one warm domain and one warm
/// bare instance.
pub async fn abort_samples(
    warden: WardenSide,
    bare: BareSide,
    n: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let d = warden.domain().await;
    let mut store = bare.store();
    let instance = bare.instance(&mut store).await;
    let (mut w, mut b) = (Vec::new(), Vec::new());
    for _ in 0..n {
        w.push(WardenSide::abort_latency(&d).await);
        let (took, s) = BareSide::abort_latency(store, instance, &bare.engine).await;
        store = s;
        b.push(took);
    }
    d.unload().await;
    (w, b)
}

/// The `q`-quantile (0..=1) of `samples`, which it sorts.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i.min(samples.len() - 1)]
}

/// This process's resident set, in KiB (0 where /proc has no figure).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// The component of (i): one typed export over a core module with a memory, written as
/// component text.
pub const COMPONENT: &str = r#"
(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1))))
  (core instance $i (instantiate $m))
  (func (export "add") (param "a" s32) (param "b" s32) (result s32)
    (canon lift (core func $i "add"))))
"#;

/// Bare wasmtime's side of (i): the bare engine (configured as Warden's), a
/// `component::InstancePre` of the component, stores set up as in the other scenarios.
#[derive(Clone)]
pub struct BareComponent {
    pub side: BareSide,
    pub pre: wasmtime::component::InstancePre<BareState>,
    pub add: wasmtime::component::ComponentExportIndex,
}

impl BareComponent {
    pub fn new(side: BareSide) -> Self {
        let component = wasmtime::component::Component::new(&side.engine, COMPONENT)
            .expect("component compiles");
        let linker = wasmtime::component::Linker::new(&side.engine);
        let pre = linker.instantiate_pre(&component).expect("links");
        let add = component.get_export_index(None, "add").expect("export");
        BareComponent { side, pre, add }
    }

    /// The `add` export's handle, looked up once per instance.
    pub fn add(
        &self,
        store: &mut wasmtime::Store<BareState>,
        instance: &wasmtime::component::Instance,
    ) -> wasmtime::component::Func {
        instance.get_func(&mut *store, self.add).expect("export")
    }

    pub async fn call(
        store: &mut wasmtime::Store<BareState>,
        func: &wasmtime::component::Func,
    ) -> i32 {
        use wasmtime::component::Val;
        store.set_epoch_deadline(1);
        let mut results = [Val::Bool(false)];
        func.call_async(&mut *store, &[Val::S32(40), Val::S32(2)], &mut results)
            .await
            .expect("call");
        match results[0] {
            Val::S32(v) => v,
            _ => panic!("not an s32"),
        }
    }

    pub async fn create_call_drop(&self) {
        let mut store = self.side.store();
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .expect("instance");
        let add = self.add(&mut store, &instance);
        assert_eq!(Self::call(&mut store, &add).await, 42);
    }
}

pub async fn warden_component_call(d: &warden::Domain) {
    use warden::wasmtime::component::Val;
    let out = d
        .invoke_component("add", &[Val::S32(40), Val::S32(2)], Default::default())
        .await
        .expect("call");
    assert_eq!(out.component_values, [Val::S32(42)]);
}
