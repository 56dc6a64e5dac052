//! The escalation policy wired into the runtime: every action the runtime carries out today,
//! provoked by a guest and observed through the public API and the event stream; and the
//! four ways an embedder builds a policy, validated alike.

use crate::common;
use crate::common::{HOSTILE, Recorder, runtime_with};
use serde_json::Value;
use std::time::Duration;
use warden::{
    Action, CallError, CallHandle, CallOptions, Domain, DomainConfig, Error, Failure, Operation,
    Policy, Preset, Runtime, RuntimeConfig, exit_code,
};

/// Bound on "it ends" waits: generous, for a loaded 2-core CI box.
const ENDS_WITHIN: Duration = Duration::from_secs(30);

/// A guest that declares critical regions, and has a finalizer.
const GUARDED: &str = r#"
(module
  (import "warden" "critical_enter" (func $enter))
  (import "warden" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "in")
  (func (export "answer") (result i32) (i32.const 42))
  (func (export "trap") (result i32) (i32.div_u (i32.const 1) (i32.const 0)))
  (func (export "spin") (loop $l (br $l)))
  ;; Logs once inside its region: tests abort after that line, never before the region.
  (func (export "critical_spin")
    (call $enter) (call $log (i32.const 3) (i32.const 64) (i32.const 2)) (loop $l (br $l)))
  (func (export "critical_trap") (call $enter) unreachable)
  (func (export "warden_on_unload")))
"#;

fn policy(toml: &str) -> Policy {
    Policy::from_toml_str(toml).expect("a legal policy")
}

fn opts() -> CallOptions {
    CallOptions::default()
}

async fn setup(policy: Policy, wat: &str, config: DomainConfig) -> (Runtime, Recorder, Domain) {
    let (rt, rec) = runtime_with(RuntimeConfig {
        policy,
        ..RuntimeConfig::default()
    });
    let m = rt.load_module(wat.as_bytes()).unwrap();
    let d = rt.create_domain(&m, config).await.unwrap();
    (rt, rec, d)
}

/// Runs `export` to its end, returning the call's id with its result.
async fn call(d: &Domain, export: &str, options: CallOptions) -> (u64, Result<(), CallError>) {
    let h = d.call(export, &[], options).unwrap();
    let id = h.id().0;
    (id, joined(h).await)
}

async fn joined(h: CallHandle) -> Result<(), CallError> {
    tokio::time::timeout(ENDS_WITHIN, h.join())
        .await
        .expect("the call ends")
        .map(drop)
}

async fn unloaded(d: &Domain) -> warden::UnloadReport {
    tokio::time::timeout(ENDS_WITHIN, d.unloaded())
        .await
        .expect("the domain is unloaded")
}

/// The `escalation` events that decided `what` (a failure or an operation name).
fn escalations(rec: &Recorder, what: &str) -> Vec<Value> {
    rec.named("escalation")
        .into_iter()
        .filter(|e| e["failure"] == what || e["operation"] == what)
        .collect()
}

/// The one `escalation` event for `what`; checks it names the domain and the call.
fn escalation(rec: &Recorder, what: &str, d: &Domain, call: u64) -> Value {
    let found = escalations(rec, what);
    assert_eq!(found.len(), 1, "one escalation for {what}: {found:?}");
    let e = found.into_iter().next().unwrap();
    assert_eq!(e["domain"], d.id().0, "{e}");
    assert_eq!(e["call"], call, "{e}");
    e
}

/// Waits until an event named `name` for `call` was recorded.
async fn event_for_call(rec: &Recorder, name: &str, call: u64) -> Value {
    let wait = async {
        loop {
            if let Some(e) = rec.named(name).into_iter().find(|e| e["call"] == call) {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(ENDS_WITHIN, wait)
        .await
        .unwrap_or_else(|_| panic!("no {name} event for call {call}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_under_throw_fails_the_call_and_keeps_the_domain() {
    let (_rt, rec, d) = setup(Policy::default(), HOSTILE, DomainConfig::default()).await;
    let (id, r) = call(&d, "trap", opts()).await;
    assert!(matches!(r, Err(CallError::Trap { .. })), "{r:?}");
    let e = escalation(&rec, "guest-trap", &d, id);
    assert_eq!(e["action"], "throw");
    assert_eq!(e["critical"], false);
    assert!(e.get("operation").is_none(), "{e}");
    // The failure cost the call only.
    assert!(d.is_loaded());
    assert_eq!(call(&d, "answer", opts()).await.1, Ok(()));
    assert!(rec.named("domain_unloading").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_under_unload_domain_unloads_politely_before_any_later_call() {
    let p = policy("[failures]\nguest-trap = \"unload-domain\"");
    let (_rt, rec, d) = setup(p, GUARDED, DomainConfig::default()).await;
    let (id, r) = call(&d, "trap", opts()).await;
    assert!(matches!(r, Err(CallError::Trap { .. })), "{r:?}");
    assert_eq!(
        escalation(&rec, "guest-trap", &d, id)["action"],
        "unload-domain"
    );
    // Entry is blocked by the time the failed call is reported: nothing more runs here.
    assert_eq!(
        call(&d, "answer", opts()).await.1,
        Err(CallError::DomainUnloaded)
    );
    let report = unloaded(&d).await;
    assert!(!report.rude);
    assert!(report.finalizer_ran, "a polite unload runs the finalizer");
    assert_eq!(rec.named("domain_unloading")[0]["mode"], "polite");
    let gone = rec.named("domain_unloaded");
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0]["domain"], d.id().0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_under_rude_unload_domain_unloads_rudely_and_skips_the_finalizer() {
    let p = policy("[failures]\nguest-trap = \"rude-unload-domain\"");
    let (_rt, rec, d) = setup(p, GUARDED, DomainConfig::default()).await;
    let (id, r) = call(&d, "trap", opts()).await;
    assert!(matches!(r, Err(CallError::Trap { .. })), "{r:?}");
    assert_eq!(
        escalation(&rec, "guest-trap", &d, id)["action"],
        "rude-unload-domain"
    );
    let report = unloaded(&d).await;
    assert!(report.rude);
    assert!(!report.finalizer_ran);
    assert_eq!(rec.named("domain_unloading")[0]["mode"], "rude");
    assert_eq!(rec.named("finalizer_ran")[0]["result"], "skipped");
    assert_eq!(rec.named("domain_unloaded").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_under_each_exit_action_calls_exit_once_with_its_code() {
    for (action, code) in [
        ("exit-process", exit_code::POLICY_EXIT),
        ("fast-exit-process", exit_code::POLICY_FAST_EXIT),
        ("rude-exit-process", exit_code::POLICY_RUDE_EXIT),
    ] {
        let p = policy(&format!("[failures]\nguest-trap = \"{action}\""));
        let (rt, rec, d) = setup(p, HOSTILE, DomainConfig::default()).await;
        let (id, r) = call(&d, "trap", opts()).await;
        assert!(matches!(r, Err(CallError::Trap { .. })), "{action}: {r:?}");
        assert_eq!(escalation(&rec, "guest-trap", &d, id)["action"], action);
        assert_eq!(common::exited(&rt, &rec).await, vec![code], "{action}");
        // The runtime admits nothing more, and a second failure does not exit twice.
        assert!(rt.is_exiting());
        assert_eq!(
            call(&d, "trap", opts()).await.1,
            Err(CallError::ProcessExiting),
            "{action}"
        );
        assert_eq!(rec.exits.lock().unwrap().len(), 1, "{action}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_under_disable_runtime_refuses_all_later_work() {
    let p = policy("[failures]\nguest-trap = \"disable-runtime\"");
    let (rt, rec, d) = setup(p, HOSTILE, DomainConfig::default()).await;
    let (id, r) = call(&d, "trap", opts()).await;
    assert!(matches!(r, Err(CallError::Trap { .. })), "{r:?}");
    assert_eq!(
        escalation(&rec, "guest-trap", &d, id)["action"],
        "disable-runtime"
    );
    assert!(rt.is_disabled());
    assert_eq!(rec.named("runtime_disabled").len(), 1);
    let (_, r) = call(&d, "answer", opts()).await;
    assert_eq!(r, Err(CallError::RuntimeDisabled));
    assert_eq!(
        r.unwrap_err().outcome().as_str(),
        "runtime_disabled",
        "a clear outcome"
    );
    let m = rt.load_module(HOSTILE.as_bytes()).unwrap();
    let created = rt.create_domain(&m, DomainConfig::default()).await;
    assert!(
        matches!(created, Err(Error::Call(CallError::RuntimeDisabled))),
        "{created:?}"
    );
    // The process stays up.
    assert!(rec.exits.lock().unwrap().is_empty());
    assert!(!rt.is_exiting());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_action_decides_how_the_call_is_cut_off() {
    let deadline = CallOptions {
        deadline: Some(Duration::from_millis(100)),
        ..CallOptions::default()
    };
    for (action, kind, unloads) in [
        ("abort", "polite", false),
        ("rude-abort", "rude", false),
        ("unload-domain", "polite", true),
    ] {
        let p = policy(&format!("[failures]\ndeadline = \"{action}\""));
        let (_rt, rec, d) = setup(p, HOSTILE, DomainConfig::default()).await;
        let (id, r) = call(&d, "spin", deadline.clone()).await;
        // However it is cut off, passing the deadline reads as a timeout.
        assert_eq!(r, Err(CallError::Timeout), "{action}");
        assert_eq!(escalation(&rec, "deadline", &d, id)["action"], action);
        let requested = rec.named("abort_requested");
        assert_eq!(requested[0]["kind"], kind, "{action}: {requested:?}");
        assert_eq!(requested[0]["call"], id);
        if unloads {
            unloaded(&d).await;
            assert_eq!(rec.named("domain_unloaded").len(), 1);
        } else {
            assert!(d.is_loaded(), "{action}");
            assert_eq!(call(&d, "answer", opts()).await.1, Ok(()), "{action}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_overflow_and_noncritical_oom_can_cost_the_domain() {
    let p = policy(
        "[failures]\nstack-overflow = \"unload-domain\"\nnoncritical-resource = \"unload-domain\"",
    );
    let small = DomainConfig {
        max_memory: 1 << 20,
        ..DomainConfig::default()
    };
    for (export, failure) in [
        ("recurse", "stack-overflow"),
        ("hog", "noncritical-resource"),
    ] {
        let (rt, rec, d) = setup(p.clone(), HOSTILE, small.clone()).await;
        let (id, r) = call(&d, export, opts()).await;
        match (export, &r) {
            ("recurse", Err(CallError::StackOverflow { .. }))
            | ("hog", Err(CallError::OutOfMemory { .. })) => {}
            _ => panic!("{export}: {r:?}"),
        }
        let e = escalation(&rec, failure, &d, id);
        assert_eq!(e["action"], "unload-domain");
        assert_eq!(e["critical"], false);
        unloaded(&d).await;
        assert_eq!(rt.domain_count(), 0, "{export}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_abort_operations_default_decides_what_call_handle_abort_does() {
    // `abort` resolved to `rude-abort`: the embedder's polite request lands rudely.
    let p = policy("[defaults]\nabort = \"rude-abort\"");
    let (_rt, rec, d) = setup(p, HOSTILE, DomainConfig::default()).await;
    let h = d.call("spin", &[], opts()).unwrap();
    let id = h.id().0;
    event_for_call(&rec, "call_started", id).await;
    h.abort();
    assert_eq!(joined(h).await, Err(CallError::RudeAborted));
    assert_eq!(escalation(&rec, "abort", &d, id)["action"], "rude-abort");
    assert_eq!(rec.named("abort_requested")[0]["kind"], "rude");
    assert!(d.is_loaded());

    // `abort` resolved to `unload-domain`: the call is aborted and the domain goes with it.
    let p = policy("[defaults]\nabort = \"unload-domain\"");
    let (_rt, rec, d) = setup(p, HOSTILE, DomainConfig::default()).await;
    let h = d.call("spin", &[], opts()).unwrap();
    let id = h.id().0;
    event_for_call(&rec, "call_started", id).await;
    h.abort();
    assert_eq!(joined(h).await, Err(CallError::Aborted));
    assert_eq!(escalation(&rec, "abort", &d, id)["action"], "unload-domain");
    unloaded(&d).await;
    assert_eq!(rec.named("domain_unloaded").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_deferred_by_a_critical_region_escalates_when_its_timeout_passes() {
    let p = policy("[timeouts]\nabort = { after = \"200ms\", action = \"rude-abort\" }");
    let (_rt, rec, d) = setup(p, GUARDED, DomainConfig::default()).await;
    let h = d.call("critical_spin", &[], opts()).unwrap();
    let id = h.id().0;
    // Inside its critical region, not merely started.
    event_for_call(&rec, "guest_log", id).await;
    h.abort();
    // Rude aborts ignore critical regions: the call ends despite never leaving it.
    assert_eq!(joined(h).await, Err(CallError::RudeAborted));
    let deferred = rec.named("abort_deferred");
    assert_eq!(deferred.len(), 1, "{deferred:?}");
    assert_eq!(deferred[0]["kind"], "polite");
    assert_eq!(deferred[0]["why"], "critical_region");
    let decided: Vec<Value> = escalations(&rec, "abort");
    let actions: Vec<&Value> = decided.iter().map(|e| &e["action"]).collect();
    // First the request (abort), then its timeout (rude-abort).
    assert_eq!(actions, ["abort", "rude-abort"], "{decided:?}");
    assert!(
        decided
            .iter()
            .all(|e| e["call"] == id && e["critical"] == true)
    );
    let kinds: Vec<Value> = rec
        .named("abort_requested")
        .into_iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds, ["polite", "rude"]);
    assert_eq!(rec.named("abort_delivered")[0]["kind"], "rude");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_timeout_resolves_through_rude_abort_critical() {
    // The timeout asks for a rude abort of a critical call; the `rude-abort-critical`
    // operation says what that becomes (SQL Server: the domain).
    let p = policy(
        "[defaults]\nrude-abort-critical = \"rude-unload-domain\"\n\
         [timeouts]\nabort = { after = \"200ms\", action = \"rude-abort\" }",
    );
    let (_rt, rec, d) = setup(p, GUARDED, DomainConfig::default()).await;
    let h = d.call("critical_spin", &[], opts()).unwrap();
    let id = h.id().0;
    // Inside its critical region, not merely started.
    event_for_call(&rec, "guest_log", id).await;
    h.abort();
    assert_eq!(joined(h).await, Err(CallError::RudeAborted));
    let actions: Vec<Value> = escalations(&rec, "abort")
        .into_iter()
        .map(|e| e["action"].clone())
        .collect();
    assert_eq!(actions, ["abort", "rude-unload-domain"]);
    assert!(unloaded(&d).await.rude);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_timeout_escalates_once_and_rude_abort_of_a_critical_call_is_its_own_operation() {
    // exit-process is a legal end for an abort that will not land; the recorded exit does
    // not end the test process, so the call keeps spinning in its critical region.
    let p = policy("[timeouts]\nabort = { after = \"100ms\", action = \"exit-process\" }");
    let (_rt, rec, d) = setup(p, GUARDED, DomainConfig::default()).await;
    let h = d.call("critical_spin", &[], opts()).unwrap();
    let id = h.id().0;
    // Inside its critical region, not merely started.
    event_for_call(&rec, "guest_log", id).await;
    h.abort();
    let wait = async {
        while rec.exits.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(ENDS_WITHIN, wait)
        .await
        .expect("the abort timeout fired");
    assert_eq!(*rec.exits.lock().unwrap(), vec![exit_code::POLICY_EXIT]);
    // Several timeout periods later the timeout has still fired only once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let actions: Vec<Value> = escalations(&rec, "abort")
        .into_iter()
        .map(|e| e["action"].clone())
        .collect();
    assert_eq!(actions, ["abort", "exit-process"]);
    h.rude_abort();
    assert_eq!(joined(h).await, Err(CallError::RudeAborted));
    let e = escalation(&rec, "rude-abort-critical", &d, id);
    assert_eq!(e["action"], "rude-abort");
    assert_eq!(e["critical"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_a_critical_region_meets_the_critical_escalation_floor() {
    // Server preset: guest-trap is `throw`, but the floor for a critical call is
    // `unload-domain`.
    let (_rt, rec, d) = setup(Policy::default(), GUARDED, DomainConfig::default()).await;
    let (id, r) = call(&d, "critical_trap", opts()).await;
    assert!(matches!(r, Err(CallError::Trap { .. })), "{r:?}");
    let e = escalation(&rec, "guest-trap", &d, id);
    assert_eq!(e["action"], "unload-domain");
    assert_eq!(e["critical"], true);
    unloaded(&d).await;
    // With the floor off (the clr preset) the same trap costs only the call.
    let (_rt, rec, d) = setup(
        Policy::preset(Preset::Clr),
        GUARDED,
        DomainConfig::default(),
    )
    .await;
    let (id, _) = call(&d, "critical_trap", opts()).await;
    assert_eq!(escalation(&rec, "guest-trap", &d, id)["action"], "throw");
    assert!(d.is_loaded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unload_that_outlasts_its_timeout_turns_rude() {
    // The polite abort of the unload is deferred forever (critical region, no abort
    // timeout); the unload-domain timeout ends it.
    let p = policy(
        "[timeouts]\nabort = { after = \"infinite\" }\n\
         unload-domain = { after = \"200ms\", action = \"rude-unload-domain\" }",
    );
    let (_rt, rec, d) = setup(p, GUARDED, DomainConfig::default()).await;
    let h = d.call("critical_spin", &[], opts()).unwrap();
    let id = h.id().0;
    // Inside its critical region, not merely started.
    event_for_call(&rec, "guest_log", id).await;
    let report = tokio::time::timeout(ENDS_WITHIN, d.unload())
        .await
        .expect("the unload ends");
    assert!(report.rude);
    assert_eq!(joined(h).await, Err(CallError::DomainUnloaded));
    let e = escalation(&rec, "unload-domain", &d, id);
    assert_eq!(e["action"], "rude-unload-domain");
    assert_eq!(e["critical"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalizer_that_outlasts_its_timeout_is_aborted() {
    const HANGS: &str = r#"(module
        (func (export "answer") (result i32) (i32.const 42))
        (func (export "warden_on_unload") (loop $l (br $l))))"#;
    let p = policy("[timeouts]\nfinalizer-run = { after = \"200ms\", action = \"abort\" }");
    let (_rt, rec, d) = setup(p, HANGS, DomainConfig::default()).await;
    let report = tokio::time::timeout(ENDS_WITHIN, d.unload())
        .await
        .expect("the unload ends");
    assert!(!report.finalizer_ran);
    assert_eq!(rec.named("finalizer_ran")[0]["result"], "timeout");
    let e = escalations(&rec, "finalizer-run");
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0]["action"], "abort");
    assert_eq!(e[0]["domain"], d.id().0);
    assert!(e[0]["call"].is_u64(), "the finalizer runs as a call: {e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unload_operations_default_applies_to_an_embedder_unload() {
    let p = policy("[defaults]\nunload-domain = \"rude-unload-domain\"");
    let (_rt, rec, d) = setup(p, GUARDED, DomainConfig::default()).await;
    let report = tokio::time::timeout(ENDS_WITHIN, d.unload())
        .await
        .expect("the unload ends");
    assert!(report.rude);
    assert!(!report.finalizer_ran);
    let e = escalations(&rec, "unload-domain");
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0]["action"], "rude-unload-domain");
    // Under the server preset an unload is what it says: no decision to record.
    let (_rt, rec, d) = setup(Policy::default(), GUARDED, DomainConfig::default()).await;
    assert!(d.unload().await.finalizer_ran);
    assert!(rec.named("escalation").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_start_function_is_decided_too() {
    const START_TRAPS: &str = r#"(module (func $s unreachable) (start $s))"#;
    let p = policy("[failures]\nguest-trap = \"exit-process\"");
    let (rt, rec) = runtime_with(RuntimeConfig {
        policy: p,
        ..RuntimeConfig::default()
    });
    let m = rt.load_module(START_TRAPS.as_bytes()).unwrap();
    let r = rt.create_domain(&m, DomainConfig::default()).await;
    // A start function is a call: its trap is the call's outcome.
    assert!(
        matches!(r, Err(Error::Call(warden::CallError::Trap { .. }))),
        "{r:?}"
    );
    let e = rec.named("escalation");
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0]["failure"], "guest-trap");
    assert_eq!(e[0]["action"], "exit-process");
    assert_eq!(
        common::exited(&rt, &rec).await,
        vec![exit_code::POLICY_EXIT]
    );
}

const CUSTOM: &str = r#"
preset = "sqlserver"
[failures]
guest-trap = "unload-domain"
deadline = "rude-abort"
[timeouts]
abort = { after = "250ms", action = "rude-abort" }
"#;

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-policy-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_from_a_file_a_string_a_preset_or_code_is_one_policy() {
    let from_str = Policy::from_toml_str(CUSTOM).unwrap();
    let from_file = Policy::from_file(&temp_file("custom.toml", CUSTOM)).unwrap();
    let from_load = Policy::load(temp_file("custom.toml", CUSTOM).to_str().unwrap()).unwrap();
    let mut in_code = Policy::preset(Preset::SqlServer);
    in_code
        .set_failure(Failure::GuestTrap, Action::UnloadDomain)
        .unwrap();
    in_code
        .set_failure(Failure::Deadline, Action::RudeAbort)
        .unwrap();
    in_code
        .set_timeout(
            Operation::Abort,
            Some(Duration::from_millis(250)),
            Action::RudeAbort,
        )
        .unwrap();
    assert_eq!(from_str, from_file);
    assert_eq!(from_str, from_load);
    assert_eq!(from_str, in_code);
    assert_eq!(
        Policy::load("sqlserver").unwrap(),
        Policy::preset(Preset::SqlServer)
    );
    // And the runtime acts on it: a trap unloads the domain.
    let (rt, rec, d) = setup(in_code, HOSTILE, DomainConfig::default()).await;
    assert_eq!(rt.policy(), &from_file);
    let (id, _) = call(&d, "trap", opts()).await;
    assert_eq!(
        escalation(&rec, "guest-trap", &d, id)["action"],
        "unload-domain"
    );
    unloaded(&d).await;
}

#[test]
fn an_illegal_choice_is_refused_alike_by_every_route() {
    // fatal-runtime may only be rude-exit-process or disable-runtime.
    let text = "[failures]\nfatal-runtime = \"throw\"";
    let from_str = Policy::from_toml_str(text).unwrap_err();
    let path = temp_file("illegal.toml", text);
    let from_file = Policy::from_file(&path).unwrap_err();
    let from_load = Policy::load(path.to_str().unwrap()).unwrap_err();
    let in_code = Policy::default()
        .set_failure(Failure::FatalRuntime, Action::Throw)
        .unwrap_err();
    let message = in_code.to_string();
    for e in [&from_str, &from_file, &from_load, &in_code] {
        assert_eq!(e.key(), Some("[failures] fatal-runtime"), "{e}");
        assert!(e.to_string().contains(&message), "{e}");
    }
    for part in [
        "fatal-runtime",
        "\"throw\"",
        "rude-exit-process, disable-runtime",
    ] {
        assert!(message.contains(part), "{message} lacks {part}");
    }
    assert!(
        from_file.to_string().contains(&path.display().to_string()),
        "{from_file}"
    );
    // Setters refuse the same way for operations.
    let e = Policy::default()
        .set_default(Operation::UnloadDomain, Action::Abort)
        .unwrap_err();
    assert_eq!(e.key(), Some("[defaults] unload-domain"));
    let e = Policy::from_toml_str("[defaults]\nunload-domain = \"abort\"").unwrap_err();
    assert_eq!(e.key(), Some("[defaults] unload-domain"));
}
