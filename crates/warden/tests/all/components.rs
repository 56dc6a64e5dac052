//! Component guests: typed calls by name, and the hostile cases of core modules (loop,
//! recursion, hog, trap, deadline, abort, unload mid-call, budget and gate) for a component,
//! through the public API. The components are built here from core WAT and WIT.

use crate::common::{self, components};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warden::component::FINALIZER;
use warden::wasmtime::component::Val;
use warden::{CallError, CallOptions, DomainConfig, Error, Preopen, RuntimeConfig, WasiConfig};

fn opts() -> CallOptions {
    CallOptions::default()
}

async fn typed_domain() -> (warden::Runtime, common::Recorder, warden::Domain) {
    let (rt, rec) = common::runtime();
    let module = rt
        .load_module(&components::typed())
        .expect("component loads");
    assert!(module.is_component());
    let domain = rt
        .create_domain(&module, DomainConfig::default())
        .await
        .expect("component domain");
    (rt, rec, domain)
}

fn one(out: warden::CallOutput) -> Val {
    assert!(
        out.values.is_empty(),
        "a component returns typed values only"
    );
    assert_eq!(out.component_values.len(), 1);
    out.component_values.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_values_round_trip() {
    let (_rt, _rec, d) = typed_domain().await;
    let call = |name: &'static str, args: Vec<Val>| {
        let d = d.clone();
        async move { d.invoke_component(name, &args, opts()).await }
    };
    assert_eq!(
        one(call("add", vec![Val::S32(40), Val::S32(2)]).await.unwrap()),
        Val::S32(42)
    );
    assert_eq!(
        one(call("echo", vec![Val::String("héllo".into())])
            .await
            .unwrap()),
        Val::String("héllo".into())
    );
    let xs = Val::List(vec![Val::U32(1), Val::U32(2), Val::U32(u32::MAX)]);
    assert_eq!(
        one(call("sum", vec![xs]).await.unwrap()),
        Val::U64(3 + u32::MAX as u64)
    );
    let point = |x, y| Val::Record(vec![("x".into(), Val::S32(x)), ("y".into(), Val::S32(y))]);
    assert_eq!(
        one(call("swap", vec![point(1, -2)]).await.unwrap()),
        point(-2, 1)
    );
    assert_eq!(
        one(
            call("half", vec![Val::Option(Some(Box::new(Val::U32(10))))])
                .await
                .unwrap()
        ),
        Val::Result(Ok(Some(Box::new(Val::U32(5)))))
    );
    assert_eq!(
        one(call("half", vec![Val::Option(None)]).await.unwrap()),
        Val::Result(Err(Some(Box::new(Val::String("none".into())))))
    );
    // A nested export, by its path (either separator) or its own name.
    for name in ["api#get", "api/get", "get"] {
        assert_eq!(
            one(call(name, vec![]).await.unwrap()),
            Val::U32(7),
            "{name}"
        );
    }
    // The same domain served every call.
    assert!(d.is_loaded());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_calls_name_what_was_wrong() {
    let (_rt, _rec, d) = typed_domain().await;
    match d.invoke_component("add", &[Val::S32(1)], opts()).await {
        Err(Error::BadArguments { name, expected, .. }) => {
            assert_eq!(name, "add");
            assert_eq!(expected, "a: s32, b: s32");
        }
        other => panic!("arity: {other:?}"),
    }
    match d
        .invoke_component("echo", &[Val::U32(1)], opts())
        .await
        .unwrap_err()
    {
        Error::BadArguments { given, .. } => assert_eq!(given, "a u32 for `s`"),
        other => panic!("type: {other:?}"),
    }
    let wrong_field = Val::Record(vec![("y".into(), Val::S32(1)), ("x".into(), Val::S32(2))]);
    assert!(matches!(
        d.invoke_component("swap", &[wrong_field], opts()).await,
        Err(Error::BadArguments { .. })
    ));
    match d.invoke_component("nope", &[], opts()).await.unwrap_err() {
        Error::NoSuchExport(name) => assert_eq!(name, "nope"),
        other => panic!("unknown: {other:?}"),
    }
    // The core API on a component names the method to use.
    let err = d.invoke("add", &[], opts()).await.unwrap_err();
    assert!(err.to_string().contains("invoke_component"), "{err}");
    // None of these was admitted: the domain still serves.
    assert_eq!(
        one(d
            .invoke_component("add", &[Val::S32(1), Val::S32(1)], opts())
            .await
            .unwrap()),
        Val::S32(2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn core_api_names_the_component_method_and_back() {
    let (rt, _rec) = common::runtime();
    let core = rt
        .load_module(br#"(module (func (export "f")))"#)
        .expect("core");
    assert!(!core.is_component());
    let d = rt
        .create_domain(&core, DomainConfig::default())
        .await
        .unwrap();
    let err = d.invoke_component("f", &[], opts()).await.unwrap_err();
    assert!(err.to_string().contains("`invoke`"), "{err}");
    assert!(matches!(
        core.component_func("f"),
        Err(Error::NoSuchExport(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn component_text_loads_and_is_cached_by_digest() {
    let (rt, _rec) = common::runtime();
    let text = br#"(component
        (core module $m (func (export "f") (result i32) (i32.const 5)))
        (core instance $i (instantiate $m))
        (func (export "five") (result u8) (canon lift (core func $i "f"))))"#;
    let a = rt.load_module(text).expect("component text");
    let b = rt.load_module(text).expect("again");
    assert!(a.is_component());
    assert_eq!(a.digest(), b.digest());
    assert_eq!(rt.cached_modules(), 1);
    let export = a.component_func("five").unwrap();
    assert_eq!(export.name, "five");
    assert_eq!(export.results(), 1);
    let d = rt.create_domain(&a, DomainConfig::default()).await.unwrap();
    assert_eq!(
        one(d.invoke_component("five", &[], opts()).await.unwrap()),
        Val::U8(5)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unprovided_import_fails_the_domain_naming_it() {
    let (rt, _rec) = common::runtime();
    let text = br#"(component
        (import "acme:db/query" (instance (export "run" (func))))
    )"#;
    let m = rt.load_module(text).expect("loads");
    let err = rt
        .create_domain(&m, DomainConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Instantiate(_)), "{err:?}");
    assert!(err.to_string().contains("acme:db/query"), "{err}");
    assert_eq!(rt.domain_count(), 0);
}

/// A failed component call ends its domain: the instance cannot be entered again.
async fn ends_the_domain(rec: &common::Recorder, d: &warden::Domain) {
    let report = d.unloaded().await;
    assert!(
        !report.finalizer_ran,
        "a trapped instance cannot run its finalizer"
    );
    assert!(
        rec.named("finalizer_ran")
            .iter()
            .any(|e| e["result"] == "skipped")
    );
    assert!(matches!(
        d.invoke_component("add", &[Val::S32(1), Val::S32(1)], opts())
            .await,
        Err(Error::Call(CallError::DomainUnloaded))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_is_a_trap_and_ends_the_domain() {
    let (_rt, rec, d) = typed_domain().await;
    match d.invoke_component("trap", &[], opts()).await {
        Err(Error::Call(CallError::Trap { message, .. })) => {
            assert!(message.contains("unreachable"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    ends_the_domain(&rec, &d).await;
    let finished = rec.named("call_finished");
    assert!(finished.iter().any(|e| e["outcome"] == "trap"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loop_passes_its_deadline() {
    let (_rt, rec, d) = typed_domain().await;
    let options = CallOptions {
        deadline: Some(Duration::from_millis(50)),
        ..opts()
    };
    assert!(matches!(
        d.invoke_component("spin", &[], options).await,
        Err(Error::Call(CallError::Timeout))
    ));
    ends_the_domain(&rec, &d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_recursion_is_a_stack_overflow() {
    let (_rt, rec, d) = typed_domain().await;
    assert!(matches!(
        d.invoke_component("recurse", &[], opts()).await,
        Err(Error::Call(CallError::StackOverflow { .. }))
    ));
    ends_the_domain(&rec, &d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_hog_is_out_of_memory_under_its_limit() {
    let (rt, rec) = common::runtime();
    let module = rt.load_module(&components::typed()).unwrap();
    let config = DomainConfig {
        max_memory: 4 << 20,
        ..DomainConfig::default()
    };
    let d = rt.create_domain(&module, config).await.unwrap();
    assert!(matches!(
        d.invoke_component("hog", &[], opts()).await,
        Err(Error::Call(CallError::OutOfMemory { .. }))
    ));
    assert!(!rec.named("memory_denied").is_empty());
    assert!(d.memory_stats().peak <= 4 << 20);
    ends_the_domain(&rec, &d).await;
    // Everything the domain held went back to the budget.
    assert_eq!(rt.memory().used, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn growth_is_charged_to_the_budget_and_returned_at_unload() {
    let (rt, _rec) = common::runtime_with(RuntimeConfig {
        memory_budget: Some(64 << 20),
        ..RuntimeConfig::default()
    });
    let module = rt.load_module(&components::typed()).unwrap();
    let d = rt
        .create_domain(&module, DomainConfig::default())
        .await
        .unwrap();
    let before = rt.memory().used;
    assert!(before >= 64 << 10, "the initial page is charged");
    assert_eq!(
        one(d
            .invoke_component("grow", &[Val::U32(16)], opts())
            .await
            .unwrap()),
        Val::S32(1)
    );
    assert_eq!(rt.memory().used, before + (16 << 16));
    let report = d.unload().await;
    assert!(report.finalizer_ran, "`{FINALIZER}` ran");
    assert_eq!(report.memory_released, before + (16 << 16));
    assert_eq!(rt.memory().used, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_memory_gate_refuses_a_reservation_before_any_guest_code() {
    let (rt, rec) = common::runtime_with(RuntimeConfig {
        memory_budget: Some(8 << 20),
        ..RuntimeConfig::default()
    });
    let module = rt.load_module(&components::typed()).unwrap();
    let d = rt
        .create_domain(&module, DomainConfig::default())
        .await
        .unwrap();
    let options = CallOptions {
        reserve: Some(64 << 20),
        ..opts()
    };
    assert!(matches!(
        d.invoke_component("add", &[Val::S32(1), Val::S32(2)], options)
            .await,
        Err(Error::Call(CallError::InsufficientMemory { .. }))
    ));
    assert!(rec.named("call_started").is_empty(), "no guest code ran");
    // A soft refusal: the domain serves the next call, and nothing stays reserved.
    assert!(d.is_loaded());
    assert_eq!(rt.memory().reserved, 0);
    let fits = CallOptions {
        reserve: Some(1 << 20),
        ..opts()
    };
    assert_eq!(
        one(d
            .invoke_component("add", &[Val::S32(1), Val::S32(2)], fits)
            .await
            .unwrap()),
        Val::S32(3)
    );
    assert_eq!(rt.memory().reserved, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_too_small_for_the_initial_memory_refuses_the_domain() {
    let (rt, _rec) = common::runtime_with(RuntimeConfig {
        memory_budget: Some(16 << 10),
        ..RuntimeConfig::default()
    });
    let module = rt.load_module(&components::typed()).unwrap();
    match rt.create_domain(&module, DomainConfig::default()).await {
        Err(Error::Call(CallError::InsufficientMemory { .. })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(rt.domain_count(), 0);
    assert_eq!(rt.memory().used, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abort_unwinds_a_spinning_call() {
    let (_rt, rec, d) = typed_domain().await;
    let call = d.call_component("spin", &[], opts()).unwrap();
    common::wait_until("the call runs", || !rec.named("call_started").is_empty()).await;
    call.abort();
    assert!(matches!(call.join().await, Err(CallError::Aborted)));
    assert!(!rec.named("abort_delivered").is_empty());
    ends_the_domain(&rec, &d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unload_mid_call_fails_the_call_and_releases_everything() {
    let (rt, rec, d) = typed_domain().await;
    let call = d.call_component("spin", &[], opts()).unwrap();
    common::wait_until("the call runs", || !rec.named("call_started").is_empty()).await;
    let report = d.unload().await;
    assert_eq!(report.calls_failed, 1);
    assert!(!report.finalizer_ran);
    assert!(matches!(call.join().await, Err(CallError::DomainUnloaded)));
    assert_eq!(rt.domain_count(), 0);
    assert_eq!(rt.memory().used, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_finalizer_runs_on_a_polite_unload() {
    let (_rt, rec, d) = typed_domain().await;
    let report = d.unload().await;
    assert!(report.finalizer_ran);
    assert!(
        rec.named("finalizer_ran")
            .iter()
            .any(|e| e["result"] == "ok")
    );
    assert!(matches!(
        d.invoke_component("add", &[Val::S32(1), Val::S32(1)], opts())
            .await,
        Err(Error::Call(CallError::DomainUnloaded))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preview2_command_gets_its_args_and_writes_stdout() {
    let (rt, _rec) = common::runtime();
    let module = rt.load_module(&components::command()).unwrap();
    let run = module.component_func("wasi:cli/run#run").unwrap();
    assert_eq!(run.name, "wasi:cli/run@0.2.0#run");
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let sink = stdout.clone();
    let config = |args: &[&str]| DomainConfig {
        wasi: WasiConfig {
            args: args.iter().map(|a| a.to_string()).collect(),
            stdout: Some(warden::stdio::GuestOutput::to_writer(Writer(sink.clone()))),
            ..WasiConfig::default()
        },
        ..DomainConfig::default()
    };
    let d = rt
        .create_domain(&module, config(&["prog", "one", "two"]))
        .await
        .unwrap();
    let out = d.invoke_component("run", &[], opts()).await.unwrap();
    assert_eq!(out.component_values, vec![Val::Result(Ok(None))]);
    assert_eq!(out.exit_code, None);
    d.unload().await;
    // The writer's own thread writes what the guest wrote, once the store has dropped it.
    common::wait_until("the guest's output is written", || {
        stdout.lock().unwrap().len() >= "one\ntwo\n".len()
    })
    .await;
    assert_eq!(
        String::from_utf8_lossy(&stdout.lock().unwrap()),
        "one\ntwo\n"
    );

    // `wasi:cli/exit` with an error status: exit code 1, and the domain ends.
    let d = rt
        .create_domain(&module, config(&["prog", "fail"]))
        .await
        .unwrap();
    let out = d.invoke_component("run", &[], opts()).await.unwrap();
    assert_eq!(out.exit_code, Some(1));
    assert!(!d.unloaded().await.finalizer_ran);
}

/// A writer into shared bytes.
struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A writer that never returns until its test ends: stdout stalls.
struct Stalled(std::sync::mpsc::Receiver<()>);

impl std::io::Write for Stalled {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.recv();
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_parked_on_a_stalled_stdout_is_woken_by_the_deadline() {
    let (rt, rec) = common::runtime();
    let module = rt.load_module(&components::command()).unwrap();
    let (release, stalled) = std::sync::mpsc::channel();
    // More than the output buffer holds, in writes `blocking-write-and-flush` accepts.
    let mut args = vec!["prog".to_string()];
    args.extend(std::iter::repeat_n("x".repeat(4000), 100));
    let config = DomainConfig {
        wasi: WasiConfig {
            args,
            stdout: Some(warden::stdio::GuestOutput::to_writer(Stalled(stalled))),
            ..WasiConfig::default()
        },
        ..DomainConfig::default()
    };
    let d = rt.create_domain(&module, config).await.unwrap();
    let options = CallOptions {
        deadline: Some(Duration::from_millis(200)),
        ..opts()
    };
    let result = d.invoke_component("run", &[], options).await;
    assert!(
        matches!(result, Err(Error::Call(CallError::Timeout))),
        "{result:?}"
    );
    // The call was parked in the WASI write (host time), not spinning in wasm.
    let finished = rec.named("call_finished");
    let host_ms = finished.last().unwrap()["host_ms"].as_f64().unwrap();
    assert!(host_ms > 0.0, "{finished:?}");
    d.unloaded().await;
    drop(release);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_in_two_interfaces_needs_its_path() {
    let (rt, _rec) = common::runtime();
    let text = br#"(component
        (core module $m (func (export "f") (result i32) (i32.const 1)))
        (core instance $i (instantiate $m))
        (func $f (result u32) (canon lift (core func $i "f")))
        (instance $a (export "get" (func $f)))
        (instance $b (export "get" (func $f)))
        (export "x:y/a@1.0.0" (instance $a))
        (export "x:y/b" (instance $b)))"#;
    let m = rt.load_module(text).unwrap();
    match m.component_func("get").unwrap_err() {
        Error::AmbiguousExport { name, candidates } => {
            assert_eq!(name, "get");
            assert_eq!(candidates, "`x:y/a@1.0.0#get`, `x:y/b#get`");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        m.component_func("x:y/a#get").unwrap().name,
        "x:y/a@1.0.0#get"
    );
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    assert_eq!(
        one(d.invoke_component("x:y/b/get", &[], opts()).await.unwrap()),
        Val::U32(1)
    );
    assert!(matches!(
        d.invoke_component("get", &[], opts()).await,
        Err(Error::AmbiguousExport { .. })
    ));
}

// ---- warden:host for component guests ----

async fn host_domain(rt: &warden::Runtime) -> warden::Domain {
    let module = rt
        .load_module(&components::host_guest())
        .expect("the warden:host guest loads");
    rt.create_domain(&module, DomainConfig::default())
        .await
        .expect("a component domain importing warden:host")
}

fn s(x: &str) -> Val {
    Val::String(x.into())
}

fn s32(out: Result<warden::CallOutput, Error>) -> i32 {
    match one(out.map_err(|e| format!("{e:?}")).unwrap()) {
        Val::S32(v) => v,
        other => panic!("{other:?}"),
    }
}

/// The guest's log lines, for domain `d`.
fn logs(rec: &common::Recorder, d: &warden::Domain) -> Vec<String> {
    let id = serde_json::to_value(d.id()).unwrap();
    rec.named("guest_log")
        .into_iter()
        .filter(|e| e["domain"] == id)
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

async fn logged(rec: &common::Recorder, d: &warden::Domain, line: &str) {
    common::wait_until(&format!("the guest logs {line:?}"), || {
        logs(rec, d).iter().any(|l| l == line)
    })
    .await;
}

fn policy(settings: &[(warden::Operation, u64, warden::Action)]) -> RuntimeConfig {
    let mut policy = warden::Policy::default();
    for &(op, ms, action) in settings {
        policy
            .set_timeout(op, Some(Duration::from_millis(ms)), action)
            .unwrap();
    }
    RuntimeConfig {
        policy,
        ..RuntimeConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_polite_abort_waits_for_a_components_critical_region_and_lands_at_its_exit() {
    let (rt, rec) = common::runtime();
    let d = host_domain(&rt).await;
    let call = d.call_component("critical", &[], opts()).unwrap();
    logged(&rec, &d, "in").await;
    call.abort();
    let r = tokio::time::timeout(common::ENDS_WITHIN, call.join()).await;
    assert_eq!(r.unwrap().unwrap_err(), CallError::Aborted);
    // The guest ran on after the request (it saw it, inside the region), and the abort
    // landed in critical-exit: nothing after it ran.
    assert_eq!(logs(&rec, &d), ["in", "saw"]);
    assert_eq!(rec.named("abort_deferred")[0]["why"], "critical_region");
    assert_eq!(rec.named("abort_delivered")[0]["kind"], "polite");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rude_abort_does_not_wait_for_a_components_critical_region() {
    let (rt, rec) = common::runtime();
    let d = host_domain(&rt).await;
    let call = d.call_component("critical-spin", &[], opts()).unwrap();
    logged(&rec, &d, "in").await;
    call.rude_abort();
    let r = tokio::time::timeout(common::ENDS_WITHIN, call.join()).await;
    assert_eq!(r.unwrap().unwrap_err(), CallError::RudeAborted);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rude_abort_waits_for_a_components_constrained_region_within_the_policy_bound() {
    let (rt, rec) = common::runtime();
    let d = host_domain(&rt).await;
    let call = d.call_component("constrained", &[], opts()).unwrap();
    logged(&rec, &d, "in").await;
    call.rude_abort();
    let r = tokio::time::timeout(common::ENDS_WITHIN, call.join()).await;
    assert_eq!(r.unwrap().unwrap_err(), CallError::RudeAborted);
    assert_eq!(logs(&rec, &d), ["in", "saw"]);
    assert_eq!(rec.named("abort_delivered")[0]["kind"], "rude");
    // The request itself is the only escalation: the region ended within the policy's
    // rude-abort bound, so nothing escalated past it (to a rude unload).
    let escalations = rec.named("escalation");
    assert!(
        escalations.iter().all(|e| e["action"] == "rude-abort"),
        "{escalations:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_a_component_call_ends_holding_is_released_poisoned() {
    let (rt, _rec) = common::runtime();
    let (a, b) = (host_domain(&rt).await, host_domain(&rt).await);
    assert_eq!(
        s32(b
            .invoke_component("acquire-release", &[s("q")], opts())
            .await),
        0
    );
    // The call returns holding "p": it is released, poisoned, for the next owner.
    assert_eq!(
        s32(a
            .invoke_component("acquire", &[s("p"), Val::S64(-1)], opts())
            .await),
        0
    );
    assert_eq!(
        s32(b
            .invoke_component("acquire-release", &[s("p")], opts())
            .await),
        1
    );
    // Released cleanly by that owner, the mark is gone.
    assert_eq!(
        s32(b
            .invoke_component("acquire-release", &[s("p")], opts())
            .await),
        0
    );
    // Misuse gets the WIT error: not-held, bad-argument (an empty name).
    assert_eq!(
        s32(b.invoke_component("release", &[s("p")], opts()).await),
        15
    );
    assert_eq!(
        s32(b
            .invoke_component("acquire", &[s(""), Val::S64(-1)], opts())
            .await),
        17
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deadlock_between_two_component_domains_has_a_victim_that_backs_out() {
    let (rt, rec) = common::runtime();
    let (a, b) = (host_domain(&rt).await, host_domain(&rt).await);
    // b takes B, then probes A until a holds it; a takes A, then waits for B.
    let cb = b
        .call_component("cross", &[s("B"), s("A"), Val::Bool(true)], opts())
        .unwrap();
    logged(&rec, &b, "has").await;
    let ca = a
        .call_component("cross", &[s("A"), s("B"), Val::Bool(false)], opts())
        .unwrap();
    let result = |r: warden::CallResult| match one(r.unwrap()) {
        Val::S32(v) => v,
        other => panic!("{other:?}"),
    };
    let ra = result(
        tokio::time::timeout(common::ENDS_WITHIN, ca.join())
            .await
            .unwrap(),
    );
    let rb = result(
        tokio::time::timeout(common::ENDS_WITHIN, cb.join())
            .await
            .unwrap(),
    );
    let mut got = [ra, rb];
    got.sort();
    // One was the victim (deadlock-victim, 11) and backed out; the other then got both.
    assert_eq!(got, [0, 11], "a: {ra}, b: {rb}");
    assert!(!rec.named("deadlock_detected").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_components_lock_wait_and_sleep_are_ended_by_the_deadline() {
    let (rt, rec) = common::runtime();
    let (holder, waiter) = (host_domain(&rt).await, host_domain(&rt).await);
    let held = holder.call_component("hold", &[s("L")], opts()).unwrap();
    logged(&rec, &holder, "has").await;
    let deadline = CallOptions {
        deadline: Some(Duration::from_millis(50)),
        ..opts()
    };
    let r = waiter
        .invoke_component("acquire", &[s("L"), Val::S64(-1)], deadline.clone())
        .await;
    assert!(matches!(r, Err(Error::Call(CallError::Timeout))), "{r:?}");
    held.abort();
    assert_eq!(held.join().await.unwrap_err(), CallError::Aborted);

    let sleeper = host_domain(&rt).await;
    let r = sleeper
        .invoke_component("sleep", &[Val::U64(u64::MAX)], deadline)
        .await;
    assert!(matches!(r, Err(Error::Call(CallError::Timeout))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_memory_gate_refuses_a_component_when_the_budget_is_short() {
    let (rt, _rec) = common::runtime_with(RuntimeConfig {
        memory_budget: Some(64 << 20),
        ..RuntimeConfig::default()
    });
    let d = host_domain(&rt).await;
    let refused = s32(d
        .invoke_component("reserve", &[Val::U64(1 << 30)], opts())
        .await);
    assert_eq!(refused, -16, "insufficient-memory");
    let token = s32(d
        .invoke_component("reserve", &[Val::U64(1 << 20)], opts())
        .await);
    assert!(token > 0, "{token}");
    // The call's end returned it: the token is gone, and a forged one is refused too.
    for t in [token as u32, 0xdead] {
        assert_eq!(
            s32(d
                .invoke_component("unreserve", &[Val::U32(t)], opts())
                .await),
            17
        );
    }
    assert_eq!(
        s32(d
            .invoke_component("close", &[Val::U32(0xbeef)], opts())
            .await),
        17
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_call_is_refused_past_its_reservation_quota() {
    let (rt, _rec) = common::runtime();
    let d = host_domain(&rt).await;
    let r = s32(d.invoke_component("hoard", &[], opts()).await);
    assert_eq!(r >> 8, warden::host::MAX_RESERVATIONS as i32);
    assert_eq!(r & 0xff, 16, "insufficient-memory");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_components_hung_finalizer_is_ended_by_the_finalizer_timeout() {
    use warden::{Action, Operation};
    let (rt, rec) = common::runtime_with(policy(&[(Operation::FinalizerRun, 100, Action::Abort)]));
    let d = host_domain(&rt).await;
    d.invoke_component("arm-finalizer", &[], opts())
        .await
        .unwrap();
    let report = tokio::time::timeout(common::ENDS_WITHIN, d.unload())
        .await
        .unwrap();
    assert!(!report.finalizer_ran);
    assert!(
        rec.named("finalizer_ran")
            .iter()
            .any(|e| e["result"] == "timeout"),
        "{:?}",
        rec.named("finalizer_ran")
    );
    assert!(
        rec.named("escalation")
            .iter()
            .any(|e| e["operation"] == "finalizer-run")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_components_constrained_region_past_the_rude_abort_bound_costs_its_domain() {
    use warden::{Action, Operation};
    let (rt, rec) = common::runtime_with(policy(&[
        (Operation::RudeAbort, 100, Action::RudeUnloadDomain),
        (Operation::RudeAbortCritical, 100, Action::RudeUnloadDomain),
    ]));
    let d = host_domain(&rt).await;
    // A constrained region that does not end: a lock wait inside it that nobody answers.
    let holder = host_domain(&rt).await;
    let held = holder.call_component("hold", &[s("K")], opts()).unwrap();
    logged(&rec, &holder, "has").await;
    let call = d
        .call_component("constrained-wait", &[s("K")], opts())
        .unwrap();
    logged(&rec, &d, "in").await;
    call.rude_abort();
    let r = tokio::time::timeout(common::ENDS_WITHIN, call.join()).await;
    assert!(r.unwrap().is_err());
    let report = d.unloaded().await;
    assert!(report.rude, "escalated to a rude unload: {report:?}");
    assert!(
        rec.named("escalation")
            .iter()
            .any(|e| e["action"] == "rude-unload-domain")
    );
    held.abort();
    assert_eq!(held.join().await.unwrap_err(), CallError::Aborted);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_call_is_refused_its_257th_held_lock() {
    let (rt, rec) = common::runtime();
    let d = host_domain(&rt).await;
    let r = s32(d.invoke_component("hoard-locks", &[], opts()).await);
    assert_eq!(r >> 8, warden::host::MAX_HELD_LOCKS as i32, "{r:#x}");
    assert_eq!(r & 0xff, 17, "bad-argument");
    // It released them all: nothing orphaned, the domain serves on.
    assert!(
        rec.named("escalation").is_empty(),
        "{:?}",
        rec.named("escalation")
    );
    assert!(d.is_loaded());
    assert_eq!(
        s32(d
            .invoke_component("acquire-release", &[s("00")], opts())
            .await),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_components_log_line_is_cut_at_64_kib_and_a_flood_is_rate_limited() {
    let (rt, rec) = common::runtime();
    let d = host_domain(&rt).await;
    d.invoke_component("log-big", &[Val::U32(100_000)], opts())
        .await
        .unwrap();
    let lines = logs(&rec, &d);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].len(), 64 << 10, "cut at 64 KiB");
    // 4000 lines of 1000 bytes are more than the 1 MiB burst: some are dropped and counted.
    d.invoke_component("log-many", &[Val::U32(4000)], opts())
        .await
        .unwrap();
    // The next line that goes out (the bucket refills meanwhile) reports the drop.
    tokio::time::sleep(Duration::from_millis(50)).await;
    d.invoke_component("log-big", &[Val::U32(1)], opts())
        .await
        .unwrap();
    let lines = logs(&rec, &d);
    let kept = lines.iter().filter(|l| l.len() == 1000).count();
    assert!(kept > 0 && kept < 4000, "{kept} of 4000 lines went out");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("were dropped: over the rate limit")),
        "the drop is reported"
    );
    assert!(d.is_loaded(), "logging costs the domain nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_closes_a_valid_handle_once_and_it_is_released() {
    let (rt, _rec) = common::runtime();
    let d = host_domain(&rt).await;
    let released = Arc::new(Mutex::new(0));
    let r = released.clone();
    let h = d
        .insert_handle(String::from("file"), move |_| *r.lock().unwrap() += 1)
        .unwrap();
    assert_eq!(
        s32(d.invoke_component("close", &[Val::U32(h)], opts()).await),
        0
    );
    assert_eq!(*released.lock().unwrap(), 1, "released at close");
    // Closed: the same handle is now stale.
    assert_eq!(
        s32(d.invoke_component("close", &[Val::U32(h)], opts()).await),
        17
    );
    assert!(d.handle::<String>(h).is_err());
    d.unload().await;
    assert_eq!(*released.lock().unwrap(), 1, "exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_hog_that_exhausts_the_process_budget_costs_only_its_call() {
    let (rt, rec) = common::runtime_with(RuntimeConfig {
        memory_budget: Some(8 << 20),
        ..RuntimeConfig::default()
    });
    let module = rt.load_module(&components::typed()).unwrap();
    let hog = rt
        .create_domain(&module, DomainConfig::default())
        .await
        .unwrap();
    let other = rt
        .create_domain(&module, DomainConfig::default())
        .await
        .unwrap();
    assert!(matches!(
        hog.invoke_component("hog", &[], opts()).await,
        Err(Error::Call(CallError::OutOfMemory { .. }))
    ));
    assert!(!rec.named("memory_denied").is_empty());
    assert!(rt.memory().used <= 8 << 20, "the budget held");
    ends_the_domain(&rec, &hog).await;
    // What the hog held is back: the other domain grows into it.
    assert_eq!(
        one(other
            .invoke_component("grow", &[Val::U32(64)], opts())
            .await
            .unwrap()),
        Val::S32(1)
    );
    other.unload().await;
    assert_eq!(rt.memory().used, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_finalizer_interface_is_the_finalizer_and_wins_over_the_top_level_one() {
    let (rt, rec) = common::runtime();
    for both in [false, true] {
        let m = rt.load_module(&components::finalizer_guest(both)).unwrap();
        let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
        d.invoke_component("ping", &[], opts()).await.unwrap();
        let report = d.unload().await;
        assert!(report.finalizer_ran, "both = {both}");
        assert_eq!(logs(&rec, &d), ["interface"], "both = {both}");
    }
}

/// A WASI context is built only for a component that imports WASI, as for a core module
/// that imports preview1: a component without `wasi:` imports never opens its preopens (a
/// missing directory is no error there), and a WASI command still does (it is one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_component_that_imports_wasi_opens_its_preopens() {
    let (rt, _rec) = common::runtime();
    let missing = std::env::temp_dir().join(format!("warden-missing-{}", std::process::id()));
    let config = || {
        let mut c = DomainConfig::default();
        c.wasi.preopens.push(Preopen::new(&missing, "/data"));
        c
    };
    let typed = rt.load_module(&components::typed()).unwrap();
    let d = rt
        .create_domain(&typed, config())
        .await
        .expect("no WASI imported: nothing to open");
    let out = d
        .invoke_component("add", &[Val::S32(40), Val::S32(2)], CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.component_values, [Val::S32(42)]);
    d.unload().await;
    let command = rt.load_module(&components::command()).unwrap();
    let e = rt
        .create_domain(&command, config())
        .await
        .expect_err("a WASI command opens its preopens");
    assert!(e.to_string().contains("warden-missing-"), "{e}");
}
