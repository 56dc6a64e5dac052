//! Critical release: what a domain holds outside its store, given back after all guest code
//! (DESIGN §1 "critical finalizer": never timed out, never skipped).

use crate::domain::DomainShared;

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
    /// Today the runtime keeps nothing of a domain outside its store; handle tables, host
    /// locks and reservations add their release here as they gain per-domain state.
    pub(crate) fn critical_release(&self) {}
}
