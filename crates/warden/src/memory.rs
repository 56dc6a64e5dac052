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

/// One domain's memory figures and limits.
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
    /// Bytes approved by the last `*_growing` that wasmtime has not confirmed yet: refunded
    /// if the growth fails afterwards.
    pending: u64,
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
            pending: 0,
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
    fn charge(&self, call: Option<&crate::call::CallCtl>, bytes: u64) -> Result<(), ()> {
        let result = match call {
            Some(ctl) => {
                let gate = ctl.gate();
                self.account.grow(bytes, &gate.reservations())
            }
            None => self.account.grow(bytes, &[]),
        };
        result.map_err(drop)
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

impl wasmtime::ResourceLimiter for DomainState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let delta = desired.saturating_sub(current) as u64;
        let m = &mut self.memory;
        if m.memory_bytes.saturating_add(delta) > m.max_memory {
            return self.deny(delta, "domain");
        }
        if m.charge(self.call.as_deref(), delta).is_err() {
            return self.deny(delta, "budget");
        }
        let m = &mut self.memory;
        m.memory_bytes += delta;
        m.pending = delta;
        m.publish();
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        let m = &mut self.memory;
        let refund = std::mem::take(&mut m.pending);
        m.memory_bytes -= refund;
        m.account.shrink(refund);
        m.publish();
        if let Some(ctl) = &self.call {
            ctl.memory_denied.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let m = &mut self.memory;
        let delta = (desired.saturating_sub(current) as u64).saturating_mul(TABLE_ELEMENT_BYTES);
        if desired > m.max_table_elements {
            return self.deny(delta, "domain");
        }
        if m.charge(self.call.as_deref(), delta).is_err() {
            return self.deny(delta, "budget");
        }
        let m = &mut self.memory;
        m.table_bytes += delta;
        m.pending = delta;
        m.publish();
        Ok(true)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        let m = &mut self.memory;
        let refund = std::mem::take(&mut m.pending);
        m.table_bytes -= refund;
        m.account.shrink(refund);
        m.publish();
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
