//! The host scheduler (issue #13 item 3): a call past its quantum drops to low priority, so
//! short calls keep making progress while runaways spin; a parked runaway still ends at its
//! deadline, its abort or its domain's unload; and a long call alone is never starved.
//!
//! Everything here asserts progress, order and outcomes; the scheduler's speed is measured by
//! `bench/serve`, not here.

use crate::common::{Recorder, runtime, runtime_with};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use warden::{
    CallError, CallHandle, CallOptions, Domain, DomainConfig, Module, Runtime, RuntimeConfig,
    SchedulerConfig, Val,
};

const GUEST: &str = r#"
(module
  (import "warden" "critical_enter" (func $critical_enter))
  (import "warden" "critical_exit" (func $critical_exit))
  (import "warden" "abort_requested" (func $abort_requested (result i32)))
  (memory (export "memory") 1)
  (func (export "answer") (result i32) (i32.const 42))
  (func (export "spin") (loop $l (br $l)))
  ;; Counts down from n: a long call that ends on its own.
  (func (export "work") (param $n i64) (result i64)
    (loop $l
      (local.set $n (i64.sub (local.get $n) (i64.const 1)))
      (br_if $l (i64.gt_s (local.get $n) (i64.const 0))))
    (i64.const 7))
  ;; Spins in a critical region until an abort is pending, then leaves it (where the
  ;; deferred abort lands) and spins on.
  (func (export "spin_critical")
    (call $critical_enter)
    (loop $l (br_if $l (i32.eqz (call $abort_requested))))
    (call $critical_exit)
    (loop $l2 (br $l2))))
"#;

/// Enough iterations to run well past one 10 ms quantum.
const LONG_WORK: i64 = 300_000_000;

fn opts() -> CallOptions {
    CallOptions::default()
}

async fn waits_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(std::time::Instant::now() < until, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A runaway in a domain of its own (the domain is returned: dropping it would unload it).
async fn spin_in_new_domain(
    rt: &Runtime,
    m: &Module,
    options: CallOptions,
) -> (Domain, CallHandle) {
    let d = rt.create_domain(m, DomainConfig::default()).await.unwrap();
    let call = d.call("spin", &[], options).unwrap();
    (d, call)
}

/// Friendly calls on a task of their own, one after the other until `stop`: they keep the
/// host busy. Returns how many ended ok.
fn friendly_load(rt: &Runtime, m: &Module, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let (rt, m) = (rt.clone(), m.clone());
    tokio::spawn(async move {
        let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
        let mut ok = 0;
        while !stop.load(Ordering::Relaxed) {
            let out = d.invoke("answer", &[], opts()).await.unwrap();
            assert_eq!(out.values[0].unwrap_i32(), 42);
            ok += 1;
            // A short call ends within its first poll; yield as a server awaiting its
            // next request would, so this task does not hold its worker thread.
            tokio::task::yield_now().await;
        }
        ok
    })
}

fn finished(rec: &Recorder, call: u64) -> bool {
    rec.named("call_finished").iter().any(|e| e["call"] == call)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_calls_run_to_the_end_while_runaways_are_demoted_and_held_back() {
    let (rt, rec) = runtime();
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let mut runaways = Vec::new();
    for _ in 0..4 {
        runaways.push(spin_in_new_domain(&rt, &m, opts()).await);
    }
    waits_for("four runaways demoted", || {
        rt.scheduler().stats().demoted >= 4
    })
    .await;
    let before = rt.scheduler().stats();

    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    for _ in 0..300 {
        let out = d.invoke("answer", &[], opts()).await.unwrap();
        assert_eq!(out.values[0].unwrap_i32(), 42);
    }
    // Every short call ended while the runaways were all still running (they have no
    // deadline), and none of the short calls was demoted.
    for (_, r) in &runaways {
        assert!(
            !finished(&rec, r.id().0),
            "a runaway ended before the short calls"
        );
    }
    let after = rt.scheduler().stats();
    assert_eq!(after.demoted, before.demoted, "a short call was demoted");
    assert!(
        after.parked > before.parked,
        "the runaways were never held back while short calls ran"
    );
    for (_, r) in runaways {
        r.abort();
        assert_eq!(r.join().await.unwrap_err(), CallError::Aborted);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_runaway_ends_at_its_deadline_its_abort_and_its_unload() {
    let (rt, rec) = runtime();
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = friendly_load(&rt, &m, stop.clone());

    let (_timed_domain, timed) = spin_in_new_domain(
        &rt,
        &m,
        CallOptions {
            deadline: Some(Duration::from_millis(300)),
            ..opts()
        },
    )
    .await;
    let (_aborted_domain, aborted) = spin_in_new_domain(&rt, &m, opts()).await;
    let unloaded_domain = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let unloaded = unloaded_domain.call("spin", &[], opts()).unwrap();
    let critical_domain = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let critical = critical_domain.call("spin_critical", &[], opts()).unwrap();
    waits_for("runaways parked by the scheduler", || {
        rt.scheduler().stats().parked >= 8
    })
    .await;

    assert_eq!(timed.join().await.unwrap_err(), CallError::Timeout);
    aborted.abort();
    assert_eq!(aborted.join().await.unwrap_err(), CallError::Aborted);
    let report = unloaded_domain.unload().await;
    assert_eq!(report.calls_failed, 1);
    assert_eq!(
        unloaded.join().await.unwrap_err(),
        CallError::DomainUnloaded
    );
    // A polite abort is deferred in the critical region: the parked call is let run, sees
    // the pending abort, leaves its region, and the abort lands there.
    critical.abort();
    assert_eq!(critical.join().await.unwrap_err(), CallError::Aborted);
    assert!(
        rec.named("abort_deferred")
            .iter()
            .any(|e| e["why"] == "critical_region"),
        "the abort was deferred by the critical region: {:?}",
        rec.named("abort_deferred")
    );

    stop.store(true, Ordering::Relaxed);
    assert!(load.await.unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_call_alone_runs_freely_and_one_beside_short_calls_still_ends() {
    let (rt, _rec) = runtime_with(RuntimeConfig {
        scheduler: SchedulerConfig {
            low_share_percent: 25,
            ..SchedulerConfig::default()
        },
        ..RuntimeConfig::default()
    });
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();

    // Alone: demoted past its quantum, never parked (no short call wants the CPU).
    let out = d
        .invoke("work", &[Val::I64(LONG_WORK)], opts())
        .await
        .unwrap();
    assert_eq!(out.values[0].unwrap_i64(), 7);
    let alone = rt.scheduler().stats();
    assert!(alone.demoted >= 1, "{alone:?}");
    assert_eq!(alone.parked, 0, "parked with nothing else to run");

    // Beside a stream of short calls: held back, yet it ends with its result.
    let stop = Arc::new(AtomicBool::new(false));
    let load = friendly_load(&rt, &m, stop.clone());
    let out = d
        .invoke("work", &[Val::I64(LONG_WORK)], opts())
        .await
        .unwrap();
    assert_eq!(out.values[0].unwrap_i64(), 7);
    stop.store(true, Ordering::Relaxed);
    assert!(load.await.unwrap() > 0);
    assert!(rt.scheduler().stats().parked > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_scheduler_off_nothing_is_demoted_or_parked() {
    let (rt, _rec) = runtime_with(RuntimeConfig {
        scheduler: SchedulerConfig {
            enabled: false,
            ..SchedulerConfig::default()
        },
        ..RuntimeConfig::default()
    });
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = friendly_load(&rt, &m, stop.clone());
    let (_domain, runaway) = spin_in_new_domain(
        &rt,
        &m,
        CallOptions {
            deadline: Some(Duration::from_millis(100)),
            ..opts()
        },
    )
    .await;
    assert_eq!(runaway.join().await.unwrap_err(), CallError::Timeout);
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(rt.scheduler().stats(), warden::SchedulerStats::default());
}

#[test]
fn a_bad_low_share_is_refused_when_the_runtime_is_made() {
    let err = Runtime::new(RuntimeConfig {
        scheduler: SchedulerConfig {
            low_share_percent: 0,
            ..SchedulerConfig::default()
        },
        ..RuntimeConfig::default()
    })
    .err()
    .expect("a 0 % share is refused");
    assert!(err.to_string().contains("low-share"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_parked_runaways_all_end_by_deadline_abort_or_rude_abort() {
    let (rt, _rec) = runtime();
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = friendly_load(&rt, &m, stop.clone());
    let mut runaways = Vec::new();
    for i in 0..24u64 {
        let options = CallOptions {
            // A third end at deadlines spread over the others' aborts.
            deadline: (i % 3 == 0).then(|| Duration::from_millis(100 + 20 * i)),
            ..opts()
        };
        runaways.push((i, spin_in_new_domain(&rt, &m, options).await));
    }
    // The 16 without a deadline can only be demoted (a deadline may come before).
    waits_for("the runaways without a deadline demoted", || {
        rt.scheduler().stats().demoted >= 16
    })
    .await;
    // Aborts from many tasks at once, racing the scheduler's parks and slots.
    let enders: Vec<_> = runaways
        .into_iter()
        .map(|(i, (domain, call))| {
            tokio::spawn(async move {
                match i % 3 {
                    1 => call.abort(),
                    2 => call.rude_abort(),
                    _ => {}
                }
                let out = call.join().await;
                drop(domain);
                (i, out)
            })
        })
        .collect();
    for ender in enders {
        let (i, out) = ender.await.unwrap();
        let expected = match i % 3 {
            0 => CallError::Timeout,
            1 => CallError::Aborted,
            _ => CallError::RudeAborted,
        };
        assert_eq!(out.unwrap_err(), expected, "runaway {i}");
    }
    stop.store(true, Ordering::Relaxed);
    assert!(load.await.unwrap() > 0);
    assert!(rt.scheduler().stats().parked > 0);
}
