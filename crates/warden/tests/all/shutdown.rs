//! Orderly shutdown through the runtime: one winner, phases in order, hooks, finalizers of
//! idle domains, the `process-exit` watchdog, and the policy's exit actions.

use crate::common::{HOSTILE, Recorder, runtime_with, wait_until};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};
use warden::shutdown::Phase;
use warden::{
    Action, CallError, CallHandle, CallOptions, Domain, DomainConfig, Error, EventKind, ExitMode,
    ExitStart, Failure, Operation, Policy, Runtime, RuntimeConfig, exit_code,
};

/// Generous: CI is a loaded 2-core box. Only ever a bound on "it ends", never a speed claim.
const ENDS_WITHIN: Duration = Duration::from_secs(30);

const ORDERLY: [&str; 5] = [
    "stop_admitting",
    "exit_hooks",
    "finalizers",
    "critical_release",
    "exit",
];

/// A guest whose finalizer returns at once.
const FINALIZES: &str = r#"
(module
  (func (export "answer") (result i32) (i32.const 42))
  (func (export "spin") (loop $l (br $l)))
  (func (export "warden_on_unload")))
"#;

/// A guest whose finalizer never returns.
const FINALIZER_SPINS: &str = r#"
(module
  (func (export "answer") (result i32) (i32.const 42))
  (func (export "warden_on_unload") (loop $l (br $l))))
"#;

fn config(policy: Policy) -> RuntimeConfig {
    RuntimeConfig {
        policy,
        ..RuntimeConfig::default()
    }
}

/// The server policy with the `process-exit` bound and action replaced.
fn exit_bound(after: Duration, action: Action) -> Policy {
    let mut p = Policy::default();
    p.set_timeout(Operation::ProcessExit, Some(after), action)
        .unwrap();
    p
}

async fn domain(rt: &Runtime, wat: &str) -> Domain {
    let module = rt.load_module(wat.as_bytes()).unwrap();
    rt.create_domain(&module, DomainConfig::default())
        .await
        .unwrap()
}

async fn wait_exit(rt: &Runtime) -> warden::ExitReport {
    tokio::time::timeout(ENDS_WITHIN, rt.wait_exit())
        .await
        .expect("shutdown ended")
}

/// The exit fn's calls, once it has been called (it runs just after the report is out).
fn exits(rec: &Recorder) -> Vec<i32> {
    let until = Instant::now() + ENDS_WITHIN;
    while rec.exits.lock().unwrap().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    rec.exits.lock().unwrap().clone()
}

/// `(phase, mode)` of every `shutdown_phase` event, in order.
fn phases(rec: &Recorder) -> Vec<(String, String)> {
    rec.named("shutdown_phase")
        .iter()
        .map(|e| {
            (
                e["phase"].as_str().unwrap().to_owned(),
                e["mode"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn phase_names(rec: &Recorder) -> Vec<String> {
    phases(rec).into_iter().map(|(p, _)| p).collect()
}

/// `finalizer_ran` results for one domain.
fn finalizers_of(rec: &Recorder, d: &Domain) -> Vec<String> {
    rec.named("finalizer_ran")
        .iter()
        .filter(|e| e["domain"] == d.id().0)
        .map(|e| e["result"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn racing_exits_elect_one_winner_and_exit_once_with_its_code() {
    for round in 0..5 {
        let (rt, rec) = runtime_with(RuntimeConfig::default());
        assert!(!rt.is_exiting());
        let n = 16;
        let barrier = Arc::new(Barrier::new(n));
        let racers: Vec<_> = (0..n)
            .map(|i| {
                let (rt, barrier) = (rt.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let code = 10 + i as i32;
                    // Half ask for the policy's mode, half name orderly: same election.
                    let start = if i % 2 == 0 {
                        rt.exit(code)
                    } else {
                        rt.exit_with(code, ExitMode::Orderly)
                    };
                    (code, start)
                })
            })
            .collect();
        let results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: Vec<i32> = results
            .iter()
            .filter(|(_, s)| *s == ExitStart::Started)
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let winner = winners[0];
        for (_, start) in &results {
            if let ExitStart::AlreadyStarted { code } = start {
                assert_eq!(*code, winner, "round {round}");
            }
        }
        assert!(rt.is_exiting());
        let report = rt
            .shutdown()
            .wait_blocking(Some(ENDS_WITHIN))
            .expect("shutdown ended");
        assert_eq!(report.code, winner);
        assert!(!report.watchdog_fired);
        assert_eq!(exits(&rec), vec![winner]);
        assert_eq!(phase_names(&rec), ORDERLY, "round {round}");
        assert!(phases(&rec).iter().all(|(_, m)| m == "orderly"));
        // Later callers still only learn the winner's code, and nothing runs twice.
        assert_eq!(rt.exit(1), ExitStart::AlreadyStarted { code: winner });
        assert_eq!(rec.exits.lock().unwrap().clone(), vec![winner]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_arriving_in_every_phase_fail_process_exiting() {
    let (rt, rec) = runtime_with(RuntimeConfig::default());
    let d = domain(&rt, HOSTILE).await;
    let module = d.module().clone();

    // A call-in at the moment each phase is entered, from the thread running the phase.
    let target = Arc::new(Mutex::new(Some(d.clone())));
    let handles: Arc<Mutex<Vec<(String, CallHandle)>>> = Arc::default();
    {
        let (target, handles) = (target.clone(), handles.clone());
        rt.subscribe(move |e| {
            if let EventKind::ShutdownPhase { phase, .. } = &e.kind {
                let d = target.lock().unwrap().clone();
                if let Some(d) = d {
                    let h = d.call("answer", &[], CallOptions::default()).unwrap();
                    handles.lock().unwrap().push((phase.clone(), h));
                }
            }
        });
    }
    // And from an exit hook, which may await: a call, a new domain, and another exit.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let (rt2, d, seen) = (rt.clone(), d.clone(), seen.clone());
        rt.add_exit_hook("calls in", move || async move {
            let call = d.invoke("answer", &[], CallOptions::default()).await;
            let create = rt2.create_domain(&module, DomainConfig::default()).await;
            let again = rt2.exit(99);
            seen.lock()
                .unwrap()
                .push(format!("{:?} {:?} {again:?}", call.err(), create.err()));
        })
        .unwrap();
    }

    assert_eq!(rt.exit(7), ExitStart::Started);
    let report = wait_exit(&rt).await;
    assert_eq!(report.code, 7);
    assert_eq!(exits(&rec), vec![7]);
    target.lock().unwrap().take();

    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![format!(
            "{:?} {:?} {:?}",
            Some(Error::Call(CallError::ProcessExiting)),
            Some(Error::Call(CallError::ProcessExiting)),
            ExitStart::AlreadyStarted { code: 7 }
        )]
    );
    let handles = std::mem::take(&mut *handles.lock().unwrap());
    let phases_called: Vec<&str> = handles.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(phases_called, ORDERLY);
    for (phase, h) in handles {
        assert_eq!(
            h.join().await.unwrap_err(),
            CallError::ProcessExiting,
            "{phase}"
        );
    }
    // After the sequence too.
    let after = d.invoke("answer", &[], CallOptions::default()).await;
    assert!(matches!(after, Err(Error::Call(CallError::ProcessExiting))));
    let refused = rec
        .named("call_finished")
        .iter()
        .filter(|e| e["outcome"] == "process_exiting")
        .count();
    assert_eq!(refused, ORDERLY.len() + 2);
    // Nothing was unloaded by the exit.
    assert!(d.is_loaded());
    assert!(rec.named("domain_unloading").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_last_registered_first_and_late_hooks_are_refused() {
    let (rt, rec) = runtime_with(RuntimeConfig::default());
    let ran: Arc<Mutex<Vec<&str>>> = Arc::default();
    let mut ids = Vec::new();
    for name in ["first", "second", "removed", "third"] {
        let ran = ran.clone();
        ids.push(
            rt.add_exit_hook(name, move || async move { ran.lock().unwrap().push(name) })
                .unwrap(),
        );
    }
    assert!(rt.remove_exit_hook(ids[2]));
    assert!(!rt.remove_exit_hook(ids[2]));
    // A hook that panics is logged and the next one runs.
    rt.add_exit_hook("panics", || async { panic!("hook bug") })
        .unwrap();

    rt.exit(5);
    let late = rt.add_exit_hook("late", || async {});
    assert_eq!(late.unwrap_err().code, 5);
    let report = wait_exit(&rt).await;
    assert_eq!(report.code, 5);
    assert_eq!(ran.lock().unwrap().clone(), ["third", "second", "first"]);
    assert_eq!(exits(&rec), vec![5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_and_rude_exits_skip_hooks_and_finalizers() {
    // Fast, asked for by name.
    let (rt, rec) = runtime_with(RuntimeConfig::default());
    let d = domain(&rt, FINALIZES).await;
    let hooked = Arc::new(Mutex::new(false));
    let h = hooked.clone();
    rt.add_exit_hook("hook", move || async move { *h.lock().unwrap() = true })
        .unwrap();
    assert_eq!(rt.exit_with(6, ExitMode::Fast), ExitStart::Started);
    let report = wait_exit(&rt).await;
    assert_eq!(report.mode, ExitMode::Fast);
    assert_eq!(exits(&rec), vec![6]);
    assert_eq!(
        phases(&rec),
        [
            ("stop_admitting", "fast"),
            ("critical_release", "fast"),
            ("exit", "fast")
        ]
        .map(|(p, m)| (p.to_owned(), m.to_owned()))
    );
    assert!(!*hooked.lock().unwrap());
    assert!(finalizers_of(&rec, &d).is_empty());

    // Fast because the policy's `process-exit` default says so: `exit` follows it.
    let mut policy = Policy::default();
    policy
        .set_default(Operation::ProcessExit, Action::FastExitProcess)
        .unwrap();
    let (rt, rec) = runtime_with(config(policy));
    rt.exit(8);
    assert_eq!(wait_exit(&rt).await.mode, ExitMode::Fast);
    assert_eq!(
        phase_names(&rec),
        ["stop_admitting", "critical_release", "exit"]
    );

    // Rude: the exit fn runs before `exit_with` returns, and nothing else does.
    let (rt, rec) = runtime_with(RuntimeConfig::default());
    let d = domain(&rt, FINALIZES).await;
    let hooked = Arc::new(Mutex::new(false));
    let h = hooked.clone();
    rt.add_exit_hook("hook", move || async move { *h.lock().unwrap() = true })
        .unwrap();
    assert_eq!(rt.exit_with(9, ExitMode::Rude), ExitStart::Started);
    assert_eq!(rec.exits.lock().unwrap().clone(), vec![9]);
    assert_eq!(wait_exit(&rt).await.mode, ExitMode::Rude);
    assert!(phases(&rec).is_empty());
    assert!(!*hooked.lock().unwrap());
    assert!(finalizers_of(&rec, &d).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_never_returns_cannot_stop_the_exit() {
    for action in [Action::RudeExitProcess, Action::FastExitProcess] {
        let (rt, rec) = runtime_with(config(exit_bound(Duration::from_millis(500), action)));
        let after = Arc::new(Mutex::new(false));
        let a = after.clone();
        // Registered first, so it would run after the hung one.
        rt.add_exit_hook("after", move || async move { *a.lock().unwrap() = true })
            .unwrap();
        rt.add_exit_hook("hangs", std::future::pending::<()>)
            .unwrap();
        rt.exit(11);
        let report = wait_exit(&rt).await;
        // The watchdog ended the exit: 116, not the 11 it started with (issue #16).
        assert_eq!(report.code, exit_code::POLICY_RUDE_EXIT, "{action}");
        assert!(report.watchdog_fired, "{action}");
        assert_eq!(report.interrupted_phase, Some(Phase::ExitHooks), "{action}");
        assert_eq!(exits(&rec), vec![exit_code::POLICY_RUDE_EXIT], "{action}");
        assert!(!*after.lock().unwrap(), "{action}");
        let names = phase_names(&rec);
        match action {
            // The watchdog's fast action still releases, then exits.
            Action::FastExitProcess => {
                assert_eq!(
                    names,
                    ["stop_admitting", "exit_hooks", "critical_release", "exit"]
                );
                assert_eq!(phases(&rec)[2].1, "fast");
            }
            _ => assert_eq!(names, ["stop_admitting", "exit_hooks"]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalizer_that_never_returns_cannot_stop_the_exit() {
    let mut policy = exit_bound(Duration::from_millis(500), Action::RudeExitProcess);
    // Nothing but the watchdog bounds the finalizer.
    policy
        .set_timeout(Operation::FinalizerRun, None, Action::None)
        .unwrap();
    let (rt, rec) = runtime_with(config(policy));
    let d = domain(&rt, FINALIZER_SPINS).await;
    rt.exit(12);
    let report = wait_exit(&rt).await;
    assert_eq!(report.code, exit_code::POLICY_RUDE_EXIT);
    assert!(report.watchdog_fired);
    assert_eq!(report.interrupted_phase, Some(Phase::Finalizers));
    assert_eq!(exits(&rec), vec![exit_code::POLICY_RUDE_EXIT]);
    assert_eq!(
        phase_names(&rec),
        ["stop_admitting", "exit_hooks", "finalizers"]
    );
    assert!(finalizers_of(&rec, &d).is_empty());
    assert!(d.is_loaded());
    // The hung finalizer is still the domain's business: a rude unload ends it.
    let unloaded = tokio::time::timeout(ENDS_WITHIN, d.rude_unload())
        .await
        .expect("rude unload ends");
    assert!(unloaded.rude);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizer_run_bounds_each_finalizer_at_exit() {
    let mut policy = exit_bound(ENDS_WITHIN * 2, Action::RudeExitProcess);
    policy
        .set_timeout(
            Operation::FinalizerRun,
            Some(Duration::from_millis(200)),
            Action::Abort,
        )
        .unwrap();
    let (rt, rec) = runtime_with(config(policy));
    let d = domain(&rt, FINALIZER_SPINS).await;
    rt.exit(13);
    let report = wait_exit(&rt).await;
    assert!(!report.watchdog_fired);
    assert_eq!(
        report.phases_completed,
        [
            Phase::StopAdmitting,
            Phase::ExitHooks,
            Phase::Finalizers,
            Phase::CriticalRelease
        ]
    );
    assert_eq!(exits(&rec), vec![13]);
    assert_eq!(finalizers_of(&rec, &d), ["timeout"]);
    let escalated = rec
        .named("escalation")
        .iter()
        .any(|e| e["operation"] == "finalizer-run" && e["action"] == "abort");
    assert!(escalated);
    assert!(d.is_loaded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_domain_skips_its_finalizer_and_idle_ones_run_theirs_once() {
    let (rt, rec) = runtime_with(RuntimeConfig::default());
    let busy = domain(&rt, FINALIZES).await;
    let idle = domain(&rt, FINALIZES).await;
    let spin = busy.call("spin", &[], CallOptions::default()).unwrap();
    wait_until("the spin call to start", || busy.is_busy()).await;

    rt.exit(14);
    wait_exit(&rt).await;
    assert_eq!(exits(&rec), vec![14]);
    assert_eq!(finalizers_of(&rec, &idle), ["ok"]);
    assert_eq!(finalizers_of(&rec, &busy), ["skipped"]);
    // No domain was unloaded, and the running call was neither unwound nor waited for.
    assert!(busy.is_loaded() && idle.is_loaded());
    assert!(rec.named("domain_unloading").is_empty());
    assert!(busy.is_busy());
    assert!(!spin.abort_requested());
    assert!(
        !rec.named("call_finished")
            .iter()
            .any(|e| e["call"] == spin.id().0)
    );

    // The embedder may still end it, and unload: the finalizer that ran at exit does not
    // run again.
    spin.rude_abort();
    assert_eq!(spin.join().await.unwrap_err(), CallError::RudeAborted);
    let report = idle.unload().await;
    assert!(!report.finalizer_ran);
    assert_eq!(finalizers_of(&rec, &idle), ["ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_call_that_had_not_started_fails_process_exiting() {
    let (rt, _rec) = runtime_with(RuntimeConfig::default());
    let d = domain(&rt, HOSTILE).await;
    let deadline = CallOptions {
        deadline: Some(Duration::from_millis(300)),
        ..CallOptions::default()
    };
    let spin = d.call("spin", &[], deadline).unwrap();
    wait_until("the spin call to start", || d.is_busy()).await;
    let queued = d.call("answer", &[], CallOptions::default()).unwrap();
    rt.exit(15);
    wait_exit(&rt).await;
    assert_eq!(spin.join().await.unwrap_err(), CallError::Timeout);
    assert_eq!(queued.join().await.unwrap_err(), CallError::ProcessExiting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_exit_actions_route_through_the_coordinator() {
    let cases = [
        (
            Action::ExitProcess,
            exit_code::POLICY_EXIT,
            &ORDERLY[..],
            "orderly",
        ),
        (
            Action::FastExitProcess,
            exit_code::POLICY_FAST_EXIT,
            &["stop_admitting", "critical_release", "exit"][..],
            "fast",
        ),
        (
            Action::RudeExitProcess,
            exit_code::POLICY_RUDE_EXIT,
            &[][..],
            "",
        ),
    ];
    for (action, code, want, mode) in cases {
        let mut policy = Policy::default();
        policy.set_failure(Failure::GuestTrap, action).unwrap();
        let (rt, rec) = runtime_with(config(policy));
        let hooked = Arc::new(Mutex::new(0));
        let h = hooked.clone();
        rt.add_exit_hook("hook", move || async move { *h.lock().unwrap() += 1 })
            .unwrap();
        // Two domains trap at once: each trap decides an exit, one exit happens. (A call
        // that had not started when the first exit began is refused instead.)
        let a = domain(&rt, HOSTILE).await;
        let b = domain(&rt, HOSTILE).await;
        let (ra, rb) = tokio::join!(
            a.invoke("trap", &[], CallOptions::default()),
            b.invoke("trap", &[], CallOptions::default())
        );
        let mut traps = 0;
        for r in [ra, rb] {
            match r {
                Err(Error::Call(CallError::Trap { .. })) => traps += 1,
                Err(Error::Call(CallError::ProcessExiting)) => {}
                other => panic!("{action}: {other:?}"),
            }
        }
        assert!(traps >= 1, "{action}");
        let report = wait_exit(&rt).await;
        assert_eq!(report.code, code, "{action}");
        assert_eq!(exits(&rec), vec![code], "{action}");
        assert_eq!(phase_names(&rec), want, "{action}");
        assert!(phases(&rec).iter().all(|(_, m)| m == mode), "{action}");
        let hooks_ran = *hooked.lock().unwrap();
        assert_eq!(
            hooks_ran,
            usize::from(action == Action::ExitProcess),
            "{action}"
        );
        assert!(rt.is_exiting());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_severer_exit_cuts_a_hung_orderly_exit_short() {
    let (rt, rec) = runtime_with(config(exit_bound(
        Duration::from_secs(3600),
        Action::RudeExitProcess,
    )));
    rt.add_exit_hook("hangs", std::future::pending::<()>)
        .unwrap();
    rt.exit(16);
    wait_until("the hooks phase", || {
        rt.shutdown().phase() == Phase::ExitHooks
    })
    .await;
    // An orderly request changes nothing; a rude one ends it now, with the winner's code.
    assert_eq!(
        rt.exit_with(1, ExitMode::Orderly),
        ExitStart::AlreadyStarted { code: 16 }
    );
    assert_eq!(
        rt.exit_with(99, ExitMode::Rude),
        ExitStart::AlreadyStarted { code: 16 }
    );
    let report = wait_exit(&rt).await;
    assert_eq!(report.escalated_to, Some(ExitMode::Rude));
    assert!(!report.watchdog_fired);
    assert_eq!(exits(&rec), vec![16]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_release_at_exit_frees_handles_and_a_running_calls_locks_and_reservations() {
    let (rt, rec) = runtime_with(config(Policy::default()));
    let d = domain(
        &rt,
        r#"(module
            (import "warden" "lock_acquire" (func $acq (param i32 i32 i64) (result i32)))
            (import "warden" "gate_reserve" (func $reserve (param i64) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "L")
            (func (export "hold_and_spin")
              (drop (call $acq (i32.const 0) (i32.const 1) (i64.const -1)))
              (drop (call $reserve (i64.const 1048576)))
              (loop $l (br $l))))"#,
    )
    .await;
    let released = Arc::new(Mutex::new(0));
    let r2 = released.clone();
    d.insert_handle(7u32, move |_| *r2.lock().unwrap() += 1)
        .unwrap();
    let _spin = d
        .call("hold_and_spin", &[], CallOptions::default())
        .unwrap();
    wait_until("the lock to be taken", || {
        rt.locks().is_held("L") && rt.memory().reserved == 1 << 20
    })
    .await;
    rt.exit(0);
    let report = wait_exit(&rt).await;
    assert!(report.phases_completed.contains(&Phase::CriticalRelease));
    // The call is neither unwound nor waited for, but what it held is given back.
    assert!(!rt.locks().is_held("L"));
    assert_eq!(rt.memory().reserved, 0);
    assert_eq!((d.handles_live(), *released.lock().unwrap()), (0, 1));
    assert_eq!(rec.named("locks_orphaned")[0]["locks"][0], "L");
    assert_eq!(exits(&rec), [0]);
}
