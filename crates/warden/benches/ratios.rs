//! The ratio table: Warden against bare wasmtime, configured the same way and measured in the
//! same run, with fixed iteration counts. `cargo bench --workspace --bench ratios`.
//!
//! Each throughput scenario runs in rounds that alternate Warden and bare batches, so both
//! sides see the same machine load; the figure reported per side is the median round's time
//! per iteration. Abort latency is reported as p50 and p99 of single aborts. Run without
//! `--bench` (as `cargo test --benches` does) it only checks that every scenario works.

mod common;

use common::{
    BareComponent, BareSide, COMPONENT, GROW_PAGES, WardenSide, quantile, run, tokio_runtime,
    warden_component_call,
};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden::warden_core::budget::MemoryBudget;
use warden::warden_core::handles::HandleTable;
use warden::warden_core::locks::LockTable;

/// Iteration counts: full under `cargo bench`, a smoke test otherwise.
struct Plan {
    rounds: usize,
    create: u32,
    warm: u32,
    aborts: usize,
    grow: u32,
    primitive: u32,
    unloads: usize,
    idle: usize,
    /// Calls of the null-import loop (each makes `IMPORTS_PER_CALL` imports).
    nulls: u32,
    /// Loads per round of the precompiled-cache scenario (each in a fresh runtime).
    loads: u32,
}

impl Plan {
    fn full() -> Self {
        Plan {
            rounds: 7,
            create: 300,
            warm: 20_000,
            aborts: 200,
            grow: 100,
            primitive: 1_000_000,
            unloads: 30,
            idle: 10_000,
            nulls: 40,
            loads: 10,
        }
    }

    fn smoke() -> Self {
        Plan {
            rounds: 1,
            create: 2,
            warm: 2,
            aborts: 2,
            grow: 2,
            primitive: 2,
            unloads: 1,
            idle: 10,
            nulls: 2,
            loads: 1,
        }
    }
}

/// One line of the table.
struct Row {
    scenario: &'static str,
    warden: Duration,
    bare: Option<Duration>,
    goal: Option<f64>,
}

/// Runs `iters` iterations of `f` as one task and returns the time per iteration.
fn per_iter<S, F, Fut>(rt: &tokio::runtime::Runtime, iters: u32, side: &S, f: F) -> Duration
where
    S: Clone + Send + 'static,
    F: Fn(S) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let side = side.clone();
    run(rt, async move {
        let t0 = Instant::now();
        for _ in 0..iters {
            f(side.clone()).await;
        }
        t0.elapsed() / iters
    })
}

/// Alternates Warden and bare batches for `rounds` rounds; the median round of each side.
fn compare(
    rounds: usize,
    mut warden: impl FnMut() -> Duration,
    mut bare: impl FnMut() -> Duration,
) -> (Duration, Duration) {
    // One unmeasured round of each first: caches, pool slots, lazily built state.
    warden();
    bare();
    let (mut w, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        w.push(warden());
        b.push(bare());
    }
    (quantile(&mut w, 0.5), quantile(&mut b, 0.5))
}

/// What every scenario needs.
struct Ctx {
    rt: tokio::runtime::Runtime,
    plan: Plan,
    warden: WardenSide,
    bare: BareSide,
}

/// A scenario: its rows of the table.
type Scenario = fn(&Ctx) -> Vec<Row>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    // Positional arguments pick scenarios by letter (`-- b d`); none runs them all.
    let picked: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let warden = WardenSide::new();
    let cx = Ctx {
        rt: tokio_runtime(),
        plan: if full { Plan::full() } else { Plan::smoke() },
        bare: BareSide::new(warden.pooling()),
        warden,
    };
    let scenarios: [(&str, Scenario); 12] = [
        ("a", create_call_unload),
        ("b", warm_call),
        ("c", abort_latency),
        ("d", grow_then_drop),
        ("e", primitives),
        ("f", unload_with_handles),
        ("g", null_import),
        ("h", idle_density),
        ("i", component_calls),
        ("j", http_hello),
        ("k", precompiled_load),
        ("x", cross_domain_call),
    ];
    let mut rows = Vec::new();
    for (letter, scenario) in scenarios {
        if picked.is_empty() || picked.contains(&letter) {
            rows.extend(scenario(&cx));
        }
    }
    print_table(&rows, cx.warden.pooling());
    if !full {
        println!("(smoke run: pass --bench, as `cargo bench` does, for real figures)");
    }
}

/// (a) create a domain, one call, unload.
fn create_call_unload(cx: &Ctx) -> Vec<Row> {
    let n = cx.plan.create;
    let (w, b) = compare(
        cx.plan.rounds,
        || {
            per_iter(&cx.rt, n, &cx.warden, |w| async move {
                w.create_call_unload().await
            })
        },
        || {
            per_iter(&cx.rt, n, &cx.bare, |s| async move {
                s.create_call_unload().await
            })
        },
    );
    vec![Row {
        scenario: "a create domain + call + unload",
        warden: w,
        bare: Some(b),
        goal: Some(2.0),
    }]
}

/// (i) a component: fresh domain + typed call + unload, and a typed call on a warm domain.
fn component_calls(cx: &Ctx) -> Vec<Row> {
    let module = cx
        .warden
        .rt
        .load_module(COMPONENT.as_bytes())
        .expect("component loads");
    let bare = BareComponent::new(cx.bare.clone());
    let n = cx.plan.create;
    let (fresh_w, fresh_b) = compare(
        cx.plan.rounds,
        || {
            let rt = cx.warden.rt.clone();
            per_iter(&cx.rt, n, &module, move |m| {
                let rt = rt.clone();
                async move {
                    let d = rt
                        .create_domain(&m, Default::default())
                        .await
                        .expect("domain");
                    warden_component_call(&d).await;
                    d.unload().await;
                }
            })
        },
        || {
            per_iter(
                &cx.rt,
                n,
                &bare,
                |b| async move { b.create_call_drop().await },
            )
        },
    );
    let domain = {
        let rt = cx.warden.rt.clone();
        let m = module.clone();
        run(&cx.rt, async move {
            rt.create_domain(&m, Default::default())
                .await
                .expect("domain")
        })
    };
    let warm = {
        let b = bare.clone();
        run(&cx.rt, async move {
            let mut store = b.side.store();
            let instance = b.pre.instantiate_async(&mut store).await.expect("instance");
            let add = b.add(&mut store, &instance);
            Arc::new(tokio::sync::Mutex::new((store, add)))
        })
    };
    let w = cx.plan.warm;
    let (warm_w, warm_b) = compare(
        cx.plan.rounds,
        || {
            per_iter(&cx.rt, w, &domain, |d| async move {
                warden_component_call(&d).await
            })
        },
        || {
            per_iter(&cx.rt, w, &warm, |warm| async move {
                let mut guard = warm.lock().await;
                let (store, add) = &mut *guard;
                std::hint::black_box(BareComponent::call(store, add).await);
            })
        },
    );
    run(&cx.rt, async move { domain.unload().await });
    vec![
        Row {
            scenario: "i component: create domain + typed call + unload",
            warden: fresh_w,
            bare: Some(fresh_b),
            goal: Some(2.0),
        },
        Row {
            scenario: "i' component: typed call on a warm domain",
            warden: warm_w,
            bare: Some(warm_b),
            goal: Some(1.5),
        },
    ]
}

/// A `GET /hello` request with an empty body.
fn hello_request() -> hyper::Request<warden::http::HyperIncomingBody> {
    hyper::Request::builder()
        .uri("http://localhost/hello")
        .body(warden::http::body_from_bytes(bytes::Bytes::new()))
        .expect("request")
}

async fn hello_body(response: hyper::Response<warden::http::HyperOutgoingBody>) {
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.expect("body");
    assert_eq!(&body.to_bytes()[..], b"hello from warden\n");
}

/// One hello request through `Domain::call_http`, to the end of its call.
async fn warden_hello(d: &warden::Domain) {
    let mut call = d
        .call_http(hello_request(), Default::default())
        .expect("call");
    hello_body(call.response().await.expect("response")).await;
    call.into_handle().join().await.expect("the call succeeds");
}

/// Bare wasmtime-wasi-http's store data, as `wasmtime serve` keeps it.
struct BareHttpState {
    wasi: wasmtime_wasi::WasiCtx,
    http: wasmtime_wasi_http::WasiHttpCtx,
    table: wasmtime::component::ResourceTable,
}

impl wasmtime_wasi::WasiView for BareHttpState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for BareHttpState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

/// Bare wasmtime's side of (j): what `wasmtime serve` does per request — a fresh store, the
/// `ProxyPre` instantiated, `handle` called — on the bare engine.
#[derive(Clone)]
struct BareHttp {
    engine: wasmtime::Engine,
    pre: wasmtime_wasi_http::p2::bindings::ProxyPre<BareHttpState>,
}

impl BareHttp {
    fn new(side: &BareSide, bytes: &[u8]) -> Self {
        let component =
            wasmtime::component::Component::new(&side.engine, bytes).expect("component compiles");
        let mut linker = wasmtime::component::Linker::new(&side.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("wasi links");
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).expect("http links");
        let pre = linker.instantiate_pre(&component).expect("links");
        let pre = wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre).expect("a proxy");
        BareHttp {
            engine: side.engine.clone(),
            pre,
        }
    }

    async fn hello(&self) {
        use wasmtime_wasi_http::WasiHttpView;
        let state = BareHttpState {
            wasi: wasmtime_wasi::WasiCtx::builder().build(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            table: wasmtime::component::ResourceTable::new(),
        };
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.epoch_deadline_async_yield_and_update(1);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let scheme = wasmtime_wasi_http::p2::bindings::http::types::Scheme::Http;
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(scheme, hello_request())
            .expect("request");
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(tx)
            .expect("outparam");
        let proxy = self
            .pre
            .instantiate_async(&mut store)
            .await
            .expect("instance");
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, req, out)
            .await
            .expect("handle");
        hello_body(rx.await.expect("answered").expect("a response")).await;
    }
}

/// (j) one `GET /hello` of the bundled example: through `call_http` on a warm domain and on a
/// fresh domain per request, against bare wasmtime-wasi-http instantiating the `ProxyPre` per
/// request (as `wasmtime serve` does for a p2 component).
fn http_hello(cx: &Ctx) -> Vec<Row> {
    let bytes = warden::http::example::component_bytes();
    let module = cx.warden.rt.load_module(&bytes).expect("example loads");
    let bare = BareHttp::new(&cx.bare, &bytes);
    let n = cx.plan.create;
    let domain = {
        let rt = cx.warden.rt.clone();
        let m = module.clone();
        run(&cx.rt, async move {
            rt.create_domain(&m, Default::default())
                .await
                .expect("domain")
        })
    };
    let (warm_w, warm_b) = compare(
        cx.plan.rounds,
        || {
            per_iter(
                &cx.rt,
                n,
                &domain,
                |d| async move { warden_hello(&d).await },
            )
        },
        || per_iter(&cx.rt, n, &bare, |b| async move { b.hello().await }),
    );
    let (fresh_w, fresh_b) = compare(
        cx.plan.rounds,
        || {
            let rt = cx.warden.rt.clone();
            per_iter(&cx.rt, n, &module, move |m| {
                let rt = rt.clone();
                async move {
                    let d = rt
                        .create_domain(&m, Default::default())
                        .await
                        .expect("domain");
                    warden_hello(&d).await;
                    d.unload().await;
                }
            })
        },
        || per_iter(&cx.rt, n, &bare, |b| async move { b.hello().await }),
    );
    run(&cx.rt, async move { domain.unload().await });
    vec![
        Row {
            scenario: "j http hello: warm domain vs ProxyPre instantiate + handle",
            warden: warm_w,
            bare: Some(warm_b),
            goal: Some(1.0),
        },
        Row {
            scenario: "j' http hello: fresh domain + unload vs the same",
            warden: fresh_w,
            bare: Some(fresh_b),
            goal: Some(2.0),
        },
    ]
}

/// (b) one call on a warm domain.
fn warm_call(cx: &Ctx) -> Vec<Row> {
    let domain = {
        let w = cx.warden.clone();
        run(&cx.rt, async move { w.domain().await })
    };
    let warm = {
        let s = cx.bare.clone();
        run(&cx.rt, async move {
            let mut store = s.store();
            let instance = s.instance(&mut store).await;
            let answer = BareSide::answer(&mut store, &instance);
            Arc::new(tokio::sync::Mutex::new((store, answer)))
        })
    };
    let n = cx.plan.warm;
    let (w, b) = compare(
        cx.plan.rounds,
        || {
            per_iter(&cx.rt, n, &domain, |d| async move {
                WardenSide::warm_call(&d).await
            })
        },
        || {
            per_iter(&cx.rt, n, &warm, |warm| async move {
                let mut guard = warm.lock().await;
                let (store, answer) = &mut *guard;
                std::hint::black_box(BareSide::call_answer(store, answer).await);
            })
        },
    );
    // The same call through a bare worker task: how much of the ratio is the task hop.
    let worker = {
        let s = cx.bare.clone();
        run(&cx.rt, async move { s.worker().await })
    };
    let (w2, hop) = compare(
        cx.plan.rounds,
        || {
            per_iter(&cx.rt, n, &domain, |d| async move {
                WardenSide::warm_call(&d).await
            })
        },
        || {
            per_iter(&cx.rt, n, &worker, |worker| async move {
                BareSide::call_via_worker(&worker).await
            })
        },
    );
    run(&cx.rt, async move { domain.unload().await });
    vec![
        Row {
            scenario: "b call on a warm domain",
            warden: w,
            bare: Some(b),
            goal: Some(1.5),
        },
        Row {
            scenario: "b' same, bare behind a task hop",
            warden: w2,
            bare: Some(hop),
            goal: None,
        },
    ]
}

/// (c) abort latency of a spinning call, one sample of each side in turn.
fn abort_latency(cx: &Ctx) -> Vec<Row> {
    let warden = cx.warden.clone();
    let bare = cx.bare.clone();
    let aborts = cx.plan.aborts;
    let (mut w, mut b) = run(&cx.rt, common::abort_samples(warden, bare, aborts));
    vec![
        Row {
            scenario: "c abort -> join, p50",
            warden: quantile(&mut w, 0.5),
            bare: Some(quantile(&mut b, 0.5)),
            goal: None,
        },
        Row {
            scenario: "c abort -> join, p99",
            warden: quantile(&mut w, 0.99),
            bare: Some(quantile(&mut b, 0.99)),
            goal: None,
        },
    ]
}

/// (d) create, grow memory one page at a time, drop.
fn grow_then_drop(cx: &Ctx) -> Vec<Row> {
    let n = cx.plan.grow;
    let (w, b) = compare(
        cx.plan.rounds,
        || {
            per_iter(&cx.rt, n, &cx.warden, |w| async move {
                w.grow_and_drop(GROW_PAGES).await
            })
        },
        || {
            per_iter(&cx.rt, n, &cx.bare, |s| async move {
                s.grow_and_drop(GROW_PAGES).await
            })
        },
    );
    vec![Row {
        scenario: "d create + 256 x memory.grow(1) + drop",
        warden: w,
        bare: Some(b),
        goal: None,
    }]
}

/// (e) primitives: absolute figures, no baseline.
fn primitives(cx: &Ctx) -> Vec<Row> {
    let n = cx.plan.primitive;
    let budget = MemoryBudget::new(1 << 30);
    let locks = LockTable::new();
    let handles = HandleTable::<u64>::new(1024);
    vec![
        Row {
            scenario: "e gate reserve + release",
            warden: time_primitive(n, || common::gate_reserve_release(&budget)),
            bare: None,
            goal: None,
        },
        Row {
            scenario: "e lock acquire + release (uncontended)",
            warden: time_primitive(n, || common::lock_acquire_release(&locks, 1)),
            bare: None,
            goal: None,
        },
        Row {
            scenario: "e handle insert + close",
            warden: time_primitive(n, || common::handle_insert_close(&handles)),
            bare: None,
            goal: None,
        },
    ]
}

/// (k) loading a module from the precompiled cache (integrity check and deserialize) vs
/// compiling it, each in a fresh runtime (so the in-memory digest cache is empty); runtime
/// creation is outside the timing. Both columns are Warden: "warden" is the cached load,
/// "bare" the compile.
fn precompiled_load(cx: &Ctx) -> Vec<Row> {
    let dir = std::env::temp_dir().join(format!("warden-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let runtime = |cache: Option<&std::path::Path>| {
        warden::Runtime::new(warden::RuntimeConfig {
            engine: warden::EngineConfig {
                pooling: false,
                cache_dir: cache.map(Into::into),
                ..warden::EngineConfig::default()
            },
            exit: Arc::new(|code| panic!("bench guest exited the process ({code})")),
            ..warden::RuntimeConfig::default()
        })
        .expect("runtime")
    };
    let mut rows = Vec::new();
    for (scenario, bytes) in [
        (
            "k load core module: cache / compile",
            common::GUEST.as_bytes().to_vec(),
        ),
        (
            "k load http component: cache / compile",
            warden::http::example::component_bytes(),
        ),
    ] {
        // Fill the cache once.
        runtime(Some(&dir)).load_module(&bytes).expect("loads");
        let n = cx.plan.loads;
        let time = |cache: Option<&std::path::Path>| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let rt = runtime(cache);
                let t0 = Instant::now();
                std::hint::black_box(rt.load_module(&bytes).expect("loads"));
                total += t0.elapsed();
                if cache.is_some() {
                    let s = rt.artifact_cache().expect("cache");
                    assert_eq!((s.hits, s.misses, s.corrupt, s.stale), (1, 0, 0, 0));
                }
            }
            total / n
        };
        let (w, b) = compare(cx.plan.rounds, || time(Some(&dir)), || time(None));
        rows.push(Row {
            scenario,
            warden: w,
            bare: Some(b),
            goal: None,
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "k: both sides are Warden (\"warden\" = from the precompiled cache, \"bare\" = compiling)"
    );
    rows
}

/// (f) unload time with 0, 100 and 10,000 live handles: median of single unloads.
fn unload_with_handles(cx: &Ctx) -> Vec<Row> {
    let mut rows = Vec::new();
    for (handles, scenario) in [
        (0, "f unload, 0 live handles"),
        (100, "f unload, 100 live handles"),
        (10_000, "f unload, 10,000 live handles"),
    ] {
        let w = cx.warden.clone();
        let samples = cx.plan.unloads;
        let mut took = run(&cx.rt, async move {
            let mut v = Vec::new();
            for _ in 0..samples {
                v.push(w.unload_with_handles(handles).await);
            }
            v
        });
        rows.push(Row {
            scenario,
            warden: quantile(&mut took, 0.5),
            bare: None,
            goal: None,
        });
    }
    rows
}

/// (h) density: resident memory of many idle domains (one page of guest memory each), from the
/// process's RSS before and after, on a runtime whose pool has room for all of them.
fn idle_density(cx: &Ctx) -> Vec<Row> {
    let n = cx.plan.idle;
    let (domains, before, after, guest) = run(&cx.rt, async move {
        let config = warden::RuntimeConfig {
            engine: warden::EngineConfig {
                pool_slots: n as u32,
                pool_max_memory: 1 << 20,
                ..warden::EngineConfig::default()
            },
            exit: std::sync::Arc::new(|code| panic!("bench guest exited the process ({code})")),
            ..warden::RuntimeConfig::default()
        };
        let rt = warden::Runtime::new(config).expect("runtime");
        let module = rt.load_module(common::GUEST.as_bytes()).expect("guest");
        // One domain first: the module's code and the runtime's own state are not per domain.
        let first = rt
            .create_domain(&module, warden::DomainConfig::default())
            .await
            .expect("domain");
        let before = common::rss_kib();
        let mut domains = vec![first];
        for _ in 1..n {
            let d = rt.create_domain(&module, warden::DomainConfig::default());
            domains.push(d.await.expect("domain"));
        }
        let after = common::rss_kib();
        let guest: u64 = domains.iter().map(|d| d.memory_used()).sum();
        for d in &domains {
            d.unload().await;
        }
        (domains.len(), before, after, guest)
    });
    let per = (after.saturating_sub(before) * 1024) as f64 / (domains - 1).max(1) as f64;
    let guest_per = guest as f64 / domains as f64;
    println!(
        "h {domains} idle domains: RSS {before} KiB -> {after} KiB, {:.1} KiB each \
         (guest memory {:.1} KiB each, committed but not touched; goal <= 64 KiB beyond it)",
        per / 1024.0,
        guest_per / 1024.0
    );
    Vec::new()
}

/// Imports one call of the null-import guest makes.
const IMPORTS_PER_CALL: i32 = 100_000;

/// The null-import guest: `nulls(n)` calls the import `n` times; `flags(n)` calls Warden's
/// `abort_requested` `n` times.
const NULL_GUEST: &str = r#"
(module
  (import "bench" "null" (func $null))
  (import "warden" "abort_requested" (func $flag (result i32)))
  (func (export "nulls") (param $n i32)
    (block $done
      (loop $l
        (br_if $done (i32.eqz (local.get $n)))
        (call $null)
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $l))))
  (func (export "flags") (param $n i32)
    (block $done
      (loop $l
        (br_if $done (i32.eqz (local.get $n)))
        (drop (call $flag))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $l)))))
"#;

/// (g) a null import's round trip through the host-call layer (an embedder function, and
/// Warden's own `abort_requested`), against a bare wasmtime `func_wrap` import.
fn null_import(cx: &Ctx) -> Vec<Row> {
    let mut host = warden::HostFunctions::new();
    host.func("bench", "null", |_, ()| Ok(()));
    let rt = warden::Runtime::new(warden::RuntimeConfig {
        host_functions: host,
        exit: Arc::new(|code| panic!("bench guest triggered a process exit ({code})")),
        ..warden::RuntimeConfig::default()
    })
    .expect("warden runtime");
    let module = rt
        .load_module(NULL_GUEST.as_bytes())
        .expect("guest compiles");
    let domain = run(&cx.rt, async move {
        rt.create_domain(&module, warden::DomainConfig::default())
            .await
            .expect("domain")
    });
    let bare = {
        let side = cx.bare.clone();
        run(&cx.rt, async move {
            let mut linker = wasmtime::Linker::new(&side.engine);
            linker.func_wrap("bench", "null", || {}).expect("link");
            linker
                .func_wrap("warden", "abort_requested", || -> i32 { 0 })
                .expect("link");
            let module = wasmtime::Module::new(&side.engine, NULL_GUEST).expect("guest compiles");
            let mut store = side.store();
            let instance = linker
                .instantiate_async(&mut store, &module)
                .await
                .expect("instantiate");
            Arc::new(tokio::sync::Mutex::new((store, instance)))
        })
    };
    let n = cx.plan.nulls;
    let mut rows = Vec::new();
    for (export, scenario, goal) in [
        ("nulls", "g 100,000 null embedder imports", Some(1.3)),
        // The bare side returns a constant: what reading the call's abort state costs.
        ("flags", "g' 100,000 x warden abort_requested", None),
    ] {
        let (w, b) = compare(
            cx.plan.rounds,
            || {
                per_iter(&cx.rt, n, &domain, move |d| async move {
                    let args = [warden::Val::I32(IMPORTS_PER_CALL)];
                    d.invoke(export, &args, warden::CallOptions::default())
                        .await
                        .expect("call");
                })
            },
            || {
                per_iter(&cx.rt, n, &bare, move |bare| async move {
                    let mut guard = bare.lock().await;
                    let (store, instance) = &mut *guard;
                    store.set_epoch_deadline(1);
                    let func = instance.get_func(&mut *store, export).expect("export");
                    func.call_async(
                        &mut *store,
                        &[wasmtime::Val::I32(IMPORTS_PER_CALL)],
                        &mut [],
                    )
                    .await
                    .expect("call");
                })
            },
        );
        rows.push(Row {
            scenario,
            warden: w,
            bare: Some(b),
            goal,
        });
    }
    run(&cx.rt, async move { domain.unload().await });
    rows
}

/// Median of three timed batches, per iteration.
fn time_primitive(iters: u32, mut f: impl FnMut()) -> Duration {
    let mut batches: Vec<Duration> = (0..3)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..iters {
                f();
            }
            t0.elapsed() / iters
        })
        .collect();
    quantile(&mut batches, 0.5)
}

fn print_table(rows: &[Row], pooling: bool) {
    let alloc = if pooling { "pooling" } else { "on-demand" };
    println!();
    println!("Warden vs bare wasmtime, same engine settings ({alloc} allocator), same run");
    println!();
    println!(
        "| {:<40} | {:>11} | {:>11} | {:>6} | {:<15} |",
        "scenario", "warden", "bare", "ratio", "goal"
    );
    println!(
        "|{:-<42}|{:->13}|{:->13}|{:->8}|{:-<17}|",
        "", "", "", "", ""
    );
    for r in rows {
        let bare = r.bare.map_or("-".to_string(), fmt);
        let ratio = r
            .bare
            .map(|b| r.warden.as_secs_f64() / b.as_secs_f64().max(1e-12));
        let ratio_s = ratio.map_or("-".to_string(), |x| format!("{x:.2}x"));
        let goal = match (r.goal, ratio) {
            (Some(g), Some(x)) if x <= g => format!("<= {g}x met"),
            (Some(g), Some(_)) => format!("<= {g}x MISSED"),
            _ => "-".to_string(),
        };
        println!(
            "| {:<40} | {:>11} | {:>11} | {:>6} | {:<15} |",
            r.scenario,
            fmt(r.warden),
            bare,
            ratio_s,
            goal
        );
    }
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} us", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

/// (x): a guest's `domain_call` into another domain and back (3 bytes each way), against the
/// same caller making a plain call on its warm domain. Both sides are Warden. Row x is the
/// hop: what the `domain_call` adds to the call making it, goal `<= 3x` a plain call (issue
/// 15); x' is the whole calling call, hop included.
const CROSS_CALLER: &str = r#"
(module
  (import "warden" "domain_call" (func $call
    (param i32 i32 i32 i32 i32 i32 i32 i32 i64) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "peer")
  (data (i32.const 16) "inc")
  (data (i32.const 32) "abc")
  (func (export "cross") (result i32)
    (call $call (i32.const 0) (i32.const 4) (i32.const 16) (i32.const 3)
      (i32.const 32) (i32.const 3) (i32.const 64) (i32.const 64) (i64.const -1)))
  (func (export "plain") (result i32) (i32.const 3)))
"#;

const CROSS_CALLEE: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "warden_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "inc") (param $p i32) (param $l i32) (result i64)
    (i32.store8 (local.get $p) (i32.add (i32.load8_u (local.get $p)) (i32.const 1)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32))
            (i64.extend_i32_u (local.get $l)))))
"#;

fn cross_domain_call(cx: &Ctx) -> Vec<Row> {
    let rt = cx.warden.rt.clone();
    let caller = run(&cx.rt, async move {
        let caller = rt.load_module(CROSS_CALLER.as_bytes()).expect("loads");
        let callee = rt.load_module(CROSS_CALLEE.as_bytes()).expect("loads");
        let caller = rt
            .create_domain(&caller, Default::default())
            .await
            .expect("domain");
        let callee = rt
            .create_domain(&callee, Default::default())
            .await
            .expect("domain");
        caller.link("peer", &callee).expect("link");
        // The link is weak: the bench keeps the callee's handle alive with the caller's.
        (caller, callee)
    });
    let n = cx.plan.warm;
    let call = |export: &'static str| {
        move |(d, _keep): (warden::Domain, warden::Domain)| async move {
            let out = d
                .invoke(export, &[], Default::default())
                .await
                .expect("call");
            assert_eq!(out.values[0].unwrap_i32(), 3);
        }
    };
    let (cross, plain) = compare(
        cx.plan.rounds,
        || per_iter(&cx.rt, n, &caller, call("cross")),
        || per_iter(&cx.rt, n, &caller, call("plain")),
    );
    let (caller, callee) = caller;
    run(&cx.rt, async move {
        caller.unload().await;
        callee.unload().await;
    });
    // The hop is what a guest's `domain_call` adds to the call that makes it: the caller's
    // call with one `domain_call`, less the same caller's plain call.
    let hop = cross.saturating_sub(plain);
    vec![
        Row {
            scenario: "x domain_call round trip (the hop) vs a plain warm call",
            warden: hop,
            bare: Some(plain),
            goal: Some(3.0),
        },
        Row {
            scenario: "x' a caller's call with one domain_call vs a plain warm call",
            warden: cross,
            bare: Some(plain),
            goal: None,
        },
    ]
}
