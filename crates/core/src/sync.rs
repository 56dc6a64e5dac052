//! The one switch between std's atomics and loom's (as tokio's `loom/mod.rs`): under
//! `--cfg loom` (tests only) the state words of [`abort`](crate::abort) and
//! [`lifecycle`](crate::lifecycle) (and the lock table's presence counts) are loom's, so their models explore every interleaving.

#[cfg(all(test, loom))]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
