//! The process memory budget: accounts, the memory gate, pressure (DESIGN.md §2 "Memory").

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use warden_core::budget::{
    AccountStats, BudgetStats, Denied, InsufficientMemory, InvalidWatermarks, MAX_LIMIT,
    MemoryAccount, MemoryBudget, Pressure, Reservation,
};

/// A handler that records every event it is given.
fn recorder(budget: &MemoryBudget) -> Arc<Mutex<Vec<Pressure>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    budget.set_pressure_handler(Arc::new(move |p| sink.lock().unwrap().push(p)));
    events
}

/// Tiny deterministic generator, so stress runs are reproducible per thread.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn types_are_send_sync_debug() {
    fn check<T: Send + Sync + std::fmt::Debug>() {}
    check::<MemoryBudget>();
    check::<Arc<MemoryBudget>>();
    check::<Reservation>();
    check::<MemoryAccount>();
    check::<InsufficientMemory>();
    check::<Denied>();
    let budget = MemoryBudget::new(100);
    let account = budget.account();
    let gate = budget.reserve(7).unwrap();
    assert!(format!("{budget:?}").contains("reserved: 7"));
    assert!(format!("{gate:?}").contains("bytes: 7"));
    assert!(format!("{account:?}").contains("used: 0"));
}

#[test]
fn reserve_takes_and_drop_releases() {
    let budget = MemoryBudget::new(1000);
    let a = budget.reserve(300).unwrap();
    let b = budget.reserve(200).unwrap();
    assert_eq!(
        (budget.reserved(), budget.used(), budget.available()),
        (500, 0, 500)
    );
    assert_eq!((a.bytes(), b.bytes()), (300, 200));
    assert!(Arc::ptr_eq(a.budget(), &budget));
    drop(a);
    assert_eq!((budget.reserved(), budget.available()), (200, 800));
    b.release();
    assert_eq!(
        (budget.reserved(), budget.committed(), budget.available()),
        (0, 0, 1000)
    );
}

#[test]
fn reservation_fails_at_once_with_requested_and_available() {
    let budget = MemoryBudget::new(1000);
    let account = budget.account();
    account.grow(600, &[]).unwrap();
    let _held = budget.reserve(300).unwrap();
    let err = budget.reserve(101).unwrap_err();
    assert_eq!(
        err,
        InsufficientMemory {
            requested: 101,
            available: 100
        }
    );
    let text = err.to_string();
    assert!(text.contains("101") && text.contains("100"), "{text}");
    // A refusal changes nothing but the refusal count.
    assert_eq!(
        (budget.used(), budget.reserved(), budget.refusals()),
        (600, 300, 1)
    );
    assert_eq!(budget.denials(), 0);
    // Exactly what is left can still be had.
    assert_eq!(budget.reserve(100).unwrap().bytes(), 100);
}

#[test]
fn zero_byte_requests_always_succeed() {
    let budget = MemoryBudget::new(0);
    let account = budget.account();
    let gate = budget.reserve(0).unwrap();
    assert_eq!(gate.bytes(), 0);
    account.grow(0, &[&gate]).unwrap();
    account.shrink(0);
    assert_eq!(budget.reserve(1).unwrap_err().available, 0);
    assert_eq!(
        account.grow(1, &[]).unwrap_err(),
        Denied {
            requested: 1,
            available: 0
        }
    );
    assert!(!budget.stats().under_pressure);
}

#[test]
fn growth_spends_the_reservation_first() {
    let budget = MemoryBudget::new(1000);
    let account = budget.account();
    let gate = account.reserve(100).unwrap();
    assert_eq!(account.reserved(), 100);

    account.grow(60, &[&gate]).unwrap();
    assert_eq!(gate.bytes(), 40);
    assert_eq!(
        (budget.used(), budget.reserved(), budget.committed()),
        (60, 40, 100)
    );
    assert_eq!((account.used(), account.reserved()), (60, 40));

    // 40 from the reservation, the other 60 from the budget.
    account.grow(100, &[&gate]).unwrap();
    assert_eq!(gate.bytes(), 0);
    assert_eq!(
        (budget.used(), budget.reserved(), budget.committed()),
        (160, 0, 160)
    );

    // An empty reservation just passes the growth on to the budget.
    account.grow(10, &[&gate]).unwrap();
    drop(gate);
    assert_eq!(
        (budget.used(), budget.reserved(), budget.committed()),
        (170, 0, 170)
    );
    assert_eq!(account.reserved(), 0);
}

#[test]
fn several_reservations_are_spent_in_order() {
    let budget = MemoryBudget::new(1000);
    let account = budget.account();
    let first = budget.reserve(30).unwrap();
    let second = budget.reserve(50).unwrap();
    account.grow(40, &[&first, &second]).unwrap();
    assert_eq!((first.bytes(), second.bytes()), (0, 40));
    assert_eq!((budget.used(), budget.reserved()), (40, 40));
}

#[test]
fn a_full_budget_still_admits_growth_covered_by_a_reservation() {
    let budget = MemoryBudget::new(100);
    let account = budget.account();
    let gate = budget.reserve(50).unwrap();
    let other = budget.account();
    other.grow(50, &[]).unwrap();
    assert_eq!(budget.available(), 0);
    // Without the reservation: denied. With it: granted.
    assert!(account.grow(50, &[]).is_err());
    account.grow(50, &[&gate]).unwrap();
    assert_eq!(
        (budget.used(), budget.reserved(), budget.available()),
        (100, 0, 0)
    );
}

#[test]
fn denied_growth_charges_nothing_and_spends_nothing() {
    let budget = MemoryBudget::new(100);
    let account = budget.account();
    let other = budget.account();
    let gate = account.reserve(50).unwrap();
    other.grow(40, &[]).unwrap();

    let err = account.grow(70, &[&gate]).unwrap_err();
    assert_eq!(
        err,
        Denied {
            requested: 70,
            available: 60
        }
    );
    let text = err.to_string();
    assert!(text.contains("70") && text.contains("60"), "{text}");
    assert_eq!(gate.bytes(), 50);
    assert_eq!(
        account.stats(),
        AccountStats {
            used: 0,
            reserved: 50,
            peak: 0,
            denials: 1,
            refusals: 0
        }
    );
    assert_eq!(
        (budget.used(), budget.reserved(), budget.denials()),
        (40, 50, 1)
    );
    assert_eq!(other.denials(), 0);
    // The same growth fits once it is small enough.
    account.grow(60, &[&gate]).unwrap();
    assert_eq!(
        (budget.used(), budget.reserved(), budget.available()),
        (100, 0, 0)
    );
}

#[test]
fn denial_applies_even_where_the_domain_would_allow() {
    // Two domains, each free to grow, share a budget smaller than their sum.
    let budget = MemoryBudget::new(64 << 10);
    let a = budget.account();
    let b = budget.account();
    a.grow(48 << 10, &[]).unwrap();
    assert_eq!(
        b.grow(32 << 10, &[]).unwrap_err(),
        Denied {
            requested: 32 << 10,
            available: 16 << 10
        }
    );
    assert_eq!((a.denials(), b.denials(), budget.denials()), (0, 1, 1));
}

#[test]
fn dropping_an_account_returns_its_memory() {
    let budget = MemoryBudget::new(1000);
    let a = budget.account();
    let b = budget.account();
    a.grow(300, &[]).unwrap();
    b.grow(200, &[]).unwrap();
    // A reservation taken through the account outlives it and is released on its own.
    let gate = a.reserve(100).unwrap();
    drop(a);
    assert_eq!((budget.used(), budget.reserved()), (200, 100));
    drop(gate);
    drop(b);
    assert_eq!(
        (budget.used(), budget.reserved(), budget.committed()),
        (0, 0, 0)
    );
    assert_eq!(budget.peak(), 500);
    assert_eq!(budget.peak_committed(), 600);
}

#[test]
fn shrink_never_uncharges_more_than_the_account_holds() {
    let budget = MemoryBudget::new(1000);
    let a = budget.account();
    let b = budget.account();
    a.grow(100, &[]).unwrap();
    b.grow(200, &[]).unwrap();
    a.shrink(30);
    assert_eq!((a.used(), budget.used()), (70, 270));
    a.shrink(u64::MAX);
    assert_eq!((a.used(), b.used(), budget.used()), (0, 200, 200));
    a.shrink(5);
    assert_eq!(budget.used(), 200);
    assert_eq!(a.peak(), 100);
}

#[test]
fn per_account_reserved_follows_the_owner_of_the_reservation() {
    let budget = MemoryBudget::new(1000);
    let a = budget.account();
    let b = budget.account();
    let gate = a.reserve(100).unwrap();
    // b spends a's reservation (e.g. a cross-domain call); a's reserved figure goes down.
    b.grow(30, &[&gate]).unwrap();
    assert_eq!((a.reserved(), a.used(), b.used()), (70, 0, 30));
    assert!(a.reserve(2000).is_err());
    assert_eq!((a.refusals(), a.stats().refusals, b.refusals()), (1, 1, 0));
    assert_eq!(budget.refusals(), 1);
}

#[test]
fn reservations_of_another_budget_are_not_spent() {
    let ours = MemoryBudget::new(100);
    let theirs = MemoryBudget::new(100);
    let account = ours.account();
    let foreign = theirs.reserve(50).unwrap();
    account.grow(20, &[&foreign]).unwrap();
    assert_eq!(foreign.bytes(), 50);
    assert_eq!((ours.used(), theirs.used(), theirs.reserved()), (20, 0, 50));
}

#[test]
fn huge_requests_are_denied_cleanly() {
    let budget = MemoryBudget::new(1000);
    let account = budget.account();
    account.grow(10, &[]).unwrap();
    let gate = budget.reserve(100).unwrap();
    assert_eq!(
        budget.reserve(u64::MAX).unwrap_err(),
        InsufficientMemory {
            requested: u64::MAX,
            available: 890
        }
    );
    assert_eq!(
        account.grow(u64::MAX, &[&gate]).unwrap_err(),
        Denied {
            requested: u64::MAX,
            available: 990
        }
    );
    assert_eq!(gate.bytes(), 100);
    assert_eq!((budget.used(), budget.reserved()), (10, 100));
}

#[test]
fn an_unlimited_budget_is_clamped_and_still_never_wraps() {
    let budget = MemoryBudget::new(u64::MAX);
    assert_eq!(budget.limit(), MAX_LIMIT);
    let account = budget.account();
    account.grow(MAX_LIMIT - 1, &[]).unwrap();
    let gate = budget.reserve(1).unwrap();
    assert_eq!(budget.available(), 0);
    assert!(account.grow(1, &[]).is_err());
    assert!(budget.reserve(u64::MAX).is_err());
    assert_eq!(budget.committed(), MAX_LIMIT);
    drop(gate);
    drop(account);
    assert_eq!(budget.committed(), 0);
    assert!(!budget.under_pressure());
}

#[test]
fn stats_snapshot_reports_every_figure() {
    let budget = MemoryBudget::new(1000);
    let account = budget.account();
    account.grow(500, &[]).unwrap();
    account.shrink(100);
    let _gate = budget.reserve(450).unwrap();
    assert!(budget.reserve(151).is_err());
    assert!(account.grow(151, &[]).is_err());
    assert_eq!(
        budget.stats(),
        BudgetStats {
            limit: 1000,
            used: 400,
            reserved: 450,
            peak: 500,
            peak_committed: 850,
            denials: 1,
            refusals: 1,
            under_pressure: false,
        }
    );
}

#[test]
fn watermarks_default_and_validation() {
    let budget = MemoryBudget::new(1000);
    assert_eq!(budget.watermarks(), (900, 800));
    assert_eq!(
        budget.set_watermarks(500, 600).unwrap_err(),
        InvalidWatermarks {
            high: 500,
            low: 600,
            limit: 1000
        }
    );
    let err = budget.set_watermarks(1001, 10).unwrap_err();
    assert!(err.to_string().contains("1001"), "{err}");
    assert_eq!(budget.watermarks(), (900, 800));
    budget.set_watermarks(1000, 1000).unwrap();
    budget.set_watermarks(0, 0).unwrap();
    budget.set_watermarks(700, 300).unwrap();
    assert_eq!(budget.watermarks(), (700, 300));
}

#[test]
fn pressure_is_reported_once_per_crossing_with_hysteresis() {
    let budget = MemoryBudget::new(100); // high 90, low 80
    let events = recorder(&budget);
    let account = budget.account();
    let gate = budget.reserve(85).unwrap();
    assert!(events.lock().unwrap().is_empty());

    account.grow(5, &[]).unwrap(); // 90: crosses high
    assert_eq!(
        *events.lock().unwrap(),
        [Pressure::High {
            used: 5,
            reserved: 85,
            limit: 100
        }]
    );
    assert!(budget.under_pressure());
    account.grow(5, &[]).unwrap(); // 95: still high, no new event
    account.shrink(10); // 85: between the marks, no event
    account.grow(10, &[]).unwrap(); // 95: already high
    account.shrink(15); // 80: at low is not below it
    assert_eq!(events.lock().unwrap().len(), 1);

    drop(gate); // 0: relieved
    assert_eq!(
        events.lock().unwrap()[1],
        Pressure::Relieved {
            used: 0,
            reserved: 0,
            limit: 100
        }
    );
    assert!(!budget.under_pressure());
    account.grow(89, &[]).unwrap(); // below high: nothing
    assert_eq!(events.lock().unwrap().len(), 2);
    let gate = budget.reserve(1).unwrap(); // 90: high again, through the gate
    assert!(matches!(events.lock().unwrap()[2], Pressure::High { .. }));
    // Spending a reservation does not change used + reserved: no event.
    account.grow(1, &[&gate]).unwrap();
    drop(account); // 0: relieved, by dropping the domain
    assert!(matches!(
        events.lock().unwrap()[3],
        Pressure::Relieved { .. }
    ));
    assert_eq!(events.lock().unwrap().len(), 4);
}

#[test]
fn new_watermarks_apply_from_the_next_change() {
    let budget = MemoryBudget::new(100);
    let events = recorder(&budget);
    let account = budget.account();
    account.grow(50, &[]).unwrap();
    budget.set_watermarks(40, 20).unwrap();
    assert!(events.lock().unwrap().is_empty());
    account.grow(1, &[]).unwrap();
    assert_eq!(events.lock().unwrap().len(), 1);
    account.shrink(31); // 20: not below low
    account.shrink(1); // 19
    assert_eq!(events.lock().unwrap().len(), 2);
}

#[test]
fn the_handler_runs_without_budget_locks_held() {
    let budget = MemoryBudget::new(100);
    let inner = Arc::clone(&budget);
    let seen = Arc::new(AtomicU64::new(0));
    let seen2 = Arc::clone(&seen);
    budget.set_pressure_handler(Arc::new(move |_| {
        // Re-entering the budget, even replacing the handler, must not deadlock.
        seen2.store(inner.committed() + 1, Ordering::SeqCst);
        let _ = inner.reserve(1);
        inner.clear_pressure_handler();
    }));
    let gate = budget.reserve(95).unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 96);
    drop(gate);
    // Cleared by the handler: the relief crossing calls nothing, but the state follows.
    assert!(!budget.under_pressure());
    assert_eq!(seen.load(Ordering::SeqCst), 96);
}

#[test]
fn a_panicking_handler_does_not_break_the_operation() {
    let budget = MemoryBudget::new(100);
    budget.set_pressure_handler(Arc::new(|_| panic!("handler bug")));
    let account = budget.account();
    account.grow(95, &[]).unwrap();
    assert!(budget.under_pressure());
    assert_eq!(budget.used(), 95);
    drop(account);
    assert_eq!((budget.used(), budget.committed()), (0, 0));
    assert!(!budget.under_pressure());
}

#[test]
fn concurrent_crossings_are_each_reported_once() {
    let budget = MemoryBudget::new(1000);
    budget.set_watermarks(300, 100).unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let highs = Arc::new(AtomicU64::new(0));
    let reliefs = Arc::new(AtomicU64::new(0));
    let (h, r) = (Arc::clone(&highs), Arc::clone(&reliefs));
    budget.set_pressure_handler(Arc::new(move |p| match p {
        Pressure::High { .. } => {
            h.fetch_add(1, Ordering::SeqCst);
        }
        Pressure::Relieved { .. } => {
            r.fetch_add(1, Ordering::SeqCst);
        }
    }));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let budget = Arc::clone(&budget);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut rng = XorShift(0x9E37_79B9 + t);
                // Each thread holds 100 bytes about half the time, yielding so that the eight
                // interleave on few cores: the total swings across both marks over and over.
                let mut held = None;
                barrier.wait();
                for _ in 0..2_000 {
                    thread::yield_now();
                    if rng.next().is_multiple_of(2) {
                        held = None;
                    } else if held.is_none() {
                        held = Some(budget.reserve(100).unwrap());
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (highs, reliefs) = (highs.load(Ordering::SeqCst), reliefs.load(Ordering::SeqCst));
    // Every High is followed by exactly one Relieved; everything was released, so the budget
    // ends relieved.
    assert!(highs > 0, "the workload never crossed the high mark");
    assert_eq!(highs, reliefs);
    assert!(!budget.under_pressure());
    assert_eq!(budget.committed(), 0);
}

#[test]
fn racing_gates_never_oversubscribe() {
    const THREADS: usize = 16;
    let budget = MemoryBudget::new(1000);
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let budget = Arc::clone(&budget);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                // Keep every grant: the budget only ever fills.
                let mut granted = Vec::new();
                for _ in 0..50 {
                    if let Ok(r) = budget.reserve(30) {
                        granted.push(r);
                    }
                }
                granted
            })
        })
        .collect();
    let granted: Vec<Reservation> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let total: u64 = granted.iter().map(Reservation::bytes).sum();
    // 1000 / 30 = 33 grants fit, and all 33 must have been given (nothing is ever released).
    assert_eq!(granted.len(), 33);
    assert_eq!(total, 990);
    assert_eq!(budget.reserved(), 990);
    assert_eq!(budget.refusals(), (THREADS * 50 - 33) as u64);
    drop(granted);
    assert_eq!(budget.committed(), 0);
}

#[test]
fn racing_growth_spending_one_shared_reservation_never_overspends() {
    const THREADS: usize = 8;
    let budget = MemoryBudget::new(10_000);
    let gate = budget.reserve(4_000).unwrap();
    let gate = &gate;
    let accounts: Vec<MemoryAccount> = (0..THREADS).map(|_| budget.account()).collect();
    thread::scope(|s| {
        for account in &accounts {
            s.spawn(move || {
                for _ in 0..1_000 {
                    account.grow(1, &[gate]).unwrap();
                }
            });
        }
    });
    // 8000 bytes of growth: the 4000 reserved were spent exactly, the rest came from the budget.
    assert_eq!(gate.bytes(), 0);
    assert_eq!(
        (budget.used(), budget.reserved(), budget.committed()),
        (8_000, 0, 8_000)
    );
}

/// Many threads reserving, growing (with and without reservations), shrinking and dropping at
/// once, an observer checking the limit all along, and exact accounting at the end.
#[test]
fn stress_accounting_is_exact_and_the_limit_holds() {
    const THREADS: u64 = 16;
    const OPS: u64 = 10_000;
    const LIMIT: u64 = 64 << 10;
    let budget = MemoryBudget::new(LIMIT);
    let done = Arc::new(AtomicBool::new(false));
    let observer = {
        let budget = Arc::clone(&budget);
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut looks = 0u64;
            while !done.load(Ordering::Acquire) || looks == 0 {
                let committed = budget.committed();
                assert!(committed <= LIMIT, "committed {committed} > limit");
                assert!(budget.used() <= LIMIT && budget.reserved() <= LIMIT);
                looks += 1;
            }
            looks
        })
    };
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let budget = Arc::clone(&budget);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut rng = XorShift(0x2545_F491_4F6C_DD1D ^ (t + 1));
                let account = budget.account();
                let mut gates: Vec<Reservation> = Vec::new();
                let (mut grown, mut denied) = (0u64, 0u64);
                barrier.wait();
                for _ in 0..OPS {
                    let size = 1 + rng.next() % 2048;
                    match rng.next() % 6 {
                        0 => {
                            if let Ok(g) = account.reserve(size) {
                                gates.push(g);
                            }
                        }
                        1 => {
                            let spend: Vec<&Reservation> = gates.iter().collect();
                            match account.grow(size, &spend) {
                                Ok(()) => grown += size,
                                Err(_) => denied += 1,
                            }
                        }
                        2 => match account.grow(size, &[]) {
                            Ok(()) => grown += size,
                            Err(_) => denied += 1,
                        },
                        3 | 4 => {
                            let amount = size.min(account.used());
                            account.shrink(amount);
                            grown -= amount;
                        }
                        _ => {
                            if !gates.is_empty() {
                                let i = (rng.next() % gates.len() as u64) as usize;
                                gates.swap_remove(i);
                            }
                        }
                    }
                    assert_eq!(account.used(), grown);
                }
                assert_eq!(account.denials(), denied);
                (account, gates)
            })
        })
        .collect();
    let live: Vec<(MemoryAccount, Vec<Reservation>)> =
        workers.into_iter().map(|w| w.join().unwrap()).collect();
    done.store(true, Ordering::Release);
    assert!(observer.join().unwrap() > 0);

    // Quiescent: the budget is exactly the sum of its parts.
    let used: u64 = live.iter().map(|(a, _)| a.used()).sum();
    let reserved: u64 = live
        .iter()
        .flat_map(|(_, g)| g.iter())
        .map(Reservation::bytes)
        .sum();
    let account_reserved: u64 = live.iter().map(|(a, _)| a.reserved()).sum();
    let denials: u64 = live.iter().map(|(a, _)| a.denials()).sum();
    assert_eq!(budget.used(), used);
    assert_eq!(budget.reserved(), reserved);
    assert_eq!(account_reserved, reserved);
    assert_eq!(budget.committed(), used + reserved);
    assert_eq!(budget.denials(), denials);
    assert!(budget.peak_committed() <= LIMIT);
    // The workload must have actually hit the limit, or the test proves little.
    assert!(budget.denials() > 0 && budget.refusals() > 0);

    drop(live);
    assert_eq!(
        (budget.used(), budget.reserved(), budget.committed()),
        (0, 0, 0)
    );
}

#[test]
fn the_machine_budget_is_positive_and_within_physical_memory() {
    let limit = MemoryBudget::machine_limit();
    assert!(limit > 0);
    if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
        let kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("MemTotal in /proc/meminfo");
        assert!(limit < kib * 1024, "{limit} >= MemTotal {}", kib * 1024);
    }
    let budget = MemoryBudget::from_machine();
    assert_eq!(budget.limit(), limit);
    assert!(budget.reserve(1 << 20).is_ok());
}
