//! Issue #4 stress: many calls over many domains take random subsets of host locks in random
//! order while random aborts, rude aborts and deadlines fire. No hang, no lost wake-up, every
//! lock free at the end.

use crate::common::runtime;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use warden::{CallError, CallOptions, DomainConfig, Val};

/// `take3(a, b, c, ms)`: acquire the locks named by the non-negative indexes (one byte each,
/// "01234" at offset 0) in the given order, each with a 300 ms timeout; on any failure back
/// out (release what is held, in reverse) and return the code; else hold them for `ms`,
/// release in reverse, return 0.
const GUEST: &str = r#"
(module
  (import "warden" "lock_acquire" (func $acq (param i32 i32 i64) (result i32)))
  (import "warden" "lock_release" (func $rel (param i32 i32) (result i32)))
  (import "warden" "sleep_ms" (func $sleep (param i64) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "01234")
  (func $take (param $l i32) (result i32)
    (local $r i32)
    (if (i32.lt_s (local.get $l) (i32.const 0)) (then (return (i32.const 0))))
    (local.set $r (call $acq (local.get $l) (i32.const 1) (i64.const 300)))
    ;; -4 (poisoned) is acquired all the same.
    (if (i32.eq (local.get $r) (i32.const -4)) (then (return (i32.const 0))))
    (local.get $r))
  (func $drop (param $l i32)
    (if (i32.ge_s (local.get $l) (i32.const 0))
      (then (drop (call $rel (local.get $l) (i32.const 1))))))
  (func (export "take3") (param $a i32) (param $b i32) (param $c i32) (param $ms i64) (result i32)
    (local $r i32)
    (local.set $r (call $take (local.get $a)))
    (if (local.get $r) (then (return (local.get $r))))
    (local.set $r (call $take (local.get $b)))
    (if (local.get $r) (then (call $drop (local.get $a)) (return (local.get $r))))
    (local.set $r (call $take (local.get $c)))
    (if (local.get $r)
      (then (call $drop (local.get $b)) (call $drop (local.get $a)) (return (local.get $r))))
    (drop (call $sleep (local.get $ms)))
    (call $drop (local.get $c))
    (call $drop (local.get $b))
    (call $drop (local.get $a))
    (i32.const 0)))
"#;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_locks_aborts_and_deadlines_never_hang_or_leak_a_lock() {
    let (rt, _rec) = runtime();
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let outcomes: Arc<[AtomicU64; 6]> = Arc::new(Default::default());
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let rt = rt.clone();
        let m = m.clone();
        let outcomes = outcomes.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t + 1).wrapping_mul(0x2545_F491));
            let mut domain = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
            for _ in 0..60 {
                if !domain.is_loaded() {
                    domain = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
                }
                // A random subset of up to three distinct locks, in random order.
                let mut locks = [-1i32; 3];
                for slot in locks.iter_mut() {
                    if rng.below(4) > 0 {
                        let l = rng.below(5) as i32;
                        *slot = l;
                    }
                }
                if locks[1] == locks[0] {
                    locks[1] = -1;
                }
                if locks[2] == locks[0] || locks[2] == locks[1] {
                    locks[2] = -1;
                }
                let deadline = (rng.below(4) == 0).then(|| Duration::from_millis(rng.below(60)));
                let args = [
                    Val::I32(locks[0]),
                    Val::I32(locks[1]),
                    Val::I32(locks[2]),
                    Val::I64(rng.below(15) as i64),
                ];
                let opts = CallOptions {
                    deadline,
                    ..CallOptions::default()
                };
                let call = match domain.call("take3", &args, opts) {
                    Ok(c) => c,
                    Err(e) => panic!("bad call: {e}"),
                };
                match rng.below(6) {
                    0 => {
                        tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
                        call.abort();
                    }
                    1 => {
                        tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
                        call.rude_abort();
                    }
                    _ => {}
                }
                let slot = match call.join().await {
                    Ok(out) => match out.values[0].unwrap_i32() {
                        0 => 0,
                        -1 => 1,
                        -2 => 2,
                        other => panic!("unexpected code {other}"),
                    },
                    Err(CallError::DeadlockVictim) => 2,
                    Err(CallError::Timeout) => 3,
                    Err(CallError::Aborted | CallError::RudeAborted) => 4,
                    Err(CallError::DomainUnloaded) => 5,
                    Err(other) => panic!("unexpected outcome {other:?}"),
                };
                outcomes[slot].fetch_add(1, Ordering::Relaxed);
            }
            domain.unload().await;
        }));
    }
    let all = async {
        for t in tasks {
            t.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("no hang, no lost wake-up");
    let counts: Vec<u64> = outcomes.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert_eq!(counts.iter().sum::<u64>(), 16 * 60, "{counts:?}");
    eprintln!("outcomes ok/timeout-1/deadlock/deadline/aborted/unloaded: {counts:?}");
    assert!(counts[0] > 0, "some calls completed: {counts:?}");
    for l in ["0", "1", "2", "3", "4"] {
        assert!(
            !rt.locks().is_held(l),
            "lock {l} left held; outcomes {counts:?}"
        );
    }
    for _ in 0..200 {
        if rt.domain_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rt.domain_count(), 0);
}
