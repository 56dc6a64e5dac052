//! The host scheduler: which running guest call gets a CPU (the CLR's host-controlled tasks).
//!
//! Guest calls run as tokio tasks, so tokio's worker threads (one per CPU) already bound how
//! many run at once. What tokio cannot know is which of them deserve those threads: a short
//! friendly call and a runaway that spins until its deadline look the same to it, and each
//! epoch tick the runaway yields only to be queued again, taking its equal share. With four
//! runaways on two CPUs the friendly calls got under a tenth of their throughput. The
//! [`Scheduler`] decides instead, at the one point where a running guest hands control back
//! to the host: its epoch check.
//!
//! # The rule
//!
//! - A call starts at **normal** priority. Every epoch check it reaches counts one tick of
//!   run time (a check fires at the first tick boundary the guest crosses while running wasm;
//!   a host wait that spans many ticks counts one).
//! - Past its **quantum** ([`SchedulerConfig::quantum`], default 10 ms) the call is
//!   **demoted** to low priority, for the rest of the call. Demotion is never undone: a call
//!   that ran 10 ms without ending is not a short request.
//! - A low-priority call keeps running as before (it yields at each tick) while the host is
//!   **idle**: no normal-priority call started within the last quantum (a call's start is
//!   what marks the host busy: a call still normal has run less than a quantum).
//! - While the host is **busy**, the low lane is paced: at each tick a low-priority call
//!   reserves the next **slot** of the lane and parks until it (an `UpdateDeadline::YieldCustom`
//!   future), then runs one tick. Slots are `tick × 100 / low_share_percent` apart (default
//!   5 %: one tick in 20), whatever the number of low calls, so all runaways together get
//!   that share of one CPU, never more — and, slots being handed out in order, each of them
//!   gets its turn: a low call waits at most (number of low calls) × slot gap. None starves.
//!
//! # The state, and why it is this small
//!
//! Per call (in its `CallCtl`): `ticks`, an atomic counter only the call's own epoch checks
//! touch. Its states follow from it: normal (`ticks ≤ quantum`) → low (`ticks > quantum`),
//! and a low call is, at any instant, running (its check returned a plain yield, or its
//! slot came) or parked (waiting for its slot). The parked future is the only state of
//! "parked"; dropping it (the call ends, is aborted, its domain is killed) leaves nothing
//! behind — at most one slot of the lane goes unused.
//!
//! Shared (here): `clock`, ticks counted by the engine's ticker thread; `last_normal`, the
//! clock when a normal call last started (relaxed: a stale read only misjudges
//! busy/idle for one tick); `next_slot`, the lane's next free slot, under a mutex that only
//! low calls' ticks take, while busy — a few hundred times a second at most. A call's
//! start costs two relaxed loads (and a store once per tick): that is the whole fast path.
//!
//! # Aborts reach a parked call
//!
//! A parked call is parked inside its call future, which `drive` polls; `drive` wakes on
//! every abort request, deadline, escalation timer and kill, exactly as it does for a call
//! parked in a host wait. A deliverable abort is delivered there by dropping the call future
//! (the parked wait with it); a deferred one (a critical region, a held lock) ends the park:
//! the parked future returns as soon as an abort is pending, and a low call with an abort
//! pending is never parked again, so it runs at full speed to the end of its region. The
//! deadline, unload, kill and the policy's abort timers therefore reach a parked call as
//! promptly as a running one.
//!
//! # Where it ends
//!
//! - Priority is per call, by run time; the scheduler does not know tenants, apps or
//!   weights. A flood of *short* calls is admission's job, not this.
//! - "Busy" is a heuristic: a normal call parked in a long host wait does not count (it does
//!   not want a CPU), and a normal call that just ended keeps the host busy for one quantum.
//!   When the host turns idle, a parked call still waits for its slot (at most the number
//!   of low calls × the slot gap) before it runs freely again.
//! - Synchronous host code and the OS threads outside tokio (compilers, the blocking pool)
//!   are not scheduled here.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::call::CallCtl;
use crate::error::Error;

/// Host scheduler settings ([`RuntimeConfig::scheduler`](crate::RuntimeConfig::scheduler)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Off: every call yields at each tick and shares the threads equally (no priorities).
    /// Default on.
    pub enabled: bool,
    /// Run time after which a call drops to low priority, rounded up to whole epoch ticks.
    /// Default 10 ms.
    pub quantum: Duration,
    /// The share of one CPU that all low-priority calls together get while normal-priority
    /// calls are running, in percent (1–100). Default 5.
    pub low_share_percent: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            enabled: true,
            quantum: Duration::from_millis(10),
            low_share_percent: 5,
        }
    }
}

/// What the scheduler has done since the runtime started ([`Runtime::scheduler`](crate::Runtime::scheduler)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Calls that ran past their quantum and dropped to low priority.
    pub demoted: u64,
    /// Times a low-priority call was parked to wait for its slot.
    pub parked: u64,
}

/// The runtime's host scheduler (one per runtime); see the [module docs](self).
pub struct Scheduler {
    enabled: bool,
    quantum_ticks: u64,
    /// The gap between two slots of the low lane while busy.
    slot_gap: Duration,
    /// Ticks of the engine's ticker thread.
    clock: Arc<AtomicU64>,
    /// `clock + 1` when a normal call last started; 0: never.
    last_normal: AtomicU64,
    /// The low lane's next free slot.
    next_slot: Mutex<Instant>,
    demoted: AtomicU64,
    parked: AtomicU64,
}

/// What a call's epoch check does after the scheduler has seen it.
pub(crate) enum AtTick {
    /// Yield to the executor once and carry on.
    Yield,
    /// Park until the future ends (the call's slot came, or an abort is pending).
    Park(Pin<Box<dyn Future<Output = ()> + Send>>),
}

impl Scheduler {
    pub(crate) fn new(
        config: &SchedulerConfig,
        tick: Duration,
        clock: Arc<AtomicU64>,
    ) -> Result<Scheduler, Error> {
        if !(1..=100).contains(&config.low_share_percent) {
            return Err(Error::Config(format!(
                "scheduler low-share of {} % is out of range (1 to 100)",
                config.low_share_percent
            )));
        }
        let tick_nanos = tick.as_nanos().max(1);
        let quantum_ticks = config.quantum.as_nanos().div_ceil(tick_nanos);
        let quantum_ticks = u64::try_from(quantum_ticks).unwrap_or(u64::MAX).max(1);
        let slot_gap = tick
            .checked_mul(100 / config.low_share_percent)
            .unwrap_or(Duration::MAX)
            .max(tick);
        Ok(Scheduler {
            enabled: config.enabled,
            quantum_ticks,
            slot_gap,
            clock,
            last_normal: AtomicU64::new(0),
            next_slot: Mutex::new(Instant::now()),
            demoted: AtomicU64::new(0),
            parked: AtomicU64::new(0),
        })
    }

    /// What the scheduler has done so far.
    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            demoted: self.demoted.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
        }
    }

    /// A normal-priority call starts: the host is busy for the next quantum. The
    /// fast path of every call: two relaxed loads, a store once per tick.
    #[inline]
    pub(crate) fn note_normal(&self) {
        let now = self.clock.load(Ordering::Relaxed).wrapping_add(1);
        if self.last_normal.load(Ordering::Relaxed) != now {
            self.last_normal.store(now, Ordering::Relaxed);
        }
    }

    /// Whether a normal call started within the last quantum.
    fn busy(&self) -> bool {
        let last = self.last_normal.load(Ordering::Relaxed);
        let now = self.clock.load(Ordering::Acquire).wrapping_add(1);
        last != 0 && now.wrapping_sub(last) <= self.quantum_ticks
    }

    /// The call's epoch check (no abort was deliverable): count its tick, demote it past its
    /// quantum, and park it until its slot when the host is busy.
    pub(crate) fn at_tick(&self, ctl: &Arc<CallCtl>) -> AtTick {
        if !self.enabled {
            return AtTick::Yield;
        }
        let ran = ctl.ticks.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if ran <= self.quantum_ticks {
            // (Not noted as normal activity: its start was, and a call about to be
            // demoted must not keep the host busy for itself.)
            return AtTick::Yield;
        }
        if ran == self.quantum_ticks + 1 {
            self.demoted.fetch_add(1, Ordering::Relaxed);
        }
        // A pending abort (deferred, or about to land) runs at full speed to its delivery.
        // Outside a tokio runtime there is no timer to park on (the call still yields).
        if ctl.abort.requested().is_some()
            || !self.busy()
            || tokio::runtime::Handle::try_current().is_err()
        {
            return AtTick::Yield;
        }
        let now = Instant::now();
        let slot = self.reserve_slot(now);
        if slot <= now {
            // The lane is free: this tick is the call's slot.
            return AtTick::Yield;
        }
        self.parked.fetch_add(1, Ordering::Relaxed);
        AtTick::Park(Box::pin(Parked {
            ctl: ctl.clone(),
            until: Box::pin(tokio::time::sleep_until(slot.into())),
        }))
    }
}

impl Scheduler {
    /// The low lane's next free slot at or after `now`, taken.
    fn reserve_slot(&self, now: Instant) -> Instant {
        let mut next = self.next_slot.lock().unwrap_or_else(|p| p.into_inner());
        let slot = (*next).max(now);
        *next = slot.checked_add(self.slot_gap).unwrap_or(slot);
        slot
    }
}

/// A low call waiting for its slot, inside its call future (so `drive` owns the wait).
struct Parked {
    ctl: Arc<CallCtl>,
    until: Pin<Box<tokio::time::Sleep>>,
}

impl Future for Parked {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // `drive` polls the call future on every abort request: a pending abort ends the park.
        if self.ctl.abort.requested().is_some() || self.until.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        // Parked at a yield, not in a host call: not host time (`host::HostTimed`).
        self.ctl.at_yield.store(true, Ordering::Relaxed);
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::DomainId;

    fn scheduler(share: u32) -> (Scheduler, Arc<AtomicU64>) {
        let clock = Arc::new(AtomicU64::new(0));
        let config = SchedulerConfig {
            low_share_percent: share,
            ..SchedulerConfig::default()
        };
        let s = Scheduler::new(&config, Duration::from_millis(1), clock.clone()).unwrap();
        (s, clock)
    }

    fn ticks(s: &Scheduler, ctl: &Arc<CallCtl>, n: u64) -> Vec<bool> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _in_tokio = rt.enter();
        (0..n)
            .map(|_| matches!(s.at_tick(ctl), AtTick::Park(_)))
            .collect()
    }

    #[test]
    fn a_share_out_of_range_is_refused_with_its_value() {
        let clock = Arc::new(AtomicU64::new(0));
        for share in [0, 101] {
            let config = SchedulerConfig {
                low_share_percent: share,
                ..SchedulerConfig::default()
            };
            let Err(e) = Scheduler::new(&config, Duration::from_millis(1), clock.clone()) else {
                panic!("share {share} accepted");
            };
            assert!(e.to_string().contains(&format!("{share} %")), "{e}");
        }
    }

    #[test]
    fn a_call_within_its_quantum_never_parks_and_its_start_keeps_the_host_busy() {
        let (s, clock) = scheduler(5);
        let ctl = CallCtl::new(DomainId::next(), false);
        assert!(!s.busy());
        s.note_normal();
        assert!(ticks(&s, &ctl, 10).iter().all(|p| !p));
        clock.store(10, Ordering::Relaxed);
        assert!(s.busy());
        assert_eq!(s.stats().demoted, 0);
        clock.store(11, Ordering::Relaxed);
        assert!(!s.busy(), "busy for one quantum after the last start");
    }

    #[test]
    fn past_its_quantum_a_call_parks_only_while_the_host_is_busy() {
        let (s, clock) = scheduler(5);
        let runaway = CallCtl::new(DomainId::next(), false);
        ticks(&s, &runaway, 10);
        clock.store(100, Ordering::Relaxed);
        // Idle: demoted, but runs freely.
        assert!(ticks(&s, &runaway, 5).iter().all(|p| !p));
        assert_eq!(s.stats().demoted, 1);
        // A normal call starts: the runaway's next ticks park (the first takes the free slot).
        s.note_normal();
        let parks = ticks(&s, &runaway, 3);
        assert_eq!(parks, [false, true, true]);
        assert_eq!(s.stats().parked, 2);
    }

    #[test]
    fn a_pending_abort_is_never_parked() {
        let (s, _clock) = scheduler(5);
        let runaway = CallCtl::new(DomainId::next(), false);
        ticks(&s, &runaway, 12);
        s.note_normal();
        runaway.abort.request(warden_core::abort::AbortKind::Polite);
        assert!(ticks(&s, &runaway, 5).iter().all(|p| !p));
    }

    #[test]
    fn slots_are_handed_out_one_gap_apart_across_threads() {
        let (s, _clock) = scheduler(10);
        let s = Arc::new(s);
        let start = Instant::now() + Duration::from_secs(1);
        // Many low calls on many threads reserve slots at once: no two share one, none is
        // skipped, so the lane never gets more than its share and every call gets its turn.
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    (0..50).map(|_| s.reserve_slot(start)).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut slots: Vec<Instant> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        slots.sort();
        for (i, slot) in slots.iter().enumerate() {
            assert_eq!(*slot, start + s.slot_gap * i as u32, "slot {i}");
        }
        assert_eq!(s.slot_gap, Duration::from_millis(10));
    }
}
