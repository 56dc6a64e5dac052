//! Zero growth (DESIGN §2: "Repeated create/unload cycles must not grow the process"): many
//! create → open handles → call (taking a host lock and a memory-gate reservation) → unload
//! cycles, with process memory, open file descriptors, live domains, handle releases, the lock
//! table and the memory budget back at their baseline.
//!
//! This file holds one test on purpose: RSS and descriptor counts are process-wide, so the
//! test needs a process of its own (each test file is one) with no other test running beside
//! it.

#[path = "all/common/mod.rs"]
mod common;

use common::runtime;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use warden::{CallOptions, DomainConfig, Val};

/// A guest that takes a host lock and a memory-gate reservation (returned at call end),
/// touches some memory, then closes the handle it is given and releases the lock.
const GUEST: &str = r#"
(module
  (import "warden" "handle_close" (func $close (param i32) (result i32)))
  (import "warden" "lock_acquire" (func $acq (param i32 i32 i64) (result i32)))
  (import "warden" "lock_release" (func $rel (param i32 i32) (result i32)))
  (import "warden" "gate_reserve" (func $reserve (param i64) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 131068) "soak")
  (func (export "work") (param $h i32) (result i32)
    (local $i i32)
    (if (call $acq (i32.const 131068) (i32.const 4) (i64.const -1)) (then unreachable))
    (if (i32.le_s (call $reserve (i64.const 65536)) (i32.const 0)) (then unreachable))
    (local.set $i (i32.const 0))
    (loop $l
      (i32.store (local.get $i) (local.get $i))
      (local.set $i (i32.add (local.get $i) (i32.const 4096)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 131072))))
    (if (call $rel (i32.const 131068) (i32.const 4)) (then unreachable))
    (call $close (local.get $h)))
  (func (export "warden_on_unload")))
"#;

const WARM_UP: u64 = 500;
const CYCLES: u64 = 3_000;
const HANDLES: u64 = 8;
/// Generous: allocator caches and fragmentation may move a little; a leak of even one page
/// per cycle would be 10 MiB over the measured 2,500 cycles.
const MAX_GROWTH_KIB: u64 = 8 << 10;

/// (VmRSS in KiB, open file descriptors) of this process.
fn proc_status() -> (u64, usize) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .expect("VmRSS");
    let fds = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count();
    (rss, fds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_call_unload_cycles_return_to_baseline() {
    let (rt, rec) = runtime();
    let m = rt.load_module(GUEST.as_bytes()).unwrap();
    let opened = Arc::new(AtomicU64::new(0));
    let released = Arc::new(AtomicU64::new(0));
    let mut baseline = None;
    for cycle in 0..CYCLES {
        if cycle == WARM_UP {
            // The recorder would grow by design; the event stream is not what is measured.
            rec.events.lock().unwrap().clear();
            baseline = Some(proc_status());
        }
        let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
        let mut first = 0;
        for i in 0..HANDLES {
            let r = released.clone();
            let h = d
                .insert_handle(vec![0u8; 256], move |_| {
                    r.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            opened.fetch_add(1, Ordering::SeqCst);
            if i == 0 {
                first = h;
            }
        }
        let out = d
            .invoke("work", &[Val::I32(first as i32)], CallOptions::default())
            .await
            .unwrap();
        assert_eq!(out.values[0].unwrap_i32(), 0, "the guest closed its handle");
        let report = d.unload().await;
        assert!(report.finalizer_ran, "{:?}", rec.named("finalizer_ran"));
        assert_eq!(report.handles_released, HANDLES - 1);
        if cycle >= WARM_UP {
            // Keep the recorder itself from growing.
            rec.events.lock().unwrap().clear();
        }
    }
    let (rss_before, fds_before) = baseline.unwrap();
    let (rss_after, fds_after) = proc_status();
    eprintln!(
        "soak: {CYCLES} cycles; rss {rss_before} KiB -> {rss_after} KiB; fds {fds_before} -> \
         {fds_after}"
    );
    assert_eq!(rt.domain_count(), 0);
    assert!(!rt.locks().is_held("soak"));
    assert_eq!(rt.locks().lock_count(), 0, "the lock table does not grow");
    let memory = rt.memory();
    assert_eq!(
        (memory.used, memory.reserved),
        (0, 0),
        "the budget is back at zero"
    );
    assert_eq!(opened.load(Ordering::SeqCst), CYCLES * HANDLES);
    assert_eq!(released.load(Ordering::SeqCst), CYCLES * HANDLES);
    assert_eq!(fds_after, fds_before, "file descriptors leaked");
    assert!(
        rss_after <= rss_before + MAX_GROWTH_KIB,
        "rss grew {} KiB over {} cycles",
        rss_after.saturating_sub(rss_before),
        CYCLES - WARM_UP
    );
}
