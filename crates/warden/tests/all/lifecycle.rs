//! The domain's lifecycle: every step that ends something (instantiation, refusal, queue
//! draining, a dropped future) releases what the call held, and "idle, so unload it" is one
//! atomic step. Each test here reproduces an interleaving that once left something behind.

use crate::common;
use crate::common::{Recorder, runtime, runtime_with, wait_until};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use warden::{
    Action, CallError, CallOptions, DomainConfig, Operation, Outcome, Policy, RuntimeConfig, Val,
};

const GUEST: &str = include_str!("fixtures/lifecycle.wat");
const START_HOLDS_LOCK: &str = include_str!("fixtures/start_holds_lock.wat");
const MIB: u64 = 1 << 20;

fn finished(rec: &Recorder) -> Vec<String> {
    rec.named("call_finished")
        .iter()
        .map(|e| e["outcome"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_create_while_the_start_function_holds_a_lock_releases_it_poisoned() {
    let (rt, _rec) = runtime();
    let m = rt.load_module(START_HOLDS_LOCK.as_bytes()).unwrap();
    {
        let mut create = pin!(rt.create_domain(&m, DomainConfig::default()));
        let locks = rt.locks().clone();
        tokio::select! {
            r = &mut create => panic!("the start function never returns, yet: {r:?}"),
            _ = wait_until("the start function holds L", || locks.is_held("L")) => {}
        }
    } // The create future is dropped here, mid-start.
    assert!(
        !rt.locks().is_held("L"),
        "a dropped start left its lock held"
    );
    assert!(
        rt.locks().is_poisoned("L"),
        "released poisoned, as any orphan"
    );
    assert_eq!(rt.domain_count(), 0);
    // The next acquirer gets it at once, with the poison mark.
    let got = rt.locks().acquire(1 << 60, "L", None).await.unwrap();
    assert_eq!(got.code(), -4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_returns_its_reservation_at_once() {
    let (rt, rec) = runtime();
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    d.unload().await;
    let reserve = CallOptions {
        reserve: Some(MIB),
        ..CallOptions::default()
    };
    let refused = d.call("answer", &[], reserve).unwrap();
    // The handle still lives: the refusal, not the handle's drop, returned the bytes.
    assert_eq!(
        rt.memory().reserved,
        0,
        "a refused call kept its reservation"
    );
    assert_eq!(refused.join().await.unwrap_err(), CallError::DomainUnloaded);
    assert_eq!(finished(&rec), ["domain_unloaded"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_call_drained_by_unload_returns_its_reservation_and_is_reported() {
    let (rt, _rec) = runtime();
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let spinning = d.call("spin", &[], CallOptions::default()).unwrap();
    wait_until("the spin runs", || d.is_busy()).await;
    let reserve = CallOptions {
        reserve: Some(MIB),
        ..CallOptions::default()
    };
    let queued = d.call("answer", &[], reserve).unwrap();
    assert_eq!(rt.memory().reserved, MIB);
    let report = d.rude_unload().await;
    assert_eq!(
        rt.memory().reserved,
        0,
        "the drained call kept its reservation"
    );
    assert_eq!(report.reservations_released, MIB);
    assert_eq!(report.calls_failed, 2);
    assert!(spinning.join().await.is_err());
    assert_eq!(queued.join().await.unwrap_err(), CallError::DomainUnloaded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_pressure_never_unloads_a_domain_whose_call_was_just_admitted() {
    let (rt, rec) = runtime_with(RuntimeConfig {
        memory_budget: Some(16 * MIB),
        unload_on_pressure: true,
        ..RuntimeConfig::default()
    });
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    for trial in 0..20 {
        let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
        let grown = d.invoke("grow", &[Val::I32(16)], CallOptions::default());
        assert_eq!(grown.await.unwrap().values[0].unwrap_i32(), 1);
        // The call cannot finish before the test lets it: it waits for a lock the test holds.
        let host = 1 << 60;
        rt.locks().acquire(host, "L", None).await.unwrap();
        // Admitted, not yet running: the domain is no longer idle.
        let call = d
            .call("wait_for_lock", &[], CallOptions::default())
            .unwrap();
        // The embedder's own reservation crosses the 90 % mark: pressure, now.
        let native = rt.memory_budget().reserve(14 * MIB).unwrap();
        drop(native);
        rt.locks().release(host, "L").unwrap();
        let out = call.join().await;
        assert!(
            out.is_ok(),
            "trial {trial}: the admitted call ended {out:?}; calls {:?}",
            finished(&rec)
        );
        assert!(d.is_loaded(), "trial {trial}: a busy domain was unloaded");
        d.unload().await;
    }
    assert!(!rec.named("memory_pressure").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_domain_is_unloaded_on_pressure() {
    let (rt, _rec) = runtime_with(RuntimeConfig {
        memory_budget: Some(16 * MIB),
        unload_on_pressure: true,
        ..RuntimeConfig::default()
    });
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let grown = d.invoke("grow", &[Val::I32(16)], CallOptions::default());
    assert_eq!(grown.await.unwrap().values[0].unwrap_i32(), 1);
    let native = rt.memory_budget().reserve(14 * MIB).unwrap();
    let report = tokio::time::timeout(common::ENDS_WITHIN, d.unloaded())
        .await
        .expect("the idle domain is unloaded");
    assert_eq!(report.memory_released, 17 * 65536);
    drop(native);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_invoke_mid_call_holding_a_lock_ends_within_the_abort_bound() {
    // The polite abort a drop makes waits for the lock; its bound turns it rude.
    let mut policy = Policy::default();
    policy
        .set_timeout(
            Operation::Abort,
            Some(Duration::from_millis(50)),
            Action::RudeAbort,
        )
        .unwrap();
    let (rt, rec) = runtime_with(RuntimeConfig {
        policy,
        ..RuntimeConfig::default()
    });
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    {
        let mut invoke = pin!(d.invoke("hold_and_spin", &[], CallOptions::default()));
        tokio::select! {
            r = &mut invoke => panic!("the call spins forever, yet: {r:?}"),
            _ = wait_until("the call holds L", || rt.locks().is_held("L")) => {}
        }
    } // Dropped mid-call, holding a lock (a polite abort waits for it; a rude one does not).
    wait_until("the dropped call is finished", || {
        !finished(&rec).is_empty()
    })
    .await;
    assert_eq!(finished(&rec), [Outcome::RudeAborted.as_str()]);
    assert!(!rt.locks().is_held("L"));
    assert!(rt.locks().is_poisoned("L"), "an orphan, released poisoned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_invoke_mid_call_leaves_the_domain_loaded_and_usable() {
    let (rt, rec) = runtime();
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    {
        let mut invoke = pin!(d.invoke("spin", &[], CallOptions::default()));
        tokio::select! {
            r = &mut invoke => panic!("the call spins forever, yet: {r:?}"),
            _ = wait_until("the call runs", || d.is_busy()) => {}
        }
    }
    wait_until("the dropped call is finished", || {
        !finished(&rec).is_empty()
    })
    .await;
    assert_eq!(finished(&rec), ["aborted"]);
    assert!(d.is_loaded());
    let out = d
        .invoke("answer", &[], CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.values[0].unwrap_i32(), 42);
    assert_eq!(finished(&rec), ["aborted", "ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoke_refused_by_the_memory_gate_leaves_the_domain_idle_and_usable() {
    // On an idle domain `invoke` takes the worker before admission: a refusal must give it
    // back, or the next call would queue forever.
    let (rt, rec) = runtime();
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let too_much = CallOptions {
        reserve: Some(u64::MAX / 2),
        ..CallOptions::default()
    };
    let refused = d.invoke("answer", &[], too_much).await.unwrap_err();
    assert!(
        matches!(
            refused,
            warden::Error::Call(CallError::InsufficientMemory { .. })
        ),
        "{refused:?}"
    );
    assert!(
        !d.is_busy(),
        "the refused call is still published as running"
    );
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        d.invoke("answer", &[], CallOptions::default()),
    )
    .await
    .expect("the worker was not given back after the refusal")
    .unwrap();
    assert_eq!(out.values[0].unwrap_i32(), 42);
    assert_eq!(finished(&rec), ["insufficient_memory", "ok"]);
    assert_eq!(rt.memory().reserved, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invoke_on_a_warm_domain_is_a_new_call_even_after_an_abort() {
    // The worker renews the last call's control block for the next one: nothing of the
    // old call (its id, its delivered abort) may show in the new one.
    let (rt, rec) = runtime();
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let deadline = CallOptions {
        deadline: Some(Duration::from_millis(20)),
        ..CallOptions::default()
    };
    for _ in 0..3 {
        let timed_out = d.invoke("spin", &[], deadline.clone()).await.unwrap_err();
        assert!(
            matches!(timed_out, warden::Error::Call(CallError::Timeout)),
            "{timed_out:?}"
        );
        let out = d
            .invoke("answer", &[], CallOptions::default())
            .await
            .unwrap();
        assert_eq!(out.values[0].unwrap_i32(), 42);
    }
    assert_eq!(
        finished(&rec),
        ["timeout", "ok", "timeout", "ok", "timeout", "ok"]
    );
    let ids: std::collections::HashSet<u64> = rec
        .named("call_started")
        .iter()
        .map(|e| e["call"].as_u64().expect("a call id"))
        .collect();
    assert_eq!(ids.len(), 6, "call ids were reused");
}

/// The unloader fails the queue it took after letting the slot go, while the busy worker,
/// its call aborted, may finish the unload on another thread. The report waits for the
/// queue: here the unloader is held up in its first refusal's event (a subscriber that
/// sleeps on the test's own thread), long enough for the worker to get there first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unload_report_counts_the_queue_even_when_the_worker_finishes_first() {
    let (rt, rec) = runtime();
    let unloader = std::thread::current().id();
    rt.subscribe(move |e| {
        if std::thread::current().id() == unloader && e.to_json().contains("\"call_finished\"") {
            std::thread::sleep(Duration::from_millis(150));
        }
    });
    let m = rt.load_module(common::HOSTILE.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let spinning = d.call("spin", &[], CallOptions::default()).unwrap();
    let queued: Vec<_> = (0..3)
        .map(|_| d.call("answer", &[], CallOptions::default()).unwrap())
        .collect();
    wait_until("the spin runs", || d.is_busy()).await;
    let report = d.unload().await;
    assert_eq!(
        report.calls_failed, 4,
        "the spin and the three queued calls"
    );
    assert_eq!(
        spinning.join().await.unwrap_err(),
        CallError::DomainUnloaded
    );
    for q in queued {
        assert_eq!(q.join().await.unwrap_err(), CallError::DomainUnloaded);
    }
    // Every call's event comes before the domain's `domain_unloaded`.
    let names: Vec<String> = rec
        .json()
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default().to_string())
        .filter(|n| n == "call_finished" || n == "domain_unloaded")
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert_eq!(
        names.last().map(String::as_str),
        Some("domain_unloaded"),
        "{names:?}"
    );
}

/// The last handle of an idle domain with no finalizer: its unload ends before `drop`
/// returns (nothing waits, so no task is spawned for it), on a runtime whose one thread the
/// test holds. One with a finalizer still runs it, on a task of its own, and one with a host
/// resource open releases it there too, not inside `drop`.
#[tokio::test(flavor = "current_thread")]
async fn dropping_the_last_handle_of_an_idle_domain_unloads_it_at_once_unless_it_has_a_finalizer_or_a_handle()
 {
    let (rt, rec) = runtime();
    let m = rt.load_module(common::HOSTILE.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    d.invoke("answer", &[], CallOptions::default())
        .await
        .unwrap();
    drop(d);
    assert_eq!(rt.domain_count(), 0);
    let unloaded = rec.named("domain_unloaded");
    assert_eq!(unloaded.len(), 1, "{unloaded:?}");

    let with_finalizer = rt
        .load_module(
            br#"(module (global $n (mut i32) (i32.const 0))
                 (func (export "warden_on_unload") (global.set $n (i32.const 1))))"#,
        )
        .unwrap();
    let d = rt
        .create_domain(&with_finalizer, DomainConfig::default())
        .await
        .unwrap();
    drop(d);
    wait_until("the finalizer ran", || {
        rec.named("finalizer_ran")
            .iter()
            .any(|e| e["result"] == "ok")
    })
    .await;
    wait_until("the second unload", || {
        rec.named("domain_unloaded").len() == 2
    })
    .await;
    assert_eq!(rt.domain_count(), 0);

    // A host resource's release function never runs inside the embedder's `drop`.
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let released = Arc::new(AtomicBool::new(false));
    let flag = released.clone();
    d.insert_handle(7u32, move |_| flag.store(true, Ordering::SeqCst))
        .unwrap();
    drop(d);
    assert!(!released.load(Ordering::SeqCst));
    wait_until("the handle released", || released.load(Ordering::SeqCst)).await;
    wait_until("the third unload", || {
        rec.named("domain_unloaded").len() == 3
    })
    .await;
}
