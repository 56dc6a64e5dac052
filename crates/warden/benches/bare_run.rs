//! Bare wasmtime, run the way `warden run --repeat N [--reuse-domain]` runs a guest: the same
//! engine settings and store set-up as Warden's (see `common`), a multi-threaded tokio runtime
//! blocked on from the main thread, N cycles of new store + instantiate + one call + drop (or N
//! calls on one instance). Prints the loop's time as `warden run` does, for `.ci/bench-binary`:
//!
//! `cargo bench --workspace --bench bare_run -- MODULE --invoke NAME --repeat N [--reuse-domain]`

mod common;

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let Some(module) = args
        .iter()
        .find(|a| a.ends_with(".wat") || a.ends_with(".wasm"))
    else {
        // `cargo test --benches` runs this without arguments: nothing to measure.
        println!("usage: bare_run MODULE --invoke NAME --repeat N [--reuse-domain]");
        return;
    };
    let name = value("--invoke").unwrap_or_else(|| "run".into());
    let repeat: u64 = value("--repeat").and_then(|n| n.parse().ok()).unwrap_or(1);
    let reuse = args.iter().any(|a| a == "--reuse-domain");
    let bytes = std::fs::read(module).expect("module readable");
    let bare = common::BareSide::with_guest(true, bytes);
    // Known before the loop, as a bare embedder knows its export's type.
    let results = match bare.module.get_export(&name) {
        Some(wasmtime::ExternType::Func(ty)) => ty.results().len(),
        _ => panic!("no function export `{name}`"),
    };
    let rt = common::tokio_runtime();
    let took = rt.block_on(async move {
        let t0 = Instant::now();
        if reuse {
            let mut store = bare.store();
            let instance = bare.instance(&mut store).await;
            // Looked up once, as Warden looks an export up once per domain.
            let func = instance.get_func(&mut store, &name).expect("export");
            for _ in 0..repeat {
                call(&mut store, func, results).await;
            }
        } else {
            for _ in 0..repeat {
                let mut store = bare.store();
                let instance = bare.instance(&mut store).await;
                let func = instance.get_func(&mut store, &name).expect("export");
                call(&mut store, func, results).await;
            }
        }
        t0.elapsed()
    });
    println!(
        "bare: {repeat} cycles in {:.2}s ({:.2} µs each)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / repeat as f64
    );
}

/// One call of the export `func`, untyped like Warden's calls.
async fn call(
    store: &mut wasmtime::Store<common::BareState>,
    func: wasmtime::Func,
    results: usize,
) {
    store.set_epoch_deadline(1);
    let mut results = vec![wasmtime::Val::I32(0); results];
    func.call_async(&mut *store, &[], &mut results)
        .await
        .expect("call");
    std::hint::black_box(results);
}
