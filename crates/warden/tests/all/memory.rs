//! Issue #6: the process budget, the memory gate, hard OOM and pressure.

use crate::common::{Recorder, runtime_with, wait_until};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use warden::{CallError, CallOptions, DomainConfig, Error, Runtime, RuntimeConfig, Val};

const GUEST: &str = r#"
(module
  (import "warden" "gate_reserve" (func $reserve (param i64) (result i32)))
  (import "warden" "gate_release" (func $release (param i32) (result i32)))
  (import "warden" "sleep_ms" (func $sleep (param i64) (result i32)))
  (memory (export "memory") 1)
  ;; Grow by $pages pages; returns memory.grow's answer.
  (func (export "grow") (param $pages i32) (result i32) (memory.grow (local.get $pages)))
  ;; Grow 64 KiB at a time until denied; returns the pages it got.
  (func (export "grow_all") (result i32)
    (local $n i32)
    (loop $l
      (if (i32.ne (memory.grow (i32.const 1)) (i32.const -1))
        (then (local.set $n (i32.add (local.get $n) (i32.const 1))) (br $l))))
    (local.get $n))
  (func (export "reserve") (param $bytes i64) (result i32) (call $reserve (local.get $bytes)))
  (func (export "release") (param $t i32) (result i32) (call $release (local.get $t)))
  (func (export "reserve_twice_release_once") (result i32)
    (local $t i32)
    (local.set $t (call $reserve (i64.const 1000)))
    (drop (call $release (local.get $t)))
    (call $release (local.get $t)))
  ;; Reserve, then end in the given way: 0 return, 1 trap, 2 spin.
  (func (export "reserve_then") (param $how i32) (result i32)
    (drop (call $reserve (i64.const 1048576)))
    (if (i32.eq (local.get $how) (i32.const 1)) (then unreachable))
    (if (i32.eq (local.get $how) (i32.const 2)) (then (loop $l (br $l))))
    (i32.const 0))
  (func (export "sleep") (param $ms i64) (result i32) (call $sleep (local.get $ms)))
  ;; gate_reserve(0) until refused; returns how many were granted.
  (func (export "hoard") (result i32)
    (local $n i32)
    (loop $l
      (if (i32.gt_s (call $reserve (i64.const 0)) (i32.const 0))
        (then (local.set $n (i32.add (local.get $n) (i32.const 1))) (br $l))))
    (local.get $n)))
"#;

const MIB: u64 = 1 << 20;

fn rt_with_budget(bytes: u64) -> (Runtime, Recorder) {
    runtime_with(RuntimeConfig {
        memory_budget: Some(bytes),
        ..RuntimeConfig::default()
    })
}

fn i32_of(r: Result<warden::CallOutput, Error>) -> i32 {
    r.map_err(|e| e.to_string()).unwrap().values[0].unwrap_i32()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_budget_holds_across_domains_growing_concurrently_and_accounting_is_exact() {
    let (rt, rec) = rt_with_budget(8 * MIB);
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let cfg = DomainConfig {
        max_memory: 4 * MIB,
        ..DomainConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicU64::new(0));
    let observer = {
        let (rt, stop, worst) = (rt.clone(), stop.clone(), worst.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let s = rt.memory();
                worst.fetch_max(s.used + s.reserved, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let mut domains = Vec::new();
    for _ in 0..6 {
        domains.push(rt.create_domain(&m, cfg.clone()).await.unwrap());
    }
    let calls: Vec<_> = domains
        .iter()
        .map(|d| d.call("grow_all", &[], CallOptions::default()).unwrap())
        .collect();
    let mut pages = 0u64;
    for c in calls {
        pages += c.join().await.unwrap().values[0].unwrap_i32() as u64;
    }
    stop.store(true, Ordering::Relaxed);
    observer.await.unwrap();
    let stats = rt.memory();
    assert!(worst.load(Ordering::Relaxed) <= 8 * MIB, "budget exceeded");
    // Every byte is accounted for: the budget is the sum of the domains.
    let sum: u64 = domains.iter().map(|d| d.memory_stats().used).sum();
    assert_eq!(stats.used, sum);
    assert_eq!(stats.used, (6 + pages) * 65536);
    assert!(
        stats.used > 7 * MIB,
        "the domains filled the budget: {stats:?}"
    );
    let denied = rec.named("memory_denied");
    assert!(denied.iter().any(|e| e["limit"] == "budget"), "{denied:?}");
    for d in &domains {
        d.unload().await;
    }
    assert_eq!(rt.memory().used, 0, "unload returns every byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_refuses_at_once_without_escalation_and_frees_on_call_end() {
    let (rt, rec) = rt_with_budget(4 * MIB);
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let big = CallOptions {
        reserve: Some(5 * MIB),
        ..CallOptions::default()
    };
    let e = d.invoke("grow", &[Val::I32(1)], big).await.unwrap_err();
    match e {
        Error::Call(CallError::InsufficientMemory {
            requested,
            available,
        }) => {
            assert_eq!(requested, 5 * MIB);
            assert_eq!(available, 4 * MIB - 65536);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        rec.named("escalation").is_empty(),
        "a soft OOM never escalates"
    );
    assert_eq!(
        rec.named("call_finished")[0]["outcome"],
        "insufficient_memory"
    );
    // A call within the gate: its growth spends its reservation first, the rest goes back.
    let fits = CallOptions {
        reserve: Some(2 * MIB),
        ..CallOptions::default()
    };
    assert_eq!(i32_of(d.invoke("grow", &[Val::I32(16)], fits).await), 1);
    let s = rt.memory();
    assert_eq!((s.used, s.reserved), (65536 + MIB, 0));
    assert!(d.is_loaded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_gate_reservations_follow_design_codes() {
    let (rt, _) = rt_with_budget(4 * MIB);
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    assert_eq!(
        i32_of(
            d.invoke("reserve", &[Val::I64(8 * MIB as i64)], Default::default())
                .await
        ),
        -7
    );
    assert_eq!(
        i32_of(
            d.invoke("reserve", &[Val::I64(-1)], Default::default())
                .await
        ),
        -8
    );
    assert_eq!(
        i32_of(
            d.invoke("release", &[Val::I32(12345)], Default::default())
                .await
        ),
        -8
    );
    assert_eq!(
        i32_of(
            d.invoke("release", &[Val::I32(0)], Default::default())
                .await
        ),
        -8
    );
    assert_eq!(
        i32_of(
            d.invoke("reserve_twice_release_once", &[], Default::default())
                .await
        ),
        -8
    );
    let token = i32_of(
        d.invoke("reserve", &[Val::I64(1000)], Default::default())
            .await,
    );
    assert!(token > 0);
    // Reservations end with the call that took them.
    assert_eq!(rt.memory().reserved, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_are_freed_on_every_path() {
    let (rt, _) = rt_with_budget(64 * MIB);
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    // Success and trap.
    assert_eq!(
        i32_of(
            d.invoke("reserve_then", &[Val::I32(0)], Default::default())
                .await
        ),
        0
    );
    assert_eq!(rt.memory().reserved, 0);
    assert!(
        d.invoke("reserve_then", &[Val::I32(1)], Default::default())
            .await
            .is_err()
    );
    assert_eq!(rt.memory().reserved, 0);
    // Abort.
    let c = d
        .call("reserve_then", &[Val::I32(2)], Default::default())
        .unwrap();
    wait_until("the call holds its reservation", || {
        rt.memory().reserved == MIB
    })
    .await;
    c.abort();
    assert_eq!(c.join().await.unwrap_err(), CallError::Aborted);
    assert_eq!(rt.memory().reserved, 0);
    // Unload.
    let c = d
        .call("reserve_then", &[Val::I32(2)], Default::default())
        .unwrap();
    wait_until("the call holds its reservation", || {
        rt.memory().reserved == MIB
    })
    .await;
    let report = d.unload().await;
    assert!(c.join().await.is_err());
    assert_eq!(
        report.reservations_released, MIB,
        "the in-flight call's reservation"
    );
    let s = rt.memory();
    assert_eq!((s.used, s.reserved), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pressure_unloads_the_largest_idle_domain_and_never_a_busy_one() {
    let (rt, rec) = runtime_with(RuntimeConfig {
        memory_budget: Some(16 * MIB),
        unload_on_pressure: true,
        ..RuntimeConfig::default()
    });
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let new = || rt.create_domain(&m, DomainConfig::default());
    let (big, small, busy, trigger) = (
        new().await.unwrap(),
        new().await.unwrap(),
        new().await.unwrap(),
        new().await.unwrap(),
    );
    // busy holds the most memory but has a call in flight.
    assert_eq!(
        i32_of(
            busy.invoke("grow", &[Val::I32(100)], Default::default())
                .await
        ),
        1
    );
    let sleeping = busy
        .call("sleep", &[Val::I64(1500)], Default::default())
        .unwrap();
    assert_eq!(
        i32_of(
            big.invoke("grow", &[Val::I32(60)], Default::default())
                .await
        ),
        1
    );
    assert_eq!(
        i32_of(
            small
                .invoke("grow", &[Val::I32(10)], Default::default())
                .await
        ),
        1
    );
    wait_until("busy runs its sleep", || busy.is_busy()).await;
    // Crossing 90 % of 16 MiB.
    assert_eq!(
        i32_of(
            trigger
                .invoke("grow", &[Val::I32(60)], Default::default())
                .await
        ),
        1
    );
    tokio::time::timeout(Duration::from_secs(10), big.unloaded())
        .await
        .expect("big unloaded");
    assert!(busy.is_loaded() && small.is_loaded() && trigger.is_loaded());
    let p = rec.named("memory_pressure");
    assert_eq!(p[0]["level"], "high");
    assert_eq!(p[0]["budget"], 16 * MIB);
    sleeping.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedder_pressure_handler_sees_each_crossing_and_calls_report_memory() {
    let (rt, rec) = rt_with_budget(4 * MIB);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    rt.set_pressure_handler(move |p| s2.lock().unwrap().push(p));
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    // 64 KiB + 58 pages = 3.69 MiB: above the 90 % mark of 4 MiB (3.6 MiB).
    assert_eq!(
        i32_of(d.invoke("grow", &[Val::I32(58)], Default::default()).await),
        1
    );
    d.unload().await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        matches!(seen[0], warden::warden_core::budget::Pressure::High { .. }),
        "{seen:?}"
    );
    assert!(
        matches!(
            seen[1],
            warden::warden_core::budget::Pressure::Relieved { .. }
        ),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 2);
    let finished = rec.named("call_finished");
    assert_eq!(finished[0]["memory_used"], 59 * 65536);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_holds_at_most_1024_reservations() {
    let (rt, _) = rt_with_budget(4 * MIB);
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    assert_eq!(
        i32_of(d.invoke("hoard", &[], Default::default()).await),
        1024
    );
    assert_eq!(rt.memory().reserved, 0);
}
