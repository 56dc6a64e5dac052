//! Issue #2: domains, calls and containment through the public API.

use crate::common::{HOSTILE, runtime, wait_until};
use std::time::{Duration, Instant};
use warden::{CallError, CallOptions, DomainConfig, Error, Outcome, Val};

fn opts() -> CallOptions {
    CallOptions::default()
}

fn deadline(ms: u64) -> CallOptions {
    CallOptions {
        deadline: Some(Duration::from_millis(ms)),
        ..CallOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_call_returns_values_and_one_call_finished_event() {
    let (rt, rec) = runtime();
    let m = rt.load_module(HOSTILE.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let out = d.invoke("answer", &[], opts()).await.unwrap();
    assert_eq!(out.values[0].unwrap_i32(), 42);
    let out = d
        .invoke("add", &[Val::I32(2), Val::I32(3)], opts())
        .await
        .unwrap();
    assert_eq!(out.values[0].unwrap_i32(), 5);
    d.unload().await;
    let finished = rec.named("call_finished");
    assert_eq!(finished.len(), 2);
    assert!(finished.iter().all(|e| e["outcome"] == "ok"));
    assert!(finished.iter().all(|e| e["domain"] == d.id().0));
    assert_eq!(rec.named("domain_loaded").len(), 1);
    assert_eq!(rec.named("domain_unloaded").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_persists_between_calls_in_one_domain_and_not_across_domains() {
    let (rt, _) = runtime();
    let m = rt.load_module(HOSTILE.as_bytes()).unwrap();
    let a = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let b = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    for i in 1..=3 {
        let v = a.invoke("count", &[], opts()).await.unwrap().values[0].unwrap_i32();
        assert_eq!(v, i);
    }
    assert_eq!(
        b.invoke("count", &[], opts()).await.unwrap().values[0].unwrap_i32(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_reports_message_and_backtrace() {
    let (rt, rec) = runtime();
    let m = rt.load_module(HOSTILE.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let err = d.invoke("trap", &[], opts()).await.unwrap_err();
    match err {
        Error::Call(CallError::Trap { message, backtrace }) => {
            assert!(message.contains("divide by zero"), "{message}");
            assert!(
                backtrace.contains("trap") || !backtrace.is_empty(),
                "{backtrace}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // The domain survives a trap (guest-trap -> throw under the server policy).
    assert_eq!(
        d.invoke("answer", &[], opts()).await.unwrap().values[0].unwrap_i32(),
        42
    );
    let esc = rec.named("escalation");
    assert!(
        esc.iter()
            .any(|e| e["failure"] == "guest-trap" && e["action"] == "throw")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_recursion_is_a_stack_overflow() {
    let (rt, _) = runtime();
    let m = rt.load_module(HOSTILE.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let err = d.invoke("recurse", &[], opts()).await.unwrap_err();
    assert!(
        matches!(err, Error::Call(CallError::StackOverflow { .. })),
        "{err:?}"
    );
    assert_eq!(
        d.invoke("answer", &[], opts()).await.unwrap().values[0].unwrap_i32(),
        42
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_growth_then_failure_is_out_of_memory_but_handled_denial_is_ok() {
    let (rt, rec) = runtime();
    let m = rt.load_module(HOSTILE.as_bytes()).unwrap();
    let cfg = DomainConfig {
        max_memory: 4 << 20,
        ..DomainConfig::default()
    };
    let d = rt.create_domain(&m, cfg.clone()).await.unwrap();
    let err = d.invoke("hog", &[], opts()).await.unwrap_err();
    assert!(
        matches!(err, Error::Call(CallError::OutOfMemory { .. })),
        "{err:?}"
    );
    assert!(d.memory_used() <= 4 << 20);
    let denied = rec.named("memory_denied");
    assert!(!denied.is_empty());
    assert_eq!(denied[0]["limit"], "domain");
    // A guest that handles the denial (memory.grow returned -1) ends ok.
    let d2 = rt.create_domain(&m, cfg).await.unwrap();
    let out = d2.invoke("hog_then_ok", &[], opts()).await.unwrap();
    assert_eq!(out.values[0].unwrap_i32(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_ends_an_endless_loop_promptly() {
    let (rt, rec) = runtime();
    let m = rt.load_module(HOSTILE.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let t = Instant::now();
    let err = d.invoke("spin", &[], deadline(100)).await.unwrap_err();
    let took = t.elapsed();
    assert!(matches!(err, Error::Call(CallError::Timeout)), "{err:?}");
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert!(
        took < Duration::from_secs(5),
        "deadline not prompt: {took:?}"
    );
    let esc = rec.named("escalation");
    assert!(
        esc.iter()
            .any(|e| e["failure"] == "deadline" && e["action"] == "abort")
    );
    assert!(!rec.named("abort_delivered").is_empty());
    // The domain is still usable afterwards.
    assert_eq!(
        d.invoke("answer", &[], opts()).await.unwrap().values[0].unwrap_i32(),
        42
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedder_abort_from_another_task_ends_the_call() {
    let (rt, rec) = runtime();
    let m = rt.load_module(HOSTILE.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let call = d.call("spin", &[], opts()).unwrap();
    let id = call.id();
    tokio::time::sleep(Duration::from_millis(50)).await;
    call.abort();
    let err = tokio::time::timeout(Duration::from_secs(5), call.join())
        .await
        .expect("abort lands")
        .unwrap_err();
    assert_eq!(err, CallError::Aborted);
    let requested = rec.named("abort_requested");
    assert_eq!(requested[0]["call"], id.0);
    assert_eq!(requested[0]["reason"], "embedder");
    let rude = d.call("spin", &[], opts()).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    rude.rude_abort();
    assert_eq!(rude.join().await.unwrap_err(), CallError::RudeAborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_queue_one_at_a_time_and_unload_fails_the_queue() {
    let (rt, rec) = runtime();
    let m = rt.load_module(HOSTILE.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let spinning = d.call("spin", &[], opts()).unwrap();
    let queued: Vec<_> = (0..5)
        .map(|_| d.call("answer", &[], opts()).unwrap())
        .collect();
    // The spin running (not still queued itself), so the five wait behind it.
    wait_until("the spin runs", || d.is_busy()).await;
    let report = d.unload().await;
    assert_eq!(
        spinning.join().await.unwrap_err(),
        CallError::DomainUnloaded
    );
    for q in queued {
        assert_eq!(q.join().await.unwrap_err(), CallError::DomainUnloaded);
    }
    assert_eq!(report.calls_failed, 6);
    // After unload: new calls fail, repeated unload returns the same report.
    let late = d.call("answer", &[], opts()).unwrap();
    assert_eq!(late.join().await.unwrap_err(), CallError::DomainUnloaded);
    assert_eq!(d.unload().await, report);
    assert_eq!(rt.domain_count(), 0);
    let outcomes: Vec<_> = rec
        .named("call_finished")
        .into_iter()
        .map(|e| e["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(outcomes.len(), 7);
    assert!(
        outcomes.iter().all(|o| o == "domain_unloaded"),
        "{outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_never_cost_friendly_calls() {
    let (rt, _) = runtime();
    let m = rt.load_module(HOSTILE.as_bytes()).unwrap();
    let cfg = DomainConfig {
        max_memory: 2 << 20,
        ..DomainConfig::default()
    };
    let mut tasks = Vec::new();
    for i in 0..40 {
        let rt = rt.clone();
        let m = m.clone();
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(async move {
            let export = ["answer", "spin", "recurse", "hog", "trap"][i % 5];
            let d = rt.create_domain(&m, cfg).await.unwrap();
            let r = d.invoke(export, &[], deadline(200)).await;
            d.unload().await;
            (export, r)
        }));
    }
    for t in tasks {
        let (export, r) = t.await.unwrap();
        let outcome = match &r {
            Ok(_) => Outcome::Ok,
            Err(Error::Call(e)) => e.outcome(),
            Err(e) => panic!("{export}: {e}"),
        };
        let expected = match export {
            "answer" => Outcome::Ok,
            "spin" => Outcome::Timeout,
            "recurse" => Outcome::StackOverflow,
            "hog" => Outcome::OutOfMemory,
            "trap" => Outcome::Trap,
            _ => unreachable!(),
        };
        assert_eq!(outcome, expected, "{export}: {r:?}");
    }
    assert_eq!(rt.domain_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_error() {
    let (rt, _) = runtime();
    let e = rt.load_module(b"\0asm\x01\0\0\0\xff").unwrap_err();
    assert!(matches!(e, Error::InvalidModule(_)), "{e}");
    // The parser's own error is kept as the source, and the message still carries it.
    let source = std::error::Error::source(&e).expect("the cause is kept");
    assert!(
        e.to_string().ends_with(&source.to_string()),
        "{e} / {source}"
    );
    let e = rt
        .load_module(b"(module (func (export \"f\") i32.add))")
        .unwrap_err();
    assert!(e.to_string().starts_with("invalid module"), "{e}");
    let m = rt
        .load_module(br#"(module (import "env" "nope" (func)))"#)
        .unwrap();
    let e = rt
        .create_domain(&m, DomainConfig::default())
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "module imports `env`.`nope`, which this runtime does not provide"
    );
    let m = rt
        .load_module(br#"(module (import "warden" "sleep_ms" (func (param i32))))"#)
        .unwrap();
    let e = rt
        .create_domain(&m, DomainConfig::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("sleep_ms"), "{e}");
    let m = rt.load_module(HOSTILE.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let e = d.call("missing", &[], opts()).unwrap_err();
    assert_eq!(e.to_string(), "no exported function `missing`");
    let e = d.call("memory", &[], opts()).unwrap_err();
    assert!(matches!(e, Error::NoSuchExport(_)));
    let e = d.call("add", &[Val::I32(1)], opts()).unwrap_err();
    assert_eq!(e.to_string(), "export `add` takes (i32, i32), got (i32)");
    let e = d
        .call("add", &[Val::I64(1), Val::I32(1)], opts())
        .unwrap_err();
    assert!(matches!(e, Error::BadArguments { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_function_that_loops_is_bounded() {
    let (rt, _) = runtime();
    let m = rt
        .load_module(br#"(module (func $s (loop $l (br $l))) (start $s))"#)
        .unwrap();
    let cfg = DomainConfig {
        start_deadline: Some(Duration::from_millis(100)),
        ..DomainConfig::default()
    };
    let e = rt.create_domain(&m, cfg).await.unwrap_err();
    // A start function is a call: passing its deadline is the `timeout` outcome.
    assert!(matches!(e, Error::Call(CallError::Timeout)), "{e}");
    assert_eq!(rt.domain_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_memory_over_the_limit_fails_instantiation() {
    let (rt, _) = runtime();
    let m = rt.load_module(br#"(module (memory 100))"#).unwrap();
    let cfg = DomainConfig {
        max_memory: 1 << 20,
        ..DomainConfig::default()
    };
    let e = rt.create_domain(&m, cfg).await.unwrap_err();
    assert!(matches!(e, Error::Instantiate(_)), "{e}");
    assert!(
        std::error::Error::source(&e).is_some(),
        "wasmtime's error is kept: {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_are_cached_by_digest() {
    let (rt, _) = runtime();
    let a = rt.load_module(HOSTILE.as_bytes()).unwrap();
    let b = rt.load_module(HOSTILE.as_bytes()).unwrap();
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.digest().len(), 64);
    assert_eq!(rt.cached_modules(), 1);
    let c = rt.load_module(b"(module)").unwrap();
    assert_ne!(a.digest(), c.digest());
    assert_eq!(rt.cached_modules(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_domain_handle_unloads_it() {
    let (rt, rec) = runtime();
    let m = rt.load_module(HOSTILE.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let d2 = d.clone();
    drop(d);
    assert_eq!(rt.domain_count(), 1, "a clone still holds it");
    drop(d2);
    for _ in 0..100 {
        if rt.domain_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rt.domain_count(), 0);
    assert_eq!(rec.named("domain_unloaded").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_carries_a_timestamp_and_domain() {
    let (rt, rec) = runtime();
    let m = rt.load_module(HOSTILE.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let _ = d.invoke("trap", &[], opts()).await;
    d.unload().await;
    for e in rec.json() {
        assert!(e["ts"].as_f64().unwrap() > 1.0e12, "{e}");
        assert_eq!(e["domain"], d.id().0, "{e}");
        assert!(e["event"].is_string());
    }
}

#[test]
fn the_readme_embedding_snippet_is_the_compiled_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../../README.md")).unwrap();
    let example = std::fs::read_to_string(root.join("examples/embedding.rs")).unwrap();
    let section = &readme[readme.find("## Embedding").expect("an Embedding section")..];
    let start = section.find("```rust\n").expect("a rust block") + "```rust\n".len();
    let snippet = &section[start..start + section[start..].find("```").unwrap()];
    let begin = example.find("// README begin\n").unwrap() + "// README begin\n".len();
    let end = example.find("    // README end").unwrap();
    let compiled: String = example[begin..end]
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert_eq!(
        snippet, compiled,
        "README.md's embedding snippet and examples/embedding.rs differ"
    );
}

/// Exports are looked up once per domain and their function handles kept by the worker: each
/// name must keep reaching its own function, whatever order two domains first call them in,
/// through both `invoke` and `call`, and a name that is no function stays an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_export_keeps_reaching_its_own_function_in_any_call_order() {
    let (rt, _rec) = runtime();
    let m = rt
        .load_module(
            br#"(module
                  (memory (export "memory") 1)
                  (func (export "one") (result i32) (i32.const 1))
                  (func (export "two") (result i32) (i32.const 2))
                  (func (export "three") (result i32) (i32.const 3)))"#,
        )
        .unwrap();
    let a = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let b = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let value = |name: &str| match name {
        "one" => 1,
        "two" => 2,
        _ => 3,
    };
    for (d, order) in [
        (&a, ["three", "one", "two", "one", "three", "two"]),
        (&b, ["one", "two", "three", "three", "two", "one"]),
    ] {
        for name in order {
            let out = d.invoke(name, &[], opts()).await.unwrap();
            assert_eq!(out.values[0].unwrap_i32(), value(name), "invoke {name}");
            let out = d.call(name, &[], opts()).unwrap().join().await.unwrap();
            assert_eq!(out.values[0].unwrap_i32(), value(name), "call {name}");
        }
        assert!(matches!(
            d.invoke("memory", &[], opts()).await,
            Err(Error::NoSuchExport(_))
        ));
    }
    a.unload().await;
    b.unload().await;
}

/// Exports whose signatures have a typed call (no parameters, or one or two `i32`s or
/// `i64`s; no result or one integer) and exports whose signatures have not (floats, three
/// parameters, two results) answer alike: values in and out, traps, and arguments of the
/// wrong type refused before the call runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_and_untyped_signatures_answer_alike() {
    let (rt, rec) = runtime();
    let m = rt
        .load_module(
            br#"(module
                  (global $g (mut i64) (i64.const 0))
                  (func (export "set") (param i64) (global.set $g (local.get 0)))
                  (func (export "get") (result i64) (global.get $g))
                  (func (export "neg") (param i32) (result i32)
                    (i32.sub (i32.const 0) (local.get 0)))
                  (func (export "widen") (param i32) (result i64) (i64.extend_i32_s (local.get 0)))
                  (func (export "sub64") (param i64 i64) (result i64)
                    (i64.sub (local.get 0) (local.get 1)))
                  (func (export "lt") (param i64 i64) (result i32)
                    (i64.lt_s (local.get 0) (local.get 1)))
                  (func (export "div") (param i32 i32) (result i32)
                    (i32.div_s (local.get 0) (local.get 1)))
                  (func (export "half") (param f32) (result f32) (f32.mul (local.get 0) (f32.const 0.5)))
                  (func (export "sum3") (param i32 i32 i32) (result i32)
                    (i32.add (i32.add (local.get 0) (local.get 1)) (local.get 2)))
                  (func (export "pair") (result i32 i64) (i32.const 7) (i64.const -7)))"#,
        )
        .unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let call = |name: &'static str, args: Vec<Val>| {
        let d = d.clone();
        async move { d.invoke(name, &args, opts()).await }
    };
    let i64_of = |out: &warden::CallOutput| out.values[0].unwrap_i64();
    // Typed: state set by one export is seen by another.
    assert!(
        call("set", vec![Val::I64(-5)])
            .await
            .unwrap()
            .values
            .is_empty()
    );
    assert_eq!(i64_of(&call("get", vec![]).await.unwrap()), -5);
    assert_eq!(
        call("neg", vec![Val::I32(9)]).await.unwrap().values[0].unwrap_i32(),
        -9
    );
    assert_eq!(
        i64_of(&call("widen", vec![Val::I32(-3)]).await.unwrap()),
        -3
    );
    assert_eq!(
        i64_of(
            &call("sub64", vec![Val::I64(1), Val::I64(i64::MAX)])
                .await
                .unwrap()
        ),
        1 - i64::MAX
    );
    assert_eq!(
        call("lt", vec![Val::I64(-1), Val::I64(0)])
            .await
            .unwrap()
            .values[0]
            .unwrap_i32(),
        1
    );
    assert_eq!(
        call("div", vec![Val::I32(7), Val::I32(2)])
            .await
            .unwrap()
            .values[0]
            .unwrap_i32(),
        3
    );
    // A trap in a typed call is the call's outcome, as in an untyped one.
    match call("div", vec![Val::I32(1), Val::I32(0)]).await {
        Err(Error::Call(CallError::Trap { message, .. })) => {
            assert!(message.contains("divide by zero"), "{message}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // Untyped.
    assert_eq!(
        call("half", vec![Val::F32(3.0f32.to_bits())])
            .await
            .unwrap()
            .values[0]
            .unwrap_f32(),
        1.5
    );
    assert_eq!(
        call("sum3", vec![Val::I32(1), Val::I32(2), Val::I32(3)])
            .await
            .unwrap()
            .values[0]
            .unwrap_i32(),
        6
    );
    let pair = call("pair", vec![]).await.unwrap().values;
    assert_eq!((pair[0].unwrap_i32(), pair[1].unwrap_i64()), (7, -7));
    // Arguments of the wrong type never reach either kind of call.
    for (name, args) in [
        ("neg", vec![Val::I64(1)]),
        ("sub64", vec![Val::I32(1), Val::I32(2)]),
        ("half", vec![Val::I32(1)]),
    ] {
        assert!(
            matches!(call(name, args).await, Err(Error::BadArguments { .. })),
            "{name}"
        );
    }
    // The domain is still fine after all of it.
    assert_eq!(i64_of(&call("get", vec![]).await.unwrap()), -5);
    d.unload().await;
    let finished = rec.named("call_finished");
    assert_eq!(
        finished.iter().filter(|e| e["outcome"] == "trap").count(),
        1,
        "{finished:?}"
    );
}

/// Export signatures are kept per module and their slots are dense per module, while each
/// domain keeps the function handles of only the first 64: a module with more exports,
/// called in opposite orders from two domains (and from a clone of the module loaded again),
/// must still run the export named, and a bad call must still be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_export_of_a_big_module_answers_for_itself_in_every_domain() {
    const N: i32 = 100;
    let funcs: String = (0..N)
        .map(|i| format!("(func (export \"f{i}\") (param i32) (result i32) local.get 0 i32.const {i} i32.add)\n"))
        .collect();
    let wat = format!("(module {funcs})");
    let (rt, _) = runtime();
    let m = rt.load_module(wat.as_bytes()).unwrap();
    let again = rt.load_module(wat.as_bytes()).unwrap();
    let a = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let b = rt
        .create_domain(&again, DomainConfig::default())
        .await
        .unwrap();
    for round in 0..2 {
        for i in 0..N {
            let j = N - 1 - i;
            let got = a
                .invoke(&format!("f{i}"), &[Val::I32(1000)], opts())
                .await
                .unwrap();
            assert_eq!(
                got.values[0].unwrap_i32(),
                1000 + i,
                "a: f{i}, round {round}"
            );
            let got = b
                .invoke(&format!("f{j}"), &[Val::I32(2000)], opts())
                .await
                .unwrap();
            assert_eq!(
                got.values[0].unwrap_i32(),
                2000 + j,
                "b: f{j}, round {round}"
            );
        }
    }
    // A fresh domain finds every signature built, its handle cache empty.
    let c = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let got = c.invoke("f99", &[Val::I32(1)], opts()).await.unwrap();
    assert_eq!(got.values[0].unwrap_i32(), 100);
    let err = c.invoke("f70", &[Val::I64(1)], opts()).await.unwrap_err();
    assert!(matches!(err, Error::BadArguments { .. }), "{err:?}");
    let err = c.invoke("f100", &[Val::I32(1)], opts()).await.unwrap_err();
    assert!(matches!(err, Error::NoSuchExport(_)), "{err:?}");
}
