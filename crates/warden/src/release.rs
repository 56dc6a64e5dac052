//! Critical release: what a domain holds outside its store, given back after all guest code
//! (DESIGN §1 "critical finalizer": never timed out, never skipped).

use std::sync::atomic::Ordering;

use crate::call::CallCtl;
use crate::domain::DomainShared;
use crate::events::EventKind;

impl DomainShared {
    /// Releases every handle, host lock and memory-gate reservation the domain holds outside
    /// its store. Called for every live domain in the exit's `critical_release` phase, after
    /// the guest finalizers, from a coordinator thread, while calls may still be running in
    /// the domain (they are neither unwound nor waited for at exit).
    ///
    /// It must therefore be quick, never run guest code, never wait for the domain's worker
    /// or a call, never panic, and be safe to call more than once (the second call finds
    /// nothing left). Linear memory and tables live in the store and go with the process.
    ///
    /// Handles belong to the domain and are all closed. Host locks and memory-gate
    /// reservations belong to calls: those of the call running
    /// now are released here (its locks poisoned, as for any owner that did not release
    /// them). A call that ends afterwards finds nothing left to release.
    pub(crate) fn critical_release(&self) {
        // Every handle: released now, or when a host use still in progress ends.
        self.release_handles();
        let Some(ctl) = self.current() else { return };
        ctl.gate().release_all();
        self.release_orphaned_locks(&ctl);
    }

    /// Releases (poisoned) the host locks `ctl` still holds, counts them for the unload
    /// report and records a `locks_orphaned` event. Returns whether there were any.
    pub(crate) fn release_orphaned_locks(&self, ctl: &CallCtl) -> bool {
        let orphaned = self.rt.locks.release_orphaned(ctl.id.0);
        if orphaned.is_empty() {
            return false;
        }
        self.locks_released
            .fetch_add(orphaned.len() as u64, Ordering::Relaxed);
        self.rt
            .events
            .emit(Some(self.id), Some(ctl.id), || EventKind::LocksOrphaned {
                locks: orphaned,
            });
        true
    }
}
