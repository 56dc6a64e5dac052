//! The guest interface: imports of module `"warden"` (DESIGN §4).
//!
//! Each function is thin: it reads its arguments, calls the owning module (abort state, lock
//! table, memory gate) and maps the result to DESIGN's error codes. A function that ends a
//! deferral (`critical_exit`, `constrained_exit`, `lock_release`) delivers a pending abort
//! right there; a host wait (`sleep_ms`, `lock_acquire`) is woken by a deliverable abort.

use std::sync::Arc;
use std::time::Duration;
use wasmtime::{Caller, Linker};

use crate::call::{CallCtl, kind_str};
use crate::domain::{AbortSignal, DomainShared, DomainState};
use crate::events::EventKind;

/// Every import the `"warden"` module provides.
pub const IMPORTS: &[&str] = &[
    "critical_enter",
    "critical_exit",
    "constrained_enter",
    "constrained_exit",
    "abort_requested",
    "sleep_ms",
    "log",
    "handle_close",
];

/// `-8`: a bad argument (DESIGN §4).
pub const BAD_ARGUMENT: i32 = -8;

/// Longest guest log message kept; the rest is cut.
const MAX_LOG_BYTES: usize = 64 << 10;

type Cx<'a> = Caller<'a, DomainState>;

pub(crate) fn add_to_linker(linker: &mut Linker<DomainState>) -> wasmtime::Result<()> {
    linker.func_wrap("warden", "critical_enter", |cx: Cx<'_>| {
        if let Some(ctl) = current(&cx) {
            ctl.abort.critical_enter();
        }
    })?;
    linker.func_wrap(
        "warden",
        "critical_exit",
        |cx: Cx<'_>| -> wasmtime::Result<()> {
            let Some(ctl) = current(&cx) else {
                return Ok(());
            };
            ctl.abort.critical_exit().map_err(|()| {
                wasmtime::format_err!("critical_exit without a matching critical_enter")
            })?;
            deliver_if_due(&cx.data().dom, &ctl, false)
        },
    )?;
    linker.func_wrap("warden", "constrained_enter", |cx: Cx<'_>| {
        if let Some(ctl) = current(&cx) {
            ctl.abort.constrained_enter();
        }
    })?;
    linker.func_wrap(
        "warden",
        "constrained_exit",
        |cx: Cx<'_>| -> wasmtime::Result<()> {
            let Some(ctl) = current(&cx) else {
                return Ok(());
            };
            ctl.abort.constrained_exit().map_err(|()| {
                wasmtime::format_err!("constrained_exit without a matching constrained_enter")
            })?;
            deliver_if_due(&cx.data().dom, &ctl, false)
        },
    )?;
    linker.func_wrap("warden", "abort_requested", |cx: Cx<'_>| -> i32 {
        current(&cx).is_some_and(|c| c.abort.requested().is_some()) as i32
    })?;
    linker.func_wrap_async("warden", "sleep_ms", |cx: Cx<'_>, (ms,): (i64,)| {
        Box::new(async move {
            let Some(ctl) = current(&cx) else {
                return Ok(0);
            };
            if ms < 0 {
                return Ok(BAD_ARGUMENT);
            }
            let dom = cx.data().dom.clone();
            let sleep = tokio::time::sleep_until(far(Duration::from_millis(ms as u64)));
            wait_abortable(&dom, &ctl, sleep).await?;
            Ok(0)
        })
    })?;
    // Not in DESIGN §4's table: the guest's side of the SafeHandle model (`handles.rs`).
    // Closing drops the owner's reference; the release runs now unless host code is using
    // the handle. A stale, forged or foreign value is `-8`, never another resource.
    linker.func_wrap("warden", "handle_close", |cx: Cx<'_>, h: i32| -> i32 {
        match cx.data().dom.handles.close(h as u32) {
            Ok(()) => 0,
            Err(_) => BAD_ARGUMENT,
        }
    })?;
    linker.func_wrap(
        "warden",
        "log",
        |mut cx: Cx<'_>, level: i32, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let bytes =
                read_guest(&mut cx, ptr, len.min(MAX_LOG_BYTES as i32)).ok_or_else(|| {
                    wasmtime::format_err!("log: message ({ptr}, {len}) is out of bounds")
                })?;
            let message = String::from_utf8_lossy(&bytes).into_owned();
            tracing::debug!(level, "{message}");
            let dom = &cx.data().dom;
            let call = cx.data().call.as_ref().map(|c| c.id);
            dom.rt
                .events
                .emit(Some(dom.id), call, || EventKind::GuestLog {
                    level,
                    message,
                });
            Ok(())
        },
    )?;
    Ok(())
}

fn current(cx: &Cx<'_>) -> Option<Arc<CallCtl>> {
    cx.data().call.clone()
}

/// Delivers a pending abort at a point where a deferral may just have ended.
pub(crate) fn deliver_if_due(
    dom: &DomainShared,
    ctl: &CallCtl,
    in_wait: bool,
) -> wasmtime::Result<()> {
    match ctl.abort.take_delivery(in_wait) {
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
pub(crate) async fn wait_abortable<F: std::future::Future>(
    dom: &DomainShared,
    ctl: &CallCtl,
    wait: F,
) -> wasmtime::Result<F::Output> {
    let mut wait = std::pin::pin!(wait);
    loop {
        let changed = ctl.abort.changed();
        deliver_if_due(dom, ctl, true)?;
        tokio::select! {
            out = &mut wait => return Ok(out),
            _ = changed => {}
        }
    }
}

/// `now + d`, or a moment so far away it never comes when that overflows.
fn far(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

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
