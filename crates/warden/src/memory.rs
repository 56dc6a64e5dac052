//! Guest memory: the per-domain limits wasmtime asks about on every growth, and the record of
//! denials that turns a later failure into an `out_of_memory` outcome.
//!
//! Every growth is checked against the domain's own limit and then charged to the domain's
//! account with the process [`MemoryBudget`](warden_core::budget::MemoryBudget), spending the
//! running call's memory-gate reservations first; dropping the store returns everything.
//!
//! Covered: linear memories and tables of the domain's instance, counted in bytes (a table
//! element counts as one pointer). Not covered: wasmtime's own per-instance metadata, compiled
//! code, and host-side state such as WASI buffers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use warden_core::budget::MemoryAccount;

use crate::domain::{DomainConfig, DomainShared, DomainState};
use crate::events::EventKind;

const TABLE_ELEMENT_BYTES: u64 = std::mem::size_of::<usize>() as u64;

/// wasmtime 48's message for a `memory.grow` past what the memory's type can represent (a
/// memory32 of 1-byte pages reaching 4 GiB): the one path (`vm/memory.rs`, `Memory::grow`)
/// that calls `memory_grow_failed` without a `memory_growing` before it. Every other
/// failure follows an approved `memory_growing`.
const TYPE_LIMIT_FAILURE: &str = "memory growth exceeds memory type's limits";

/// One domain's memory figures and limits.
///
/// # Exact accounting
///
/// The charge equals what the store holds after every growth, successful or failed. How
/// wasmtime 48 reports growth (`vm/memory.rs` and `vm/table.rs`, `grow`):
///
/// - `*_growing` is asked first. Denied: nothing happens (no `*_grow_failed`).
/// - Approved: the growth is charged at once, and is *pending* until wasmtime is done. A
///   later failure of that same growth calls `*_grow_failed`, with nothing in between.
/// - Some failures call `*_grow_failed` without any `*_growing`: a table growth whose new
///   size overflows (`table.grow` of a table64 by nearly 2^64), a memory growth past what its
///   type can represent. Refunding the last pending charge there would refund a growth that
///   succeeded long ago (the bug this replaces: 511 MiB held under a 16 MiB budget).
/// - A table's storage failing to grow after approval (the host is out of memory) is an
///   error wasmtime propagates without `table_grow_failed`: the charge then stays until the
///   store is dropped, an over-count, never an under-count.
///
/// So: growth past the declared maximum (the module's, or the pool slot's, both passed as
/// `maximum`) is denied in `*_growing` itself, the one post-approval failure of a table;
/// `table_grow_failed` therefore never refunds. `memory_grow_failed` refunds the pending
/// charge unless it is the type-limit failure, which had no `memory_growing`. A pending
/// charge is cleared by the next growing call, so a stale one is never refunded.
pub(crate) struct GuestMemory {
    dom: Arc<DomainShared>,
    /// The domain's account with the process budget; what this store holds is charged there.
    account: Arc<MemoryAccount>,
    max_memory: u64,
    max_table_elements: usize,
    max_instances: usize,
    max_memories: usize,
    max_tables: usize,
    memory_bytes: u64,
    table_bytes: u64,
    /// Memory bytes approved by the last `memory_growing`, until wasmtime is done with that
    /// growth: refunded if it fails.
    pending_memory: u64,
    /// Whether the domain's initial memory (at instantiation) was refused by the budget:
    /// the domain fails softly, `insufficient_memory`, since no guest code ran.
    pub(crate) initial_refused: Option<(u64, u64)>,
}

impl GuestMemory {
    pub(crate) fn new(dom: Arc<DomainShared>, config: &DomainConfig) -> Self {
        GuestMemory {
            account: dom.account.clone(),
            dom,
            max_memory: config.max_memory,
            max_table_elements: config.max_table_elements,
            max_instances: config.max_instances,
            max_memories: config.max_memories,
            max_tables: config.max_tables,
            memory_bytes: 0,
            table_bytes: 0,
            pending_memory: 0,
            initial_refused: None,
        }
    }

    /// Linear memory and table bytes the domain holds.
    pub(crate) fn used(&self) -> u64 {
        self.memory_bytes + self.table_bytes
    }

    fn publish(&self) {
        self.dom.memory_used.store(self.used(), Ordering::Relaxed);
    }

    /// Charges growth to the domain's account, spending the running call's reservations
    /// first. `Err` when the process budget cannot cover it.
    fn charge(
        &self,
        call: Option<&crate::call::CallCtl>,
        bytes: u64,
    ) -> Result<(), warden_core::budget::Denied> {
        match call {
            Some(ctl) => {
                let gate = ctl.gate();
                self.account.grow(bytes, &gate.reservations())
            }
            None => self.account.grow(bytes, &[]),
        }
    }
}

impl Drop for GuestMemory {
    /// The store is gone, and its memories and tables with it: return their bytes.
    fn drop(&mut self) {
        self.account.shrink(self.used());
        self.memory_bytes = 0;
        self.table_bytes = 0;
        self.publish();
    }
}

impl DomainState {
    fn deny(&self, requested: u64, limit: &'static str) -> wasmtime::Result<bool> {
        if let Some(ctl) = &self.call {
            ctl.memory_denied.store(true, Ordering::SeqCst);
        }
        let call = self.call.as_ref().map(|c| c.id);
        self.dom
            .rt
            .events
            .emit(Some(self.dom.id), call, || EventKind::MemoryDenied {
                requested,
                limit,
            });
        Ok(false)
    }
}

/// Whether growth to `desired` passes the declared `maximum` (the module's, or a pool slot's).
fn past_maximum(desired: usize, maximum: Option<usize>) -> bool {
    maximum.is_some_and(|max| desired > max)
}

impl wasmtime::ResourceLimiter for DomainState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let delta = desired.saturating_sub(current) as u64;
        let m = &mut self.memory;
        m.pending_memory = 0;
        if past_maximum(desired, maximum) {
            return self.deny(delta, "module");
        }
        if m.memory_bytes.saturating_add(delta) > m.max_memory {
            return self.deny(delta, "domain");
        }
        if let Err(denied) = m.charge(self.call.as_deref(), delta) {
            if current == 0 && m.memory_bytes == 0 {
                // The initial memory, before any guest code: a soft refusal.
                m.initial_refused = Some((denied.requested, denied.available));
            }
            return self.deny(delta, "budget");
        }
        let m = &mut self.memory;
        m.memory_bytes += delta;
        m.pending_memory = delta;
        m.publish();
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        let m = &mut self.memory;
        let refund = std::mem::take(&mut m.pending_memory);
        // The type-limit failure had no `memory_growing`: the pending charge (if any) is a
        // growth that succeeded, not this one.
        if error.to_string() != TYPE_LIMIT_FAILURE {
            m.memory_bytes -= refund;
            m.account.shrink(refund);
            m.publish();
        }
        if let Some(ctl) = &self.call {
            ctl.memory_denied.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let m = &mut self.memory;
        m.pending_memory = 0;
        let delta = (desired.saturating_sub(current) as u64).saturating_mul(TABLE_ELEMENT_BYTES);
        if past_maximum(desired, maximum) {
            return self.deny(delta, "module");
        }
        if desired > m.max_table_elements {
            return self.deny(delta, "domain");
        }
        if m.charge(self.call.as_deref(), delta).is_err() {
            return self.deny(delta, "budget");
        }
        let m = &mut self.memory;
        m.table_bytes += delta;
        m.publish();
        Ok(true)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // Only the size-overflow failure reaches here (growth past the maximum is denied in
        // `table_growing`), and it had no `table_growing`: nothing was charged for it.
        if let Some(ctl) = &self.call {
            ctl.memory_denied.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    fn instances(&self) -> usize {
        self.memory.max_instances
    }

    fn tables(&self) -> usize {
        self.memory.max_tables
    }

    fn memories(&self) -> usize {
        self.memory.max_memories
    }
}
