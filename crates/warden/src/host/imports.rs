//! Warden's own imports, module `"warden"` (DESIGN §4): one table, [`IMPORTS`], that both
//! links them and describes them (name, signature, error codes, meaning).
//!
//! Each function is thin: it reads its arguments, calls the owning module (abort state, lock
//! table, memory gate) and maps the result to DESIGN's error codes. A function that ends a
//! deferral (`critical_exit`, `constrained_exit`, `lock_release`) delivers a pending abort
//! right there; a host wait (`sleep_ms`, `lock_acquire`) is woken by a deliverable abort.

use std::sync::Arc;
use std::time::Duration;
use warden_core::locks::{Acquired, LockError};
use wasmtime::{Caller, Linker};

use super::{deliver_if_due, read_guest, wait_abortable};
use crate::call::CallCtl;
use crate::capability::Capability;
use crate::domain::{DomainShared, DomainState};
use crate::domain_call::{CALLEE_FAILED, DOMAIN_UNLOADED, MAX_ARGUMENT};

/// The import module name of Warden's own imports.
pub const MODULE: &str = "warden";

/// `-1`: a wait timed out (DESIGN §4).
pub const TIMEOUT: i32 = -1;
/// `-2`: the wait was chosen as a deadlock victim (DESIGN §4).
pub const DEADLOCK_VICTIM: i32 = -2;
/// `-3`: the wait was aborted (DESIGN §4).
pub const ABORTED: i32 = -3;
/// `-4`: the lock was acquired, but its previous owner did not release it cleanly.
pub const POISONED: i32 = -4;
/// `-5`: not permitted (capability).
pub const NOT_PERMITTED: i32 = -5;
/// `-6`: already held / not held.
pub const HELD: i32 = -6;
/// `-7`: the memory gate refused the reservation (DESIGN §4).
pub const INSUFFICIENT_MEMORY: i32 = -7;
/// `-8`: a bad argument (DESIGN §4).
pub const BAD_ARGUMENT: i32 = -8;

/// Every error code a `"warden"` import can return, with its meaning (DESIGN §4).
pub const ERROR_CODES: &[(i32, &str)] = &[
    (TIMEOUT, "timeout"),
    (DEADLOCK_VICTIM, "deadlock victim"),
    (ABORTED, "aborted"),
    (
        POISONED,
        "poisoned: acquired, but the previous owner did not release it cleanly",
    ),
    (NOT_PERMITTED, "not permitted (capability)"),
    (HELD, "already held / not held"),
    (INSUFFICIENT_MEMORY, "insufficient memory"),
    (BAD_ARGUMENT, "bad argument"),
    (
        DOMAIN_UNLOADED,
        "domain unloaded: the callee of a domain_call is unloaded, or was during the call",
    ),
    (
        CALLEE_FAILED,
        "callee failed: the callee's call trapped, ran out of memory or was aborted",
    ),
];

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

/// A core wasm value type in an import's signature.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum WasmType {
    /// `i32`
    I32,
    /// `i64`
    I64,
}

impl WasmType {
    /// The WAT spelling (`i32`, `i64`).
    pub fn as_str(self) -> &'static str {
        match self {
            WasmType::I32 => "i32",
            WasmType::I64 => "i64",
        }
    }
}

impl std::fmt::Display for WasmType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

type L = Linker<DomainState>;
type Cx<'a> = Caller<'a, DomainState>;

/// One `"warden"` import: what it is, and how it is linked. The signature is checked against
/// the linked function by the test suite, so the table cannot drift from the code.
pub struct Import {
    /// The import's name in module `"warden"`.
    pub name: &'static str,
    /// Parameter types.
    pub params: &'static [WasmType],
    /// Result types.
    pub results: &'static [WasmType],
    /// The negative codes it may return (see [`ERROR_CODES`]).
    pub codes: &'static [i32],
    /// What it does.
    pub doc: &'static str,
    /// The category a domain's grant must hold for a guest to import it
    /// ([`capability`](crate::capability)).
    pub capability: Capability,
    link: fn(&mut L, &'static str) -> wasmtime::Result<()>,
}

impl Import {
    /// The signature in WAT: `(param i32 i32 i64) (result i32)`.
    pub fn signature(&self) -> String {
        let list = |ts: &[WasmType]| ts.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(" ");
        let mut s = String::new();
        if !self.params.is_empty() {
            s += &format!("(param {})", list(self.params));
        }
        if !self.results.is_empty() {
            if !s.is_empty() {
                s.push(' ');
            }
            s += &format!("(result {})", list(self.results));
        }
        s
    }
}

impl std::fmt::Debug for Import {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Import")
            .field("name", &self.name)
            .field("signature", &self.signature())
            .field("codes", &self.codes)
            .finish()
    }
}

use WasmType::{I32, I64};

/// Every import of module `"warden"`, in DESIGN §4's order (plus Warden's `handle_close`).
pub static IMPORTS: &[Import] = &[
    Import {
        name: "critical_enter",
        params: &[],
        results: &[],
        codes: &[],
        doc: "enter a critical region (polite abort deferred)",
        capability: Capability::Regions,
        link: critical_enter,
    },
    Import {
        name: "critical_exit",
        params: &[],
        results: &[],
        codes: &[],
        doc: "leave a critical region; a pending abort lands here",
        capability: Capability::Regions,
        link: critical_exit,
    },
    Import {
        name: "constrained_enter",
        params: &[],
        results: &[],
        codes: &[],
        doc: "enter a constrained region (rude abort deferred too)",
        capability: Capability::Regions,
        link: constrained_enter,
    },
    Import {
        name: "constrained_exit",
        params: &[],
        results: &[],
        codes: &[],
        doc: "leave a constrained region; a pending abort lands here",
        capability: Capability::Regions,
        link: constrained_exit,
    },
    Import {
        name: "abort_requested",
        params: &[],
        results: &[I32],
        codes: &[],
        doc: "1 if an abort is pending for this call",
        capability: Capability::Regions,
        link: abort_requested,
    },
    Import {
        name: "lock_acquire",
        params: &[I32, I32, I64],
        results: &[I32],
        codes: &[TIMEOUT, DEADLOCK_VICTIM, POISONED, HELD, BAD_ARGUMENT],
        doc: "acquire a named host lock (name ptr, len, timeout ms; < 0 waits forever); 0 ok",
        capability: Capability::Synchronization,
        link: lock_acquire,
    },
    Import {
        name: "lock_release",
        params: &[I32, I32],
        results: &[I32],
        codes: &[HELD, BAD_ARGUMENT],
        doc: "release a named host lock; 0 ok; a pending abort lands at the last release",
        capability: Capability::Synchronization,
        link: lock_release,
    },
    Import {
        name: "gate_reserve",
        params: &[I64],
        results: &[I32],
        codes: &[INSUFFICIENT_MEMORY, BAD_ARGUMENT],
        doc: "memory gate: reserve bytes; a positive token",
        capability: Capability::Gate,
        link: gate_reserve,
    },
    Import {
        name: "gate_release",
        params: &[I32],
        results: &[I32],
        codes: &[BAD_ARGUMENT],
        doc: "return a memory-gate reservation by token; 0 ok",
        capability: Capability::Gate,
        link: gate_release,
    },
    Import {
        name: "sleep_ms",
        params: &[I64],
        results: &[I32],
        codes: &[BAD_ARGUMENT],
        doc: "host-routed sleep, woken by a deliverable abort; 0 ok",
        capability: Capability::Blocking,
        link: sleep_ms,
    },
    Import {
        name: "log",
        params: &[I32, I32, I32],
        results: &[],
        codes: &[],
        doc: "a guest log line (level, ptr, len) as a `guest_log` event",
        capability: Capability::Log,
        link: log,
    },
    Import {
        name: "handle_close",
        params: &[I32],
        results: &[I32],
        codes: &[BAD_ARGUMENT],
        doc: "close a handle (drop the owner's reference); 0 ok",
        capability: Capability::HostState,
        link: handle_close,
    },
    Import {
        name: "domain_call",
        params: &[I32, I32, I32, I32, I32, I32, I32, I32, I64],
        results: &[I32],
        codes: &[
            TIMEOUT,
            DEADLOCK_VICTIM,
            NOT_PERMITTED,
            BAD_ARGUMENT,
            DOMAIN_UNLOADED,
            CALLEE_FAILED,
        ],
        doc: "call export (ptr, len) of the linked domain (ptr, len) with the argument bytes \
              (ptr, len), result into (ptr, capacity), timeout ms (< 0: none); the result's \
              length",
        link: domain_call,
        capability: Capability::Domains,
    },
];

/// Links every `"warden"` import.
pub(crate) fn link_warden(linker: &mut L) -> wasmtime::Result<()> {
    for import in IMPORTS {
        (import.link)(linker, import.name)?;
    }
    Ok(())
}

fn critical_enter(l: &mut L, name: &'static str) -> wasmtime::Result<()> {
    l.func_wrap(MODULE, name, |cx: Cx<'_>| op::critical_enter(cx.data()))?;
    Ok(())
}

fn critical_exit(l: &mut L, name: &'static str) -> wasmtime::Result<()> {
    l.func_wrap(MODULE, name, |cx: Cx<'_>| op::critical_exit(cx.data()))?;
    Ok(())
}

fn constrained_enter(l: &mut L, name: &'static str) -> wasmtime::Result<()> {
    l.func_wrap(MODULE, name, |cx: Cx<'_>| op::constrained_enter(cx.data()))?;
    Ok(())
}

fn constrained_exit(l: &mut L, name: &'static str) -> wasmtime::Result<()> {
    l.func_wrap(MODULE, name, |cx: Cx<'_>| op::constrained_exit(cx.data()))?;
    Ok(())
}

fn abort_requested(l: &mut L, name: &'static str) -> wasmtime::Result<()> {
    l.func_wrap(MODULE, name, |cx: Cx<'_>| -> i32 {
        op::abort_requested(cx.data()) as i32
    })?;
    Ok(())
}

fn sleep_ms(l: &mut L, name: &'static str) -> wasmtime::Result<()> {
    l.func_wrap_async(MODULE, name, |cx: Cx<'_>, (ms,): (i64,)| {
        Box::new(async move {
            let Ok(ms) = u64::try_from(ms) else {
                return Ok(BAD_ARGUMENT);
            };
            op::sleep(op::At::of(cx.data()), ms).await?;
            Ok(0)
        })
    })?;
    Ok(())
}

// Not in DESIGN §4's table: the guest's side of the SafeHandle model (`handles.rs`). Closing
// drops the owner's reference; the release runs now unless host code is using the handle. A
// stale, forged or foreign value is `-8`, never another resource.
fn handle_close(l: &mut L, name: &'static str) -> wasmtime::Result<()> {
    l.func_wrap(MODULE, name, |cx: Cx<'_>, h: i32| -> i32 {
        code(op::handle_close(cx.data(), h as u32))
    })?;
    Ok(())
}

fn log(l: &mut L, name: &'static str) -> wasmtime::Result<()> {
    l.func_wrap(
        MODULE,
        name,
        |mut cx: Cx<'_>, level: i32, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let bytes =
                read_guest(&mut cx, ptr, len.min(MAX_LOG_BYTES as i32)).ok_or_else(|| {
                    wasmtime::format_err!("log: message ({ptr}, {len}) is out of bounds")
                })?;
            op::log(cx.data(), level, &bytes);
            Ok(())
        },
    )?;
    Ok(())
}

fn lock_acquire(l: &mut L, name: &'static str) -> wasmtime::Result<()> {
    l.func_wrap_async(
        MODULE,
        name,
        |mut cx: Cx<'_>, (ptr, len, timeout_ms): (i32, i32, i64)| {
            Box::new(async move {
                let Some(name) = read_name(&mut cx, ptr, len) else {
                    return Ok(BAD_ARGUMENT);
                };
                let timeout = u64::try_from(timeout_ms).ok();
                Ok(
                    match op::lock_acquire(op::At::of(cx.data()), &name, timeout).await? {
                        Ok(acquired) => acquired.code(),
                        Err(e) => e,
                    },
                )
            })
        },
    )?;
    Ok(())
}

fn lock_release(l: &mut L, name: &'static str) -> wasmtime::Result<()> {
    l.func_wrap(
        MODULE,
        name,
        |mut cx: Cx<'_>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let Some(name) = read_name(&mut cx, ptr, len) else {
                return Ok(BAD_ARGUMENT);
            };
            Ok(code(op::lock_release(cx.data(), &name)?))
        },
    )?;
    Ok(())
}

fn gate_reserve(l: &mut L, name: &'static str) -> wasmtime::Result<()> {
    l.func_wrap(MODULE, name, |cx: Cx<'_>, bytes: i64| -> i32 {
        let Ok(bytes) = u64::try_from(bytes) else {
            return BAD_ARGUMENT;
        };
        op::gate_reserve(cx.data(), bytes).unwrap_or_else(|e| e)
    })?;
    Ok(())
}

fn gate_release(l: &mut L, name: &'static str) -> wasmtime::Result<()> {
    l.func_wrap(MODULE, name, |cx: Cx<'_>, token: i32| -> i32 {
        code(op::gate_release(cx.data(), token))
    })?;
    Ok(())
}

// A cross-domain call (`domain_call.rs`): the buffers are checked before the callee is asked,
// so a bad argument costs the callee nothing.
fn domain_call(l: &mut L, name: &'static str) -> wasmtime::Result<()> {
    type Params = (i32, i32, i32, i32, i32, i32, i32, i32, i64);
    l.func_wrap_async(MODULE, name, |mut cx: Cx<'_>, params: Params| {
        Box::new(async move {
            let (link_ptr, link_len, export_ptr, export_len, in_ptr, in_len, out_ptr, out_cap, ms) =
                params;
            // The memory is looked up once: this runs on every cross-domain call.
            let Some(memory) = cx.get_export("memory").and_then(|e| e.into_memory()) else {
                return Ok(BAD_ARGUMENT);
            };
            let (link, export, input) = {
                let data = memory.data(&cx);
                let region = |ptr: i32, len: i32| {
                    let start = usize::try_from(ptr).ok()?;
                    data.get(start..start.checked_add(usize::try_from(len).ok()?)?)
                };
                let name = |ptr: i32, len: i32| {
                    let bytes = region(ptr, len).filter(|b| valid_name_len(b.len()))?;
                    std::str::from_utf8(bytes).ok().map(str::to_owned)
                };
                let out_ok = region(out_ptr, out_cap).is_some();
                let input = region(in_ptr, in_len).filter(|b| b.len() <= MAX_ARGUMENT);
                match (
                    name(link_ptr, link_len),
                    name(export_ptr, export_len),
                    input,
                ) {
                    (Some(link), Some(export), Some(input)) if out_ok => {
                        (link, export, input.to_vec())
                    }
                    _ => return Ok(BAD_ARGUMENT),
                }
            };
            let timeout = u64::try_from(ms).ok().map(Duration::from_millis);
            let at = op::At::of(cx.data());
            match op::domain_call(at, &link, &export, input, timeout).await? {
                Ok(bytes) => {
                    let shown = bytes.len().min(out_cap as usize);
                    memory
                        .write(&mut cx, out_ptr as usize, &bytes[..shown])
                        .map_err(|_| wasmtime::format_err!("domain_call: result buffer"))?;
                    Ok(i32::try_from(bytes.len()).unwrap_or(i32::MAX))
                }
                Err(code) => Ok(code),
            }
        })
    })?;
    Ok(())
}

/// `0` for success, else the error code.
fn code(r: Result<(), i32>) -> i32 {
    r.err().unwrap_or(0)
}

/// The semantics of every `"warden"` import, on the domain's state and plain values: the one
/// implementation both faces call — the core imports above and the component model's
/// `warden:host` ([`super::component`]). Errors are DESIGN §4's codes; an `Err` of
/// `wasmtime::Result` is a trap or a delivered abort.
pub(crate) mod op {
    use super::*;

    fn current(st: &DomainState) -> Option<Arc<CallCtl>> {
        st.call.clone()
    }

    /// What an async operation needs of the store's state, owned (the state itself is not
    /// `Sync`, so a host future cannot hold a reference to it).
    pub(crate) struct At {
        dom: Arc<DomainShared>,
        call: Option<Arc<CallCtl>>,
    }

    impl At {
        pub(crate) fn of(st: &DomainState) -> At {
            At {
                dom: st.dom.clone(),
                call: st.call.clone(),
            }
        }
    }

    pub(crate) fn critical_enter(st: &DomainState) -> wasmtime::Result<()> {
        if let Some(ctl) = current(st) {
            ctl.abort
                .critical_enter()
                .map_err(|e| wasmtime::format_err!("critical_enter: {e}"))?;
        }
        Ok(())
    }

    pub(crate) fn critical_exit(st: &DomainState) -> wasmtime::Result<()> {
        let Some(ctl) = current(st) else {
            return Ok(());
        };
        ctl.abort.critical_exit().map_err(|_| {
            wasmtime::format_err!("critical_exit without a matching critical_enter")
        })?;
        deliver_if_due(&st.dom, &ctl)
    }

    pub(crate) fn constrained_enter(st: &DomainState) -> wasmtime::Result<()> {
        if let Some(ctl) = current(st) {
            ctl.abort
                .constrained_enter()
                .map_err(|e| wasmtime::format_err!("constrained_enter: {e}"))?;
        }
        Ok(())
    }

    pub(crate) fn constrained_exit(st: &DomainState) -> wasmtime::Result<()> {
        let Some(ctl) = current(st) else {
            return Ok(());
        };
        ctl.abort.constrained_exit().map_err(|_| {
            wasmtime::format_err!("constrained_exit without a matching constrained_enter")
        })?;
        deliver_if_due(&st.dom, &ctl)
    }

    pub(crate) fn abort_requested(st: &DomainState) -> bool {
        st.call
            .as_ref()
            .is_some_and(|c| c.abort.requested().is_some())
    }

    /// An abortable host sleep of `ms` milliseconds.
    pub(crate) async fn sleep(at: At, ms: u64) -> wasmtime::Result<()> {
        let At { dom, call } = at;
        let Some(ctl) = call else {
            return Ok(());
        };
        let sleep = tokio::time::sleep_until(far(Duration::from_millis(ms)));
        wait_abortable(&dom, &ctl, sleep).await?;
        Ok(())
    }

    pub(crate) fn handle_close(st: &DomainState, h: u32) -> Result<(), i32> {
        st.dom.handles.close(h).map_err(|_| BAD_ARGUMENT)
    }

    /// A `guest_log` event (`bytes` already cut to [`MAX_LOG_BYTES`] or less).
    pub(crate) fn log(st: &DomainState, level: i32, bytes: &[u8]) {
        let bytes = &bytes[..bytes.len().min(MAX_LOG_BYTES)];
        let call = st.call.as_ref().map(|c| c.id);
        st.dom
            .rt
            .guest_log
            .emit(&st.dom.rt.events, st.dom.id, call, level, bytes);
    }

    /// Takes lock `name`, waiting at most `timeout_ms` (`None`: no bound), woken by a
    /// deliverable abort. A deadlock victim is told (`deadlock_victim` event) and gets `-2`.
    pub(crate) async fn lock_acquire(
        at: At,
        name: &str,
        timeout_ms: Option<u64>,
    ) -> wasmtime::Result<Result<Acquired, i32>> {
        let At { dom, call } = at;
        let Some(ctl) = call else {
            return Ok(Err(BAD_ARGUMENT));
        };
        if !valid_name(name) || ctl.abort.locks_held() >= MAX_HELD_LOCKS {
            return Ok(Err(BAD_ARGUMENT));
        }
        let timeout = timeout_ms.map(Duration::from_millis);
        // Cancel-safe: an abort that lands drops this future and the table forgets the
        // waiter. A polite abort does not land while other locks are held.
        let acquire = dom.rt.locks.acquire(ctl.id.0, name, timeout);
        Ok(match wait_abortable(&dom, &ctl, acquire).await? {
            Ok(acquired) => match ctl.abort.lock_taken() {
                Ok(()) => Ok(acquired),
                // More locks than the abort record counts: refuse this one.
                Err(_) => {
                    let _ = dom.rt.locks.release(ctl.id.0, name);
                    Err(BAD_ARGUMENT)
                }
            },
            Err(LockError::Deadlock(cycle)) => {
                dom.deadlock_victim(&ctl, &cycle);
                Err(DEADLOCK_VICTIM)
            }
            Err(e) => Err(e.code()),
        })
    }

    /// Releases lock `name`; releasing the last lock may end a deferral, so a pending abort
    /// lands here.
    pub(crate) fn lock_release(st: &DomainState, name: &str) -> wasmtime::Result<Result<(), i32>> {
        let Some(ctl) = current(st) else {
            return Ok(Err(BAD_ARGUMENT));
        };
        if !valid_name(name) {
            return Ok(Err(BAD_ARGUMENT));
        }
        let dom = st.dom.clone();
        if let Err(e) = dom.rt.locks.release(ctl.id.0, name) {
            return Ok(Err(e.code()));
        }
        ctl.abort.lock_dropped();
        deliver_if_due(&dom, &ctl)?;
        Ok(Ok(()))
    }

    /// A cross-domain call through link `link` (see [`crate::domain_call`]).
    pub(crate) async fn domain_call(
        at: At,
        link: &str,
        export: &str,
        input: Vec<u8>,
        timeout: Option<Duration>,
    ) -> wasmtime::Result<Result<Vec<u8>, i32>> {
        let At { dom, call } = at;
        let Some(ctl) = call else {
            return Ok(Err(BAD_ARGUMENT));
        };
        crate::domain_call::call(&dom, &ctl, link, export, input, timeout).await
    }

    /// A memory-gate reservation of `bytes`: its (positive) token.
    pub(crate) fn gate_reserve(st: &DomainState, bytes: u64) -> Result<i32, i32> {
        let Some(ctl) = current(st) else {
            return Err(BAD_ARGUMENT);
        };
        if ctl.gate().len() >= MAX_RESERVATIONS {
            return Err(INSUFFICIENT_MEMORY);
        }
        match st.dom.account.reserve(bytes) {
            Ok(r) => ctl.gate().keep(r).ok_or(BAD_ARGUMENT),
            Err(_) => Err(INSUFFICIENT_MEMORY),
        }
    }

    pub(crate) fn gate_release(st: &DomainState, token: i32) -> Result<(), i32> {
        let Some(ctl) = current(st) else {
            return Err(BAD_ARGUMENT);
        };
        if ctl.gate().release(token) {
            Ok(())
        } else {
            Err(BAD_ARGUMENT)
        }
    }
}

fn valid_name(name: &str) -> bool {
    valid_name_len(name.len())
}

fn valid_name_len(len: usize) -> bool {
    (1..=MAX_LOCK_NAME as usize).contains(&len)
}

/// A lock name: UTF-8, 1 to 256 bytes, inside the guest's memory.
fn read_name(cx: &mut Cx<'_>, ptr: i32, len: i32) -> Option<String> {
    if !(1..=MAX_LOCK_NAME).contains(&len) {
        return None;
    }
    String::from_utf8(read_guest(cx, ptr, len)?).ok()
}

/// `now + d`, or a moment so far away it never comes when that overflows.
fn far(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}
