//! Issue #16: every input bounded, every exit code exact — the rows of its table that the
//! embedder API shows, and the accounting property test.

use crate::common;
use crate::common::{runtime, runtime_with};
use proptest::prelude::*;
use std::time::Duration;
use warden::{
    CallError, CallOptions, DomainConfig, EngineConfig, Error, Policy, RuntimeConfig, Val,
    exit_code,
};

fn opts() -> CallOptions {
    CallOptions::default()
}

/// A domain limited to 8 MiB reserves through the memory gate in a loop: it gets at most its
/// own limit, and its neighbour's growth is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domains_reservations_are_bounded_by_its_own_memory_limit() {
    const HOARDER: &str = r#"(module
      (import "warden" "gate_reserve" (func $reserve (param i64) (result i32)))
      (memory (export "memory") 1)
      ;; Reserve 1 MiB at a time until refused; returns how many were granted.
      (func (export "hoard") (result i32) (local $n i32)
        (block $done (loop $l
          (br_if $done (i32.lt_s (call $reserve (i64.const 1048576)) (i32.const 0)))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br $l)))
        (local.get $n))
      (func (export "grow4") (result i32) (memory.grow (i32.const 64))))"#;
    let (rt, _) = runtime_with(RuntimeConfig {
        memory_budget: Some(256 << 20),
        ..RuntimeConfig::default()
    });
    let m = rt.load_module(HOARDER.as_bytes()).unwrap();
    let small = DomainConfig {
        max_memory: 8 << 20,
        ..DomainConfig::default()
    };
    let hog = rt.create_domain(&m, small.clone()).await.unwrap();
    let call = hog.call("hoard", &[], opts()).unwrap();
    let got = call.join().await.unwrap().values[0].unwrap_i32();
    // 8 MiB less the 64 KiB page it holds: 7 whole MiB.
    assert_eq!(got, 7, "reservations must stay within the domain's 8 MiB");
    let neighbour = rt.create_domain(&m, small).await.unwrap();
    let r = neighbour.invoke("grow4", &[], opts()).await.unwrap();
    assert_eq!(r.values[0].unwrap_i32(), 1, "the neighbour's 4 MiB grow");
}

/// The initial memory the budget cannot give is a soft refusal: no guest code ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_that_cannot_get_its_initial_memory_fails_softly() {
    let (rt, rec) = runtime_with(RuntimeConfig {
        memory_budget: Some(4 << 20),
        ..RuntimeConfig::default()
    });
    let m = rt.load_module(br#"(module (memory 100))"#).unwrap();
    let e = rt
        .create_domain(&m, DomainConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Call(CallError::InsufficientMemory { .. })),
        "{e}"
    );
    assert_eq!(exit_code::for_error(&e), exit_code::INSUFFICIENT_MEMORY);
    let finished = rec.named("call_finished");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["outcome"], "insufficient_memory");
    assert_eq!(rt.memory().used, 0);
}

/// Growth past the module's declared maximum is a denied growth, told as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growth_past_the_modules_maximum_is_denied_with_its_event() {
    let (rt, rec) = runtime();
    let m = rt
        .load_module(
            br#"(module (memory 1 2) (table 1 2 funcref)
                 (func (export "mem") (result i32) (memory.grow (i32.const 2)))
                 (func (export "tab") (result i32) (table.grow (ref.null func) (i32.const 2))))"#,
        )
        .unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    for export in ["mem", "tab"] {
        let r = d.invoke(export, &[], opts()).await.unwrap();
        assert_eq!(r.values[0].unwrap_i32(), -1, "{export}");
    }
    let denied = rec.named("memory_denied");
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(denied.iter().all(|e| e["limit"] == "module"), "{denied:?}");
    assert_eq!(rt.memory().used, d.memory_used());
}

/// A start function is a call like any other: its outcome, its exit code, its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_function_failures_are_calls_with_outcomes() {
    let cases: [(&str, Option<u64>, i32, &str); 4] = [
        (
            r#"(module (func $s unreachable) (start $s))"#,
            None,
            exit_code::TRAP,
            "trap",
        ),
        (
            r#"(module (func $s (call $s)) (start $s))"#,
            None,
            exit_code::STACK_OVERFLOW,
            "stack_overflow",
        ),
        (
            r#"(module (memory 1)
                 (func $s (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
                   unreachable)
                 (start $s))"#,
            Some(1 << 20),
            exit_code::OUT_OF_MEMORY,
            "out_of_memory",
        ),
        (
            r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                 (memory (export "memory") 1)
                 (func $s (call $exit (i32.const 42))) (start $s))"#,
            None,
            42,
            "ok",
        ),
    ];
    for (wat, max_memory, code, outcome) in cases {
        let (rt, rec) = runtime();
        let m = rt.load_module(wat.as_bytes()).unwrap();
        let mut cfg = DomainConfig::default();
        if let Some(max) = max_memory {
            cfg.max_memory = max;
        }
        let e = rt.create_domain(&m, cfg).await.unwrap_err();
        assert_eq!(exit_code::for_error(&e), code, "{outcome}: {e}");
        let finished = rec.named("call_finished");
        assert_eq!(finished.len(), 1, "{outcome}");
        assert_eq!(finished[0]["outcome"], outcome);
        assert_eq!(rt.domain_count(), 0);
    }
}

/// Load and link errors are bad input (3), not traps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrongly_typed_imports_and_unknown_wasi_functions_are_bad_input() {
    let (rt, rec) = runtime();
    for wat in [
        r#"(module (import "warden" "abort_requested" (func (param i64))))"#,
        r#"(module (import "wasi_snapshot_preview1" "no_such_function" (func)))"#,
    ] {
        let m = rt.load_module(wat.as_bytes()).unwrap();
        let e = rt
            .create_domain(&m, DomainConfig::default())
            .await
            .unwrap_err();
        assert_eq!(exit_code::for_error(&e), exit_code::BAD_INPUT, "{e}");
    }
    assert!(rec.named("call_finished").is_empty());
}

/// A full instance pool is an admission limit: a soft refusal, not a trap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_instance_pool_is_a_documented_refusal() {
    let (rt, _) = runtime_with(RuntimeConfig {
        engine: EngineConfig {
            pool_slots: 2,
            pool_max_memory: 1 << 20,
            ..EngineConfig::default()
        },
        ..RuntimeConfig::default()
    });
    if !matches!(rt.allocator(), warden::Allocator::Pooling) {
        return; // no pool on this machine: nothing to fill
    }
    let m = rt.load_module(br#"(module (memory 1))"#).unwrap();
    let _a = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let _b = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let e = rt
        .create_domain(&m, DomainConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AtCapacity(_)), "{e}");
    assert_eq!(exit_code::for_error(&e), exit_code::INSUFFICIENT_MEMORY);
}

/// Compilation is bounded: function count and compile time, each a clear refusal.
#[test]
fn compilation_is_bounded_by_function_count_and_time() {
    let (rt, _) = runtime_with(RuntimeConfig {
        engine: EngineConfig {
            max_functions: 3,
            ..EngineConfig::default()
        },
        ..RuntimeConfig::default()
    });
    let e = rt
        .load_module(br#"(module (func) (func) (func) (func))"#)
        .unwrap_err();
    assert!(
        matches!(e, Error::TooManyFunctions { count: 4, limit: 3 }),
        "{e}"
    );
    assert_eq!(exit_code::for_error(&e), exit_code::BAD_INPUT);
    rt.load_module(br#"(module (func) (func) (func))"#).unwrap();

    let (rt, _) = runtime_with(RuntimeConfig {
        engine: EngineConfig {
            compile_timeout: Some(Duration::from_millis(1)),
            ..EngineConfig::default()
        },
        ..RuntimeConfig::default()
    });
    // Big enough that its compile outlasts the bound even when this thread is descheduled
    // for a while on a loaded machine (a one-function module can finish first).
    let wat = format!("(module {})", "(func)".repeat(20_000));
    let e = rt.load_module(wat.as_bytes()).unwrap_err();
    assert!(matches!(e, Error::CompileTimeout { .. }), "{e}");
    assert!(e.to_string().contains("compiling the module took longer"));
}

/// A tiny module whose few bytes of data lie 4 MiB apart compiles to a tiny artifact (no 4 MiB
/// copy-on-write image: compile memory follows the data, not its span), and its data is still
/// where it belongs once instantiated (copied in then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_data_does_not_make_a_small_module_compile_to_its_span() {
    let (rt, _) = runtime();
    let m = rt
        .load_module(
            br#"(module (memory 64)
              (data (i32.const 0) "\2a")
              (data (i32.const 4194303) "\07")
              (func (export "at") (param i32) (result i32) (i32.load8_u (local.get 0))))"#,
        )
        .unwrap();
    let image = m.wasmtime().expect("a core module").image_range();
    let len = image.end as usize - image.start as usize;
    assert!(len < 1 << 20, "the compiled module holds {len} bytes");
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    for (at, want) in [(0, 42), (4194303, 7), (4096, 0)] {
        let out = d.invoke("at", &[Val::I32(at)], opts()).await.unwrap();
        assert_eq!(out.values[0].unwrap_i32(), want, "byte at {at}");
    }
    d.unload().await;
}

/// `Duration::MAX` wherever a duration is taken: it means "never", and nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrepresentably_long_durations_saturate() {
    const GUEST: &str = r#"(module
      (import "warden" "critical_enter" (func $cin))
      (import "warden" "critical_exit" (func $cout))
      (import "warden" "sleep_ms" (func $sleep (param i64) (result i32)))
      (func (export "answer") (result i32) (i32.const 42))
      (func (export "critical_sleep") (result i32)
        (call $cin) (drop (call $sleep (i64.const 200))) (call $cout) (i32.const 1)))"#;
    let policy = Policy::from_toml_str(
        "[timeouts]\nabort = { after = \"18446744073709551615s\", action = \"rude-abort\" }\n",
    )
    .unwrap();
    let (rt, _) = runtime_with(RuntimeConfig {
        policy,
        ..RuntimeConfig::default()
    });
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let cfg = DomainConfig {
        start_deadline: Some(Duration::MAX),
        ..DomainConfig::default()
    };
    let d = rt.create_domain(&m, cfg).await.unwrap();
    let long = CallOptions {
        deadline: Some(Duration::MAX),
        ..CallOptions::default()
    };
    let r = d.invoke("answer", &[], long).await.unwrap();
    assert_eq!(r.values[0].unwrap_i32(), 42);
    // An abort deferred by a critical region arms the (endless) abort timeout.
    let call = d.call("critical_sleep", &[], opts()).unwrap();
    call.abort();
    assert_eq!(call.join().await.unwrap_err(), CallError::Aborted);
}

/// The shutdown watchdog ending an exit is 116, whatever code the exit started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_ending_an_exit_gives_116() {
    let policy = Policy::from_toml_str(
        "[timeouts]\nprocess-exit = { after = \"100ms\", action = \"rude-exit-process\" }\n",
    )
    .unwrap();
    let (rt, rec) = runtime_with(RuntimeConfig {
        policy,
        ..RuntimeConfig::default()
    });
    rt.add_exit_hook("hangs", std::future::pending::<()>)
        .unwrap();
    rt.exit(0);
    assert_eq!(
        common::exited(&rt, &rec).await,
        vec![exit_code::POLICY_RUDE_EXIT]
    );
    assert!(rt.wait_exit().await.watchdog_fired);
}

/// 2,000 guest log lines of 64 KiB: what reaches the host's log is bounded, and it says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_logging_is_rate_limited() {
    const CHATTY: &str = r#"(module
      (import "warden" "log" (func $log (param i32 i32 i32)))
      (memory (export "memory") 2)
      (func (export "chat") (local $i i32)
        (loop $l
          (call $log (i32.const 1) (i32.const 0) (i32.const 65536))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 2000))))))"#;
    let (rt, rec) = runtime();
    let m = rt.load_module(CHATTY.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let started = std::time::Instant::now();
    d.invoke("chat", &[], opts()).await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let logs = rec.named("guest_log");
    let bytes: usize = logs
        .iter()
        .map(|e| e["message"].as_str().unwrap().len())
        .sum();
    // The burst plus the rate for the time it ran (and one line of slack).
    let bound = 1_048_576.0 + 262_144.0 * (elapsed + 1.0) + 65_536.0;
    assert!((bytes as f64) < bound, "{bytes} bytes of guest log");
    assert!(logs.len() < 2000, "every line went out");
    d.invoke("chat", &[], opts()).await.unwrap();
    assert!(
        rec.named("guest_log")
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("were dropped")),
        "the drop is said"
    );
}

/// What one random grow does: which memory or table, and by how much.
#[derive(Debug, Clone)]
enum Grow {
    Mem32(u32),
    Mem64(u64),
    Table32(u32),
    Table64(u64),
}

fn grow() -> impl Strategy<Value = Grow> {
    let d32 = prop_oneof![
        0u32..4,
        Just(16),
        Just(200),
        Just(65_535),
        Just(65_536),
        Just(u32::MAX)
    ];
    let d64 = prop_oneof![
        0u64..4,
        Just(16),
        Just(200),
        Just(1 << 32),
        Just(u64::MAX / 2),
        Just(u64::MAX)
    ];
    let e32 = prop_oneof![0u32..4, Just(1000), Just(100_000), Just(u32::MAX)];
    let e64 = prop_oneof![0u64..4, Just(1000), Just(1 << 40), Just(u64::MAX)];
    prop_oneof![
        d32.prop_map(Grow::Mem32),
        d64.prop_map(Grow::Mem64),
        e32.prop_map(Grow::Table32),
        e64.prop_map(Grow::Table64),
    ]
}

/// One memory32, one memory64, one table32 and one table64, and what they hold in bytes as
/// the runtime counts it (a page is 64 KiB, a table element one pointer).
const GROWER: &str = r#"(module
  (memory $m32 1)
  (memory $m64 i64 1)
  (table $t32 1 funcref)
  (table $t64 i64 1 funcref)
  (func (export "mem32") (param i32) (result i32) (memory.grow $m32 (local.get 0)))
  (func (export "mem64") (param i64) (result i64) (memory.grow $m64 (local.get 0)))
  (func (export "table32") (param i32) (result i32) (table.grow $t32 (ref.null func) (local.get 0)))
  (func (export "table64") (param i64) (result i64) (table.grow $t64 (ref.null func) (local.get 0)))
  (func (export "held") (result i64)
    (i64.add
      (i64.mul (i64.add (i64.extend_i32_u (memory.size $m32)) (memory.size $m64)) (i64.const 65536))
      (i64.mul (i64.add (i64.extend_i32_u (table.size $t32)) (table.size $t64)) (i64.const 8)))))"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever grows or fails to grow, the budget's charge is exactly what the domains hold.
    #[test]
    fn the_budget_charges_exactly_what_domains_hold(ops in prop::collection::vec(grow(), 1..24)) {
        let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        tokio.block_on(async {
            let (rt, _) = runtime_with(RuntimeConfig {
                memory_budget: Some(16 << 20),
                // Two memories per instance: more than a pool slot holds.
                engine: EngineConfig { pooling: false, ..EngineConfig::default() },
                ..RuntimeConfig::default()
            });
            let m = rt.load_module(GROWER.as_bytes()).unwrap();
            let cfg = DomainConfig {
                max_memory: 12 << 20,
                max_memories: 2,
                ..DomainConfig::default()
            };
            let a = rt.create_domain(&m, cfg.clone()).await.unwrap();
            let b = rt.create_domain(&m, cfg).await.unwrap();
            for (i, op) in ops.iter().enumerate() {
                let d = if i % 2 == 0 { &a } else { &b };
                let (export, arg) = match *op {
                    Grow::Mem32(n) => ("mem32", Val::I32(n as i32)),
                    Grow::Mem64(n) => ("mem64", Val::I64(n as i64)),
                    Grow::Table32(n) => ("table32", Val::I32(n as i32)),
                    Grow::Table64(n) => ("table64", Val::I64(n as i64)),
                };
                d.invoke(export, &[arg], opts()).await.unwrap();
                let mut held = 0;
                for d in [&a, &b] {
                    let h = d.invoke("held", &[], opts()).await.unwrap().values[0].unwrap_i64() as u64;
                    assert_eq!(d.memory_used(), h, "after {op:?}: the domain's own figure");
                    held += h;
                }
                assert_eq!(rt.memory().used, held, "after {:?}", &ops[..=i]);
            }
        });
    }
}

/// Fail-fast: the report (what, the last events, a backtrace) goes to the hook and the file,
/// then the process exits at once with 119.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_writes_a_report_and_exits_119() {
    let (rt, rec) = runtime();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let s = seen.clone();
    rt.on_fail_fast(move |report| *s.lock().unwrap() = Some(report.clone()));
    let path = std::env::temp_dir().join(format!("warden-ff-{}.txt", std::process::id()));
    rt.set_fail_fast_report(&path);
    let m = rt.load_module(common::HOSTILE.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    d.invoke("answer", &[], opts()).await.unwrap();
    rt.fail_fast("the embedder's ledger does not balance");
    assert_eq!(rec.exits.lock().unwrap().clone(), vec![exit_code::FATAL]);
    let report = seen
        .lock()
        .unwrap()
        .clone()
        .expect("the hook saw the report");
    assert_eq!(report.what, "the embedder's ledger does not balance");
    assert!(
        report
            .last_events
            .iter()
            .any(|e| e.contains("call_finished")),
        "{report}"
    );
    assert!(!report.backtrace.is_empty());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("FAIL-FAST: the embedder's ledger does not balance"));
    let _ = std::fs::remove_file(&path);
}
