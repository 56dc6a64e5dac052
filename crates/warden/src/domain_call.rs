//! Calls between domains: a guest calls an export of another domain it was granted, with its
//! argument and result copied as bytes, never shared memory (the CLR's cross-AppDomain call,
//! marshalled by value).
//!
//! # The grant
//!
//! A domain can call only the domains its embedder linked to it, each under a name of the
//! embedder's choosing: [`Domain::link`](crate::Domain::link). A link does not keep the callee
//! alive (it is a weak reference): once the callee is unloaded or dropped, calls through the
//! link fail `-9` (domain unloaded). A name that was never linked is `-5` (not permitted).
//!
//! # The byte ABI (core modules)
//!
//! The caller imports `warden.domain_call` (see [`IMPORTS`](crate::host::IMPORTS)):
//! `(link_ptr, link_len, export_ptr, export_len, in_ptr, in_len, out_ptr, out_cap,
//! timeout_ms i64) -> i32`. The callee exports the function `export: (ptr i32, len i32) -> i64`
//! and an allocator `warden_alloc: (len i32) -> i32`. One call of the callee's domain
//! (queued, admitted, run and reported like every call, under `timeout_ms` as its deadline):
//!
//! 1. `warden_alloc(in_len)` returns where the argument may be written in the callee's memory;
//! 2. the argument bytes are copied there, and `export(ptr, in_len)` runs;
//! 3. its result is `(ptr << 32) | len`, a region of the callee's memory that is copied out.
//!
//! The caller gets the result's length (`>= 0`), with at most `out_cap` bytes of it written at
//! `out_ptr` (a longer result is cut; compare the length with `out_cap`), or a negative code:
//! `-1` the callee's call passed `timeout_ms`, `-2` the wait closed a deadlock cycle (this
//! caller is the victim), `-5` no such link, `-8` a bad argument (out-of-bounds buffers, a
//! link or export name that is not 1 to 256 bytes of UTF-8, an argument over [`MAX_ARGUMENT`],
//! no such export, or one that is not `(i32, i32) -> i64`), `-9` the callee is unloaded or was
//! unloaded during the call, `-10` the callee's call failed otherwise (it trapped, ran out of
//! memory, broke the ABI — no `warden_alloc`, a region outside its memory, a result over
//! [`MAX_ARGUMENT`] — or was aborted by its embedder: its own `call_finished` says how). The
//! caller keeps running in every case. The embedder makes the same call with
//! [`Domain::call_bytes`](crate::Domain::call_bytes).
//!
//! # Waiting, abort and deadlock
//!
//! The caller waits as in any host wait: a deliverable abort of the caller ends the wait, and
//! the callee's call is then aborted too (politely, deferral honoured), so no work outlives
//! the call that asked for it. The wait is an edge of the runtime's wait-for graph (the one
//! lock waits use, [`LockTable::wait_for_owner`](warden_core::locks::LockTable::wait_for_owner)):
//! from the calling call to the call the callee's domain is running (which is the caller's own
//! request once it runs, or whatever it queued behind). The edge is re-pointed each time the
//! callee's running call changes, and each pointing is a wait that begins, checked for a cycle.
//! A cycle — A calls B calls A, or three domains in a ring, or a call that waits for a lock
//! held by a call waiting on it — makes this caller the victim: `-2` and a `deadlock_detected`
//! event, its request to the callee aborted; the other calls go on.
//!
//! Where it ends: the edge is re-pointed by polling the callee's running call (every
//! [`REPOINT`]), so a cycle formed while the callee switches calls is found at the next
//! pointing, not at once. Only `domain_call` waits are in the graph: an embedder's own
//! `Domain::call_bytes` from host code that a guest awaits is not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use warden_core::locks::LockError;

use crate::call::{CallCtl, CallError, CallOptions, CallResult};
use crate::domain::DomainShared;
use crate::events::EventKind;
use crate::host::imports::{BAD_ARGUMENT, DEADLOCK_VICTIM, NOT_PERMITTED, TIMEOUT};
use crate::ids::CallId;

/// `-9`: the callee domain is unloaded, or was unloaded during the call.
pub const DOMAIN_UNLOADED: i32 = -9;
/// `-10`: the callee's call failed (trap, out of memory, aborted, ...).
pub const CALLEE_FAILED: i32 = -10;

/// The callee's allocator export: `(len i32) -> i32`, where `len` argument bytes may go.
pub const ALLOC_EXPORT: &str = "warden_alloc";

/// Longest link name, like a lock name.
pub const MAX_LINK_NAME: usize = 256;

/// Largest argument a guest may pass (bytes): the argument is copied through host memory.
pub const MAX_ARGUMENT: usize = 16 << 20;

/// How often a waiting caller re-points its wait-for edge at the callee's running call.
pub const REPOINT: Duration = Duration::from_millis(1);

/// A domain's links: the domains it may call, by name.
#[derive(Default)]
pub(crate) struct Links {
    by_name: Mutex<HashMap<String, Weak<DomainShared>>>,
}

impl Links {
    pub(crate) fn insert(&self, name: &str, callee: &Arc<DomainShared>) {
        self.lock().insert(name.to_string(), Arc::downgrade(callee));
    }

    pub(crate) fn remove(&self, name: &str) -> bool {
        self.lock().remove(name).is_some()
    }

    /// The linked domain: `Err(NOT_PERMITTED)` if never linked, `Err(DOMAIN_UNLOADED)` if gone.
    fn get(&self, name: &str) -> Result<Arc<DomainShared>, i32> {
        let weak = self.lock().get(name).cloned().ok_or(NOT_PERMITTED)?;
        weak.upgrade().ok_or(DOMAIN_UNLOADED)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<DomainShared>>> {
        self.by_name.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Checks a link name: 1 to [`MAX_LINK_NAME`] bytes.
pub(crate) fn valid_link_name(name: &str) -> bool {
    (1..=MAX_LINK_NAME).contains(&name.len())
}

/// The code a caller gets for the callee's call result.
fn code_of(result: &CallResult) -> i32 {
    match result {
        Ok(_) => 0,
        Err(CallError::Timeout) => TIMEOUT,
        Err(CallError::DomainUnloaded) => DOMAIN_UNLOADED,
        Err(_) => CALLEE_FAILED,
    }
}

/// One `domain_call` of the call `caller` in domain `dom`: the callee's call, awaited with
/// its wait-for edge kept pointed at what it waits for. `Err` of the outer result is the
/// caller's delivered abort; the inner result is the callee's bytes or a negative code.
///
/// The callee's call is an `invoke`: on an idle callee its guest runs right here, inside the
/// caller's host call (no hop to another thread); busy, it queues. Dropping it — the caller's
/// abort, or this caller chosen as a deadlock victim — is the embedder's abort of that call.
pub(crate) async fn call(
    dom: &Arc<DomainShared>,
    caller: &Arc<CallCtl>,
    link: &str,
    export: &str,
    input: Vec<u8>,
    timeout: Option<Duration>,
) -> wasmtime::Result<Result<Vec<u8>, i32>> {
    let callee = match dom.links.get(link) {
        Ok(callee) => callee,
        Err(code) => return Ok(Err(code)),
    };
    let options = CallOptions {
        deadline: timeout,
        background: caller.background,
        reserve: None,
    };
    let component = callee.module.is_component();
    let args = match component {
        // A component's export takes WIT values: the bytes are their WAVE text.
        true => match wave_args(&callee.module, export, &input) {
            Some(values) => crate::worker::Args::Component(values),
            None => return Ok(Err(BAD_ARGUMENT)),
        },
        false => crate::worker::Args::Bytes(input),
    };
    let req = match callee.request(export, args, &options, None) {
        Ok(req) => req,
        Err(crate::Error::NoSuchExport(_) | crate::Error::BadArguments { .. }) => {
            return Ok(Err(BAD_ARGUMENT));
        }
        Err(_) => return Ok(Err(CALLEE_FAILED)),
    };
    let target = req.ctl.id;
    dom.rt
        .events
        .emit(Some(dom.id), Some(caller.id), || EventKind::DomainCall {
            callee_domain: callee.id,
            callee_call: target,
            export: export.to_string(),
        });
    let _waiting = caller.wait_on((callee.clone(), req.ctl.clone()));
    let run = callee.invoke_request(req, &options);
    let waited =
        crate::host::wait_abortable(dom, caller, wait(dom, caller, &callee, target, run)).await?;
    let result = match waited {
        Waited::Done(result) => result,
        Waited::Victim(cycle) => {
            dom.deadlock_victim(caller, &cycle);
            Err(CallError::DeadlockVictim)
        }
    };
    // An abort of the caller that ended its callee's call lands here, not as `-10`.
    crate::host::deliver_if_due(dom, caller)?;
    let code = match &result {
        Err(CallError::DeadlockVictim) => DEADLOCK_VICTIM,
        other => code_of(other),
    };
    dom.rt.events.emit(Some(dom.id), Some(caller.id), || {
        EventKind::DomainCallReturned {
            callee_call: target,
            code,
        }
    });
    Ok(match result {
        Ok(output) if component => Ok(wave_results(&output.component_values).into_bytes()),
        Ok(output) => Ok(output.bytes),
        Err(_) => Err(code),
    })
}

/// A component callee's arguments from their WAVE text (`(40, 2)`, or `40, 2`), typed by its
/// export `export`; `None` when the text is not UTF-8, not WAVE, or not of those types.
fn wave_args(
    module: &crate::Module,
    export: &str,
    input: &[u8],
) -> Option<Vec<wasmtime::component::Val>> {
    use wasmtime::component::wasm_wave::untyped::UntypedFuncCall;
    let text = std::str::from_utf8(input).ok()?.trim();
    let params = module.component_func(export).ok()?.params();
    let list = match text.starts_with('(') {
        true => text.to_string(),
        false => format!("({text})"),
    };
    let source = format!("f{list}");
    let call = UntypedFuncCall::parse(&source).ok()?;
    call.to_wasm_params::<wasmtime::component::Val>(params.iter())
        .ok()
}

/// A component callee's results as WAVE text: one value as itself, none or several as a
/// tuple (as `wasmtime run --invoke` prints them).
fn wave_results(values: &[wasmtime::component::Val]) -> String {
    use wasmtime::component::wasm_wave;
    let shown: Vec<String> = values
        .iter()
        .map(|v| wasm_wave::to_string(v).unwrap_or_else(|_| "<resource>".into()))
        .collect();
    match shown.as_slice() {
        [one] => one.clone(),
        many => format!("({})", many.join(", ")),
    }
}

enum Waited {
    Done(CallResult),
    Victim(warden_core::locks::DeadlockCycle),
}

/// Runs (or waits for) the callee's call, keeping the caller's wait-for edge on the call the
/// callee's domain runs now (or on the request itself while nothing runs there). Returning
/// `Victim` drops `run`, which aborts the callee's call.
async fn wait(
    dom: &Arc<DomainShared>,
    caller: &CallCtl,
    callee: &Arc<DomainShared>,
    target: CallId,
    run: impl std::future::Future<Output = Result<crate::CallOutput, crate::Error>>,
) -> Waited {
    let mut run = std::pin::pin!(run);
    // Polled once before any edge: the request is then admitted and running (here, if the
    // callee was idle) or queued, so that even a victim's request ends in one outcome.
    tokio::select! {
        biased;
        r = &mut run => return Waited::Done(answer(r)),
        _ = std::future::ready(()) => {}
    }
    let mut edge: Option<(CallId, warden_core::locks::WaitGuard)> = None;
    let mut repoint = tokio::time::interval(REPOINT);
    repoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = callee.current().map(|c| c.id).unwrap_or(target);
        if edge.as_ref().map(|(on, _)| *on) != Some(now) {
            // Dropped first: a caller waits on one thing at a time.
            edge = None;
            match dom.rt.locks.wait_for_owner(caller.id.0, now.0) {
                Ok(guard) => edge = Some((now, guard)),
                Err(LockError::Deadlock(cycle)) => return Waited::Victim(cycle),
                // Not waiting on anything else (a call is sequential); if it ever were, the
                // wait goes on unseen by the graph rather than failing the call.
                Err(_) => {}
            }
        }
        tokio::select! {
            biased;
            r = &mut run => return Waited::Done(answer(r)),
            _ = repoint.tick() => {}
        }
    }
}

fn answer(r: Result<crate::CallOutput, crate::Error>) -> CallResult {
    match r {
        Ok(output) => Ok(output),
        Err(crate::Error::Call(e)) => Err(e),
        Err(_) => Err(CallError::DomainUnloaded),
    }
}

/// A core callee's side of the byte ABI, found once per domain.
#[derive(Clone)]
pub(crate) struct BytesAbi {
    alloc: wasmtime::TypedFunc<i32, i32>,
    memory: wasmtime::Memory,
}

/// The callee's side of a byte call, run by its worker as the call's guest code (so under the
/// call's deadline, abort and limits): allocate, copy in, call, copy out. An ABI violation by
/// the callee traps its call.
pub(crate) async fn run_bytes(
    store: &mut wasmtime::Store<crate::domain::DomainState>,
    instance: wasmtime::Instance,
    abi: &mut Option<BytesAbi>,
    func: wasmtime::Func,
    input: Vec<u8>,
) -> wasmtime::Result<Vec<u8>> {
    let BytesAbi { alloc, memory } = match abi {
        Some(found) => found.clone(),
        None => {
            let alloc = instance
                .get_typed_func::<i32, i32>(&mut *store, ALLOC_EXPORT)
                .map_err(|_| {
                    wasmtime::format_err!("byte call: no export `{ALLOC_EXPORT}: (i32) -> i32`")
                })?;
            let memory = instance
                .get_memory(&mut *store, "memory")
                .ok_or_else(|| wasmtime::format_err!("byte call: no exported `memory`"))?;
            abi.insert(BytesAbi { alloc, memory }).clone()
        }
    };
    // `DomainShared::request` checked the type: `(i32, i32) -> i64`.
    let func = func.typed::<(i32, i32), i64>(&*store)?;
    let len = i32::try_from(input.len())
        .map_err(|_| wasmtime::format_err!("byte call: argument too long"))?;
    let ptr = alloc.call_async(&mut *store, len).await?;
    memory
        .write(&mut *store, ptr as u32 as usize, &input)
        .map_err(|_| {
            wasmtime::format_err!(
                "byte call: `{ALLOC_EXPORT}({len})` returned {ptr}, not room for {len} bytes"
            )
        })?;
    drop(input);
    let packed = func.call_async(&mut *store, (ptr, len)).await? as u64;
    let (at, len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
    if len > MAX_ARGUMENT {
        return Err(wasmtime::format_err!(
            "byte call: result of {len} bytes is over the {MAX_ARGUMENT}-byte bound"
        ));
    }
    memory
        .data(&*store)
        .get(at..at.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            wasmtime::format_err!("byte call: result ({at}, {len}) is outside the callee's memory")
        })
}
