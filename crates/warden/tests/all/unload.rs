//! Domain unload with guaranteed cleanup: the polite and rude protocols, the finalizer's
//! bound, critical release of handles after all guest code, escalation of an unload that will
//! not finish, and races between unloaders, callers and the runtime's end.

use crate::common;
use crate::common::{Recorder, runtime, runtime_with};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use warden::{
    Action, CallError, CallOptions, Domain, DomainConfig, Error, Operation, Policy, Runtime,
    RuntimeConfig, Val, exit_code,
};

/// A guest whose finalizer closes the handle it was given (`set_fin`), checks that a second
/// close is refused, and traps if either answer is wrong.
const FINALIZES: &str = r#"
(module
  (import "warden" "handle_close" (func $close (param i32) (result i32)))
  (import "warden" "critical_enter" (func $critical_enter))
  (global $fin (mut i32) (i32.const 0))
  (func (export "set_fin") (param i32) (global.set $fin (local.get 0)))
  (func (export "count") (result i32) (i32.const 1))
  (func (export "spin") (loop $l (br $l)))
  (func (export "spin_critical") (call $critical_enter) (loop $l (br $l)))
  (func (export "warden_on_unload")
    (if (i32.ne (call $close (global.get $fin)) (i32.const 0)) (then unreachable))
    (if (i32.ne (call $close (global.get $fin)) (i32.const -8)) (then unreachable))))
"#;

/// A guest whose finalizer never returns, and a call that never leaves a constrained region.
const STUBBORN: &str = r#"
(module
  (import "warden" "constrained_enter" (func $constrained_enter))
  (import "warden" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "in")
  ;; Logs once inside its region: tests unload after that line, never before the region.
  (func (export "wedge")
    (call $constrained_enter) (call $log (i32.const 3) (i32.const 0) (i32.const 2))
    (loop $l (br $l)))
  (func (export "warden_on_unload") (loop $l (br $l))))
"#;

/// A guest whose finalizer never leaves a constrained region.
const WEDGED_FINALIZER: &str = r#"
(module
  (import "warden" "constrained_enter" (func $constrained_enter))
  (func (export "warden_on_unload") (call $constrained_enter) (loop $l (br $l))))
"#;

/// Far beyond any bound a test sets: "it ends" assertions on a loaded 2-core box.
const ENDS_WITHIN: Duration = Duration::from_secs(30);

fn policy(settings: &[(Operation, u64, Action)]) -> RuntimeConfig {
    let mut policy = Policy::default();
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

/// Release counters for `n` handles inserted into `d`; returns the handle values.
fn open(d: &Domain, n: usize, released: &Arc<AtomicU64>) -> Vec<u32> {
    (0..n)
        .map(|i| {
            let r = released.clone();
            d.insert_handle(i, move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap()
        })
        .collect()
}

async fn wait_busy(d: &Domain) {
    tokio::time::timeout(ENDS_WITHIN, async {
        while !d.is_busy() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the call started");
}

/// Waits for `d`'s guest to log its first line (a guest says so once inside its region: busy
/// alone does not mean it got there).
async fn wait_logged(rec: &Recorder, d: &Domain) {
    common::wait_until("the guest reached its region", || {
        of(rec, d).iter().any(|e| e["event"] == "guest_log")
    })
    .await;
}

/// The position of the first event matching `pred`.
fn position(events: &[serde_json::Value], pred: impl Fn(&serde_json::Value) -> bool) -> usize {
    events
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("no such event in {events:#?}"))
}

/// Events of domain `d` only.
fn of(rec: &Recorder, d: &Domain) -> Vec<serde_json::Value> {
    rec.json()
        .into_iter()
        .filter(|e| e["domain"] == d.id().0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polite_unload_runs_the_finalizer_with_its_handles_then_releases_the_rest() {
    let (rt, rec) = runtime();
    let m = rt.load_module(FINALIZES.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let released = Arc::new(AtomicU64::new(0));
    let hs = open(&d, 3, &released);
    d.invoke("set_fin", &[Val::I32(hs[1] as i32)], CallOptions::default())
        .await
        .unwrap();

    let report = d.unload().await;
    assert!(
        report.finalizer_ran,
        "the finalizer's closes answered 0 then -8"
    );
    assert!(!report.rude);
    assert_eq!(report.handles_released, 2, "the finalizer closed the third");
    assert_eq!(released.load(Ordering::SeqCst), 3);
    assert_eq!(rt.domain_count(), 0);

    let ev = of(&rec, &d);
    let unloading = position(&ev, |e| e["event"] == "domain_unloading");
    let by_guest = position(&ev, |e| {
        e["event"] == "handle_released" && e["handle"] == hs[1]
    });
    let fin = position(&ev, |e| e["event"] == "finalizer_ran");
    assert_eq!(ev[fin]["result"], "ok");
    let unloaded = position(&ev, |e| e["event"] == "domain_unloaded");
    assert!(unloading < by_guest && by_guest < fin && fin < unloaded);
    // Critical release after every finalizer, newest handle first, then the end.
    let critical: Vec<_> = ev[fin..unloaded]
        .iter()
        .filter(|e| e["event"] == "handle_released")
        .map(|e| e["handle"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(critical, vec![hs[2], hs[0]]);
    assert_eq!(ev[unloaded]["handles_released"], 2);
    assert_eq!(rec.named("handle_released").len(), 3, "one per handle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_finalizer_starts_only_after_unload_has_begun() {
    // The worker notices an unload the moment it is requested, racing the unloader's
    // `domain_unloading` and its abort of the call in flight: that abort is for a call, never
    // for the finalizer, and the events keep the protocol's order.
    let (rt, rec) = runtime();
    let m = rt.load_module(FINALIZES.as_bytes()).unwrap();
    for _ in 0..200 {
        let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
        let h = d.insert_handle((), drop).unwrap();
        d.invoke("set_fin", &[Val::I32(h as i32)], CallOptions::default())
            .await
            .unwrap();
        let report = d.unload().await;
        assert!(report.finalizer_ran, "{:?}", rec.named("finalizer_ran"));
        let ev = of(&rec, &d);
        let unloading = position(&ev, |e| e["event"] == "domain_unloading");
        assert!(unloading < position(&ev, |e| e["event"] == "finalizer_ran"));
    }
    assert!(
        rec.named("finalizer_ran")
            .iter()
            .all(|e| e["result"] == "ok")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polite_unload_aborts_the_call_in_flight_before_the_finalizer() {
    let (rt, rec) = runtime();
    let m = rt.load_module(FINALIZES.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let released = Arc::new(AtomicU64::new(0));
    let hs = open(&d, 2, &released);
    d.invoke("set_fin", &[Val::I32(hs[0] as i32)], CallOptions::default())
        .await
        .unwrap();
    let call = d.call("spin", &[], CallOptions::default()).unwrap();
    let queued = d.call("count", &[], CallOptions::default()).unwrap();
    wait_busy(&d).await;

    let report = tokio::time::timeout(ENDS_WITHIN, d.unload()).await.unwrap();
    assert!(matches!(call.join().await, Err(CallError::DomainUnloaded)));
    assert!(matches!(
        queued.join().await,
        Err(CallError::DomainUnloaded)
    ));
    assert_eq!(report.calls_failed, 2);
    assert!(report.finalizer_ran);
    assert_eq!(report.handles_released, 1);
    assert_eq!(released.load(Ordering::SeqCst), 2);
    let ev = of(&rec, &d);
    let delivered = position(&ev, |e| e["event"] == "abort_delivered");
    let fin = position(&ev, |e| e["event"] == "finalizer_ran");
    assert!(delivered < fin);
    assert_eq!(ev[delivered]["kind"], "polite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rude_unload_skips_the_finalizer_and_still_releases_everything() {
    let (rt, rec) = runtime();
    let m = rt.load_module(FINALIZES.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let released = Arc::new(AtomicU64::new(0));
    open(&d, 5, &released);
    // A critical region would hold off a polite abort; a rude one ignores it.
    let call = d
        .call("spin_critical", &[], CallOptions::default())
        .unwrap();
    wait_busy(&d).await;

    let report = tokio::time::timeout(ENDS_WITHIN, d.rude_unload())
        .await
        .unwrap();
    assert!(matches!(call.join().await, Err(CallError::DomainUnloaded)));
    assert!(report.rude);
    assert!(!report.finalizer_ran);
    assert_eq!(report.handles_released, 5);
    assert_eq!(released.load(Ordering::SeqCst), 5);
    let ev = of(&rec, &d);
    assert_eq!(
        ev[position(&ev, |e| e["event"] == "domain_unloading")]["mode"],
        "rude"
    );
    let fin = position(&ev, |e| e["event"] == "finalizer_ran");
    assert_eq!(ev[fin]["result"], "skipped");
    let first_release = position(&ev, |e| e["event"] == "handle_released");
    assert!(fin < first_release);
    assert_eq!(
        ev[position(&ev, |e| e["event"] == "abort_delivered")]["kind"],
        "rude"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalizer_that_never_returns_is_bounded_and_handles_are_still_released() {
    let (rt, rec) = runtime_with(policy(&[(Operation::FinalizerRun, 200, Action::Abort)]));
    let m = rt.load_module(STUBBORN.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let released = Arc::new(AtomicU64::new(0));
    open(&d, 4, &released);

    let report = tokio::time::timeout(ENDS_WITHIN, d.unload()).await.unwrap();
    assert!(!report.finalizer_ran);
    assert_eq!(report.handles_released, 4);
    assert_eq!(released.load(Ordering::SeqCst), 4);
    let ev = of(&rec, &d);
    let esc = position(&ev, |e| {
        e["event"] == "escalation" && e["operation"] == "finalizer-run"
    });
    assert_eq!(ev[esc]["action"], "abort");
    let fin = position(&ev, |e| e["event"] == "finalizer_ran");
    assert_eq!(ev[fin]["result"], "timeout");
    assert!(esc < fin && fin < position(&ev, |e| e["event"] == "handle_released"));
    assert!(rec.exits.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalizer_wedged_in_a_constrained_region_costs_only_its_domain() {
    // finalizer-run → abort (deferred by the region) → rude-abort (deferred too) →
    // rude-unload-domain: the store is dropped without the guest's cooperation.
    let (rt, rec) = runtime_with(policy(&[
        (Operation::FinalizerRun, 100, Action::Abort),
        (Operation::Abort, 100, Action::RudeAbort),
        (Operation::RudeAbortCritical, 100, Action::RudeUnloadDomain),
        (Operation::RudeAbort, 100, Action::RudeUnloadDomain),
    ]));
    let m = rt.load_module(WEDGED_FINALIZER.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let released = Arc::new(AtomicU64::new(0));
    open(&d, 3, &released);

    let report = tokio::time::timeout(ENDS_WITHIN, d.unload()).await.unwrap();
    assert!(!report.finalizer_ran);
    assert!(report.rude, "escalated to a rude unload");
    assert_eq!(report.handles_released, 3);
    assert_eq!(released.load(Ordering::SeqCst), 3);
    let ev = of(&rec, &d);
    assert_eq!(
        ev[position(&ev, |e| e["event"] == "finalizer_ran")]["result"],
        "timeout"
    );
    assert!(
        ev.iter()
            .any(|e| e["event"] == "escalation" && e["action"] == "rude-unload-domain")
    );
    assert!(
        rec.exits.lock().unwrap().is_empty(),
        "the process is untouched"
    );
    assert_eq!(rt.domain_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unload_that_cannot_finish_escalates_per_policy_and_ends() {
    // A call wedged in a constrained region defers polite and rude aborts alike. The server
    // policy's abort timers (10 s) are far beyond these unload bounds, so the unload timers
    // are what ends it: unload-domain → rude-unload-domain → exit-process (recorded, not
    // carried out, by the test runtime), which drops the store.
    let (rt, rec) = runtime_with(policy(&[
        (Operation::UnloadDomain, 200, Action::RudeUnloadDomain),
        (Operation::RudeUnloadDomain, 200, Action::ExitProcess),
    ]));
    let m = rt.load_module(STUBBORN.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let released = Arc::new(AtomicU64::new(0));
    open(&d, 2, &released);
    let call = d.call("wedge", &[], CallOptions::default()).unwrap();
    wait_logged(&rec, &d).await;

    let report = tokio::time::timeout(ENDS_WITHIN, d.unload()).await.unwrap();
    assert!(report.rude);
    assert!(!report.finalizer_ran, "a rude unload runs no finalizer");
    // exit-process runs the exit sequence, whose critical release may close the handles
    // before the unload does; either way each is released exactly once.
    assert!(report.handles_released <= 2);
    assert_eq!(released.load(Ordering::SeqCst), 2);
    assert!(call.join().await.is_err());
    let ev = of(&rec, &d);
    let polite = position(&ev, |e| {
        e["event"] == "escalation" && e["operation"] == "unload-domain"
    });
    assert_eq!(ev[polite]["action"], "rude-unload-domain");
    let rude = position(&ev, |e| {
        e["event"] == "escalation" && e["operation"] == "rude-unload-domain"
    });
    assert_eq!(ev[rude]["action"], "exit-process");
    assert!(polite < rude);
    assert_eq!(
        common::exited(&rt, &rec).await,
        vec![exit_code::for_action(Action::ExitProcess)]
    );
    assert_eq!(rt.domain_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rude_unload_that_cannot_finish_escalates_too() {
    let (rt, rec) = runtime_with(policy(&[(
        Operation::RudeUnloadDomain,
        200,
        Action::ExitProcess,
    )]));
    let m = rt.load_module(STUBBORN.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let released = Arc::new(AtomicU64::new(0));
    open(&d, 2, &released);
    let call = d.call("wedge", &[], CallOptions::default()).unwrap();
    wait_logged(&rec, &d).await;

    let report = tokio::time::timeout(ENDS_WITHIN, d.rude_unload())
        .await
        .unwrap();
    assert!(report.rude);
    assert_eq!(released.load(Ordering::SeqCst), 2);
    assert!(call.join().await.is_err());
    let ev = of(&rec, &d);
    assert!(
        !ev.iter()
            .any(|e| e["event"] == "escalation" && e["operation"] == "unload-domain"),
        "a rude unload is bounded by rude-unload-domain alone"
    );
    assert_eq!(
        common::exited(&rt, &rec).await,
        vec![exit_code::for_action(Action::ExitProcess)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unloaders_and_callers_see_exactly_one_unload_per_domain() {
    let (rt, rec) = runtime();
    let m = rt.load_module(FINALIZES.as_bytes()).unwrap();
    const DOMAINS: usize = 12;
    const HANDLES: usize = 4;
    let released = Arc::new(AtomicU64::new(0));
    let mut work = Vec::new();
    for i in 0..DOMAINS {
        let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
        open(&d, HANDLES, &released);
        // Half the domains are busy with a call the unload must abort.
        if i % 2 == 0 {
            work.push(tokio::spawn({
                let d = d.clone();
                async move {
                    d.invoke("spin", &[], CallOptions::default())
                        .await
                        .map(drop)
                }
            }));
        }
        let unloaders: Vec<_> = (0..8)
            .map(|k| {
                let d = d.clone();
                tokio::spawn(async move {
                    tokio::task::yield_now().await;
                    match k % 3 {
                        0 => d.unload().await,
                        1 => d.rude_unload().await,
                        _ => d.unloaded().await,
                    }
                })
            })
            .collect();
        for _ in 0..8 {
            let d = d.clone();
            work.push(tokio::spawn(async move {
                d.invoke("count", &[], CallOptions::default())
                    .await
                    .map(drop)
            }));
        }
        work.push(tokio::spawn(async move {
            let mut reports = Vec::new();
            for u in unloaders {
                reports.push(u.await.unwrap());
            }
            assert!(
                reports.windows(2).all(|w| w[0] == w[1]),
                "every unloader learns the one result: {reports:?}"
            );
            assert_eq!(reports[0].handles_released, HANDLES as u64);
            Ok(())
        }));
    }
    for w in work {
        match tokio::time::timeout(ENDS_WITHIN, w).await.unwrap().unwrap() {
            Ok(()) | Err(Error::Call(CallError::DomainUnloaded)) => {}
            Err(other) => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(released.load(Ordering::SeqCst), (DOMAINS * HANDLES) as u64);
    assert_eq!(rec.named("domain_unloaded").len(), DOMAINS);
    assert_eq!(rec.named("domain_unloading").len(), DOMAINS);
    assert_eq!(rec.named("handle_released").len(), DOMAINS * HANDLES);
    assert_eq!(rt.domain_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_racing_the_runtime_handle_drop_still_completes() {
    let (rt, rec) = runtime();
    let m = rt.load_module(FINALIZES.as_bytes()).unwrap();
    let released = Arc::new(AtomicU64::new(0));
    let mut domains = Vec::new();
    for _ in 0..6 {
        let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
        open(&d, 3, &released);
        domains.push(d);
    }
    let probe: Runtime = rt.clone();
    let unloads: Vec<_> = domains
        .iter()
        .cloned()
        .map(|d| tokio::spawn(async move { d.unload().await }))
        .collect();
    drop(rt);
    for u in unloads {
        let report = tokio::time::timeout(ENDS_WITHIN, u).await.unwrap().unwrap();
        assert_eq!(report.handles_released, 3);
    }
    assert_eq!(released.load(Ordering::SeqCst), 18);
    assert_eq!(rec.named("domain_unloaded").len(), 6);
    assert_eq!(probe.domain_count(), 0);
}

#[test]
fn handles_are_released_even_when_the_async_runtime_ends_mid_unload() {
    let released = Arc::new(AtomicU64::new(0));
    let (rt, _rec) = runtime();
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let domains: Vec<Domain> = tokio_rt.block_on(async {
        let m = rt.load_module(FINALIZES.as_bytes()).unwrap();
        let mut domains = Vec::new();
        for _ in 0..4 {
            let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
            open(&d, 5, &released);
            let _ = d
                .call("spin_critical", &[], CallOptions::default())
                .unwrap();
            let unloading = d.clone();
            tokio::spawn(async move { unloading.unload().await });
            domains.push(d);
        }
        domains
    });
    // The executor goes away with calls, unloads and workers in flight: their futures are
    // dropped, never finished. The handle tables go with the domains' last references.
    drop(tokio_rt);
    drop(domains);
    assert_eq!(released.load(Ordering::SeqCst), 20);
}

/// `calls_failed` counts the queued and in-flight calls the unload ended, not callers turned
/// away at the door while it ran (here, during a finalizer that runs until its bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_refused_during_the_unload_are_not_counted_as_failed_by_it() {
    let (rt, rec) = runtime_with(policy(&[(Operation::FinalizerRun, 300, Action::Abort)]));
    let m = rt.load_module(STUBBORN.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let unloading = tokio::spawn({
        let d = d.clone();
        async move { d.unload().await }
    });
    // The finalizer runs as the domain's current code.
    common::wait_until("the finalizer runs", || d.is_busy()).await;
    for _ in 0..3 {
        let late = d.call("wedge", &[], CallOptions::default()).unwrap();
        assert_eq!(late.join().await.unwrap_err(), CallError::DomainUnloaded);
    }
    let report = tokio::time::timeout(ENDS_WITHIN, unloading)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.calls_failed, 0, "{report:?}");
    let ev = of(&rec, &d);
    assert_eq!(
        ev.iter().filter(|e| e["event"] == "call_finished").count(),
        3,
        "each refused call is still reported"
    );
}
