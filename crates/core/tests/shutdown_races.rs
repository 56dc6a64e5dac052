//! Schedule fuzzing of the shutdown coordinator with real threads: many short rounds in which
//! the interesting events (the watchdog's deadline and the sequence's end; hook registration
//! and the election) are made to land close together. The lock-free core is model-checked
//! with loom in `src/shutdown.rs`; these rounds drive the whole coordinator around it.
#![cfg(not(loom))]

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use warden_core::shutdown::{
    BoxFuture, ExitFn, ExitMode, ExitStart, Participant, Phase, Shutdown, ShutdownConfig,
};

const SOON: Duration = Duration::from_secs(10);

struct Counting {
    releases: AtomicUsize,
    release_for: Duration,
}

impl Participant for Counting {
    fn stop_admitting(&self) {}
    fn run_finalizers(&self) -> BoxFuture<'_> {
        Box::pin(async {})
    }
    fn critical_release(&self) {
        self.releases.fetch_add(1, Ordering::SeqCst);
        thread::sleep(self.release_for);
    }
}

fn recorder() -> (Arc<Mutex<Vec<i32>>>, ExitFn) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    (calls, Arc::new(move |code| seen.lock().unwrap().push(code)))
}

/// Wait for the exit function, then give a second caller time to show up.
fn exit_calls(calls: &Mutex<Vec<i32>>) -> Vec<i32> {
    let deadline = std::time::Instant::now() + SOON;
    while calls.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(20));
    calls.lock().unwrap().clone()
}

#[test]
fn the_watchdog_and_the_sequence_racing_to_the_end_exit_once() {
    let mut fired = 0;
    for round in 0..40u64 {
        let (calls, exit_fn) = recorder();
        let config = ShutdownConfig {
            // Deadlines from 0 to 3 ms against a release of 0 to 2 ms: both orders happen.
            timeout: Some(Duration::from_micros(round % 4 * 1000)),
            on_timeout: if round % 2 == 0 {
                ExitMode::Fast
            } else {
                ExitMode::Rude
            },
            grace: Duration::from_secs(5),
        };
        let shutdown = Shutdown::new(config, exit_fn);
        let participant = Arc::new(Counting {
            releases: AtomicUsize::new(0),
            release_for: Duration::from_micros(round % 3 * 1000),
        });
        shutdown.set_participant(participant.clone());
        let mode = if round % 3 == 0 {
            ExitMode::Orderly
        } else {
            ExitMode::Fast
        };
        assert_eq!(shutdown.exit(round as i32, mode), ExitStart::Started);

        let report = shutdown.wait_blocking(Some(SOON)).expect("ends");
        assert_eq!(exit_calls(&calls), [round as i32], "round {round}");
        assert_eq!(report.code, round as i32);
        assert_eq!(shutdown.phase(), Phase::Exited);
        let releases = participant.releases.load(Ordering::SeqCst);
        assert!(releases <= 1, "round {round}: released {releases} times");
        if report.watchdog_fired {
            fired += 1;
            assert!(report.interrupted_phase.is_some());
        } else {
            assert_eq!(
                releases, 1,
                "round {round}: the sequence ended without releasing"
            );
            assert!(report.phases_completed.contains(&Phase::CriticalRelease));
        }
        if report.phases_completed.contains(&Phase::CriticalRelease) {
            assert_eq!(releases, 1);
        }
    }
    // A zero timeout always fires, so both outcomes were exercised.
    assert!(fired > 0);
}

#[test]
fn every_accepted_hook_runs_and_no_refused_one_does() {
    for round in 0..20 {
        let (calls, exit_fn) = recorder();
        let shutdown = Shutdown::new(
            ShutdownConfig::new(Some(Duration::from_secs(10)), ExitMode::Rude),
            exit_fn,
        );
        let ran = Arc::new(Mutex::new(HashSet::new()));
        let barrier = Arc::new(Barrier::new(5));
        let adders: Vec<_> = (0..4)
            .map(|t| {
                let (shutdown, ran, barrier) = (shutdown.clone(), ran.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    let mut accepted = Vec::new();
                    for i in 0..50 {
                        let key = t * 1000 + i;
                        let ran = ran.clone();
                        let hook = move || -> BoxFuture<'static> {
                            Box::pin(async move {
                                ran.lock().unwrap().insert(key);
                            })
                        };
                        if shutdown.add_hook("fuzz", hook).is_ok() {
                            accepted.push(key);
                        }
                    }
                    accepted
                })
            })
            .collect();
        barrier.wait();
        thread::yield_now();
        shutdown.exit(round, ExitMode::Orderly);
        let accepted: HashSet<_> = adders.into_iter().flat_map(|t| t.join().unwrap()).collect();
        let report = shutdown.wait_blocking(Some(SOON)).expect("ends");
        assert!(!report.watchdog_fired);
        assert_eq!(*ran.lock().unwrap(), accepted, "round {round}");
        assert_eq!(exit_calls(&calls), [round]);
    }
}
