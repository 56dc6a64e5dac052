//! The host-call boundary: every import a guest can call, and the one layer they all run
//! through (DESIGN §2 "Calls and abort", §4).
//!
//! A guest reaches the host only through imports: WASI preview1 (`wasi_snapshot_preview1`),
//! Warden's own (`"warden"`, the table in [`IMPORTS`]) and the embedder's
//! ([`HostFunctions`]). Warden's rules hold at that boundary as they do in guest code:
//!
//! - **A host wait is woken by a deliverable abort.** Guest code runs inside an async call
//!   future that the domain's driver polls. Whenever the guest is parked — in an async host
//!   function's wait, or at an epoch yield — the driver is the one running, and it wakes on
//!   every abort request and every deferral ending. If an abort may land then (the
//!   [`AbortState`](warden_core::abort::AbortState) word says so, honouring critical
//!   regions, held locks, constrained regions and uninterruptible host calls), the driver
//!   drops the call future. wasmtime resumes the suspended fiber with an error, so the host
//!   function's wait fails, the guest stack unwinds, and the store stays usable: the call
//!   ends with the abort's outcome and the domain serves its next call. No import is
//!   wrapped for this, so none can dodge it.
//! - **Host code that must not be interrupted** runs as an uninterruptible host function
//!   ([`HostFunctions::func_async_uninterruptible`]): a polite abort is deferred until it
//!   returns (an `abort_deferred` event with `why: "host_call"`) and delivered the moment it
//!   does; a rude abort still lands (dropping the future mid-way is the embedder's accepted
//!   risk there, as a rude abort is anywhere).
//! - **Host time is counted**: the time the call's guest was parked in host calls (every
//!   async import's wait: WASI sleeps, reads and writes, `sleep_ms`, lock waits, the
//!   embedder's async functions) is `host_ms` in `call_finished`. Synchronous host code is
//!   not timed (it would cost two clock reads per import; a null import stays close to a
//!   bare wasmtime one), so `host_ms` is a lower bound: it is the *waiting*, not the CPU.
//! - **Errors and panics in host code fail the call, not the process**: an embedder function
//!   that returns an error or panics traps the call with a message naming the import.
//!
//! # Which WASI calls can block, and how each is woken
//!
//! | call | blocks on | woken by an abort because |
//! |---|---|---|
//! | `poll_oneoff` (clock subscriptions: `sleep`) | a tokio timer | the wait is a parked future; the driver drops it |
//! | `poll_oneoff` (fd subscriptions), `fd_read` on stdin | wasmtime-wasi's stdin worker thread | the read is awaited, not blocked on; the driver drops the wait (the worker thread's pending `read(2)` stays, and its bytes go to the next reader) |
//! | `fd_write` to stdout / stderr | a full guest output buffer ([`stdio`](crate::stdio)) | the write awaits buffer space; the driver drops the wait (never an OS write on the call's thread) |
//! | `fd_read` on an embedder's stdin ([`GuestInput`](crate::stdio::GuestInput)) | the embedder's async reader | the read is a parked future; the driver drops it |
//! | `fd_read` / `fd_write` on files (preopens, when granted) | the blocking thread pool | the call is awaited on `spawn_blocking`; the wait is dropped, the OS call finishes on its thread |
//! | `sched_yield`, `proc_exit`, clocks, random, args, env | never | — |
//!
//! Warden's own waits (`sleep_ms`, `lock_acquire`) are abortable waits of the same kind, and
//! also deliver the abort themselves when it lands while they wait.
//!
//! Where the promise ends: the driver can only act while the guest is *parked*. A
//! synchronous host function (an embedder's [`HostFunctions::func`], or a blocking OS call in
//! someone else's host code) holds its thread until it returns; keep those short and
//! bounded, and write anything that can wait as an async function. The watchdog and a
//! domain kill still bound such a call, as they bound any guest.

mod component;
mod embedder;
pub(crate) mod imports;
mod typed;

pub use embedder::{CallContext, DEFAULT_CAPABILITY, HostContext, HostError, HostFunctions};
pub use imports::{
    ABORTED, BAD_ARGUMENT, DEADLOCK_VICTIM, ERROR_CODES, HELD, IMPORTS, INSUFFICIENT_MEMORY,
    Import, MAX_HELD_LOCKS, MAX_RESERVATIONS, MODULE, NOT_PERMITTED, POISONED, TIMEOUT, WasmType,
};
pub use typed::{ComponentHost, ComponentLinker, Embedded, Getter};
pub(crate) use typed::{EmbedderStates, contain_panics};

pub(crate) use component::link as link_warden_component;
pub(crate) use imports::link_warden;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::call::{CallCtl, kind_str};
use crate::domain::{AbortSignal, DomainShared, DomainState};
use crate::events::EventKind;

/// Delivers a pending abort at a point where it may just have become deliverable.
pub(crate) fn deliver_if_due(dom: &DomainShared, ctl: &CallCtl) -> wasmtime::Result<()> {
    match ctl.abort.take_delivery() {
        Some(kind) => {
            dom.rt.events.emit(Some(ctl.domain), Some(ctl.id), || {
                EventKind::AbortDelivered {
                    kind: kind_str(kind),
                }
            });
            Err(AbortSignal(kind).into())
        }
        None => Ok(()),
    }
}

/// Awaits `wait` unless an abort becomes deliverable first, in which case the abort is
/// delivered (the wait fails and the guest stack unwinds). Waits in a deferred state (a
/// critical region, held locks) are not interrupted by a polite abort.
pub(crate) async fn wait_abortable<F: Future>(
    dom: &DomainShared,
    ctl: &CallCtl,
    wait: F,
) -> wasmtime::Result<F::Output> {
    #[cfg(feature = "failpoints")]
    warden_core::failpoint!(
        "host-call-entry",
        Err(wasmtime::Error::msg("failpoint host-call-entry"))
    );
    let mut wait = std::pin::pin!(wait);
    loop {
        let changed = ctl.abort.changed();
        deliver_if_due(dom, ctl)?;
        tokio::select! {
            out = &mut wait => return Ok(out),
            _ = changed => {}
        }
    }
}

/// The call future as the driver polls it, counting the time the guest is parked in host
/// calls: a poll that returns `Pending` without the epoch callback having yielded means a
/// host function is waiting; that wait lasts until the next poll (or until the future is
/// dropped, when an abort ends the wait).
pub(crate) struct HostTimed<'a, F> {
    fut: Pin<&'a mut F>,
    ctl: &'a CallCtl,
    parked: Option<Instant>,
}

impl<'a, F> HostTimed<'a, F> {
    pub(crate) fn new(fut: Pin<&'a mut F>, ctl: &'a CallCtl) -> Self {
        HostTimed {
            fut,
            ctl,
            parked: None,
        }
    }

    fn unpark(&mut self) {
        if let Some(since) = self.parked.take() {
            let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.ctl.host_nanos.fetch_add(nanos, Ordering::Relaxed);
        }
    }
}

impl<F: Future> Future for HostTimed<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.unpark();
        let polled = self.fut.as_mut().poll(cx);
        if polled.is_pending() && !self.ctl.at_yield.swap(false, Ordering::Relaxed) {
            self.parked = Some(Instant::now());
        }
        polled
    }
}

impl<F> Drop for HostTimed<'_, F> {
    fn drop(&mut self) {
        self.unpark();
    }
}

type Cx<'a> = wasmtime::Caller<'a, DomainState>;

/// Copies `len` bytes at `ptr` out of the guest's exported `memory`.
pub(crate) fn read_guest(cx: &mut Cx<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    if ptr < 0 || len < 0 {
        return None;
    }
    let memory = cx.get_export("memory")?.into_memory()?;
    let data = memory.data(&*cx);
    let start = ptr as usize;
    let end = start.checked_add(len as usize)?;
    data.get(start..end).map(<[u8]>::to_vec)
}
