//! Host locks (DESIGN §2 "Locks and deadlock", §4 lock codes): ownership, FIFO hand-off,
//! timeouts, cancellation, orphaned/poisoned locks, deadlock detection, and a stress test.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use warden_core::locks::{
    Acquired, DeadlockCycle, LockError, LockTable, OwnerId, WaitEdge, WaitTarget,
};

/// Polls a future once with a waker that does nothing: lets a test drive a waiter step by step.
fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

fn lock_edge(waiter: OwnerId, name: &str, owner: OwnerId) -> WaitEdge {
    WaitEdge {
        waiter,
        on: WaitTarget::Lock(name.to_string()),
        owner,
    }
}

fn owner_edge(waiter: OwnerId, target: OwnerId) -> WaitEdge {
    WaitEdge {
        waiter,
        on: WaitTarget::Owner(target),
        owner: target,
    }
}

/// Takes a free lock synchronously (the fast path never suspends).
fn take(t: &LockTable, owner: OwnerId, name: &str) -> Acquired {
    let mut f = pin!(t.acquire(owner, name, None));
    match poll_once(f.as_mut()) {
        Poll::Ready(r) => r.expect("free lock"),
        Poll::Pending => panic!("lock {name} was not free for {owner}"),
    }
}

#[tokio::test]
async fn acquire_and_release() {
    let t = LockTable::new();
    assert_eq!(t.acquire(1, "a", None).await, Ok(Acquired::Clean));
    assert!(t.is_held("a"));
    assert_eq!(t.holder("a"), Some(1));
    assert_eq!(t.held_by(1), vec!["a".to_string()]);
    assert_eq!(t.held_count(1), 1);
    assert_eq!(t.lock_count(), 1);
    assert_eq!(
        t.acquire(1, "b", Some(Duration::ZERO)).await,
        Ok(Acquired::Clean)
    );
    assert_eq!(t.held_by(1), vec!["a".to_string(), "b".to_string()]);
    t.release(1, "a").unwrap();
    t.release(1, "b").unwrap();
    assert!(!t.is_held("a"));
    assert_eq!(t.holder("a"), None);
    assert_eq!(t.held_count(1), 0);
    assert!(t.held_by(1).is_empty());
    assert_eq!(t.lock_count(), 0);
}

#[tokio::test]
async fn recursive_acquire_is_already_held() {
    let t = LockTable::new();
    take(&t, 1, "a");
    let err = t.acquire(1, "a", None).await.unwrap_err();
    assert_eq!(err, LockError::AlreadyHeld);
    assert_eq!(err.code(), -6);
    // Not counted twice: one release frees it, a second is NotHeld.
    assert_eq!(t.held_count(1), 1);
    t.release(1, "a").unwrap();
    assert_eq!(t.release(1, "a"), Err(LockError::NotHeld));
    assert_eq!(t.lock_count(), 0);
}

#[test]
fn release_not_held_is_refused_and_changes_nothing() {
    let t = LockTable::new();
    let err = t.release(1, "never").unwrap_err();
    assert_eq!(err, LockError::NotHeld);
    assert_eq!(err.code(), -6);
    assert_eq!(t.lock_count(), 0);

    take(&t, 1, "a");
    assert_eq!(t.release(2, "a"), Err(LockError::NotHeld));
    assert_eq!(t.holder("a"), Some(1));
    assert_eq!(t.release(1, &"x".repeat(300)), Err(LockError::BadName));
    assert_eq!(LockError::BadName.code(), -8);
}

#[tokio::test]
async fn fifo_order_of_ten_waiters_without_barging() {
    let t = LockTable::new();
    take(&t, 0, "L");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for owner in 1..=10u64 {
        let (t2, order2) = (t.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            assert_eq!(t2.acquire(owner, "L", None).await, Ok(Acquired::Clean));
            order2.lock().unwrap().push(owner);
            tokio::task::yield_now().await;
            t2.release(owner, "L").unwrap();
        }));
        // Make sure this waiter is queued before the next one is spawned.
        while t.waiter_count("L") < owner as usize {
            tokio::task::yield_now().await;
        }
    }
    t.release(0, "L").unwrap();
    // Hand-off is direct: the lock already belongs to waiter 1, so a newcomer cannot barge in.
    assert_eq!(t.holder("L"), Some(1));
    assert_eq!(
        t.acquire(99, "L", Some(Duration::ZERO)).await,
        Err(LockError::Timeout)
    );
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (1..=10).collect::<Vec<_>>());
    assert_eq!(t.lock_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn timeout_leaves_the_queue_and_the_lock_usable() {
    let t = LockTable::new();
    take(&t, 1, "a");
    let start = tokio::time::Instant::now();
    let err = t
        .acquire(2, "a", Some(Duration::from_millis(100)))
        .await
        .unwrap_err();
    assert_eq!(err, LockError::Timeout);
    assert_eq!(err.code(), -1);
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert_eq!(t.waiter_count("a"), 0);
    assert_eq!(t.holder("a"), Some(1));
    assert_eq!(t.held_count(2), 0);

    // A zero timeout only tries: no wait, no queue entry.
    assert_eq!(
        t.acquire(2, "a", Some(Duration::ZERO)).await,
        Err(LockError::Timeout)
    );
    assert_eq!(t.waiter_count("a"), 0);

    t.release(1, "a").unwrap();
    assert_eq!(
        t.acquire(2, "a", Some(Duration::from_millis(100))).await,
        Ok(Acquired::Clean)
    );
    t.release(2, "a").unwrap();
    assert_eq!(t.lock_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn timed_waiter_gets_the_lock_when_released_in_time() {
    let t = LockTable::new();
    take(&t, 1, "a");
    let t2 = t.clone();
    let waiter =
        tokio::spawn(async move { t2.acquire(2, "a", Some(Duration::from_secs(1))).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    t.release(1, "a").unwrap();
    assert_eq!(waiter.await.unwrap(), Ok(Acquired::Clean));
    assert_eq!(t.holder("a"), Some(2));
}

/// A timeout firing as the lock is handed over must either succeed or pass the lock on. A second
/// waiter without a timeout proves nothing is lost: it always ends up with the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_racing_release_never_loses_the_lock() {
    let t = LockTable::new();
    let (mut won, mut timed_out) = (0, 0);
    for i in 0..300u64 {
        let (b, c) = (1000 + i, 2000 + i);
        take(&t, 1, "a");
        let tb = t.clone();
        let racer = tokio::spawn(async move {
            let r = tb.acquire(b, "a", Some(Duration::from_millis(1))).await;
            if r.is_ok() {
                assert_eq!(tb.holder("a"), Some(b));
                tb.release(b, "a").unwrap();
            }
            r
        });
        while t.waiter_count("a") < 1 && !racer.is_finished() {
            tokio::task::yield_now().await;
        }
        let tc = t.clone();
        let patient = tokio::spawn(async move {
            let r = tc.acquire(c, "a", None).await;
            tc.release(c, "a").unwrap();
            r
        });
        // Release around the moment the racer's 1 ms timer fires.
        tokio::time::sleep(Duration::from_micros(100 * (i % 15))).await;
        t.release(1, "a").unwrap();
        match racer.await.unwrap() {
            Ok(Acquired::Clean) => won += 1,
            Err(LockError::Timeout) => timed_out += 1,
            other => panic!("unexpected racer result {other:?}"),
        }
        let r = tokio::time::timeout(Duration::from_secs(5), patient)
            .await
            .expect("lost wake-up: the patient waiter never got the lock");
        assert_eq!(r.unwrap(), Ok(Acquired::Clean));
        assert_eq!(t.lock_count(), 0, "iteration {i}");
    }
    assert_eq!(won + timed_out, 300);
}

#[test]
fn dropping_an_unpolled_acquire_does_nothing() {
    let t = LockTable::new();
    take(&t, 1, "a");
    drop(t.acquire(2, "a", None));
    assert_eq!(t.waiter_count("a"), 0);
    t.release(1, "a").unwrap();
    assert_eq!(t.lock_count(), 0);
}

#[test]
fn dropping_a_queued_waiter_removes_it_and_its_edge() {
    let t = LockTable::new();
    take(&t, 1, "a");
    take(&t, 2, "b");
    {
        let mut w = pin!(t.acquire(2, "a", None));
        assert!(poll_once(w.as_mut()).is_pending());
        assert_eq!(t.waiter_count("a"), 1);
    }
    assert_eq!(t.waiter_count("a"), 0);
    // Had 2's edge (2 -> 1) survived, 1 waiting on b would be a false deadlock.
    let mut w = pin!(t.acquire(1, "b", None));
    assert!(poll_once(w.as_mut()).is_pending());
    t.release(2, "b").unwrap();
    assert_eq!(poll_once(w.as_mut()), Poll::Ready(Ok(Acquired::Clean)));
    t.release(1, "a").unwrap();
    t.release(1, "b").unwrap();
    assert_eq!(t.lock_count(), 0);
}

#[test]
fn dropping_a_waiter_in_the_middle_keeps_the_order() {
    let t = LockTable::new();
    take(&t, 1, "a");
    let mut w2 = pin!(t.acquire(2, "a", None));
    let mut w4 = pin!(t.acquire(4, "a", None));
    assert!(poll_once(w2.as_mut()).is_pending());
    {
        let mut w3 = pin!(t.acquire(3, "a", None));
        assert!(poll_once(w3.as_mut()).is_pending());
        assert!(poll_once(w4.as_mut()).is_pending());
        assert_eq!(t.waiter_count("a"), 3);
    }
    assert_eq!(t.waiter_count("a"), 2);
    t.release(1, "a").unwrap();
    assert_eq!(poll_once(w2.as_mut()), Poll::Ready(Ok(Acquired::Clean)));
    assert!(poll_once(w4.as_mut()).is_pending());
    t.release(2, "a").unwrap();
    assert_eq!(poll_once(w4.as_mut()), Poll::Ready(Ok(Acquired::Clean)));
    t.release(4, "a").unwrap();
    assert_eq!(t.lock_count(), 0);
}

#[test]
fn dropping_a_waiter_right_after_hand_off_passes_the_lock_on() {
    let t = LockTable::new();
    take(&t, 1, "a");
    let mut w3 = pin!(t.acquire(3, "a", None));
    {
        let mut w2 = pin!(t.acquire(2, "a", None));
        assert!(poll_once(w2.as_mut()).is_pending());
        assert!(poll_once(w3.as_mut()).is_pending());
        t.release(1, "a").unwrap();
        // Handed over: 2 owns it although its future has not seen it yet.
        assert_eq!(t.holder("a"), Some(2));
        assert_eq!(t.held_by(2), vec!["a".to_string()]);
    }
    // 2 was aborted before it saw the lock: 3 gets it, 2 holds nothing.
    assert_eq!(t.holder("a"), Some(3));
    assert_eq!(t.held_count(2), 0);
    assert_eq!(poll_once(w3.as_mut()), Poll::Ready(Ok(Acquired::Clean)));
    t.release(3, "a").unwrap();
    assert_eq!(t.lock_count(), 0);

    // With nobody behind it, the lock becomes free.
    take(&t, 1, "a");
    {
        let mut w2 = pin!(t.acquire(2, "a", None));
        assert!(poll_once(w2.as_mut()).is_pending());
        t.release(1, "a").unwrap();
    }
    assert!(!t.is_held("a"));
    assert_eq!(t.lock_count(), 0);
}

#[test]
fn a_cancelled_hand_off_keeps_the_poison_mark() {
    let t = LockTable::new();
    take(&t, 1, "a");
    let mut w3 = pin!(t.acquire(3, "a", None));
    {
        let mut w2 = pin!(t.acquire(2, "a", None));
        assert!(poll_once(w2.as_mut()).is_pending());
        assert!(poll_once(w3.as_mut()).is_pending());
        assert_eq!(t.release_orphaned(1), vec!["a".to_string()]);
        assert_eq!(t.holder("a"), Some(2));
    }
    // 2 never saw the poisoned lock, so 3 must still be told.
    assert_eq!(poll_once(w3.as_mut()), Poll::Ready(Ok(Acquired::Poisoned)));
    t.release(3, "a").unwrap();
    assert!(!t.is_poisoned("a"));
    assert_eq!(t.lock_count(), 0);
}

/// The runtime aborts a waiting call by racing its acquire against an abort signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_by_select_frees_the_waiter_slot() {
    let t = LockTable::new();
    take(&t, 1, "a");
    let abort = Arc::new(tokio::sync::Notify::new());
    let (t2, abort2) = (t.clone(), abort.clone());
    let aborted = tokio::spawn(async move {
        tokio::select! {
            r = t2.acquire(2, "a", Some(Duration::from_secs(60))) => Some(r),
            _ = abort2.notified() => None,
        }
    });
    while t.waiter_count("a") < 1 {
        tokio::task::yield_now().await;
    }
    let t3 = t.clone();
    let next = tokio::spawn(async move { t3.acquire(3, "a", None).await });
    while t.waiter_count("a") < 2 {
        tokio::task::yield_now().await;
    }
    abort.notify_one();
    assert_eq!(aborted.await.unwrap(), None);
    assert_eq!(t.waiter_count("a"), 1);
    t.release(1, "a").unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), next).await;
    assert_eq!(
        r.expect("waiter 3 was never woken").unwrap(),
        Ok(Acquired::Clean)
    );
    assert_eq!(t.held_count(2), 0);
}

#[tokio::test]
async fn orphaned_locks_are_poisoned_until_a_clean_release() {
    let t = LockTable::new();
    assert!(t.release_orphaned(1).is_empty());
    take(&t, 1, "b");
    take(&t, 1, "a");
    assert_eq!(
        t.release_orphaned(1),
        vec!["a".to_string(), "b".to_string()]
    );
    assert_eq!(t.held_count(1), 0);
    assert!(!t.is_held("a"));
    assert!(t.is_poisoned("a") && t.is_poisoned("b"));
    // Poisoned free locks stay in the table: the mark must survive until someone sees it.
    assert_eq!(t.lock_count(), 2);

    let got = t.acquire(2, "a", None).await.unwrap();
    assert_eq!(got, Acquired::Poisoned);
    assert_eq!(got.code(), -4);
    assert!(t.is_poisoned("a"));
    // Orphaned again: still poisoned for the next one.
    assert_eq!(t.release_orphaned(2), vec!["a".to_string()]);
    assert_eq!(t.acquire(3, "a", None).await, Ok(Acquired::Poisoned));
    t.release(3, "a").unwrap();
    assert!(!t.is_poisoned("a"));
    assert_eq!(t.acquire(4, "a", None).await, Ok(Acquired::Clean));
    t.release(4, "a").unwrap();

    assert_eq!(t.acquire(5, "b", None).await, Ok(Acquired::Poisoned));
    t.release(5, "b").unwrap();
    assert_eq!(t.lock_count(), 0);
}

#[test]
fn an_orphaned_lock_goes_to_the_next_waiter_poisoned() {
    let t = LockTable::new();
    take(&t, 1, "a");
    let mut w = pin!(t.acquire(2, "a", None));
    assert!(poll_once(w.as_mut()).is_pending());
    assert_eq!(t.release_orphaned(1), vec!["a".to_string()]);
    assert_eq!(poll_once(w.as_mut()), Poll::Ready(Ok(Acquired::Poisoned)));
    t.release(2, "a").unwrap();
    assert_eq!(t.lock_count(), 0);
}

#[test]
fn ending_an_owner_that_is_still_waiting_voids_its_wait() {
    let t = LockTable::new();
    take(&t, 1, "a");
    take(&t, 2, "b");
    let mut w = pin!(t.acquire(2, "a", None));
    assert!(poll_once(w.as_mut()).is_pending());
    assert_eq!(t.release_orphaned(2), vec!["b".to_string()]);
    assert_eq!(t.waiter_count("a"), 0);
    let r = poll_once(w.as_mut());
    assert_eq!(r, Poll::Ready(Err(LockError::OwnerEnded)));
    assert_eq!(LockError::OwnerEnded.code(), -3);
    t.release(1, "a").unwrap();
    assert_eq!(t.holder("a"), None);
}

#[tokio::test(start_paused = true)]
async fn ending_an_owner_wakes_its_timed_wait() {
    let t = LockTable::new();
    take(&t, 1, "a");
    let t2 = t.clone();
    let w = tokio::spawn(async move { t2.acquire(2, "a", Some(Duration::from_secs(60))).await });
    while t.waiter_count("a") < 1 {
        tokio::task::yield_now().await;
    }
    t.release_orphaned(2);
    assert_eq!(w.await.unwrap(), Err(LockError::OwnerEnded));
    assert!(tokio::time::Instant::now().elapsed() < Duration::from_secs(60));
}

#[test]
fn a_second_wait_by_the_same_owner_is_refused() {
    let t = LockTable::new();
    take(&t, 1, "a");
    take(&t, 1, "b");
    let mut w = pin!(t.acquire(2, "a", None));
    assert!(poll_once(w.as_mut()).is_pending());
    let mut w2 = pin!(t.acquire(2, "b", None));
    let r = poll_once(w2.as_mut());
    assert_eq!(r, Poll::Ready(Err(LockError::AlreadyWaiting)));
    assert_eq!(LockError::AlreadyWaiting.code(), -6);
    assert_eq!(
        t.wait_for_owner(2, 3).unwrap_err(),
        LockError::AlreadyWaiting
    );
    assert_eq!(t.waiter_count("b"), 0);
}

/// Records `deadlock_detected` events, to check the event names the calls and locks.
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn deadlock_of_two_refuses_the_closing_wait_and_the_survivor_completes() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let t = LockTable::new();
    take(&t, 1, "a");
    take(&t, 2, "b");
    let mut survivor = pin!(t.acquire(1, "b", None));
    assert!(poll_once(survivor.as_mut()).is_pending());

    let r = tracing::subscriber::with_default(Capture(events.clone()), || {
        let mut victim = pin!(t.acquire(2, "a", None));
        poll_once(victim.as_mut())
    });
    let Poll::Ready(Err(err)) = r else {
        panic!("expected a deadlock, got {r:?}")
    };
    assert_eq!(err.code(), -2);
    assert_eq!(
        err,
        LockError::Deadlock(DeadlockCycle {
            edges: vec![lock_edge(2, "a", 1), lock_edge(1, "b", 2)]
        })
    );
    let events = events.lock().unwrap();
    let event = events
        .iter()
        .find(|e| e.contains("event=\"deadlock_detected\""))
        .expect("deadlock_detected event");
    assert!(event.contains("victim=2 "), "{event}");
    assert!(event.contains("calls=[2, 1]"), "{event}");
    assert!(event.contains("locks=[\"a\", \"b\"]"), "{event}");

    // The victim was refused without side effects: it still holds b, and is not queued.
    assert_eq!(t.held_by(2), vec!["b".to_string()]);
    assert_eq!(t.waiter_count("a"), 0);
    assert!(poll_once(survivor.as_mut()).is_pending());
    // The victim's call gives up: the survivor completes.
    t.release(2, "b").unwrap();
    assert_eq!(
        poll_once(survivor.as_mut()),
        Poll::Ready(Ok(Acquired::Clean))
    );
    t.release(1, "a").unwrap();
    t.release(1, "b").unwrap();
    assert_eq!(t.lock_count(), 0);
}

#[tokio::test]
async fn deadlock_of_three_and_the_survivors_complete() {
    let t = LockTable::new();
    take(&t, 1, "a");
    take(&t, 2, "b");
    take(&t, 3, "c");
    let mut survivors = Vec::new();
    for (owner, want) in [(1u64, "b"), (2, "c")] {
        let t2 = t.clone();
        survivors.push(tokio::spawn(async move {
            let r = t2.acquire(owner, want, None).await;
            // Done: release everything this call holds.
            for name in t2.held_by(owner) {
                t2.release(owner, &name).unwrap();
            }
            r
        }));
        while t.waiter_count(want) < 1 {
            tokio::task::yield_now().await;
        }
    }
    // A bystander waiting on the chain is not part of a cycle and just waits.
    let t4 = t.clone();
    let bystander = tokio::spawn(async move {
        let r = t4.acquire(4, "a", None).await;
        t4.release(4, "a").unwrap();
        r
    });
    while t.waiter_count("a") < 1 {
        tokio::task::yield_now().await;
    }

    let err = t.acquire(3, "a", None).await.unwrap_err();
    assert_eq!(
        err,
        LockError::Deadlock(DeadlockCycle {
            edges: vec![
                lock_edge(3, "a", 1),
                lock_edge(1, "b", 2),
                lock_edge(2, "c", 3)
            ]
        })
    );
    // The victim fails and its lock is orphaned (as a failing call's would be).
    assert_eq!(t.release_orphaned(3), vec!["c".to_string()]);
    let all = async {
        for s in survivors {
            assert!(s.await.unwrap().is_ok());
        }
        assert!(bystander.await.unwrap().is_ok());
    };
    tokio::time::timeout(Duration::from_secs(5), all)
        .await
        .expect("survivors did not complete");
    // Survivor 2 got c poisoned and released it normally, so all is clean.
    assert_eq!(t.lock_count(), 0);
}

/// After a hand-off the remaining waiters wait for the new holder; detection must follow that.
#[test]
fn deadlock_detection_follows_the_hand_off() {
    let t = LockTable::new();
    take(&t, 1, "a");
    take(&t, 3, "c");
    let mut w2 = pin!(t.acquire(2, "a", None));
    let mut w3 = pin!(t.acquire(3, "a", None));
    assert!(poll_once(w2.as_mut()).is_pending());
    assert!(poll_once(w3.as_mut()).is_pending());
    t.release(1, "a").unwrap();
    assert_eq!(poll_once(w2.as_mut()), Poll::Ready(Ok(Acquired::Clean)));
    // 3 now waits for 2 (the new holder of a); 2 asking for c (held by 3) closes the cycle.
    let mut closing = pin!(t.acquire(2, "c", None));
    assert_eq!(
        poll_once(closing.as_mut()),
        Poll::Ready(Err(LockError::Deadlock(DeadlockCycle {
            edges: vec![lock_edge(2, "c", 3), lock_edge(3, "a", 2)]
        })))
    );
    t.release(2, "a").unwrap();
    assert_eq!(poll_once(w3.as_mut()), Poll::Ready(Ok(Acquired::Clean)));
}

#[test]
fn cross_owner_waits_join_the_wait_for_graph() {
    let t = LockTable::new();
    // A call cannot wait for itself.
    assert_eq!(
        t.wait_for_owner(1, 1).unwrap_err(),
        LockError::Deadlock(DeadlockCycle {
            edges: vec![owner_edge(1, 1)]
        })
    );

    // Call 1 holds a and calls into call 2, which wants a.
    take(&t, 1, "a");
    let guard = t.wait_for_owner(1, 2).unwrap();
    let mut w = pin!(t.acquire(2, "a", None));
    assert_eq!(
        poll_once(w.as_mut()),
        Poll::Ready(Err(LockError::Deadlock(DeadlockCycle {
            edges: vec![lock_edge(2, "a", 1), owner_edge(1, 2)]
        })))
    );
    // Two calls calling into each other.
    assert_eq!(
        t.wait_for_owner(2, 1).unwrap_err(),
        LockError::Deadlock(DeadlockCycle {
            edges: vec![owner_edge(2, 1), owner_edge(1, 2)]
        })
    );
    // Through a third call and a lock: 3 waits on a (held by 1), then 2 calls into 3.
    let mut w3 = pin!(t.acquire(3, "a", None));
    assert!(poll_once(w3.as_mut()).is_pending());
    assert_eq!(
        t.wait_for_owner(2, 3).unwrap_err(),
        LockError::Deadlock(DeadlockCycle {
            edges: vec![owner_edge(2, 3), lock_edge(3, "a", 1), owner_edge(1, 2)]
        })
    );
    assert_eq!(
        t.wait_for_owner(1, 4).unwrap_err(),
        LockError::AlreadyWaiting
    );

    // The call into 2 returns: the edge goes, and the same waits are fine.
    drop(guard);
    let g = t.wait_for_owner(2, 1).expect("no cycle without 1 -> 2");
    drop(g);
    let mut w2 = pin!(t.acquire(2, "a", None));
    assert!(poll_once(w2.as_mut()).is_pending());
    t.release(1, "a").unwrap();
    assert_eq!(poll_once(w3.as_mut()), Poll::Ready(Ok(Acquired::Clean)));
    t.release(3, "a").unwrap();
    assert_eq!(poll_once(w2.as_mut()), Poll::Ready(Ok(Acquired::Clean)));
    t.release(2, "a").unwrap();
    assert_eq!(t.lock_count(), 0);
}

#[test]
fn ending_an_owner_removes_its_cross_owner_edge() {
    let t = LockTable::new();
    take(&t, 2, "a");
    let guard = t.wait_for_owner(1, 2).unwrap();
    assert!(t.release_orphaned(1).is_empty());
    // 1 -> 2 is gone, so 1 holding b and 2 waiting on b is no cycle.
    take(&t, 1, "b");
    let mut w = pin!(t.acquire(2, "b", None));
    assert!(poll_once(w.as_mut()).is_pending());
    drop(guard); // a stale guard is harmless
    t.release(1, "b").unwrap();
    assert_eq!(poll_once(w.as_mut()), Poll::Ready(Ok(Acquired::Clean)));
}

/// xorshift64*: a small deterministic PRNG, so the stress test needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const NAMES: [&str; 5] = ["l0", "l1", "l2", "l3", "l4"];

#[derive(Default)]
struct Stats {
    completed: AtomicUsize,
    timeouts: AtomicUsize,
    deadlocks: AtomicUsize,
    cancels: AtomicUsize,
    orphans: AtomicUsize,
}

/// Mutual exclusion check independent of the table: who is inside each lock right now.
struct Occupants([AtomicU64; 5]);

impl Occupants {
    fn enter(&self, i: usize, owner: OwnerId) {
        let prev = self.0[i].swap(owner, Ordering::SeqCst);
        assert_eq!(prev, 0, "{} held by {prev} and {owner} at once", NAMES[i]);
    }
    fn leave(&self, i: usize, owner: OwnerId) {
        let prev = self.0[i].swap(0, Ordering::SeqCst);
        assert_eq!(
            prev, owner,
            "{} left by {owner} but held by {prev}",
            NAMES[i]
        );
    }
}

async fn stress_worker(t: Arc<LockTable>, task: u64, stats: Arc<Stats>, occ: Arc<Occupants>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (task + 1).wrapping_mul(0x1234_5678_9ABC_DEF1));
    for iter in 0..200u64 {
        let owner = (task + 1) << 32 | iter;
        // A random subset of the locks, in random order.
        let mut order: Vec<usize> = (0..NAMES.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        order.truncate(1 + rng.below(NAMES.len() as u64) as usize);

        let mut held: Vec<usize> = Vec::new();
        'attempt: for _retry in 0..3 {
            for &i in &order {
                let timeout = match rng.below(3) {
                    0 => None,
                    1 => Some(Duration::from_micros(rng.below(3000))),
                    _ => Some(Duration::from_millis(5 + rng.below(20))),
                };
                let acquire = t.acquire(owner, NAMES[i], timeout);
                let outcome = if rng.below(5) == 0 {
                    // An abort that may come while waiting: the acquire future is dropped.
                    let after = Duration::from_micros(rng.below(2000));
                    tokio::select! {
                        r = acquire => Some(r),
                        _ = tokio::time::sleep(after) => None,
                    }
                } else {
                    Some(acquire.await)
                };
                match outcome {
                    Some(Ok(_)) => {
                        assert_eq!(t.holder(NAMES[i]), Some(owner));
                        occ.enter(i, owner);
                        held.push(i);
                    }
                    Some(Err(LockError::Deadlock(cycle))) => {
                        assert_eq!(cycle.victim(), Some(owner));
                        assert_eq!(cycle.edges.last().map(|e| e.owner), Some(owner));
                        stats.deadlocks.fetch_add(1, Ordering::Relaxed);
                        // Back out and retry the same work.
                        for &j in held.iter().rev() {
                            occ.leave(j, owner);
                            t.release(owner, NAMES[j]).unwrap();
                        }
                        held.clear();
                        tokio::task::yield_now().await;
                        continue 'attempt;
                    }
                    Some(Err(LockError::Timeout)) => {
                        stats.timeouts.fetch_add(1, Ordering::Relaxed);
                        break 'attempt;
                    }
                    None => {
                        stats.cancels.fetch_add(1, Ordering::Relaxed);
                        break 'attempt;
                    }
                    Some(Err(other)) => panic!("unexpected error {other:?}"),
                }
            }
            stats.completed.fetch_add(1, Ordering::Relaxed);
            break;
        }

        let mut expect: Vec<String> = held.iter().map(|&i| NAMES[i].to_string()).collect();
        expect.sort();
        assert_eq!(t.held_by(owner), expect);
        if rng.below(2) == 0 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_micros(rng.below(500))).await;
        }
        for &i in &held {
            occ.leave(i, owner);
        }
        if rng.below(8) == 0 {
            // The call ends without releasing (a rude abort): orphaned and poisoned.
            assert_eq!(t.release_orphaned(owner), expect);
            stats.orphans.fetch_add(1, Ordering::Relaxed);
        } else {
            for &i in held.iter().rev() {
                t.release(owner, NAMES[i]).unwrap();
            }
            assert!(t.release_orphaned(owner).is_empty());
        }
        assert_eq!(t.held_count(owner), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_random_subsets_with_timeouts_cancellations_and_orphans() {
    let t = LockTable::new();
    let stats = Arc::new(Stats::default());
    let occ = Arc::new(Occupants(Default::default()));
    let run = async {
        let workers: Vec<_> = (0..32)
            .map(|task| tokio::spawn(stress_worker(t.clone(), task, stats.clone(), occ.clone())))
            .collect();
        for w in workers {
            w.await.expect("worker panicked");
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("stress test hung");

    for name in NAMES {
        assert!(!t.is_held(name), "{name} still held");
        assert_eq!(t.waiter_count(name), 0);
        // Poison marks of orphaned locks remain until someone takes and cleanly releases them.
        if t.is_poisoned(name) {
            assert_eq!(
                t.acquire(u64::MAX, name, Some(Duration::ZERO)).await,
                Ok(Acquired::Poisoned)
            );
            t.release(u64::MAX, name).unwrap();
        }
    }
    assert_eq!(t.lock_count(), 0);
    let s = &*stats;
    let counts = [
        s.completed.load(Ordering::Relaxed),
        s.timeouts.load(Ordering::Relaxed),
        s.deadlocks.load(Ordering::Relaxed),
        s.cancels.load(Ordering::Relaxed),
        s.orphans.load(Ordering::Relaxed),
    ];
    eprintln!("completed, timeouts, deadlocks, cancels, orphans: {counts:?}");
    // Every path was exercised, or the test proves less than it claims.
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
}

/// Issue #16: calls that each orphan uniquely named locks cannot grow the table without
/// end: past the bound the oldest mark goes (and its idle entry with it).
#[test]
fn poison_marks_are_bounded_and_the_oldest_goes_first() {
    let t = LockTable::with_poison_limit(4);
    for owner in 0..10u64 {
        let name = format!("lock-{owner}");
        take(&t, owner, &name);
        assert_eq!(t.release_orphaned(owner), vec![name]);
    }
    assert_eq!(t.poisoned_count(), 4);
    assert_eq!(t.lock_count(), 4);
    assert_eq!(t.dropped_poison_marks(), 6);
    // The newest marks stay, the oldest went.
    assert!(t.is_poisoned("lock-9") && t.is_poisoned("lock-6"));
    assert!(!t.is_poisoned("lock-5") && !t.is_poisoned("lock-0"));
    // A mark cleared by a normal release leaves room; re-marking one name counts once.
    take(&t, 20, "lock-9");
    t.release(20, "lock-9").unwrap();
    assert_eq!(t.poisoned_count(), 3);
    for owner in 30..40u64 {
        take(&t, owner, "again");
        t.release_orphaned(owner);
    }
    assert_eq!(t.poisoned_count(), 4);
    assert!(t.is_poisoned("again"));
}
