//! The embedder's own host functions: imports a runtime gives every domain's guests, under
//! the same guarantees as Warden's and WASI's (see [the module docs](super)).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use warden::host::HostFunctions;
//! use warden::{Runtime, RuntimeConfig};
//!
//! let mut host = HostFunctions::new();
//! // Synchronous: short, bounded host code, with the guest's memory at hand.
//! host.func("env", "double", |_cx, (x,): (i32,)| Ok(x * 2));
//! // Asynchronous: anything that can wait. A deliverable abort ends the wait.
//! host.func_async("env", "fetch", |cx, (key,): (i64,)| async move {
//!     if cx.abort_requested() {
//!         return Ok(-3);
//!     }
//!     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
//!     Ok(key + 1)
//! });
//! let rt = Runtime::new(RuntimeConfig { host_functions: host, ..RuntimeConfig::default() })?;
//! # Ok(()) }
//! ```
//!
//! What each guarantee covers:
//! - An error returned by a host function fails the call as a trap whose message names the
//!   import (`host function env::fetch failed: …`); so does a panic, which is caught — the
//!   worker, the domain's other state and the process stay up. (The default panic hook still
//!   prints the panic to stderr.)
//! - An async function's wait is ended by a deliverable abort (its future is dropped at an
//!   `.await`; write it cancel-safe). [`HostFunctions::func_async_uninterruptible`] instead
//!   defers a polite abort until it returns.
//! - A synchronous function cannot be interrupted while it runs: it holds its thread. Keep it
//!   short; anything that waits belongs in an async function.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use warden_core::budget::MemoryBudget;
use wasmtime::{Caller, Linker};

use super::deliver_if_due;
use crate::call::CallCtl;
use crate::capability::Capability;
use crate::domain::{DomainShared, DomainState};
use crate::error::Error;
use crate::handles::HandleGuard;
use crate::ids::{CallId, DomainId};

/// What an embedder host function fails with: any error (`?` converts every
/// `std::error::Error`; `HostError::msg` and `wasmtime::format_err!` make one from text),
/// reported as a trap of the call that names the import. It is wasmtime's own error type,
/// so no conversion stands between a host function and wasmtime.
pub type HostError = wasmtime::Error;

type Link = Arc<dyn Fn(&mut Linker<DomainState>) -> wasmtime::Result<()> + Send + Sync>;

#[derive(Clone)]
struct Entry {
    module: String,
    name: String,
    /// What a guest's grant must hold to import it (`host-state` unless declared).
    capability: Capability,
    link: Link,
}

/// The category of an embedder function or interface that declares none: it reaches the
/// embedder's own state, which is what `host-state` stands for.
pub const DEFAULT_CAPABILITY: Capability = Capability::HostState;

/// Which registration [`HostFunctions::requires`] applies to.
#[derive(Clone, Copy, Debug)]
enum Last {
    Func(usize),
    Component(usize),
}

/// A set of embedder host functions, given to a runtime in
/// [`RuntimeConfig::host_functions`](crate::RuntimeConfig::host_functions): every domain's
/// guests may import them (and only the ones their module imports are linked into it).
///
/// Modules `"warden"` and `"wasi_snapshot_preview1"` are Warden's; defining a function there
/// (or the same one twice) makes [`Runtime::new`](crate::Runtime::new) fail with an error
/// naming it.
#[derive(Clone, Default)]
pub struct HostFunctions {
    entries: Vec<Entry>,
    /// Interfaces for component guests (`typed.rs`).
    pub(super) components: Vec<super::typed::ComponentEntry>,
    last: Option<Last>,
}

impl std::fmt::Debug for HostFunctions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.entries
                    .iter()
                    .map(|e| format!("{}::{}", e.module, e.name))
                    .chain(self.components.iter().map(|c| c.interface().to_string())),
            )
            .finish()
    }
}

impl HostFunctions {
    /// No functions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a synchronous function `module::name` taking the tuple `P` (of `i32`, `i64`,
    /// `f32`, `f64`; `()` for none) and returning `R` (one of those, a tuple of them, or
    /// `()`). It runs on the call's thread with the guest's memory at hand
    /// ([`HostContext::read_memory`]); it is not interrupted, so keep it short and bounded.
    pub fn func<P, R, F>(&mut self, module: &str, name: &str, f: F) -> &mut Self
    where
        P: HostParams,
        R: wasmtime::WasmRet + Send + 'static,
        F: Fn(&mut HostContext<'_>, P) -> Result<R, HostError> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let (m, n) = (module.to_string(), name.to_string());
        let label: Arc<str> = format!("{module}::{name}").into();
        self.push(
            module,
            name,
            Arc::new(move |linker| {
                let (f, label) = (f.clone(), label.clone());
                P::link(linker, &m, &n, move |caller, p| {
                    run_sync(&label, caller, p, &*f)
                })
            }),
        )
    }

    /// Adds an asynchronous function `module::name`: `f` gets the call's [`CallContext`] and
    /// the parameters and returns a future. A deliverable abort (deadline, `abort()`, unload)
    /// drops the future at its next `.await` and the call ends with that abort's outcome.
    pub fn func_async<P, R, F, Fut>(&mut self, module: &str, name: &str, f: F) -> &mut Self
    where
        P: wasmtime::WasmTyList + Send + 'static,
        R: wasmtime::WasmRet + Send + 'static,
        F: Fn(CallContext, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HostError>> + Send + 'static,
    {
        self.add_async(module, name, f, false)
    }

    /// Like [`func_async`](Self::func_async), for host code that must not be interrupted
    /// half-way: a polite abort is deferred until the function returns (an `abort_deferred`
    /// event with `why: "host_call"`) and lands the moment it does, its result discarded. A
    /// rude abort (e.g. when the policy's `abort` timeout expires) still drops the future.
    pub fn func_async_uninterruptible<P, R, F, Fut>(
        &mut self,
        module: &str,
        name: &str,
        f: F,
    ) -> &mut Self
    where
        P: wasmtime::WasmTyList + Send + 'static,
        R: wasmtime::WasmRet + Send + 'static,
        F: Fn(CallContext, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HostError>> + Send + 'static,
    {
        self.add_async(module, name, f, true)
    }

    fn add_async<P, R, F, Fut>(&mut self, module: &str, name: &str, f: F, shield: bool) -> &mut Self
    where
        P: wasmtime::WasmTyList + Send + 'static,
        R: wasmtime::WasmRet + Send + 'static,
        F: Fn(CallContext, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HostError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let (m, n) = (module.to_string(), name.to_string());
        let label: Arc<str> = format!("{module}::{name}").into();
        self.push(
            module,
            name,
            Arc::new(move |linker| {
                let f = f.clone();
                let label = label.clone();
                linker.func_wrap_async(&m, &n, move |caller: Caller<'_, DomainState>, p: P| {
                    let cx = CallContext::of(&caller);
                    let label = label.clone();
                    // Entered before the host code starts; left when it ends, or when a rude
                    // abort drops it.
                    let shield = match &cx.ctl {
                        Some(ctl) if shield => Some(HostCallShield::enter(ctl.clone())),
                        _ => None,
                    };
                    let made = std::panic::catch_unwind(AssertUnwindSafe(|| f(cx.clone(), p)));
                    Box::new(async move {
                        // The entry of an embedder's host function, failing as its own error
                        // would (a trap of the call naming it).
                        #[cfg(feature = "failpoints")]
                        warden_core::failpoint!(
                            "embedder-entry",
                            Err(wasmtime::format_err!(
                                "host function {label} failed: failpoint embedder-entry"
                            ))
                        );
                        let shield = shield
                            .transpose()
                            .map_err(|e| wasmtime::format_err!("host function {label}: {e}"))?;
                        let out = match made {
                            Ok(fut) => catch_unwind(fut).await,
                            Err(panic) => Err(panic_message(&*panic)),
                        };
                        if shield.is_some() {
                            drop(shield);
                            // The deferral just ended: a pending polite abort lands now.
                            if let Some(ctl) = &cx.ctl {
                                deliver_if_due(&cx.dom, ctl)?;
                            }
                        }
                        finish(&label, out)
                    })
                })?;
                Ok(())
            }),
        )
    }

    fn push(&mut self, module: &str, name: &str, link: Link) -> &mut Self {
        self.last = Some(Last::Func(self.entries.len()));
        self.entries.push(Entry {
            module: module.to_string(),
            name: name.to_string(),
            capability: DEFAULT_CAPABILITY,
            link,
        });
        self
    }

    /// Declares the [`Capability`] a guest's grant must hold to import the function or the
    /// component interface added last (before any is added, it does nothing):
    /// `host.func("kv", "put", put).requires(Capability::MayLeakOnAbort)`. Undeclared, it is
    /// [`DEFAULT_CAPABILITY`] (`host-state`). A later call replaces an earlier one.
    pub fn requires(&mut self, capability: Capability) -> &mut Self {
        match self.last {
            Some(Last::Func(i)) => self.entries[i].capability = capability,
            Some(Last::Component(i)) => self.components[i].capability = capability,
            None => {}
        }
        self
    }

    pub(super) fn mark_component(&mut self) {
        self.last = Some(Last::Component(self.components.len() - 1));
    }

    /// Whether `module::name` is one of these functions.
    pub fn provides(&self, module: &str, name: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.module == module && e.name == name)
    }

    /// The category of the core function `module::name`, if it is one of these.
    pub fn capability_of(&self, module: &str, name: &str) -> Option<Capability> {
        self.entries
            .iter()
            .find(|e| e.module == module && e.name == name)
            .map(|e| e.capability)
    }

    /// The category of a component import that is not Warden's: the one declared for the
    /// interface registered under that name (with or without its `@version`), else
    /// [`DEFAULT_CAPABILITY`] (whatever the embedder's link functions defined).
    pub fn component_capability(&self, interface: &str) -> Capability {
        let bare = interface.split('@').next().unwrap_or(interface);
        self.components
            .iter()
            .find(|c| c.interface() == interface || c.interface() == bare)
            .map_or(DEFAULT_CAPABILITY, |c| c.capability)
    }

    /// Links them all; an error names the function that could not be defined.
    pub(crate) fn link(&self, linker: &mut Linker<DomainState>) -> Result<(), Error> {
        for e in &self.entries {
            if e.module == super::imports::MODULE || e.module == "wasi_snapshot_preview1" {
                return Err(Error::Config(format!(
                    "host function {}::{}: module `{}` is Warden's own",
                    e.module, e.name, e.module
                )));
            }
            (e.link)(linker).map_err(|err| {
                Error::Config(format!("host function {}::{}: {err:#}", e.module, e.name))
            })?;
        }
        Ok(())
    }
}

/// Ends an uninterruptible host call when dropped.
struct HostCallShield(Arc<CallCtl>);

impl HostCallShield {
    fn enter(ctl: Arc<CallCtl>) -> Result<Self, warden_core::abort::TooDeep> {
        ctl.abort.host_enter()?;
        Ok(HostCallShield(ctl))
    }
}

impl Drop for HostCallShield {
    fn drop(&mut self) {
        let _ = self.0.abort.host_exit();
    }
}

/// The result of host code, as wasmtime wants it: errors and panics become a trap naming
/// the import.
fn finish<R>(label: &str, out: Result<Result<R, HostError>, String>) -> wasmtime::Result<R> {
    match out {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(wasmtime::format_err!("host function {label} failed: {e:#}")),
        Err(panic) => Err(wasmtime::format_err!(
            "host function {label} panicked: {panic}"
        )),
    }
}

pub(super) fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a non-string panic payload)".into())
}

/// Polls `fut`, turning a panic in it into an error.
pub(super) async fn catch_unwind<F: Future>(fut: F) -> Result<F::Output, String> {
    CatchUnwind(std::pin::pin!(fut)).await
}

/// Polls a future pinned elsewhere, turning a panic in it into an error. A struct over a
/// reference rather than an `async fn` taking the future: a call's state then holds the
/// guest's future once, not once more per wrapper (each copied when the call is boxed).
pub(crate) struct CatchUnwind<'a, F>(pub(crate) std::pin::Pin<&'a mut F>);

impl<F: Future> Future for CatchUnwind<'_, F> {
    type Output = Result<F::Output, String>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let fut = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(p) => std::task::Poll::Ready(Err(panic_message(&*p))),
        }
    }
}

/// The call an embedder host function runs in: ids, abort state, the domain's handle table
/// and the memory budget. Cheap to clone; may be kept across `.await`s.
#[derive(Clone)]
pub struct CallContext {
    dom: Arc<DomainShared>,
    ctl: Option<Arc<CallCtl>>,
}

impl CallContext {
    pub(super) fn new(dom: Arc<DomainShared>, ctl: Option<Arc<CallCtl>>) -> Self {
        CallContext { dom, ctl }
    }

    fn of(caller: &Caller<'_, DomainState>) -> Self {
        CallContext {
            dom: caller.data().dom.clone(),
            ctl: caller.data().call.clone(),
        }
    }

    /// The domain the call runs in.
    pub fn domain_id(&self) -> DomainId {
        self.dom.id
    }

    /// The call, when there is one (instantiation's start function runs as a call too, so
    /// this is `None` only for host code outside any call).
    pub fn call_id(&self) -> Option<CallId> {
        self.ctl.as_ref().map(|c| c.id)
    }

    /// Whether an abort is pending for the call (the guest's `abort_requested()`): a long
    /// host operation may check it and give up early.
    pub fn abort_requested(&self) -> bool {
        self.ctl
            .as_ref()
            .is_some_and(|c| c.abort.requested().is_some())
    }

    /// The process memory budget guests are charged against: gate the host work done on
    /// the guest's behalf with it ([`MemoryBudget::reserve`]).
    pub fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.dom.rt.budget
    }

    /// Puts a resource in the domain's handle table (see
    /// [`Domain::insert_handle`](crate::Domain::insert_handle)) and returns the handle for
    /// the guest.
    pub fn insert_handle<T: Any + Send + Sync>(
        &self,
        value: T,
        release: impl FnOnce(T) + Send + 'static,
    ) -> Result<u32, Error> {
        self.dom.insert_handle(value, release)
    }

    /// Borrows the resource behind a guest-given handle (see
    /// [`Domain::handle`](crate::Domain::handle)).
    pub fn handle<T: Any + Send + Sync>(&self, raw: u32) -> Result<HandleGuard<T>, Error> {
        self.dom.handle(raw)
    }

    /// Closes a handle (see [`Domain::close_handle`](crate::Domain::close_handle)).
    pub fn close_handle(&self, raw: u32) -> Result<(), Error> {
        Ok(self.dom.handles.close(raw)?)
    }

    /// Awaits `work` as an uninterruptible host call (what
    /// [`HostFunctions::func_async_uninterruptible`] does for a whole core function; for a
    /// component host function, the part that must not be cut half-way): a polite abort is
    /// deferred until `work` ends and is delivered then, as this function's `Err`, which the
    /// host function must return (`?`) for the abort to land. A rude abort still drops it.
    pub async fn uninterruptible<F: Future>(&self, work: F) -> Result<F::Output, HostError> {
        let shield = match &self.ctl {
            Some(ctl) => Some(
                HostCallShield::enter(ctl.clone())
                    .map_err(|e| wasmtime::format_err!("uninterruptible host call: {e}"))?,
            ),
            None => None,
        };
        let out = work.await;
        drop(shield);
        if let Some(ctl) = &self.ctl {
            deliver_if_due(&self.dom, ctl)?;
        }
        Ok(out)
    }
}

/// What a synchronous host function sees: the call (as [`CallContext`] does) and the guest's
/// exported `memory`.
pub struct HostContext<'a> {
    caller: Caller<'a, DomainState>,
}

impl HostContext<'_> {
    /// The call's context (an owned copy, for handing to other host code).
    pub fn call(&self) -> CallContext {
        CallContext::of(&self.caller)
    }

    /// The domain the call runs in.
    pub fn domain_id(&self) -> DomainId {
        self.caller.data().dom.id
    }

    /// The call (see [`CallContext::call_id`]).
    pub fn call_id(&self) -> Option<CallId> {
        self.caller.data().call.as_ref().map(|c| c.id)
    }

    /// Whether an abort is pending for the call.
    pub fn abort_requested(&self) -> bool {
        self.caller
            .data()
            .call
            .as_ref()
            .is_some_and(|c| c.abort.requested().is_some())
    }

    /// The process memory budget (see [`CallContext::memory_budget`]).
    pub fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.caller.data().dom.rt.budget
    }

    /// Copies `len` bytes at `ptr` out of the guest's exported `memory`; an error (naming the
    /// range) when the guest exports none or the range is out of bounds.
    pub fn read_memory(&mut self, ptr: u32, len: u32) -> Result<Vec<u8>, HostError> {
        let memory = self.memory()?;
        let data = memory.data(&self.caller);
        let (start, end) = (ptr as usize, ptr as usize + len as usize);
        data.get(start..end).map(<[u8]>::to_vec).ok_or_else(|| {
            wasmtime::format_err!(
                "guest memory range {ptr}..{end} is out of bounds ({} bytes)",
                data.len()
            )
        })
    }

    /// Copies `bytes` into the guest's exported `memory` at `ptr`; an error when the range
    /// is out of bounds.
    pub fn write_memory(&mut self, ptr: u32, bytes: &[u8]) -> Result<(), HostError> {
        let memory = self.memory()?;
        let data = memory.data_mut(&mut self.caller);
        let (start, end) = (ptr as usize, ptr as usize + bytes.len());
        let len = data.len();
        data.get_mut(start..end)
            .ok_or_else(|| {
                wasmtime::format_err!(
                    "guest memory range {ptr}..{end} is out of bounds ({len} bytes)"
                )
            })?
            .copy_from_slice(bytes);
        Ok(())
    }

    fn memory(&mut self) -> Result<wasmtime::Memory, HostError> {
        self.caller
            .get_export("memory")
            .and_then(|e| e.into_memory())
            .ok_or_else(|| wasmtime::format_err!("the guest exports no `memory`"))
    }
}

/// Parameter lists a synchronous host function can take: tuples of up to six `i32`, `i64`,
/// `f32` or `f64` (and `()`).
pub trait HostParams: Sized + Send + 'static {
    #[doc(hidden)]
    fn link<T: 'static, R, W>(
        linker: &mut Linker<T>,
        module: &str,
        name: &str,
        w: W,
    ) -> wasmtime::Result<()>
    where
        R: wasmtime::WasmRet,
        W: Fn(Caller<'_, T>, Self) -> wasmtime::Result<R> + Send + Sync + 'static;
}

/// Runs a synchronous host function: its errors and panics become a trap naming it.
fn run_sync<P, R, F>(
    label: &str,
    caller: Caller<'_, DomainState>,
    p: P,
    f: &F,
) -> wasmtime::Result<R>
where
    F: Fn(&mut HostContext<'_>, P) -> Result<R, HostError>,
{
    #[cfg(feature = "failpoints")]
    warden_core::failpoint!(
        "embedder-entry",
        Err(wasmtime::format_err!(
            "host function {label} failed: failpoint embedder-entry"
        ))
    );
    let mut cx = HostContext { caller };
    let out = std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut cx, p)))
        .map_err(|panic| panic_message(&*panic));
    finish(label, out)
}

macro_rules! host_params {
    ($($a:ident)*) => {
        #[allow(non_snake_case, reason = "macro-generated code")]
        impl<$($a),*> HostParams for ($($a,)*)
        where
            $($a: wasmtime::WasmTy + Send + 'static,)*
        {
            fn link<T: 'static, R, W>(
                linker: &mut Linker<T>,
                module: &str,
                name: &str,
                w: W,
            ) -> wasmtime::Result<()>
            where
                R: wasmtime::WasmRet,
                W: Fn(Caller<'_, T>, Self) -> wasmtime::Result<R> + Send + Sync + 'static,
            {
                linker.func_wrap(
                    module,
                    name,
                    move |caller: Caller<'_, T>, $($a: $a),*| -> wasmtime::Result<R> {
                        w(caller, ($($a,)*))
                    },
                )?;
                Ok(())
            }
        }
    };
}

host_params!();
host_params!(A1);
host_params!(A1 A2);
host_params!(A1 A2 A3);
host_params!(A1 A2 A3 A4);
host_params!(A1 A2 A3 A4 A5);
host_params!(A1 A2 A3 A4 A5 A6);
