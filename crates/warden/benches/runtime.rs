//! Criterion benchmarks of Warden against bare wasmtime configured the same way, measured in
//! the same run. `cargo bench --workspace --bench runtime [FILTER]`.
//!
//! Groups (each has a `warden` and a `bare` member; compare them within the run):
//! - `a_create_call_unload`: create a domain, one call, unload (goal ≤ 2× bare).
//! - `b_warm_call`: one call on a warm domain (goal ≤ 1.5× bare).
//! - `d_grow_then_drop`: create, grow memory one page 256 times, drop.
//! - `e_primitives`: memory gate, host lock, handle table (absolute figures, no baseline).
//!
//! Abort latency (`c`) is not a throughput figure: it is printed after the groups as p50/p99
//! over 200 aborts of a spinning call, for Warden and for bare wasmtime.
//!
//! For the ratios as one table, run `cargo bench --workspace --bench ratios`.

mod common;

use common::{BareSide, GROW_PAGES, WardenSide, run, tokio_runtime};
use criterion::{BenchmarkGroup, Criterion, criterion_group, measurement::WallTime};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden::warden_core::budget::MemoryBudget;
use warden::warden_core::handles::HandleTable;
use warden::warden_core::locks::LockTable;

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}

fn runtime_groups(c: &mut Criterion) {
    let rt = tokio_runtime();
    let warden = WardenSide::new();
    let bare = BareSide::new(warden.pooling());

    let mut g = c.benchmark_group("a_create_call_unload");
    configure(&mut g);
    g.bench_function("warden", |b| {
        b.iter_custom(|iters| {
            let w = warden.clone();
            run(&rt, async move {
                let t0 = Instant::now();
                for _ in 0..iters {
                    w.create_call_unload().await;
                }
                t0.elapsed()
            })
        })
    });
    g.bench_function("bare", |b| {
        b.iter_custom(|iters| {
            let s = bare.clone();
            run(&rt, async move {
                let t0 = Instant::now();
                for _ in 0..iters {
                    s.create_call_unload().await;
                }
                t0.elapsed()
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("b_warm_call");
    configure(&mut g);
    let domain = {
        let w = warden.clone();
        run(&rt, async move { w.domain().await })
    };
    g.bench_function("warden", |b| {
        b.iter_custom(|iters| {
            let d = domain.clone();
            run(&rt, async move {
                let t0 = Instant::now();
                for _ in 0..iters {
                    WardenSide::warm_call(&d).await;
                }
                t0.elapsed()
            })
        })
    });
    let warm = {
        let s = bare.clone();
        run(&rt, async move {
            let mut store = s.store();
            let instance = s.instance(&mut store).await;
            let answer = BareSide::answer(&mut store, &instance);
            Arc::new(tokio::sync::Mutex::new((store, answer)))
        })
    };
    g.bench_function("bare", |b| {
        b.iter_custom(|iters| {
            let warm = warm.clone();
            run(&rt, async move {
                let mut guard = warm.lock().await;
                let (store, answer) = &mut *guard;
                let t0 = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(BareSide::call_answer(store, answer).await);
                }
                t0.elapsed()
            })
        })
    });
    g.finish();
    {
        let d = domain.clone();
        run(&rt, async move { d.unload().await });
    }

    let mut g = c.benchmark_group("d_grow_then_drop");
    configure(&mut g);
    g.bench_function("warden", |b| {
        b.iter_custom(|iters| {
            let w = warden.clone();
            run(&rt, async move {
                let t0 = Instant::now();
                for _ in 0..iters {
                    w.grow_and_drop(GROW_PAGES).await;
                }
                t0.elapsed()
            })
        })
    });
    g.bench_function("bare", |b| {
        b.iter_custom(|iters| {
            let s = bare.clone();
            run(&rt, async move {
                let t0 = Instant::now();
                for _ in 0..iters {
                    s.grow_and_drop(GROW_PAGES).await;
                }
                t0.elapsed()
            })
        })
    });
    g.finish();
}

fn primitives(c: &mut Criterion) {
    let mut g = c.benchmark_group("e_primitives");
    configure(&mut g);
    let budget = MemoryBudget::new(1 << 30);
    g.bench_function("gate_reserve_release", |b| {
        b.iter(|| common::gate_reserve_release(&budget))
    });
    let locks = LockTable::new();
    g.bench_function("lock_acquire_release", |b| {
        b.iter(|| common::lock_acquire_release(&locks, 1))
    });
    let handles = HandleTable::<u64>::new(1024);
    g.bench_function("handle_insert_close", |b| {
        b.iter(|| common::handle_insert_close(&handles))
    });
    g.finish();
}

criterion_group!(benches, runtime_groups, primitives);

/// (c) Abort latency, p50/p99: not a criterion figure (each sample needs a running call first,
/// which criterion's iteration model would time too).
fn abort_latency_report() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filtered_out = args
        .iter()
        .any(|a| !a.starts_with('-') && !"c_abort_latency".contains(a.as_str()));
    if filtered_out {
        return;
    }
    // Under `cargo test --benches` (no `--bench`), just check that the scenario works.
    let samples = if args.iter().any(|a| a == "--bench") {
        200
    } else {
        3
    };
    let rt = tokio_runtime();
    let warden = WardenSide::new();
    let bare = BareSide::new(warden.pooling());
    let (mut w, mut b) = run(&rt, common::abort_samples(warden, bare, samples));
    println!("c_abort_latency ({samples} aborts of a spinning call, abort() to join())");
    for (name, s) in [("warden", &mut w), ("bare", &mut b)] {
        println!(
            "  {name:<7} p50 {:>9.1?}  p99 {:>9.1?}",
            common::quantile(s, 0.5),
            common::quantile(s, 0.99)
        );
    }
}

fn main() {
    benches();
    abort_latency_report();
    Criterion::default().configure_from_args().final_summary();
}
