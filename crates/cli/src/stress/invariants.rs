//! The invariants checked after every run (a round of concurrent cycles), from the public API
//! and the event stream alone: one outcome per call, a `call_finished` for every
//! `call_started`, nothing held, the budget at its baseline, RSS within its bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden::{CallId, EventKind, Outcome, Runtime};

use super::mix::{CallEnd, HandleCount};

#[derive(Default)]
struct Entry {
    started: u32,
    finished: u32,
    outcome: Option<Outcome>,
}

/// What the event stream said about each call.
#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<HashMap<CallId, Entry>>>);

impl Ledger {
    pub fn subscribe(&self, rt: &Runtime) {
        let ledger = self.0.clone();
        rt.subscribe(move |event| {
            let Some(call) = event.call else { return };
            let mut map = ledger.lock().unwrap_or_else(|p| p.into_inner());
            match &event.kind {
                EventKind::CallStarted { .. } => map.entry(call).or_default().started += 1,
                EventKind::CallFinished { outcome, .. } => {
                    let e = map.entry(call).or_default();
                    e.finished += 1;
                    e.outcome = Some(*outcome);
                }
                _ => {}
            }
        });
    }

    /// Problems with the calls seen so far; forgets the calls that are in order. A call still
    /// missing its `call_finished` is given `grace` to get it (its domain is gone by now, so
    /// it can only be on its way).
    pub async fn settle(&self, ends: &[CallEnd], grace: Duration) -> Vec<String> {
        let until = Instant::now() + grace;
        loop {
            let problems = self.check(ends);
            if problems.is_empty() || Instant::now() >= until {
                if problems.is_empty() {
                    self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
                }
                return problems;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn check(&self, ends: &[CallEnd]) -> Vec<String> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut problems = Vec::new();
        for (id, e) in map.iter() {
            if e.started > 1 {
                problems.push(format!("call {id:?} has {} call_started events", e.started));
            }
            if e.finished != 1 {
                problems.push(format!(
                    "call {id:?} has {} call_finished events (call_started: {})",
                    e.finished, e.started
                ));
            }
        }
        for end in ends {
            let (Some(id), Some(outcome)) = (end.call, end.outcome) else {
                continue;
            };
            match map.get(&id).and_then(|e| e.outcome) {
                Some(o) if o == outcome => {}
                Some(o) => problems.push(format!(
                    "call {id:?}: join said {outcome}, call_finished said {o}"
                )),
                None => problems.push(format!("call {id:?} ended {outcome} with no call_finished")),
            }
        }
        problems.sort();
        problems.truncate(8);
        problems
    }
}

/// Resident set size of this process, in KiB (Linux; 0 where unknown).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// What must hold when no cycle is running: nothing of any domain left.
pub async fn quiescent(rt: &Runtime, handles: &HandleCount, grace: Duration) -> Vec<String> {
    let until = Instant::now() + grace;
    loop {
        let mut problems = Vec::new();
        let domains = rt.domain_count();
        if domains != 0 {
            problems.push(format!(
                "{domains} domains still alive after every one was unloaded"
            ));
        }
        let memory = rt.memory();
        if memory.used != 0 {
            problems.push(format!(
                "{} bytes of guest memory still charged to the budget",
                memory.used
            ));
        }
        if memory.reserved != 0 {
            problems.push(format!(
                "{} bytes of memory-gate reservations left",
                memory.reserved
            ));
        }
        let locks = rt.locks();
        let in_use = locks.lock_count().saturating_sub(locks.poisoned_count());
        if in_use != 0 {
            problems.push(format!("{in_use} host locks still held or waited on"));
        }
        if locks.poisoned_count() > locks.poison_limit() {
            problems.push(format!(
                "{} poison marks, past the limit of {}",
                locks.poisoned_count(),
                locks.poison_limit()
            ));
        }
        let inserted = handles.inserted.load(std::sync::atomic::Ordering::Relaxed);
        let released = handles.released.load(std::sync::atomic::Ordering::Relaxed);
        if inserted != released {
            problems.push(format!(
                "{inserted} host handles handed to domains, {released} released"
            ));
        }
        if problems.is_empty() || Instant::now() >= until {
            return problems;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
