//! Issue #4: abort that respects critical regions, host locks, deadlock detection.

use crate::common;
use crate::common::runtime;
use std::time::{Duration, Instant};
use warden::{CallError, CallOptions, DomainConfig, Error, Val};

/// Lock names are one byte at offsets 0 ("A"), 1 ("B"), 2 ("C").
const GUEST: &str = r#"
(module
  (import "warden" "lock_acquire" (func $acq (param i32 i32 i64) (result i32)))
  (import "warden" "lock_release" (func $rel (param i32 i32) (result i32)))
  (import "warden" "critical_enter" (func $cin))
  (import "warden" "critical_exit" (func $cout))
  (import "warden" "constrained_enter" (func $kin))
  (import "warden" "constrained_exit" (func $kout))
  (import "warden" "abort_requested" (func $requested (result i32)))
  (import "warden" "sleep_ms" (func $sleep (param i64) (result i32)))
  (import "warden" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "ABC")
  (data (i32.const 8) "in")
  (func (export "acquire") (param $l i32) (result i32)
    (call $acq (local.get $l) (i32.const 1) (i64.const -1)))
  (func (export "acquire_within") (param $l i32) (param $ms i64) (result i32)
    (call $acq (local.get $l) (i32.const 1) (local.get $ms)))
  (func (export "release") (param $l i32) (result i32)
    (call $rel (local.get $l) (i32.const 1)))
  ;; Acquire and release in one call; returns what the acquire said.
  (func (export "acquire_release") (param $l i32) (result i32)
    (local $r i32)
    (local.set $r (call $acq (local.get $l) (i32.const 1) (i64.const -1)))
    (drop (call $rel (local.get $l) (i32.const 1)))
    (local.get $r))
  (func (export "acquire_twice") (result i32)
    (drop (call $acq (i32.const 0) (i32.const 1) (i64.const -1)))
    (call $acq (i32.const 0) (i32.const 1) (i64.const -1)))
  (func (export "bad_name") (result i32)
    (call $acq (i32.const 65530) (i32.const 100) (i64.const -1)))
  ;; Hold lock $l for $ms, then release it and return what release said.
  (func (export "hold") (param $l i32) (param $ms i64) (result i32)
    (drop (call $acq (local.get $l) (i32.const 1) (i64.const -1)))
    (drop (call $sleep (local.get $ms)))
    (call $rel (local.get $l) (i32.const 1)))
  ;; Take $first, wait, take $second. A deadlock victim backs out: it releases $first and
  ;; returns -2 (unless the abort lands in that release).
  (func (export "cross") (param $first i32) (param $second i32) (result i32)
    (local $r i32)
    (drop (call $acq (local.get $first) (i32.const 1) (i64.const -1)))
    (drop (call $sleep (i64.const 150)))
    (local.set $r (call $acq (local.get $second) (i32.const 1) (i64.const -1)))
    (if (i32.eq (local.get $r) (i32.const -2))
      (then
        (drop (call $rel (local.get $first) (i32.const 1)))
        (return (i32.const -2))))
    (drop (call $rel (local.get $second) (i32.const 1)))
    (drop (call $rel (local.get $first) (i32.const 1)))
    (local.get $r))
  ;; A critical region that sleeps, then leaves: a polite abort lands in critical_exit.
  (func (export "critical_sleep") (param $ms i64) (result i32)
    (call $cin)
    (call $log (i32.const 3) (i32.const 8) (i32.const 2))
    (drop (call $sleep (local.get $ms)))
    (call $cout)
    (i32.const 1))
  (func (export "critical_spin")
    (call $cin) (call $log (i32.const 3) (i32.const 8) (i32.const 2)) (loop $l (br $l)))
  (func (export "constrained_sleep_then_spin") (param $ms i64)
    (call $kin)
    (call $log (i32.const 3) (i32.const 8) (i32.const 2))
    (drop (call $sleep (local.get $ms)))
    (call $kout)
    (loop $l (br $l)))
  (func (export "cooperative") (result i32)
    (call $cin)
    (call $log (i32.const 3) (i32.const 8) (i32.const 2))
    (loop $l (if (i32.eqz (call $requested)) (then (drop (call $sleep (i64.const 5))) (br $l))))
    (call $cout)
    (i32.const 1))
  ;; Take two-byte lock names "AA", "BA", ... holding all (each try waits 0 ms): returns
  ;; (first failing code << 16) | how many it got.
  (func (export "hoard") (result i32)
    (local $i i32) (local $r i32)
    (loop $l
      (i32.store8 (i32.const 100) (i32.add (i32.const 65) (i32.rem_u (local.get $i) (i32.const 26))))
      (i32.store8 (i32.const 101) (i32.add (i32.const 65) (i32.div_u (local.get $i) (i32.const 26))))
      (local.set $r (call $acq (i32.const 100) (i32.const 2) (i64.const 0)))
      (if (i32.eqz (local.get $r))
        (then
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 300))))))
    (i32.or (i32.shl (local.get $r) (i32.const 16)) (local.get $i)))
  (func (export "unbalanced") (call $cout))
  (func (export "unbalanced_constrained") (call $kout))
  (func (export "long_sleep") (result i32) (call $sleep (i64.const 100000)))
  (func (export "hog_critical")
    (call $cin)
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable)
  (func (export "hog")
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable))
"#;

fn opts() -> CallOptions {
    CallOptions::default()
}

fn i32s(v: &[i64]) -> Vec<Val> {
    v.iter().map(|&x| Val::I32(x as i32)).collect()
}

async fn setup() -> (warden::Runtime, common::Recorder, warden::Module) {
    let (rt, rec) = runtime();
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    (rt, rec, m)
}

/// Waits until the guest has logged "in" (it entered its region) `n` times in all.
async fn entered(rec: &common::Recorder, n: usize) {
    common::wait_until("the guest is inside its region", || {
        rec.named("guest_log")
            .iter()
            .filter(|e| e["message"] == "in")
            .count()
            >= n
    })
    .await;
}

async fn domain(rt: &warden::Runtime, m: &warden::Module) -> warden::Domain {
    rt.create_domain(m, DomainConfig::default()).await.unwrap()
}

fn ret(r: Result<warden::CallOutput, Error>) -> i32 {
    r.map_err(|e| format!("{e:?}")).unwrap().values[0].unwrap_i32()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polite_abort_is_deferred_by_a_critical_region_and_lands_in_critical_exit() {
    let (rt, rec, m) = setup().await;
    let d = domain(&rt, &m).await;
    let t = Instant::now();
    let call = d.call("critical_sleep", &[Val::I64(300)], opts()).unwrap();
    entered(&rec, 1).await;
    call.abort();
    // The sleep inside the region is not interrupted; the abort lands at critical_exit, so
    // the function's `i32.const 1` is never returned.
    assert_eq!(call.join().await.unwrap_err(), CallError::Aborted);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let deferred = rec.named("abort_deferred");
    assert_eq!(deferred[0]["why"], "critical_region");
    assert_eq!(rec.named("abort_delivered")[0]["kind"], "polite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rude_abort_ignores_critical_regions_but_waits_for_constrained_ones() {
    let (rt, rec, m) = setup().await;
    let d = domain(&rt, &m).await;
    let call = d.call("critical_spin", &[], opts()).unwrap();
    entered(&rec, 1).await;
    call.rude_abort();
    let r = tokio::time::timeout(Duration::from_secs(5), call.join())
        .await
        .unwrap();
    assert_eq!(r.unwrap_err(), CallError::RudeAborted);

    let t = Instant::now();
    let call = d
        .call("constrained_sleep_then_spin", &[Val::I64(300)], opts())
        .unwrap();
    entered(&rec, 2).await;
    call.rude_abort();
    let r = tokio::time::timeout(Duration::from_secs(5), call.join())
        .await
        .unwrap();
    assert_eq!(r.unwrap_err(), CallError::RudeAborted);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "landed inside the constrained region"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_requested_lets_a_guest_cut_its_region_short() {
    let (rt, rec, m) = setup().await;
    let d = domain(&rt, &m).await;
    let call = d.call("cooperative", &[], opts()).unwrap();
    entered(&rec, 1).await;
    call.abort();
    let r = tokio::time::timeout(Duration::from_secs(5), call.join())
        .await
        .unwrap();
    assert_eq!(r.unwrap_err(), CallError::Aborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_wait_is_woken_by_a_deliverable_abort() {
    let (rt, _, m) = setup().await;
    let d = domain(&rt, &m).await;
    let call = d.call("long_sleep", &[], opts()).unwrap();
    common::wait_until("the call runs", || d.is_busy()).await;
    let t = Instant::now();
    call.abort();
    let r = tokio::time::timeout(Duration::from_secs(5), call.join())
        .await
        .unwrap();
    assert_eq!(r.unwrap_err(), CallError::Aborted);
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbalanced_exits_trap_with_a_clear_message() {
    let (rt, _, m) = setup().await;
    let d = domain(&rt, &m).await;
    for (export, text) in [
        (
            "unbalanced",
            "critical_exit without a matching critical_enter",
        ),
        (
            "unbalanced_constrained",
            "constrained_exit without a matching constrained_enter",
        ),
    ] {
        match d.invoke(export, &[], opts()).await.unwrap_err() {
            Error::Call(CallError::Trap { message, .. }) => {
                assert!(message.contains(text), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_are_non_recursive_and_release_checks_ownership() {
    let (rt, _, m) = setup().await;
    let d = domain(&rt, &m).await;
    // Second acquire by the owner: -6. (The call then ends holding A: orphaned.)
    assert_eq!(ret(d.invoke("acquire_twice", &[], opts()).await), -6);
    let d = domain(&rt, &m).await;
    assert_eq!(
        ret(d.invoke("release", &i32s(&[1]), opts()).await),
        -6,
        "not held"
    );
    assert_eq!(ret(d.invoke("bad_name", &[], opts()).await), -8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_timeout_returns_minus_one_and_the_lock_stays_usable() {
    let (rt, _, m) = setup().await;
    let holder = domain(&rt, &m).await;
    let other = domain(&rt, &m).await;
    let hold = holder
        .call("hold", &[Val::I32(0), Val::I64(400)], opts())
        .unwrap();
    common::wait_until("A is held", || rt.locks().is_held("A")).await;
    let r = other
        .invoke("acquire_within", &[Val::I32(0), Val::I64(50)], opts())
        .await;
    assert_eq!(ret(r), -1);
    assert_eq!(hold.join().await.unwrap().values[0].unwrap_i32(), 0);
    assert_eq!(
        ret(other.invoke("acquire_release", &i32s(&[0]), opts()).await),
        0
    );
    assert!(!rt.locks().is_held("A"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_locks_are_poisoned_and_decided_by_policy() {
    let (rt, rec, m) = setup().await;
    let careless = domain(&rt, &m).await;
    // Returns while holding B: the lock is orphaned; server policy unloads the domain.
    assert_eq!(
        ret(careless.invoke("acquire", &i32s(&[1]), opts()).await),
        0
    );
    let report = tokio::time::timeout(Duration::from_secs(10), careless.unloaded())
        .await
        .expect("orphaned-lock unloads the domain");
    assert_eq!(report.locks_released, 1);
    assert!(!rt.locks().is_held("B"));
    let orphaned = rec.named("locks_orphaned");
    assert_eq!(orphaned[0]["locks"][0], "B");
    assert!(
        rec.named("escalation")
            .iter()
            .any(|e| e["failure"] == "orphaned-lock" && e["action"] == "unload-domain")
    );
    // The next acquirer is told: -4, acquired but poisoned. A normal release clears it.
    let next = domain(&rt, &m).await;
    assert_eq!(
        ret(next.invoke("acquire_release", &i32s(&[1]), opts()).await),
        -4
    );
    assert_eq!(
        ret(next.invoke("acquire_release", &i32s(&[1]), opts()).await),
        0
    );
    assert!(next.is_loaded(), "a clean release orphans nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polite_abort_waits_for_held_locks_and_lands_in_lock_release() {
    let (rt, rec, m) = setup().await;
    let d = domain(&rt, &m).await;
    let t = Instant::now();
    let call = d
        .call("hold", &[Val::I32(2), Val::I64(300)], opts())
        .unwrap();
    common::wait_until("C is held", || rt.locks().is_held("C")).await;
    call.abort();
    assert_eq!(call.join().await.unwrap_err(), CallError::Aborted);
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(rec.named("abort_deferred")[0]["why"], "lock_held");
    // Released cleanly (the abort landed after the release): not poisoned, not orphaned.
    assert!(!rt.locks().is_held("C"));
    assert!(!rt.locks().is_poisoned("C"));
    assert!(rec.named("locks_orphaned").is_empty());
}

async fn cycle(names: &[(i64, i64)]) {
    let (rt, rec, m) = setup().await;
    let mut calls = Vec::new();
    let mut domains = Vec::new();
    for &(a, b) in names {
        let d = domain(&rt, &m).await;
        calls.push(d.call("cross", &i32s(&[a, b]), opts()).unwrap());
        domains.push(d);
    }
    let mut victims = 0;
    let mut survivors = 0;
    for c in calls {
        match tokio::time::timeout(Duration::from_secs(20), c.join())
            .await
            .expect("no hang")
        {
            // `deadlock = throw` (server): the victim is told -2, backs out and returns.
            Ok(out) if out.values[0].unwrap_i32() == -2 => victims += 1,
            Ok(out) => {
                assert_eq!(
                    out.values[0].unwrap_i32(),
                    0,
                    "a survivor completes cleanly"
                );
                survivors += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((victims, survivors), (1, names.len() - 1));
    // Told, not interrupted: the critical-escalation floor does not apply, so the victim's
    // domain stays (SQL Server's 1205), though it held a lock when it was told.
    for d in &domains {
        assert!(d.is_loaded(), "a deadlock victim's domain was unloaded");
    }
    let detected = rec.named("deadlock_detected");
    assert_eq!(detected.len(), 1);
    assert_eq!(detected[0]["cycle"].as_array().unwrap().len(), names.len());
    assert!(
        rec.named("escalation")
            .iter()
            .any(|e| e["failure"] == "deadlock")
    );
    for l in ["A", "B", "C"] {
        assert!(!rt.locks().is_held(l), "{l} left held");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlock_of_two_calls_picks_one_victim_and_the_other_completes() {
    cycle(&[(0, 1), (1, 0)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlock_of_three_calls_picks_one_victim_and_the_others_complete() {
    cycle(&[(0, 1), (1, 2), (2, 0)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_is_classified_by_the_calls_state() {
    let (rt, rec, m) = setup().await;
    let cfg = DomainConfig {
        max_memory: 2 << 20,
        ..DomainConfig::default()
    };
    let d = rt.create_domain(&m, cfg.clone()).await.unwrap();
    let e = d.invoke("hog", &[], opts()).await.unwrap_err();
    assert!(matches!(e, Error::Call(CallError::OutOfMemory { .. })));
    let d2 = rt.create_domain(&m, cfg).await.unwrap();
    let e = d2.invoke("hog_critical", &[], opts()).await.unwrap_err();
    assert!(matches!(e, Error::Call(CallError::OutOfMemory { .. })));
    let esc = rec.named("escalation");
    assert!(esc.iter().any(|e| e["failure"] == "noncritical-resource"
        && e["action"] == "throw"
        && e["critical"] == false));
    assert!(esc.iter().any(|e| e["failure"] == "critical-resource"
        && e["action"] == "unload-domain"
        && e["critical"] == true));
    // critical-resource -> unload-domain: the second domain goes away.
    tokio::time::timeout(Duration::from_secs(10), d2.unloaded())
        .await
        .unwrap();
    assert!(d.is_loaded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_holds_at_most_256_locks_so_orphans_stay_bounded() {
    let (rt, _, m) = setup().await;
    let d = domain(&rt, &m).await;
    let packed = ret(d.invoke("hoard", &[], opts()).await);
    assert_eq!(packed & 0xffff, 256, "it got 256 locks");
    assert_eq!(packed >> 16, -8, "the 257th is refused");
    // The call ended holding them: all released (poisoned), and the domain unloaded by policy.
    tokio::time::timeout(Duration::from_secs(10), d.unloaded())
        .await
        .unwrap();
    assert!(rt.locks().lock_count() <= 256);
}
