//! The handle table's contract (DESIGN.md §2 "Handles"): recycling-proof handle values,
//! reference-counted uses, exactly-once release, quotas and bounded storage.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread;

use warden_core::handles::{Handle, HandleError, HandleRef, HandleTable, MAX_QUOTA};

/// A release function that counts its calls.
fn counting(counter: &Arc<AtomicUsize>) -> impl FnOnce(u32) + Send + 'static {
    let counter = counter.clone();
    move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

fn count(counter: &Arc<AtomicUsize>) -> usize {
    counter.load(Ordering::SeqCst)
}

/// xorshift64*: a small deterministic generator so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn tables_and_refs_can_cross_threads() {
    fn assert_send_sync<X: Send + Sync>() {}
    assert_send_sync::<HandleTable<String>>();
    assert_send_sync::<HandleRef<String>>();
    assert_send_sync::<Handle>();
    assert_send_sync::<HandleError>();
}

#[test]
fn handle_values_round_trip_are_nonzero_and_distinct() {
    let table = HandleTable::new(64);
    let handles: Vec<Handle> = (0..64).map(|i| table.insert(i, |_| {}).unwrap()).collect();
    let raws: HashSet<u32> = handles.iter().map(|h| h.to_raw()).collect();
    assert_eq!(raws.len(), 64);
    assert!(!raws.contains(&0));
    for (i, h) in handles.iter().enumerate() {
        let from_guest = Handle::from_raw(h.to_raw());
        assert_eq!(from_guest, *h);
        let r = table.borrow(from_guest).unwrap();
        assert_eq!(*r, i as u32);
        assert_eq!(r.handle(), *h);
    }
    assert_eq!(
        format!("{:?}", Handle::from_raw(0xab)),
        "Handle(0x000000ab)"
    );
}

#[test]
fn same_key_gives_same_values_and_different_keys_differ() {
    let a = HandleTable::with_key(16, 1);
    let b = HandleTable::with_key(16, 1);
    let c = HandleTable::with_key(16, 2);
    for i in 0..8 {
        let ha = a.insert(i, |_| {}).unwrap();
        let hb = b.insert(i, |_| {}).unwrap();
        let hc = c.insert(i, |_| {}).unwrap();
        assert_eq!(ha, hb);
        assert_ne!(ha, hc);
    }
    // Consecutive handles are not consecutive numbers: a guest cannot guess its neighbour's.
    let d = HandleTable::with_key(16, 3);
    let x = d.insert(0, |_| {}).unwrap().to_raw();
    let y = d.insert(1, |_| {}).unwrap().to_raw();
    assert!(x.abs_diff(y) > 1);
}

#[test]
fn forged_values_are_invalid_and_change_nothing() {
    let table = HandleTable::with_key(16, 0x5eed);
    let released = Arc::new(AtomicUsize::new(0));
    let mine: Vec<Handle> = (0..4)
        .map(|i| table.insert(i, counting(&released)).unwrap())
        .collect();
    let mine_raw: HashSet<u32> = mine.iter().map(|h| h.to_raw()).collect();
    let mut forged = vec![0, 1, 2, u32::MAX, u32::MAX - 1, 0x8000_0000];
    let mut rng = Rng(0x1234_5678);
    forged.extend((0..10_000).map(|_| rng.next() as u32));
    for raw in forged {
        if mine_raw.contains(&raw) {
            continue;
        }
        let h = Handle::from_raw(raw);
        assert_eq!(table.borrow(h).err(), Some(HandleError::Invalid), "{h:?}");
        assert_eq!(table.close(h), Err(HandleError::Invalid), "{h:?}");
    }
    assert_eq!(table.open(), 4);
    assert_eq!(table.live(), 4);
    assert_eq!(count(&released), 0);
    for (i, h) in mine.iter().enumerate() {
        assert_eq!(*table.borrow(*h).unwrap(), i as u32);
    }
}

#[test]
fn a_handle_from_another_table_is_rejected() {
    // Fixed keys make this deterministic.
    let a = HandleTable::with_key(64, 0xa);
    let b = HandleTable::with_key(64, 0xb);
    let from_a: Vec<Handle> = (0..64).map(|i| a.insert(i, |_| {}).unwrap()).collect();
    let from_b: Vec<Handle> = (0..64)
        .map(|i| b.insert(i + 100, |_| {}).unwrap())
        .collect();
    for h in &from_a {
        assert_eq!(b.borrow(*h).err(), Some(HandleError::Invalid));
        assert_eq!(b.close(*h), Err(HandleError::Invalid));
    }
    for h in &from_b {
        assert_eq!(a.borrow(*h).err(), Some(HandleError::Invalid));
    }
    assert_eq!(a.open(), 64);
    assert_eq!(b.open(), 64);

    // With random keys (what `new` does) the rejection holds too, except with negligible odds.
    for _ in 0..100 {
        let x = HandleTable::new(8);
        let y = HandleTable::new(8);
        let hx = x.insert(1, |_| {}).unwrap();
        y.insert(2, |_| {}).unwrap();
        assert!(y.borrow(hx).is_err());
    }
}

#[test]
fn a_closed_handle_is_stale_even_after_its_slot_is_reused_many_times() {
    let table = HandleTable::with_key(1, 9);
    let released = Arc::new(AtomicUsize::new(0));
    let old = table.insert(0, counting(&released)).unwrap();
    table.close(old).unwrap();
    assert_eq!(count(&released), 1);
    assert_eq!(table.borrow(old).err(), Some(HandleError::Stale));
    assert_eq!(table.close(old), Err(HandleError::Stale));

    // Quota 1: every insert below reuses the same slot with a new generation.
    for i in 1..=10_000 {
        let h = table.insert(i, counting(&released)).unwrap();
        assert_ne!(h, old);
        assert_eq!(table.borrow(old).err(), Some(HandleError::Stale));
        assert_eq!(*table.borrow(h).unwrap(), i);
        table.close(h).unwrap();
    }
    let current = table.insert(77, |_| {}).unwrap();
    assert_eq!(table.borrow(old).err(), Some(HandleError::Stale));
    assert_eq!(table.close(old), Err(HandleError::Stale));
    assert_eq!(*table.borrow(current).unwrap(), 77);
    assert_eq!(count(&released), 10_001);
    assert_eq!(table.allocated_slots(), 1);
}

#[test]
fn slots_retire_rather_than_reissue_an_old_value() {
    // The largest quota leaves 8 generation bits, so one slot lasts 255 reuses.
    let table = HandleTable::<u32>::with_key(MAX_QUOTA, 4);
    let mut issued = Vec::new();
    for i in 0..2_000 {
        let h = table.insert(i, |_| {}).unwrap();
        table.close(h).unwrap();
        issued.push(h);
    }
    let distinct: HashSet<Handle> = issued.iter().copied().collect();
    assert_eq!(distinct.len(), issued.len(), "no value was issued twice");
    for h in &issued {
        assert_eq!(table.borrow(*h).err(), Some(HandleError::Stale));
    }
    // 2000 / 255 generations per slot: 8 slots used, 7 of them retired.
    assert_eq!(table.allocated_slots(), 8);
}

#[test]
fn quota_counts_live_handles_and_refused_values_are_released() {
    let table = HandleTable::new(3);
    assert_eq!(table.quota(), 3);
    let released = Arc::new(AtomicUsize::new(0));
    let hs: Vec<Handle> = (0..3)
        .map(|i| table.insert(i, counting(&released)).unwrap())
        .collect();
    assert_eq!(
        table.insert(3, counting(&released)),
        Err(HandleError::QuotaExceeded { quota: 3 })
    );
    // The refused value did not leak.
    assert_eq!(count(&released), 1);
    assert_eq!((table.live(), table.open()), (3, 3));

    // Closed but still borrowed: still live, still counted.
    let in_use = table.borrow(hs[0]).unwrap();
    table.close(hs[0]).unwrap();
    assert_eq!((table.live(), table.open()), (3, 2));
    assert_eq!(
        table.insert(4, |_| {}),
        Err(HandleError::QuotaExceeded { quota: 3 })
    );
    drop(in_use);
    assert_eq!((table.live(), table.open()), (2, 2));
    let h = table.insert(5, counting(&released)).unwrap();
    assert_eq!(*table.borrow(h).unwrap(), 5);

    let message = HandleError::QuotaExceeded { quota: 3 }.to_string();
    assert!(message.contains("at most 3 live handles"), "{message}");
}

#[test]
fn quota_zero_refuses_everything_and_huge_quotas_are_clamped() {
    let released = Arc::new(AtomicUsize::new(0));
    let none = HandleTable::new(0);
    assert_eq!(
        none.insert(1, counting(&released)),
        Err(HandleError::QuotaExceeded { quota: 0 })
    );
    assert_eq!(count(&released), 1);
    assert_eq!(HandleTable::<u32>::new(usize::MAX).quota(), MAX_QUOTA);
}

#[test]
fn close_while_borrowed_on_another_thread_releases_after_the_use() {
    let table = Arc::new(HandleTable::new(4));
    let released_on = Arc::new(Mutex::new(Vec::new()));
    let log = released_on.clone();
    let h = table
        .insert(String::from("file"), move |s| {
            log.lock().unwrap().push((s, thread::current().id()));
        })
        .unwrap();

    let (borrowed_tx, borrowed_rx) = mpsc::channel();
    let (finish_tx, finish_rx) = mpsc::channel::<()>();
    let user = {
        let table = table.clone();
        thread::spawn(move || {
            let r = table.borrow(h).unwrap();
            borrowed_tx.send(()).unwrap();
            finish_rx.recv().unwrap();
            // The value is intact even though the owner closed it meanwhile.
            assert_eq!(&*r, "file");
            drop(r);
            thread::current().id()
        })
    };
    borrowed_rx.recv().unwrap();
    table.close(h).unwrap();
    assert!(
        released_on.lock().unwrap().is_empty(),
        "released during use"
    );
    assert_eq!((table.live(), table.open()), (1, 0));
    // Closed means no new uses, even while an old one is in flight.
    assert_eq!(table.borrow(h).err(), Some(HandleError::Stale));
    assert_eq!(table.close(h), Err(HandleError::Stale));

    finish_tx.send(()).unwrap();
    let user_thread = user.join().unwrap();
    let log = released_on.lock().unwrap().clone();
    assert_eq!(log, vec![(String::from("file"), user_thread)]);
    assert_eq!(table.live(), 0);

    // Reuse the slot; the old value still names nothing.
    let new = table.insert(String::from("other"), |_| {}).unwrap();
    assert_eq!(table.borrow(h).err(), Some(HandleError::Stale));
    assert_eq!(&*table.borrow(new).unwrap(), "other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_on_one_task_while_in_use_on_another() {
    let table = Arc::new(HandleTable::new(4));
    let released = Arc::new(AtomicUsize::new(0));
    let h = table.insert(7, counting(&released)).unwrap();
    let (borrowed_tx, borrowed_rx) = tokio::sync::oneshot::channel();
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();

    let use_task = {
        let table = table.clone();
        let released = released.clone();
        tokio::spawn(async move {
            let r = table.borrow(h).unwrap();
            borrowed_tx.send(()).unwrap();
            finish_rx.await.unwrap(); // the reference is held across an await
            assert_eq!(*r, 7);
            assert_eq!(count(&released), 0);
            drop(r);
            assert_eq!(count(&released), 1, "the last drop releases");
        })
    };
    let close_task = {
        let table = table.clone();
        tokio::spawn(async move {
            borrowed_rx.await.unwrap();
            table.close(h).unwrap();
        })
    };
    close_task.await.unwrap();
    assert_eq!(count(&released), 0);
    finish_tx.send(()).unwrap();
    use_task.await.unwrap();
    assert_eq!(table.live(), 0);
    for i in 0..100 {
        let reused = table.insert(i, |_| {}).unwrap();
        assert_eq!(table.borrow(h).err(), Some(HandleError::Stale));
        table.close(reused).unwrap();
    }
}

#[test]
fn cloned_refs_keep_the_value_until_the_last_drops() {
    let table = HandleTable::new(2);
    let released = Arc::new(AtomicUsize::new(0));
    let h = table.insert(3, counting(&released)).unwrap();
    let a = table.borrow(h).unwrap();
    let b = a.clone();
    table.close(h).unwrap();
    drop(a);
    assert_eq!(count(&released), 0);
    assert_eq!(*b, 3);
    assert_eq!(b.handle(), h);
    drop(b);
    assert_eq!(count(&released), 1);
}

#[test]
fn close_all_releases_idle_handles_now_and_borrowed_ones_after_their_use() {
    let table = HandleTable::new(16);
    let released = Arc::new(Mutex::new(Vec::new()));
    let hs: Vec<Handle> = (0..5u32)
        .map(|i| {
            let log = released.clone();
            table
                .insert(i, move |v| log.lock().unwrap().push(v))
                .unwrap()
        })
        .collect();
    let r1 = table.borrow(hs[1]).unwrap();
    let r3 = table.borrow(hs[3]).unwrap();

    assert_eq!(table.close_all(), 5);
    assert_eq!(*released.lock().unwrap(), vec![4, 2, 0], "newest first");
    assert_eq!((table.live(), table.open()), (2, 0));
    for h in &hs {
        assert_eq!(table.borrow(*h).err(), Some(HandleError::Stale));
        assert_eq!(table.close(*h), Err(HandleError::Stale));
    }
    assert_eq!(table.close_all(), 0);
    drop(r3);
    drop(r1);
    assert_eq!(*released.lock().unwrap(), vec![4, 2, 0, 3, 1]);
    assert_eq!(table.live(), 0);
}

#[test]
fn observer_is_told_after_each_release_in_release_order() {
    let table = HandleTable::new(8);
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    table.set_release_observer(Arc::new(move |h: Handle| {
        seen.lock().unwrap().push(format!("observed {:?}", h))
    }));
    let mut hs = Vec::new();
    for i in 0..4 {
        let log = events.clone();
        let h = table
            .insert(i, move |v| log.lock().unwrap().push(format!("release {v}")))
            .unwrap();
        hs.push(h);
    }
    table.close(hs[1]).unwrap();
    let r = table.borrow(hs[2]).unwrap();
    table.close_all();
    drop(r);
    let expected: Vec<String> = [(1, hs[1]), (3, hs[3]), (0, hs[0]), (2, hs[2])]
        .iter()
        .flat_map(|(v, h)| [format!("release {v}"), format!("observed {h:?}")])
        .collect();
    assert_eq!(*events.lock().unwrap(), expected);

    // A refused insert never had a handle, so the observer hears nothing of it.
    let none = HandleTable::new(0);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    none.set_release_observer(Arc::new(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
    }));
    assert!(none.insert(1, |_| {}).is_err());
    assert_eq!(count(&calls), 0);
}

#[test]
fn live_reaches_zero_only_after_the_observer_returns() {
    let table = Arc::new(HandleTable::new(4));
    let seen_live = Arc::new(Mutex::new(None));
    let (t, s) = (Arc::downgrade(&table), seen_live.clone());
    table.set_release_observer(Arc::new(move |_| {
        *s.lock().unwrap() = t.upgrade().map(|t| t.live());
    }));
    let h = table.insert(1, |_| {}).unwrap();
    table.close(h).unwrap();
    assert_eq!(*seen_live.lock().unwrap(), Some(1));
    assert_eq!(table.live(), 0);
}

#[test]
fn a_panicking_release_is_contained_and_counted() {
    let table = HandleTable::new(8);
    let released = Arc::new(AtomicUsize::new(0));
    let observed = Arc::new(AtomicUsize::new(0));
    let o = observed.clone();
    table.set_release_observer(Arc::new(move |_| {
        o.fetch_add(1, Ordering::SeqCst);
    }));
    let a = table.insert(1, counting(&released)).unwrap();
    let bad = table.insert(2, |_| panic!("release failed")).unwrap();
    let c = table.insert(3, counting(&released)).unwrap();
    let bad2 = table.insert(4, |_| panic!("release failed again")).unwrap();

    // Directly through close: the caller is not unwound.
    assert_eq!(table.close(bad2), Ok(()));
    assert_eq!(table.release_panics(), 1);
    // Through close_all: the panic does not skip the others.
    assert_eq!(table.close_all(), 3);
    assert_eq!(count(&released), 2);
    assert_eq!(table.release_panics(), 2);
    assert_eq!(count(&observed), 4);
    assert_eq!(table.live(), 0);
    for h in [a, bad, c, bad2] {
        assert_eq!(table.borrow(h).err(), Some(HandleError::Stale));
    }
    // Through the drop of the last borrow, and the table still works afterwards.
    let d = table.insert(5, |_| panic!("and again")).unwrap();
    let r = table.borrow(d).unwrap();
    table.close(d).unwrap();
    drop(r);
    assert_eq!(table.release_panics(), 3);
    let e = table.insert(6, |_| {}).unwrap();
    assert_eq!(*table.borrow(e).unwrap(), 6);
}

#[test]
fn a_panicking_observer_is_contained() {
    let table = HandleTable::new(4);
    table.set_release_observer(Arc::new(|_| panic!("observer failed")));
    let released = Arc::new(AtomicUsize::new(0));
    let h = table.insert(1, counting(&released)).unwrap();
    table.insert(2, counting(&released)).unwrap();
    table.close(h).unwrap();
    assert_eq!(table.close_all(), 1);
    assert_eq!(count(&released), 2);
    assert_eq!(table.live(), 0);
    assert_eq!(
        table.release_panics(),
        0,
        "only release functions are counted"
    );
}

#[test]
fn release_functions_may_call_back_into_the_table() {
    let table = Arc::new(HandleTable::new(8));
    let released = Arc::new(AtomicUsize::new(0));
    let inner = table.insert(1, counting(&released)).unwrap();
    let weak = Arc::downgrade(&table);
    let r = released.clone();
    let outer = table
        .insert(2, move |_| {
            let table = weak.upgrade().unwrap();
            // Closing, inserting and even closing everything from inside a release must not
            // deadlock: no table lock is held while a release runs.
            table.close(inner).unwrap();
            let h = table.insert(3, counting(&r)).unwrap();
            assert_eq!(*table.borrow(h).unwrap(), 3);
            table.close_all();
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    table.close(outer).unwrap();
    assert_eq!(count(&released), 3);
    assert_eq!((table.live(), table.open()), (0, 0));
}

#[test]
fn dropping_the_table_releases_everything_even_refs_that_outlive_it() {
    let released = Arc::new(AtomicUsize::new(0));
    let table = HandleTable::new(8);
    for i in 0..5 {
        table.insert(i, counting(&released)).unwrap();
    }
    let h = table.insert(9, counting(&released)).unwrap();
    let r = table.borrow(h).unwrap();
    drop(table);
    assert_eq!(count(&released), 5);
    assert_eq!(*r, 9);
    drop(r);
    assert_eq!(count(&released), 6);
}

#[test]
fn churn_does_not_grow_storage() {
    let table = HandleTable::new(8);
    let released = Arc::new(AtomicUsize::new(0));
    let mut rng = Rng(77);
    let mut open: Vec<Handle> = Vec::new();
    let mut held: Vec<HandleRef<u32>> = Vec::new();
    for i in 0..100_000u32 {
        match table.insert(i, counting(&released)) {
            Ok(h) => open.push(h),
            Err(e) => assert_eq!(e, HandleError::QuotaExceeded { quota: 8 }),
        }
        if rng.below(4) == 0 && !open.is_empty() {
            held.push(table.borrow(open[rng.below(open.len())]).unwrap());
        }
        if open.len() > 4 || rng.below(2) == 0 {
            let at = rng.below(open.len().max(1));
            if at < open.len() {
                table.close(open.swap_remove(at)).unwrap();
            }
        }
        if held.len() > 2 {
            held.remove(0);
        }
    }
    drop(held);
    assert_eq!(table.close_all(), open.len());
    assert_eq!(table.live(), 0);
    // Quota 8 gets 16 slots; churn reuses them rather than allocating more.
    assert!(
        table.allocated_slots() <= 16,
        "{} slots",
        table.allocated_slots()
    );
    // Every insert, refused or not, was released once.
    assert_eq!(count(&released), 100_000);
}

#[test]
fn racing_closes_succeed_exactly_once() {
    let table = HandleTable::new(4);
    for _ in 0..300 {
        let released = Arc::new(AtomicUsize::new(0));
        let h = table.insert(1, counting(&released)).unwrap();
        let ok = AtomicUsize::new(0);
        let barrier = Barrier::new(3);
        thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    barrier.wait();
                    match table.close(h) {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => assert_eq!(e, HandleError::Stale),
                    }
                });
            }
        });
        assert_eq!(ok.load(Ordering::SeqCst), 1);
        assert_eq!(count(&released), 1);
    }
    assert_eq!(table.live(), 0);
}

#[test]
fn close_racing_the_last_borrow_drop_releases_exactly_once() {
    let table = HandleTable::new(4);
    let released = Arc::new(AtomicUsize::new(0));
    let rounds = 500;
    for round in 0..rounds {
        let h = table.insert(round, counting(&released)).unwrap();
        let r = table.borrow(h).unwrap();
        let barrier = Barrier::new(3);
        thread::scope(|s| {
            s.spawn(|| {
                barrier.wait();
                drop(r);
            });
            s.spawn(|| {
                barrier.wait();
                table.close(h).unwrap();
            });
            s.spawn(|| {
                barrier.wait();
                // A borrow racing the close either wins (and holds a valid reference) or
                // finds the handle closed.
                match table.borrow(h) {
                    Ok(r) => assert_eq!(*r, round),
                    Err(e) => assert_eq!(e, HandleError::Stale),
                }
            });
        });
        assert_eq!(count(&released), round as usize + 1);
    }
    assert_eq!(table.live(), 0);
}

/// Per-resource bookkeeping for the stress tests: how many uses are in flight and how many
/// times it was released.
struct Ledger {
    in_use: Vec<AtomicUsize>,
    released: Vec<AtomicUsize>,
    released_in_use: AtomicUsize,
}

impl Ledger {
    fn new(ids: usize) -> Arc<Ledger> {
        Arc::new(Ledger {
            in_use: (0..ids).map(|_| AtomicUsize::new(0)).collect(),
            released: (0..ids).map(|_| AtomicUsize::new(0)).collect(),
            released_in_use: AtomicUsize::new(0),
        })
    }

    fn release_fn(self: &Arc<Ledger>) -> impl FnOnce(usize) + Send + 'static {
        let ledger = self.clone();
        move |id| {
            if ledger.in_use[id].load(Ordering::SeqCst) != 0 {
                ledger.released_in_use.fetch_add(1, Ordering::SeqCst);
            }
            ledger.released[id].fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Marks a use of the value behind `r` for as long as `f` runs.
    fn using<R>(&self, r: &HandleRef<usize>, f: impl FnOnce() -> R) -> R {
        self.in_use[**r].fetch_add(1, Ordering::SeqCst);
        let out = f();
        self.in_use[**r].fetch_sub(1, Ordering::SeqCst);
        out
    }
}

#[test]
fn close_all_racing_borrows_releases_each_once_after_its_use() {
    const N: usize = 2_000;
    let ledger = Ledger::new(N);
    let table = HandleTable::new(N);
    let hs: Vec<Handle> = (0..N)
        .map(|id| table.insert(id, ledger.release_fn()).unwrap())
        .collect();
    let barrier = Barrier::new(3);
    thread::scope(|s| {
        for offset in [0, N / 2] {
            let (table, hs, ledger, barrier) = (&table, &hs, &ledger, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..N {
                    let id = (i + offset) % N;
                    match table.borrow(hs[id]) {
                        Ok(r) => {
                            assert_eq!(*r, id);
                            ledger.using(&r, thread::yield_now);
                        }
                        Err(e) => assert_eq!(e, HandleError::Stale),
                    }
                }
            });
        }
        barrier.wait();
        assert_eq!(table.close_all(), N);
    });
    assert_eq!(table.live(), 0);
    assert_eq!(ledger.released_in_use.load(Ordering::SeqCst), 0);
    for (id, released) in ledger.released.iter().enumerate() {
        assert_eq!(released.load(Ordering::SeqCst), 1, "resource {id}");
    }
}

#[test]
fn many_threads_of_random_operations_release_each_value_exactly_once() {
    const THREADS: usize = 16;
    const OPS: usize = 4_000;
    const QUOTA: usize = 48;
    let ledger = Ledger::new(THREADS * OPS);
    let table = Arc::new(HandleTable::new(QUOTA));
    let observed = Arc::new(AtomicUsize::new(0));
    let o = observed.clone();
    table.set_release_observer(Arc::new(move |_| {
        o.fetch_add(1, Ordering::SeqCst);
    }));
    // Handles any thread may use (or misuse): open, closed and stale ones alike.
    let pool: Arc<Mutex<Vec<(Handle, usize)>>> = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let attempted = Arc::new(AtomicUsize::new(0));

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (table, ledger, pool) = (table.clone(), ledger.clone(), pool.clone());
            let (accepted, attempted) = (accepted.clone(), attempted.clone());
            thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9 + t as u64);
                let mut held: Vec<HandleRef<usize>> = Vec::new();
                let pick = |rng: &mut Rng| {
                    let pool = pool.lock().unwrap();
                    (!pool.is_empty()).then(|| pool[rng.below(pool.len())])
                };
                for op in 0..OPS {
                    let id = t * OPS + op;
                    match rng.below(100) {
                        0..=29 => {
                            attempted.fetch_add(1, Ordering::SeqCst);
                            match table.insert(id, ledger.release_fn()) {
                                Ok(h) => {
                                    accepted.fetch_add(1, Ordering::SeqCst);
                                    let mut pool = pool.lock().unwrap();
                                    if pool.len() < 256 {
                                        pool.push((h, id));
                                    } else {
                                        let at = rng.below(pool.len());
                                        pool[at] = (h, id);
                                    }
                                }
                                Err(e) => {
                                    assert_eq!(e, HandleError::QuotaExceeded { quota: QUOTA })
                                }
                            }
                        }
                        30..=64 => {
                            if let Some((h, id)) = pick(&mut rng) {
                                match table.borrow(h) {
                                    Ok(r) => {
                                        // Never another resource.
                                        assert_eq!(*r, id);
                                        assert_eq!(r.handle(), h);
                                        ledger.using(&r, || {
                                            if rng.below(8) == 0 {
                                                thread::yield_now();
                                            }
                                        });
                                        if rng.below(4) == 0 && held.len() < 4 {
                                            held.push(r);
                                        }
                                    }
                                    Err(e) => assert_eq!(e, HandleError::Stale),
                                }
                            }
                        }
                        65..=89 => {
                            if let Some((h, _)) = pick(&mut rng) {
                                match table.close(h) {
                                    Ok(()) | Err(HandleError::Stale) => {}
                                    Err(e) => panic!("close: {e}"),
                                }
                            }
                        }
                        90..=94 => {
                            if !held.is_empty() {
                                held.swap_remove(rng.below(held.len()));
                            }
                        }
                        95..=98 => {
                            let forged = Handle::from_raw(rng.next() as u32);
                            if let Ok(r) = table.borrow(forged) {
                                // Only possible if the guess hit an open handle exactly.
                                assert_eq!(r.handle(), forged);
                            }
                        }
                        _ => {
                            table.close_all();
                        }
                    }
                }
                drop(held);
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    table.close_all();

    assert_eq!(table.live(), 0);
    assert_eq!(table.open(), 0);
    assert_eq!(table.release_panics(), 0);
    assert_eq!(ledger.released_in_use.load(Ordering::SeqCst), 0);
    let attempted = attempted.load(Ordering::SeqCst);
    let accepted = accepted.load(Ordering::SeqCst);
    assert!(
        accepted > 1_000,
        "the test exercised too little: {accepted}"
    );
    let mut total = 0;
    for (id, released) in ledger.released.iter().enumerate() {
        let n = released.load(Ordering::SeqCst);
        assert!(n <= 1, "resource {id} released {n} times");
        total += n;
    }
    // Every value handed to insert, accepted or refused, was released exactly once...
    assert_eq!(total, attempted);
    // ...and the observer heard of each accepted one.
    assert_eq!(observed.load(Ordering::SeqCst), accepted);
    assert!(table.allocated_slots() <= 4 * QUOTA);
}

#[test]
fn errors_say_what_went_wrong() {
    assert!(HandleError::Invalid.to_string().contains("never issued"));
    assert!(HandleError::Stale.to_string().contains("closed"));
    assert!(HandleError::Exhausted.to_string().contains("reload"));
}
