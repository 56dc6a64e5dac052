//! Warden's guest-free primitives.
//!
//! These are the parts of Warden that do not need a guest, so the embedding application can use
//! them for its own native work too: a database written in Rust gates its query memory with the
//! same [`budget`] its guests are charged against, and registers its own exit hooks with the
//! same [`shutdown`] coordinator. Each module is one concept with one owner type:
//!
//! - [`budget`]: the process memory budget, per-domain accounts, the memory gate
//!   (reservations) and pressure water marks.
//! - [`handles`]: generation-checked, reference-counted handle tables (the SafeHandle model).
//! - [`locks`]: named host locks owned by calls, FIFO, poisoning, and deadlock detection over
//!   a wait-for graph.
//! - [`abort`]: the per-call abort state machine (requested, deferred, delivered).
//! - [`lifecycle`]: a domain's lifecycle word (loaded, unloading, killed, unloaded; admitted
//!   calls; the finalizer's claim).
//! - [`shutdown`]: the orderly-exit coordinator: one winner, phases, hooks, a watchdog.
//! - [`rate`]: a token-bucket rate limit for what the host writes on guests' behalf.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod abort;
pub mod budget;
#[cfg(feature = "failpoints")]
pub mod failpoints;
pub mod handles;
pub mod lifecycle;
pub mod locks;
pub mod rate;
pub mod shutdown;
mod sync;
