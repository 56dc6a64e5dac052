//! N warm calls of the ratio bench's `answer` export, through Warden (`Domain::invoke` on one
//! idle domain) or through bare wasmtime configured alike (`common::BareSide`), or of its
//! component's typed `add` (`warden-component`, `bare-component`: row i′), for counting
//! instructions rather than timing them: wall-clock figures are noisy on a loaded machine,
//! instruction counts are not.
//!
//! ```text
//! cargo bench --workspace --bench warm_calls --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/w.%p target/release/deps/warm_calls-* warden 1000
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/w.%p target/release/deps/warm_calls-* warden 11000
//! ```
//!
//! Take the difference of two runs with different N (it cancels start-up, compilation and
//! the runtime's set-up) and divide by the difference of N: instructions per warm call. The
//! same for `bare`; their quotient is the instruction ratio. `.ci/callgrind-warm` does it all.
//! (Under valgrind the pooling allocator's address-space reservation is refused, so both sides
//! run on-demand allocation there; a warm call allocates nothing either way.)
//! Run without arguments (as `cargo test --benches` does) it makes a few calls of each side.

mod common;

use common::{BareComponent, BareSide, COMPONENT, WardenSide, run, tokio_runtime};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let positional: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let n: u32 = positional.get(1).and_then(|n| n.parse().ok()).unwrap_or(3);
    let rt = tokio_runtime();
    match positional.first().copied() {
        Some("warden") => warden_side(&rt, n),
        Some("bare") => bare_side(&rt, n),
        Some("warden-component") => warden_component_side(&rt, n),
        Some("bare-component") => bare_component_side(&rt, n),
        // Row a: N fresh domains, each created, called once and unloaded.
        Some("warden-fresh") => {
            let w = WardenSide::new();
            run(&rt, async move {
                for _ in 0..n {
                    w.create_call_unload().await;
                }
            })
        }
        Some("bare-fresh") => {
            let bare = BareSide::new(WardenSide::new().pooling());
            run(&rt, async move {
                for _ in 0..n {
                    bare.create_call_unload().await;
                }
            })
        }
        // Row i: N fresh component domains, each created, called once and unloaded.
        Some("warden-component-fresh") => {
            let w = WardenSide::new();
            let module =
                w.rt.load_module(COMPONENT.as_bytes())
                    .expect("component loads");
            run(&rt, async move {
                for _ in 0..n {
                    let d =
                        w.rt.create_domain(&module, Default::default())
                            .await
                            .expect("domain");
                    common::warden_component_call(&d).await;
                    d.unload().await;
                }
            })
        }
        Some("bare-component-fresh") => {
            let bare = BareComponent::new(BareSide::new(WardenSide::new().pooling()));
            run(&rt, async move {
                for _ in 0..n {
                    bare.create_call_drop().await;
                }
            })
        }
        _ => {
            warden_side(&rt, n);
            bare_side(&rt, n);
            warden_component_side(&rt, n);
            bare_component_side(&rt, n);
        }
    }
}

fn warden_side(rt: &tokio::runtime::Runtime, n: u32) {
    let w = WardenSide::new();
    run(rt, async move {
        let d = w.domain().await;
        for _ in 0..n {
            WardenSide::warm_call(&d).await;
        }
        d.unload().await;
    });
}

fn bare_side(rt: &tokio::runtime::Runtime, n: u32) {
    // Pooling as Warden has it: Warden falls back to on-demand allocation where the pool's
    // reservation is refused (as under valgrind), so the bare side follows it.
    let bare = BareSide::new(WardenSide::new().pooling());
    run(rt, async move {
        let mut store = bare.store();
        let instance = bare.instance(&mut store).await;
        let answer = BareSide::answer(&mut store, &instance);
        for _ in 0..n {
            std::hint::black_box(BareSide::call_answer(&mut store, &answer).await);
        }
    });
}

fn warden_component_side(rt: &tokio::runtime::Runtime, n: u32) {
    let w = WardenSide::new();
    let module =
        w.rt.load_module(COMPONENT.as_bytes())
            .expect("component loads");
    run(rt, async move {
        let d =
            w.rt.create_domain(&module, Default::default())
                .await
                .expect("domain");
        for _ in 0..n {
            common::warden_component_call(&d).await;
        }
        d.unload().await;
    });
}

fn bare_component_side(rt: &tokio::runtime::Runtime, n: u32) {
    let bare = BareComponent::new(BareSide::new(WardenSide::new().pooling()));
    run(rt, async move {
        let mut store = bare.side.store();
        let instance = bare
            .pre
            .instantiate_async(&mut store)
            .await
            .expect("instance");
        let add = bare.add(&mut store, &instance);
        for _ in 0..n {
            std::hint::black_box(BareComponent::call(&mut store, &add).await);
        }
    });
}
