//! Critical release: what a domain and its calls hold outside the store, given back after the
//! guest code that used it (DESIGN §1 "critical finalizer": never timed out, never skipped).
//!
//! [`CriticalRelease`] is the one owner of that order, for every path that ends something:
//!
//! - **a call's end** ([`CriticalRelease::call`]), however it ended — it ran, it was refused,
//!   drained from the queue by unload, its future was dropped, its domain's start was cut
//!   short: its host locks (released **poisoned**, for the next acquirer to repair) and then
//!   its memory-gate reservations;
//! - **a domain's end** ([`CriticalRelease::domain`]), at unload after the finalizer and at exit
//!   after the finalizers phase: every handle, then the locks and reservations of the call
//!   still in flight, if any (at exit calls are neither unwound nor waited for).
//!
//! Everything here is quick, runs no guest code, waits for nothing and is idempotent: a second
//! release finds nothing left. Linear memory and tables live in the store and go with it.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::call::CallCtl;
use crate::domain::DomainShared;
use crate::events::EventKind;

/// What critical releases gave back, for the unload report.
#[derive(Default)]
pub(crate) struct Tally {
    /// Host locks released poisoned.
    pub(crate) locks: AtomicU64,
    /// Memory-gate bytes returned by calls that the unload ended.
    pub(crate) reservations: AtomicU64,
}

/// What one release gave back.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Released {
    pub(crate) handles: u64,
    pub(crate) locks: u64,
    pub(crate) reservations: u64,
}

/// The critical release of one domain. See the [module docs](self).
pub(crate) struct CriticalRelease<'a> {
    dom: &'a DomainShared,
}

impl<'a> CriticalRelease<'a> {
    pub(crate) fn of(dom: &'a DomainShared) -> Self {
        CriticalRelease { dom }
    }

    /// The end of one call: its locks (poisoned, with a `locks_orphaned` event), then its
    /// reservations. Returns what it released.
    pub(crate) fn call(&self, ctl: &CallCtl) -> Released {
        let dom = self.dom;
        let report = dom.rt.locks.release_orphaned_report(ctl.id.0);
        let locks = report.orphaned.len() as u64;
        if locks > 0 {
            dom.tally.locks.fetch_add(locks, Ordering::Relaxed);
            dom.rt
                .events
                .emit(Some(dom.id), Some(ctl.id), || EventKind::LocksOrphaned {
                    locks: report.orphaned,
                });
        }
        if let Some(oldest) = report.oldest_dropped {
            // The table's bound made room: older poison marks are gone (a warning for the
            // host, so the bound is never silent).
            dom.rt.events.emit(Some(dom.id), Some(ctl.id), || {
                EventKind::PoisonMarkDropped {
                    dropped: report.marks_dropped,
                    oldest,
                    limit: dom.rt.locks.poison_limit(),
                }
            });
        }
        let reservations = ctl.release_gate();
        if !dom.life.is_loaded() {
            // Returned because the unload ended the call: the unload report counts them.
            dom.tally
                .reservations
                .fetch_add(reservations, Ordering::Relaxed);
        }
        Released {
            handles: 0,
            locks,
            reservations,
        }
    }

    /// The end of the domain: every handle (released now, or when the host use that borrows it
    /// ends), then the call still in flight, if any.
    pub(crate) fn domain(&self, in_flight: Option<&CallCtl>) -> Released {
        let handles = self.dom.handles.release_all();
        let call = in_flight.map(|c| self.call(c)).unwrap_or_default();
        Released { handles, ..call }
    }
}
