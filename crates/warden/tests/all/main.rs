//! The `warden` crate's integration tests: one binary (one link, one process), a module per
//! concept of DESIGN, as wasmtime's `tests/all/main.rs`. Run one concept with
//! `cargo test -p warden --test all locks::`.
//!
//! Shared helpers (runtimes, event recorders, waits on a state) are in `common`; guest
//! fixtures too large to read inline are `.wat` files in `fixtures/`. `tests/soak.rs` stays a
//! binary of its own: it measures the process (RSS, descriptors), so no other test may run
//! beside it.

mod common;

/// Every input bounded, every exit code exact.
mod bounds;
/// Capabilities: a domain's grant checked against its imports at load (DESIGN §1, §4).
mod capabilities;
/// Embedder host functions for component guests, typed from WIT by `bindgen!`.
mod component_embedder;
/// Component guests: typed calls, and the core modules' hostile cases (DESIGN §4).
mod components;
/// `disable-runtime`, the most severe action.
mod disable_runtime;
/// Calls between domains: bytes copied, hostile callees contained, cycles found.
mod domain_calls;
/// Domains, calls and containment (DESIGN §1, §2 "Calls and abort"): the public API's basics.
mod domains;
/// The `kv_store` example, run.
mod example_kv_store;
/// Fail-fast, for Warden's own broken invariants.
mod fail_fast_fifo;
/// Handles (DESIGN §2 "Handles").
mod handles;
/// The host-call boundary: every import under the abort rules.
mod host_calls;
/// `wasi:http/proxy` components served through `Domain::call_http`.
mod http;
/// The domain's lifecycle: every step that ends something releases what it owes.
mod lifecycle;
/// Host locks, critical regions, deadlock detection (DESIGN §2 "Locks and deadlock").
mod locks;
/// The same, under a random load of many calls over many domains.
mod locks_stress;
/// The budget, the memory gate, hard OOM and pressure (DESIGN §2 "Memory").
mod memory;
/// The escalation policy as the runtime carries it out (DESIGN §3).
mod policy;
/// Orderly shutdown (DESIGN §2 "Shutdown").
mod shutdown;
/// Unload and its finalizer (DESIGN §2 "Domains and unload").
mod unload;
/// WAT text bounded like binary modules.
mod wat_bounds;
/// A shut-down async runtime under loaded domains is no fail-fast.
mod worker_cancel;
