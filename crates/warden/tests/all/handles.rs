//! Handles in domains (the SafeHandle model): the embedder API, the guest's `handle_close`,
//! recycling proofs, quotas, and release exactly once.

use crate::common::runtime;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use warden::warden_core::handles::HandleError;
use warden::{CallError, CallOptions, Domain, DomainConfig, Error, Runtime, Val};

/// A guest that can close handles it is given.
const CLOSER: &str = r#"
(module
  (import "warden" "handle_close" (func $close (param i32) (result i32)))
  (func (export "close") (param i32) (result i32) (call $close (local.get 0))))
"#;

/// A resource that counts its releases.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>);

impl Counter {
    fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Inserts `value` into `d`, counting its release here.
    fn insert<T: std::any::Any + Send + Sync>(&self, d: &Domain, value: T) -> Result<u32, Error> {
        let c = self.0.clone();
        d.insert_handle(value, move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        })
    }
}

async fn domain(rt: &Runtime, config: DomainConfig) -> Domain {
    let m = rt.load_module(CLOSER.as_bytes()).unwrap();
    rt.create_domain(&m, config).await.unwrap()
}

async fn guest_close(d: &Domain, h: u32) -> i32 {
    d.invoke("close", &[Val::I32(h as i32)], CallOptions::default())
        .await
        .unwrap()
        .values[0]
        .unwrap_i32()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_close_releases_once_and_a_second_close_is_bad_argument() {
    let (rt, rec) = runtime();
    let d = domain(&rt, DomainConfig::default()).await;
    let released = Counter::default();
    let h = released.insert(&d, String::from("file 3")).unwrap();
    assert_ne!(h, 0);
    assert_eq!(d.with_handle(h, |s: &String| s.clone()).unwrap(), "file 3");
    assert_eq!((d.handles_open(), d.handles_live()), (1, 1));

    assert_eq!(guest_close(&d, h).await, 0);
    assert_eq!(released.get(), 1);
    assert_eq!((d.handles_open(), d.handles_live()), (0, 0));
    assert_eq!(guest_close(&d, h).await, -8);
    assert!(matches!(
        d.close_handle(h),
        Err(Error::Handle(HandleError::Stale))
    ));
    assert!(matches!(
        d.with_handle(h, |_: &String| ()),
        Err(Error::Handle(HandleError::Stale))
    ));
    assert_eq!(released.get(), 1, "released exactly once");

    let report = d.unload().await;
    assert_eq!(report.handles_released, 0, "nothing was left open");
    let events = rec.named("handle_released");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["handle"], h);
    assert_eq!(events[0]["domain"], d.id().0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_and_foreign_guest_handles_are_bad_arguments() {
    let (rt, _) = runtime();
    let d = domain(&rt, DomainConfig::default()).await;
    let other = domain(&rt, DomainConfig::default()).await;
    let mine = Counter::default();
    let theirs = Counter::default();
    let kept = mine.insert(&d, 1u64).unwrap();
    let stale = mine.insert(&d, 2u64).unwrap();
    d.close_handle(stale).unwrap();
    let foreign = theirs.insert(&other, 3u64).unwrap();

    let mut forged = vec![0u32, 1, 2, u32::MAX, 0x8000_0000, stale, foreign];
    forged.extend((1..200u32).map(|i| i.wrapping_mul(2_654_435_761)));
    forged.retain(|&f| f != kept);
    for f in forged {
        assert_eq!(guest_close(&d, f).await, -8, "handle {f:#x}");
    }
    // Nothing but the handle closed on purpose was released, in either domain.
    assert_eq!(mine.get(), 1);
    assert_eq!(theirs.get(), 0);
    assert_eq!(d.with_handle(kept, |v: &u64| *v).unwrap(), 1);
    assert_eq!(other.with_handle(foreign, |v: &u64| *v).unwrap(), 3);
    // Host-side, a foreign value is an error too, never the other domain's resource.
    assert!(matches!(
        d.with_handle(foreign, |_: &u64| ()),
        Err(Error::Handle(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_closed_during_a_use_is_released_after_it_and_stays_dead_after_reuse() {
    let (rt, _) = runtime();
    let config = DomainConfig {
        max_handles: 2,
        ..DomainConfig::default()
    };
    let d = domain(&rt, config).await;
    let released = Counter::default();
    let old = released.insert(&d, String::from("old resource")).unwrap();

    // Another task uses the handle and holds the use until told to end it.
    let (borrowed_tx, borrowed_rx) = tokio::sync::oneshot::channel();
    let (end_tx, end_rx) = tokio::sync::oneshot::channel::<()>();
    let user = {
        let d = d.clone();
        tokio::spawn(async move {
            let guard = d.handle::<String>(old).unwrap();
            borrowed_tx.send(()).unwrap();
            end_rx.await.unwrap();
            // The resource is intact for the whole use, though its handle was closed.
            let seen = guard.clone();
            drop(guard);
            seen
        })
    };
    borrowed_rx.await.unwrap();
    assert_eq!(guest_close(&d, old).await, 0, "the guest closes it mid-use");
    assert_eq!(released.get(), 0, "not released while in use");
    assert_eq!(d.handles_live(), 1, "closed but borrowed still counts");
    assert!(matches!(
        d.handle::<String>(old),
        Err(Error::Handle(HandleError::Stale))
    ));
    end_tx.send(()).unwrap();
    assert_eq!(user.await.unwrap(), "old resource");
    assert_eq!(released.get(), 1, "released when the use ended");
    assert_eq!(d.handles_live(), 0);

    // Churn far past the table's slots (16 for a quota of 2, reused oldest first): the old
    // value's slot has been reused several times, yet the old value names none of them.
    let churn = Counter::default();
    for i in 0..64u64 {
        let h = churn.insert(&d, i).unwrap();
        assert_ne!(h, old);
        assert_eq!(d.with_handle(h, |v: &u64| *v).unwrap(), i);
        assert!(matches!(
            d.with_handle(old, |_: &u64| ()),
            Err(Error::Handle(HandleError::Stale))
        ));
        assert_eq!(guest_close(&d, old).await, -8);
        assert_eq!(guest_close(&d, h).await, 0);
    }
    assert_eq!(churn.get(), 64);
    assert_eq!(
        released.get(),
        1,
        "the old resource was never released again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_bounds_live_handles_and_a_refused_value_is_released_at_once() {
    let (rt, _) = runtime();
    let config = DomainConfig {
        max_handles: 3,
        ..DomainConfig::default()
    };
    let d = domain(&rt, config).await;
    let c = Counter::default();
    let hs: Vec<u32> = (0..3u64).map(|i| c.insert(&d, i).unwrap()).collect();
    match c.insert(&d, 99u64) {
        Err(Error::Handle(HandleError::QuotaExceeded { quota: 3 })) => {}
        other => panic!("expected the quota error, got {other:?}"),
    }
    assert_eq!(c.get(), 1, "the refused value was released, not leaked");

    // A closed handle still in use still counts.
    let guard = d.handle::<u64>(hs[0]).unwrap();
    d.close_handle(hs[0]).unwrap();
    assert!(matches!(
        c.insert(&d, 100u64),
        Err(Error::Handle(HandleError::QuotaExceeded { .. }))
    ));
    assert_eq!(*guard, 0);
    drop(guard);
    let again = c.insert(&d, 101u64).unwrap();
    assert_eq!(d.with_handle(again, |v: &u64| *v).unwrap(), 101);
    assert_eq!(c.get(), 3, "refused 99 and 100, released 0");

    let report = d.unload().await;
    assert_eq!(report.handles_released, 3);
    assert_eq!(c.get(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_the_wrong_type_is_an_error_not_a_panic() {
    let (rt, _) = runtime();
    let d = domain(&rt, DomainConfig::default()).await;
    let h = d.insert_handle(String::from("text"), drop).unwrap();
    match d.handle::<u64>(h) {
        Err(Error::HandleType { handle, expected }) => {
            assert_eq!(handle, h);
            assert!(expected.contains("u64"));
        }
        other => panic!("expected a type error, got {other:?}"),
    }
    assert_eq!(d.with_handle(h, |s: &String| s.len()).unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_use_that_outlives_unload_delays_only_its_own_release() {
    let (rt, rec) = runtime();
    let d = domain(&rt, DomainConfig::default()).await;
    let busy = Counter::default();
    let idle = Counter::default();
    let h = busy.insert(&d, String::from("in use")).unwrap();
    idle.insert(&d, String::from("idle")).unwrap();
    let guard = d.handle::<String>(h).unwrap();

    let report = d.unload().await;
    assert_eq!(report.handles_released, 2);
    assert_eq!(idle.get(), 1);
    assert_eq!(busy.get(), 0, "a use is never cut short");
    assert_eq!(&*guard, "in use");
    assert_eq!(d.handles_live(), 1);
    assert_eq!(rec.named("handle_released").len(), 1);
    drop(guard);
    assert_eq!(busy.get(), 1);
    assert_eq!(d.handles_live(), 0);
    assert_eq!(rec.named("handle_released").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_after_or_racing_unload_never_leak() {
    let (rt, _) = runtime();
    for _ in 0..20 {
        let config = DomainConfig {
            max_handles: 64,
            ..DomainConfig::default()
        };
        let d = domain(&rt, config).await;
        let c = Counter::default();
        let attempts = Arc::new(AtomicU64::new(0));
        let inserters: Vec<_> = (0..2)
            .map(|_| {
                let (d, c, attempts) = (d.clone(), c.clone(), attempts.clone());
                tokio::spawn(async move {
                    loop {
                        attempts.fetch_add(1, Ordering::SeqCst);
                        match c.insert(&d, 7u32) {
                            // Keep some open for unload, close others: the quota stays
                            // reachable but is hit too, which refuses (and releases) values.
                            Ok(h) if h % 2 == 0 => {
                                let _ = d.close_handle(h);
                            }
                            Ok(_) | Err(Error::Handle(HandleError::QuotaExceeded { .. })) => {}
                            Err(Error::Call(CallError::DomainUnloaded)) => break,
                            Err(other) => panic!("unexpected {other:?}"),
                        }
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(2)).await;
        d.unload().await;
        for t in inserters {
            t.await.unwrap();
        }
        // Every value handed over was released exactly once: inserted and closed by unload,
        // closed by its inserter after losing the race, or refused at once.
        assert_eq!(c.get(), attempts.load(Ordering::SeqCst));
        assert_eq!(d.handles_live(), 0);
    }
    assert_eq!(rt.domain_count(), 0);
}
