//! The shutdown coordinator through its public API, with a recording exit function (nothing
//! here ever ends the test process).
#![cfg(not(loom))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use warden_core::shutdown::{
    BoxFuture, ExitMode, ExitReport, ExitStart, Participant, Phase, Shutdown, ShutdownConfig,
    ShutdownStarted,
};

/// Generous bound for "this should happen promptly" on a loaded 2-core machine.
const SOON: Duration = Duration::from_secs(10);
/// Slack allowed past a watchdog bound.
const SLACK: Duration = Duration::from_millis(1500);

/// One ordered log of everything that happened, exit function included.
#[derive(Default)]
struct Log {
    events: Mutex<Vec<String>>,
    cv: Condvar,
}

impl Log {
    fn push(&self, event: impl Into<String>) {
        self.events.lock().unwrap().push(event.into());
        self.cv.notify_all();
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    fn exits(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e.starts_with("exit_fn"))
            .collect()
    }

    /// Wait until the exit function has been called; `false` if it was not within `timeout`.
    fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut events = self.events.lock().unwrap();
        while !events.iter().any(|e| e.starts_with("exit_fn")) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            events = self.cv.wait_timeout(events, left).unwrap().0;
        }
        true
    }

    fn exit_fn(self: &Arc<Self>) -> Arc<dyn Fn(i32) + Send + Sync> {
        let log = self.clone();
        Arc::new(move |code| log.push(format!("exit_fn({code})")))
    }
}

#[derive(Clone, Copy)]
enum Behaviour {
    Normal,
    /// A future that is never ready.
    Pending,
    /// Blocks its thread.
    Block(Duration),
    Panic,
}

struct TestParticipant {
    log: Arc<Log>,
    stop: Behaviour,
    finalizers: Behaviour,
    release: Behaviour,
    releases: AtomicUsize,
}

impl TestParticipant {
    fn new(log: &Arc<Log>) -> Self {
        TestParticipant {
            log: log.clone(),
            stop: Behaviour::Normal,
            finalizers: Behaviour::Normal,
            release: Behaviour::Normal,
            releases: AtomicUsize::new(0),
        }
    }
}

impl Participant for TestParticipant {
    fn stop_admitting(&self) {
        if let Behaviour::Panic = self.stop {
            panic!("stop_admitting panics");
        }
        self.log.push("stop_admitting");
    }

    fn run_finalizers(&self) -> BoxFuture<'_> {
        Box::pin(async move {
            match self.finalizers {
                Behaviour::Normal => {}
                Behaviour::Pending => std::future::pending::<()>().await,
                Behaviour::Block(d) => thread::sleep(d),
                Behaviour::Panic => panic!("finalizers panic"),
            }
            self.log.push("finalizers");
        })
    }

    fn critical_release(&self) {
        self.releases.fetch_add(1, Ordering::SeqCst);
        match self.release {
            Behaviour::Block(d) => thread::sleep(d),
            Behaviour::Pending => loop {
                thread::park();
            },
            Behaviour::Panic => panic!("critical_release panics"),
            Behaviour::Normal => {}
        }
        self.log.push("critical_release");
    }

    fn phase_changed(&self, phase: Phase, mode: ExitMode) {
        self.log.push(format!("phase {phase} {mode}"));
    }
}

fn config(timeout_ms: Option<u64>, on_timeout: ExitMode) -> ShutdownConfig {
    ShutdownConfig {
        timeout: timeout_ms.map(Duration::from_millis),
        on_timeout,
        grace: Duration::from_millis(300),
    }
}

fn setup(
    config: ShutdownConfig,
    participant: TestParticipant,
) -> (Arc<Shutdown>, Arc<TestParticipant>) {
    let shutdown = Shutdown::new(config, participant.log.exit_fn());
    let participant = Arc::new(participant);
    shutdown.set_participant(participant.clone());
    (shutdown, participant)
}

fn hook_logging(
    log: &Arc<Log>,
    name: &'static str,
) -> impl FnOnce() -> BoxFuture<'static> + Send + use<> {
    let log = log.clone();
    move || {
        Box::pin(async move {
            tokio::task::yield_now().await;
            log.push(format!("hook {name}"));
        })
    }
}

fn report(shutdown: &Shutdown) -> ExitReport {
    shutdown
        .wait_blocking(Some(SOON))
        .expect("the sequence should end")
}

/// After the exit function ran once, make sure nobody calls it again.
fn assert_exited_once(log: &Log, code: i32) {
    assert!(log.wait_exit(SOON), "exit_fn was never called");
    thread::sleep(Duration::from_millis(50));
    assert_eq!(log.exits(), vec![format!("exit_fn({code})")]);
}

#[test]
fn racing_exits_elect_one_winner_whose_code_everyone_sees() {
    let modes = [ExitMode::Orderly, ExitMode::Fast, ExitMode::Rude];
    for round in 0..20 {
        let log = Arc::new(Log::default());
        let (shutdown, participant) = setup(
            config(Some(5_000), ExitMode::Rude),
            TestParticipant::new(&log),
        );
        let barrier = Arc::new(Barrier::new(32));
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let shutdown = shutdown.clone();
                let barrier = barrier.clone();
                let mode = modes[(i + round) % 3];
                thread::spawn(move || {
                    barrier.wait();
                    (i as i32 + 100, mode, shutdown.exit(i as i32 + 100, mode))
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();

        let winners: Vec<_> = results
            .iter()
            .filter(|(_, _, r)| *r == ExitStart::Started)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let (code, mode, _) = *winners[0];
        for (_, _, r) in &results {
            if *r != ExitStart::Started {
                assert_eq!(*r, ExitStart::AlreadyStarted { code });
            }
        }
        assert_eq!(shutdown.exit_code(), Some(code));
        assert_eq!(shutdown.exit_mode(), Some(mode));
        let report = report(&shutdown);
        assert_eq!((report.code, report.mode), (code, mode));
        assert!(!report.watchdog_fired);
        assert_exited_once(&log, code);
        let expected_releases = if mode == ExitMode::Rude { 0 } else { 1 };
        assert_eq!(
            participant.releases.load(Ordering::SeqCst),
            expected_releases
        );
    }
}

#[test]
fn orderly_exit_runs_every_phase_in_order() {
    let log = Arc::new(Log::default());
    let (shutdown, _p) = setup(
        config(Some(5_000), ExitMode::Rude),
        TestParticipant::new(&log),
    );
    shutdown
        .add_hook("first", hook_logging(&log, "first"))
        .unwrap();
    shutdown
        .add_hook("second", hook_logging(&log, "second"))
        .unwrap();
    assert_eq!(shutdown.phase(), Phase::Running);
    assert!(!shutdown.is_exiting());
    assert_eq!(shutdown.exit_code(), None);

    assert_eq!(shutdown.exit(3, ExitMode::Orderly), ExitStart::Started);
    assert!(shutdown.is_exiting());
    let report = report(&shutdown);
    assert_exited_once(&log, 3);
    assert_eq!(
        log.events(),
        [
            "phase stop_admitting exit-process",
            "stop_admitting",
            "phase exit_hooks exit-process",
            "hook second", // reverse registration order
            "hook first",
            "phase finalizers exit-process",
            "finalizers",
            "phase critical_release exit-process",
            "critical_release",
            "phase exit exit-process",
            "exit_fn(3)",
        ]
    );
    assert_eq!(
        report.phases_completed,
        [
            Phase::StopAdmitting,
            Phase::ExitHooks,
            Phase::Finalizers,
            Phase::CriticalRelease
        ]
    );
    assert_eq!((report.code, report.mode), (3, ExitMode::Orderly));
    assert!(!report.watchdog_fired);
    assert_eq!(report.escalated_to, None);
    assert_eq!(report.interrupted_phase, None);
    assert!(report.elapsed < SOON);
    assert_eq!(shutdown.phase(), Phase::Exited);
    assert_eq!(shutdown.report(), Some(report));
}

#[test]
fn fast_exit_skips_hooks_and_finalizers() {
    let log = Arc::new(Log::default());
    let (shutdown, _p) = setup(
        config(Some(5_000), ExitMode::Rude),
        TestParticipant::new(&log),
    );
    shutdown
        .add_hook("skipped", hook_logging(&log, "skipped"))
        .unwrap();

    assert_eq!(shutdown.exit(4, ExitMode::Fast), ExitStart::Started);
    let report = report(&shutdown);
    assert_exited_once(&log, 4);
    assert_eq!(
        log.events(),
        [
            "phase stop_admitting fast-exit-process",
            "stop_admitting",
            "phase critical_release fast-exit-process",
            "critical_release",
            "phase exit fast-exit-process",
            "exit_fn(4)",
        ]
    );
    assert_eq!(
        report.phases_completed,
        [Phase::StopAdmitting, Phase::CriticalRelease]
    );
}

#[test]
fn rude_exit_exits_at_once_on_the_callers_thread() {
    let log = Arc::new(Log::default());
    let (shutdown, _p) = setup(
        config(Some(5_000), ExitMode::Rude),
        TestParticipant::new(&log),
    );
    shutdown
        .add_hook("skipped", hook_logging(&log, "skipped"))
        .unwrap();

    assert_eq!(shutdown.exit(-7, ExitMode::Rude), ExitStart::Started);
    // Synchronous: already called when exit returns, and nothing else ran.
    assert_eq!(log.events(), ["exit_fn(-7)"]);
    assert_eq!(shutdown.phase(), Phase::Exited);
    let report = shutdown.report().expect("published before exit_fn");
    assert_eq!((report.code, report.mode), (-7, ExitMode::Rude));
    assert!(report.phases_completed.is_empty());
    assert!(!report.watchdog_fired);
    assert_exited_once(&log, -7);
}

#[test]
fn extreme_codes_survive_the_election() {
    for code in [i32::MIN, -1, 0, i32::MAX] {
        let log = Arc::new(Log::default());
        let shutdown = Shutdown::new(config(None, ExitMode::Rude), log.exit_fn());
        assert_eq!(shutdown.exit(code, ExitMode::Rude), ExitStart::Started);
        assert_eq!(
            shutdown.exit(1, ExitMode::Fast),
            ExitStart::AlreadyStarted { code }
        );
        assert_eq!(shutdown.exit_code(), Some(code));
        assert_exited_once(&log, code);
    }
}

#[test]
fn a_hook_that_never_completes_is_cut_off_by_the_watchdog() {
    let log = Arc::new(Log::default());
    let (shutdown, p) = setup(
        config(Some(300), ExitMode::Rude),
        TestParticipant::new(&log),
    );
    shutdown
        .add_hook("after", hook_logging(&log, "after"))
        .unwrap();
    shutdown
        .add_hook("stuck", || Box::pin(std::future::pending::<()>()))
        .unwrap();

    let start = Instant::now();
    shutdown.exit(5, ExitMode::Orderly);
    assert!(log.wait_exit(Duration::from_millis(300) + SLACK));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(300), "fired early: {took:?}");
    let report = report(&shutdown);
    assert!(report.watchdog_fired);
    assert_eq!(report.interrupted_phase, Some(Phase::ExitHooks));
    assert_eq!(report.phases_completed, [Phase::StopAdmitting]);
    assert_exited_once(&log, 5);
    // Rude action: nothing after the stuck hook ran.
    let events = log.events();
    assert!(!events.contains(&"hook after".to_string()), "{events:?}");
    assert!(!events.contains(&"finalizers".to_string()), "{events:?}");
    assert_eq!(p.releases.load(Ordering::SeqCst), 0);
}

#[test]
fn a_hook_that_blocks_its_thread_is_cut_off_and_fast_action_still_releases() {
    let log = Arc::new(Log::default());
    let (shutdown, p) = setup(
        config(Some(300), ExitMode::Fast),
        TestParticipant::new(&log),
    );
    shutdown
        .add_hook("blocks", || {
            thread::sleep(Duration::from_secs(30));
            Box::pin(async {})
        })
        .unwrap();

    let start = Instant::now();
    shutdown.exit(6, ExitMode::Orderly);
    assert!(log.wait_exit(Duration::from_millis(300) + SLACK));
    assert!(start.elapsed() >= Duration::from_millis(300));
    let report = report(&shutdown);
    assert!(report.watchdog_fired);
    assert_eq!(report.interrupted_phase, Some(Phase::ExitHooks));
    assert_eq!(
        report.phases_completed,
        [Phase::StopAdmitting, Phase::CriticalRelease]
    );
    assert_exited_once(&log, 6);
    assert_eq!(p.releases.load(Ordering::SeqCst), 1);
    let events = log.events();
    let tail = &events[events.len() - 4..];
    assert_eq!(
        tail,
        [
            "phase critical_release fast-exit-process",
            "critical_release",
            "phase exit fast-exit-process",
            "exit_fn(6)",
        ]
    );
}

#[test]
fn finalizers_that_never_complete_are_cut_off() {
    for finalizers in [
        Behaviour::Pending,
        Behaviour::Block(Duration::from_secs(30)),
    ] {
        let log = Arc::new(Log::default());
        let mut participant = TestParticipant::new(&log);
        participant.finalizers = finalizers;
        let (shutdown, p) = setup(config(Some(300), ExitMode::Rude), participant);

        let start = Instant::now();
        shutdown.exit(7, ExitMode::Orderly);
        assert!(log.wait_exit(Duration::from_millis(300) + SLACK));
        assert!(start.elapsed() >= Duration::from_millis(300));
        let report = report(&shutdown);
        assert!(report.watchdog_fired);
        assert_eq!(report.interrupted_phase, Some(Phase::Finalizers));
        assert_eq!(
            report.phases_completed,
            [Phase::StopAdmitting, Phase::ExitHooks]
        );
        assert_exited_once(&log, 7);
        assert_eq!(p.releases.load(Ordering::SeqCst), 0);
    }
}

#[test]
fn a_hung_critical_release_costs_at_most_the_grace() {
    let log = Arc::new(Log::default());
    let mut participant = TestParticipant::new(&log);
    participant.finalizers = Behaviour::Pending;
    participant.release = Behaviour::Pending;
    let (shutdown, p) = setup(config(Some(200), ExitMode::Fast), participant);

    let start = Instant::now();
    shutdown.exit(8, ExitMode::Orderly);
    // timeout 200 ms + grace 300 ms
    assert!(log.wait_exit(Duration::from_millis(500) + SLACK));
    assert!(start.elapsed() >= Duration::from_millis(500));
    let report = report(&shutdown);
    assert!(report.watchdog_fired);
    assert_eq!(report.interrupted_phase, Some(Phase::Finalizers));
    assert!(!report.phases_completed.contains(&Phase::CriticalRelease));
    assert_exited_once(&log, 8);
    assert_eq!(p.releases.load(Ordering::SeqCst), 1);
}

#[test]
fn a_release_in_progress_when_the_watchdog_fires_runs_once_and_is_awaited() {
    let log = Arc::new(Log::default());
    let mut participant = TestParticipant::new(&log);
    participant.release = Behaviour::Block(Duration::from_millis(600));
    let mut config = config(Some(250), ExitMode::Fast);
    config.grace = Duration::from_secs(5);
    let (shutdown, p) = setup(config, participant);

    let start = Instant::now();
    shutdown.exit(9, ExitMode::Fast);
    assert!(log.wait_exit(SOON));
    // The watchdog waited for the sequence's release rather than starting another.
    assert!(start.elapsed() >= Duration::from_millis(600));
    let report = report(&shutdown);
    assert!(report.watchdog_fired);
    assert_eq!(report.interrupted_phase, Some(Phase::CriticalRelease));
    assert_exited_once(&log, 9);
    assert_eq!(p.releases.load(Ordering::SeqCst), 1);
}

#[test]
fn without_a_timeout_a_slow_sequence_is_not_cut_off() {
    let log = Arc::new(Log::default());
    let mut participant = TestParticipant::new(&log);
    participant.finalizers = Behaviour::Block(Duration::from_millis(300));
    let (shutdown, _p) = setup(config(None, ExitMode::Rude), participant);
    shutdown.exit(10, ExitMode::Orderly);
    let report = report(&shutdown);
    assert!(!report.watchdog_fired);
    assert_eq!(report.phases_completed.len(), 4);
    assert_exited_once(&log, 10);
}

#[test]
fn panics_in_hooks_and_participant_do_not_stop_the_sequence() {
    let log = Arc::new(Log::default());
    let mut participant = TestParticipant::new(&log);
    participant.stop = Behaviour::Panic;
    participant.finalizers = Behaviour::Panic;
    participant.release = Behaviour::Panic;
    let (shutdown, p) = setup(config(Some(5_000), ExitMode::Rude), participant);
    shutdown
        .add_hook("last", hook_logging(&log, "last"))
        .unwrap();
    shutdown
        .add_hook("panics in its future", || {
            Box::pin(async { panic!("hook future panics") })
        })
        .unwrap();
    shutdown
        .add_hook("panics when called", || panic!("hook panics"))
        .unwrap();

    shutdown.exit(11, ExitMode::Orderly);
    let report = report(&shutdown);
    assert!(!report.watchdog_fired);
    assert_eq!(report.phases_completed.len(), 4);
    assert_exited_once(&log, 11);
    assert!(log.events().contains(&"hook last".to_string()));
    assert_eq!(p.releases.load(Ordering::SeqCst), 1);
}

#[test]
fn hooks_are_refused_once_shutdown_has_started_and_can_be_removed_before() {
    let log = Arc::new(Log::default());
    let shutdown = Shutdown::new(config(Some(5_000), ExitMode::Rude), log.exit_fn());
    let removed = shutdown
        .add_hook("removed", hook_logging(&log, "removed"))
        .unwrap();
    let kept = shutdown
        .add_hook("kept", hook_logging(&log, "kept"))
        .unwrap();
    assert_ne!(removed, kept);
    assert!(shutdown.remove_hook(removed));
    assert!(!shutdown.remove_hook(removed), "removed twice");

    shutdown.exit(12, ExitMode::Orderly);
    let err = shutdown
        .add_hook("late", hook_logging(&log, "late"))
        .unwrap_err();
    assert_eq!(err, ShutdownStarted { code: 12 });
    assert!(err.to_string().contains("exit code 12"));
    report(&shutdown);
    assert_exited_once(&log, 12);
    assert!(!shutdown.remove_hook(kept), "the sequence collected it");
    let hooks: Vec<_> = log
        .events()
        .into_iter()
        .filter(|e| e.starts_with("hook"))
        .collect();
    assert_eq!(hooks, ["hook kept"]);
}

#[test]
fn exit_from_inside_a_hook_and_a_finalizer_does_not_deadlock() {
    struct Reentrant {
        shutdown: Mutex<Option<Arc<Shutdown>>>,
        seen: Mutex<Option<ExitStart>>,
    }
    impl Participant for Reentrant {
        fn stop_admitting(&self) {}
        fn run_finalizers(&self) -> BoxFuture<'_> {
            Box::pin(async move {
                let shutdown = self.shutdown.lock().unwrap().clone().unwrap();
                *self.seen.lock().unwrap() = Some(shutdown.exit(99, ExitMode::Rude));
            })
        }
        fn critical_release(&self) {}
    }

    let log = Arc::new(Log::default());
    let shutdown = Shutdown::new(config(Some(5_000), ExitMode::Rude), log.exit_fn());
    let participant = Arc::new(Reentrant {
        shutdown: Mutex::new(Some(shutdown.clone())),
        seen: Mutex::new(None),
    });
    shutdown.set_participant(participant.clone());
    let from_hook = Arc::new(Mutex::new(None));
    let (s, seen) = (shutdown.clone(), from_hook.clone());
    shutdown
        .add_hook("reenters", move || {
            Box::pin(async move {
                *seen.lock().unwrap() = Some(s.exit(98, ExitMode::Fast));
                assert!(s.add_hook("nested", || Box::pin(async {})).is_err());
            })
        })
        .unwrap();

    shutdown.exit(13, ExitMode::Orderly);
    let report = report(&shutdown);
    assert!(!report.watchdog_fired);
    assert_exited_once(&log, 13);
    assert_eq!(
        *from_hook.lock().unwrap(),
        Some(ExitStart::AlreadyStarted { code: 13 })
    );
    assert_eq!(
        *participant.seen.lock().unwrap(),
        Some(ExitStart::AlreadyStarted { code: 13 })
    );
    // Break the test's own cycle (participant -> shutdown).
    participant.shutdown.lock().unwrap().take();
}

#[tokio::test(flavor = "current_thread")]
async fn exit_and_wait_inside_a_current_thread_runtime() {
    let log = Arc::new(Log::default());
    let (shutdown, _p) = setup(
        config(Some(5_000), ExitMode::Rude),
        TestParticipant::new(&log),
    );
    shutdown
        .add_hook("hook", hook_logging(&log, "hook"))
        .unwrap();
    assert_eq!(shutdown.exit(14, ExitMode::Orderly), ExitStart::Started);
    let report = tokio::time::timeout(SOON, shutdown.wait()).await.unwrap();
    assert_eq!(report.code, 14);
    assert_eq!(report.phases_completed.len(), 4);
    assert_exited_once(&log, 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_started_before_exit_is_woken_in_a_multi_thread_runtime() {
    let log = Arc::new(Log::default());
    let (shutdown, _p) = setup(
        config(Some(5_000), ExitMode::Rude),
        TestParticipant::new(&log),
    );
    let waiter = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { shutdown.wait().await })
    };
    tokio::task::yield_now().await;
    let exiting = shutdown.clone();
    tokio::spawn(async move { exiting.exit(15, ExitMode::Fast) })
        .await
        .unwrap();
    let report = tokio::time::timeout(SOON, waiter).await.unwrap().unwrap();
    assert_eq!((report.code, report.mode), (15, ExitMode::Fast));
    assert_exited_once(&log, 15);
}

#[test]
fn wait_blocking_times_out_before_any_exit_and_returns_after() {
    let log = Arc::new(Log::default());
    let shutdown = Shutdown::new(config(Some(5_000), ExitMode::Rude), log.exit_fn());
    let start = Instant::now();
    assert_eq!(
        shutdown.wait_blocking(Some(Duration::from_millis(50))),
        None
    );
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(shutdown.report(), None);

    let waiter = {
        let shutdown = shutdown.clone();
        thread::spawn(move || shutdown.wait_blocking(None))
    };
    thread::sleep(Duration::from_millis(20));
    shutdown.exit(16, ExitMode::Orderly);
    let report = waiter.join().unwrap().expect("waits until the end");
    assert_eq!(report.code, 16);
    assert_exited_once(&log, 16);
}

#[test]
fn escalation_cuts_a_stuck_orderly_exit_short() {
    for (action, releases) in [(ExitMode::Rude, 0), (ExitMode::Fast, 1)] {
        let log = Arc::new(Log::default());
        let (shutdown, p) = setup(config(None, ExitMode::Rude), TestParticipant::new(&log));
        shutdown
            .add_hook("stuck", || Box::pin(std::future::pending::<()>()))
            .unwrap();
        assert_eq!(shutdown.exit(17, ExitMode::Orderly), ExitStart::Started);
        // Let the sequence reach the hook; without escalation it would never end.
        assert_eq!(
            shutdown.wait_blocking(Some(Duration::from_millis(100))),
            None
        );
        assert_eq!(shutdown.phase(), Phase::ExitHooks);
        assert_eq!(
            shutdown.escalate(1, ExitMode::Orderly),
            ExitStart::AlreadyStarted { code: 17 }
        );
        assert_eq!(
            shutdown.wait_blocking(Some(Duration::from_millis(50))),
            None
        );

        assert_eq!(
            shutdown.escalate(1, action),
            ExitStart::AlreadyStarted { code: 17 }
        );
        let report = report(&shutdown);
        assert!(!report.watchdog_fired);
        assert_eq!(report.escalated_to, Some(action));
        assert_eq!(report.interrupted_phase, Some(Phase::ExitHooks));
        assert_exited_once(&log, 17);
        assert_eq!(p.releases.load(Ordering::SeqCst), releases);
    }
}

#[test]
fn an_escalation_no_more_severe_than_the_running_exit_changes_nothing() {
    let log = Arc::new(Log::default());
    let mut participant = TestParticipant::new(&log);
    participant.release = Behaviour::Block(Duration::from_millis(200));
    let (shutdown, p) = setup(config(None, ExitMode::Rude), participant);
    assert_eq!(shutdown.exit(21, ExitMode::Fast), ExitStart::Started);
    thread::sleep(Duration::from_millis(50));
    // A second fast exit (say, a second failure decided the same) must not race the first
    // one's phases through the watchdog.
    assert_eq!(
        shutdown.escalate(22, ExitMode::Fast),
        ExitStart::AlreadyStarted { code: 21 }
    );
    let report = report(&shutdown);
    assert_eq!(report.escalated_to, None);
    assert!(!report.watchdog_fired);
    assert_exited_once(&log, 21);
    assert_eq!(p.releases.load(Ordering::SeqCst), 1);
}

#[test]
fn escalate_before_any_exit_starts_one() {
    let log = Arc::new(Log::default());
    let shutdown = Shutdown::new(config(None, ExitMode::Rude), log.exit_fn());
    assert_eq!(shutdown.escalate(18, ExitMode::Fast), ExitStart::Started);
    let report = report(&shutdown);
    assert_eq!(
        (report.code, report.mode, report.escalated_to),
        (18, ExitMode::Fast, None)
    );
    assert_exited_once(&log, 18);
}

#[test]
fn the_participant_is_held_weakly() {
    let log = Arc::new(Log::default());
    let shutdown = Shutdown::new(config(Some(5_000), ExitMode::Rude), log.exit_fn());
    let participant = Arc::new(TestParticipant::new(&log));
    shutdown.set_participant(participant.clone());
    assert_eq!(Arc::strong_count(&participant), 1, "no strong ref kept");
    drop(participant);

    shutdown.exit(19, ExitMode::Orderly);
    let report = report(&shutdown);
    assert_eq!(report.phases_completed.len(), 4);
    assert_exited_once(&log, 19);
    assert_eq!(
        log.events(),
        ["exit_fn(19)"],
        "the dropped participant was not called"
    );
}

#[test]
fn names_match_the_event_and_policy_vocabulary() {
    let phases: Vec<_> = [
        Phase::Running,
        Phase::StopAdmitting,
        Phase::ExitHooks,
        Phase::Finalizers,
        Phase::CriticalRelease,
        Phase::Exited,
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    assert_eq!(
        phases,
        [
            "running",
            "stop_admitting",
            "exit_hooks",
            "finalizers",
            "critical_release",
            "exit"
        ]
    );
    assert_eq!(ExitMode::Orderly.to_string(), "exit-process");
    assert_eq!(ExitMode::Fast.to_string(), "fast-exit-process");
    assert_eq!(ExitMode::Rude.to_string(), "rude-exit-process");
    let default = ShutdownConfig::default();
    assert_eq!(default.timeout, Some(Duration::from_secs(25)));
    assert_eq!(default.on_timeout, ExitMode::Rude);
}

#[test]
fn an_orderly_timeout_action_is_applied_as_fast() {
    let log = Arc::new(Log::default());
    let mut participant = TestParticipant::new(&log);
    participant.finalizers = Behaviour::Pending;
    let (shutdown, p) = setup(config(Some(200), ExitMode::Orderly), participant);
    shutdown.exit(20, ExitMode::Orderly);
    let report = report(&shutdown);
    assert!(report.watchdog_fired);
    assert_exited_once(&log, 20);
    assert_eq!(p.releases.load(Ordering::SeqCst), 1);
    assert!(
        log.events()
            .contains(&"phase exit fast-exit-process".to_string())
    );
}

#[test]
fn unrepresentably_long_bounds_mean_no_bound_and_do_not_panic() {
    let log = Arc::new(Log::default());
    let config = ShutdownConfig {
        timeout: Some(Duration::MAX),
        on_timeout: ExitMode::Fast,
        grace: Duration::MAX,
    };
    let (shutdown, _p) = setup(config, TestParticipant::new(&log));
    assert_eq!(shutdown.wait_blocking(Some(Duration::from_millis(1))), None);
    shutdown.exit(21, ExitMode::Orderly);
    let report = shutdown
        .wait_blocking(Some(Duration::MAX))
        .expect("waits until the end");
    assert!(!report.watchdog_fired);
    assert_eq!(report.phases_completed.len(), 4);
    assert_exited_once(&log, 21);
}
