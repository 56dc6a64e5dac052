//! The guest interface: imports of module `"warden"` (DESIGN §4).
//!
//! Each function is thin: it reads its arguments, calls the owning module (abort state, lock
//! table, memory gate) and maps the result to DESIGN's error codes. A function that ends a
//! deferral (`critical_exit`, `constrained_exit`, `lock_release`) delivers a pending abort
//! right there; a host wait (`sleep_ms`, `lock_acquire`) is woken by a deliverable abort.

use std::sync::Arc;
use std::time::Duration;
use warden_core::locks::LockError;
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
    "lock_acquire",
    "lock_release",
    "gate_reserve",
    "gate_release",
    "handle_close",
];

/// `-2`: the wait was chosen as a deadlock victim (DESIGN §4).
pub const DEADLOCK_VICTIM: i32 = -2;
/// `-7`: the memory gate refused the reservation (DESIGN §4).
pub const INSUFFICIENT_MEMORY: i32 = -7;
/// `-8`: a bad argument (DESIGN §4).
pub const BAD_ARGUMENT: i32 = -8;

/// Longest lock name accepted (bytes).
const MAX_LOCK_NAME: i32 = warden_core::locks::MAX_NAME_LEN as i32;

/// Host locks one call may hold at once. A lock left held outlives its domain (poisoned, in
/// the process-wide table), so this bounds what a hostile call can leave behind.
pub const MAX_HELD_LOCKS: u64 = 256;

/// Memory-gate reservations one call may hold at once (each is host memory, outside the
/// guest's linear memory).
pub const MAX_RESERVATIONS: usize = 1024;

/// Longest guest log message kept; the rest is cut.
const MAX_LOG_BYTES: usize = 64 << 10;

type Cx<'a> = Caller<'a, DomainState>;

pub(crate) fn add_to_linker(linker: &mut Linker<DomainState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "warden",
        "critical_enter",
        |cx: Cx<'_>| -> wasmtime::Result<()> {
            if let Some(ctl) = current(&cx) {
                ctl.abort
                    .critical_enter()
                    .map_err(|e| wasmtime::format_err!("critical_enter: {e}"))?;
            }
            Ok(())
        },
    )?;
    linker.func_wrap(
        "warden",
        "critical_exit",
        |cx: Cx<'_>| -> wasmtime::Result<()> {
            let Some(ctl) = current(&cx) else {
                return Ok(());
            };
            ctl.abort.critical_exit().map_err(|_| {
                wasmtime::format_err!("critical_exit without a matching critical_enter")
            })?;
            deliver_if_due(&cx.data().dom, &ctl)
        },
    )?;
    linker.func_wrap(
        "warden",
        "constrained_enter",
        |cx: Cx<'_>| -> wasmtime::Result<()> {
            if let Some(ctl) = current(&cx) {
                ctl.abort
                    .constrained_enter()
                    .map_err(|e| wasmtime::format_err!("constrained_enter: {e}"))?;
            }
            Ok(())
        },
    )?;
    linker.func_wrap(
        "warden",
        "constrained_exit",
        |cx: Cx<'_>| -> wasmtime::Result<()> {
            let Some(ctl) = current(&cx) else {
                return Ok(());
            };
            ctl.abort.constrained_exit().map_err(|_| {
                wasmtime::format_err!("constrained_exit without a matching constrained_enter")
            })?;
            deliver_if_due(&cx.data().dom, &ctl)
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
            let dom = &cx.data().dom;
            let call = cx.data().call.as_ref().map(|c| c.id);
            dom.rt
                .guest_log
                .emit(&dom.rt.events, dom.id, call, level, &bytes);
            Ok(())
        },
    )?;
    linker.func_wrap_async(
        "warden",
        "lock_acquire",
        |mut cx: Cx<'_>, (ptr, len, timeout_ms): (i32, i32, i64)| {
            Box::new(async move {
                let Some(ctl) = current(&cx) else {
                    return Ok(BAD_ARGUMENT);
                };
                let Some(name) = read_name(&mut cx, ptr, len) else {
                    return Ok(BAD_ARGUMENT);
                };
                if ctl.abort.locks_held() >= MAX_HELD_LOCKS {
                    return Ok(BAD_ARGUMENT);
                }
                let dom = cx.data().dom.clone();
                let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
                // Cancel-safe: an abort that lands drops this future and the table forgets
                // the waiter. A polite abort does not land while other locks are held.
                let acquire = dom.rt.locks.acquire(ctl.id.0, &name, timeout);
                match wait_abortable(&dom, &ctl, acquire).await? {
                    Ok(acquired) => match ctl.abort.lock_taken() {
                        Ok(()) => Ok(acquired.code()),
                        // A million locks held by one call: refuse this one.
                        Err(_) => {
                            let _ = dom.rt.locks.release(ctl.id.0, &name);
                            Ok(BAD_ARGUMENT)
                        }
                    },
                    Err(LockError::Deadlock(cycle)) => {
                        dom.deadlock_victim(&ctl, &cycle);
                        Ok(DEADLOCK_VICTIM)
                    }
                    Err(e) => Ok(e.code()),
                }
            })
        },
    )?;
    linker.func_wrap(
        "warden",
        "lock_release",
        |mut cx: Cx<'_>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let Some(ctl) = current(&cx) else {
                return Ok(BAD_ARGUMENT);
            };
            let Some(name) = read_name(&mut cx, ptr, len) else {
                return Ok(BAD_ARGUMENT);
            };
            let dom = cx.data().dom.clone();
            if let Err(e) = dom.rt.locks.release(ctl.id.0, &name) {
                return Ok(e.code());
            }
            ctl.abort.lock_dropped();
            // Releasing the last lock may end a deferral: a pending abort lands here.
            deliver_if_due(&dom, &ctl)?;
            Ok(0)
        },
    )?;
    linker.func_wrap("warden", "gate_reserve", |cx: Cx<'_>, bytes: i64| -> i32 {
        let Some(ctl) = current(&cx) else {
            return BAD_ARGUMENT;
        };
        let Ok(bytes) = u64::try_from(bytes) else {
            return BAD_ARGUMENT;
        };
        if ctl.gate().len() >= MAX_RESERVATIONS {
            return INSUFFICIENT_MEMORY;
        }
        match cx.data().dom.account.reserve(bytes) {
            Ok(r) => ctl.gate().keep(r).unwrap_or(BAD_ARGUMENT),
            Err(_) => INSUFFICIENT_MEMORY,
        }
    })?;
    linker.func_wrap("warden", "gate_release", |cx: Cx<'_>, token: i32| -> i32 {
        let Some(ctl) = current(&cx) else {
            return BAD_ARGUMENT;
        };
        if ctl.gate().release(token) {
            0
        } else {
            BAD_ARGUMENT
        }
    })?;
    Ok(())
}

/// A lock name: UTF-8, 1 to 256 bytes, inside the guest's memory.
fn read_name(cx: &mut Cx<'_>, ptr: i32, len: i32) -> Option<String> {
    if !(1..=MAX_LOCK_NAME).contains(&len) {
        return None;
    }
    String::from_utf8(read_guest(cx, ptr, len)?).ok()
}

fn current(cx: &Cx<'_>) -> Option<Arc<CallCtl>> {
    cx.data().call.clone()
}

/// Delivers a pending abort at a point where a deferral may just have ended.
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
pub(crate) async fn wait_abortable<F: std::future::Future>(
    dom: &DomainShared,
    ctl: &CallCtl,
    wait: F,
) -> wasmtime::Result<F::Output> {
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
