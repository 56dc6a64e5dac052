//! The embedder's host functions for component guests, typed from the embedder's own WIT by
//! `wasmtime::component::bindgen!`.
//!
//! The embedder runs `bindgen!` over its WIT, implements the generated `Host` trait for
//! [`ComponentHost<'_, S>`] (its own per-domain state `S`, with the call's context beside it),
//! and registers the generated `add_to_linker` with [`HostFunctions::component`]. Every
//! component domain then gets a fresh `S` from the factory given there, and the interface
//! linked:
//!
//! ```
//! mod bindings {
//!     wasmtime::component::bindgen!({
//!         path: "examples/wit/kv.wit",
//!         world: "plugin",
//!         imports: { "my:kv/store.wait": async, default: trappable },
//!     });
//! }
//! use bindings::my::kv::store;
//! use warden::host::{ComponentHost, Embedded, HostFunctions};
//!
//! /// One domain's view of the store.
//! #[derive(Default)]
//! struct Kv {
//!     map: std::collections::HashMap<String, String>,
//! }
//!
//! impl store::Host for ComponentHost<'_, Kv> {
//!     fn get(&mut self, key: String) -> wasmtime::Result<Result<String, String>> {
//!         Ok(self.map.get(&key).cloned().ok_or(format!("no key `{key}`")))
//!     }
//!     // Async: a deadline or an abort ends the wait (the future is dropped).
//!     async fn wait(&mut self, ms: u64) {
//!         tokio::time::sleep(std::time::Duration::from_millis(ms)).await
//!     }
//! }
//!
//! let mut host = HostFunctions::new();
//! host.component(
//!     "my:kv/store",
//!     |_domain| Kv::default(),
//!     |linker, get| store::add_to_linker::<_, Embedded<Kv>>(linker, get),
//! );
//! let rt = warden::Runtime::new(warden::RuntimeConfig {
//!     host_functions: host,
//!     ..Default::default()
//! })?;
//! # drop(rt);
//! # Ok::<(), warden::Error>(())
//! ```
//!
//! # What each guarantee covers
//!
//! - **State is per domain.** The factory runs once per component domain, at
//!   `create_domain`, before any guest code; the state is dropped with the domain's store (after
//!   the critical release). A factory that panics fails `create_domain` with
//!   [`Error::Config`] naming the interface. Core-module domains get no state.
//! - **A missing import fails `create_domain`**: a component importing an interface nobody
//!   linked fails with [`Error::Instantiate`], whose message names the import.
//! - **Async functions are abortable.** While a guest is parked in an async host function
//!   (one `bindgen!` made `async`), a deliverable abort — a deadline, `abort()`, an unload —
//!   drops the call future at the function's next `.await`, exactly as for a core
//!   [`HostFunctions::func_async`]; write those functions cancel-safe. For code that must
//!   not be cut half-way, await it in [`CallContext::uninterruptible`]: a polite abort is
//!   deferred until it returns, as [`HostFunctions::func_async_uninterruptible`] does (a rude
//!   abort still drops it).
//! - **Errors and panics fail the call only.** A `trappable` function's `Err` traps the call
//!   with its message; a panic in any of them (sync or async) is caught where the call future
//!   is polled and becomes a trap (`a host function panicked: …`). Either way, as for every
//!   component trap, the instance cannot be entered again, so the domain is unloaded after
//!   the call (see [`component`](crate::component)); other domains and the process carry on.
//! - **Synchronous functions are not interrupted** while they run; keep them short, as for
//!   core ones.
//!
//! Where it ends: an interface is linked for every component domain of the runtime (a grant
//! does not filter embedder interfaces; capabilities are checked for core modules only), and
//! `S` must be `Send` (the store moves between threads).

use std::any::{Any, TypeId};
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use super::embedder::{CallContext, HostFunctions};
use crate::call::CallCtl;
use crate::domain::{DomainShared, DomainState};
use crate::error::Error;
use crate::ids::DomainId;

/// The component linker embedder interfaces are linked into.
pub type ComponentLinker = wasmtime::component::Linker<DomainState>;

/// The getter Warden hands an interface's `add_to_linker`: from the store's data to the
/// embedder's state of type `S` and the call's context.
pub type Getter<S> = for<'a> fn(&'a mut DomainState) -> ComponentHost<'a, S>;

type Make = Arc<dyn Fn(DomainId) -> Box<dyn Any + Send> + Send + Sync>;
type LinkComponent = Arc<dyn Fn(&mut ComponentLinker) -> wasmtime::Result<()> + Send + Sync>;

/// One registered embedder interface.
#[derive(Clone)]
pub(crate) struct ComponentEntry {
    interface: String,
    /// What a guest's grant must hold to import it ([`HostFunctions::requires`]).
    pub(super) capability: crate::capability::Capability,
    state: TypeId,
    make: Make,
    link: LinkComponent,
}

impl ComponentEntry {
    pub(super) fn interface(&self) -> &str {
        &self.interface
    }
}

/// [`wasmtime::component::HasData`] for an embedder's state `S`: what `bindgen!`'s
/// `add_to_linker::<_, Embedded<S>>` needs to reach [`ComponentHost<'_, S>`].
pub struct Embedded<S>(PhantomData<fn() -> S>);

impl<S: Send + 'static> wasmtime::component::HasData for Embedded<S> {
    type Data<'a> = ComponentHost<'a, S>;
}

/// What an embedder's component host function runs on: the domain's own `S` (also reached
/// through `Deref`) and the call it serves.
pub struct ComponentHost<'a, S> {
    state: &'a mut S,
    dom: &'a Arc<DomainShared>,
    call: &'a Option<Arc<CallCtl>>,
}

impl<S> ComponentHost<'_, S> {
    /// The domain's state.
    pub fn state(&mut self) -> &mut S {
        self.state
    }

    /// The call's context (owned; it may be kept across `.await`s and handed on).
    pub fn call(&self) -> CallContext {
        CallContext::new(self.dom.clone(), self.call.clone())
    }

    /// The domain the call runs in.
    pub fn domain_id(&self) -> DomainId {
        self.dom.id
    }

    /// Whether an abort is pending for the call (see [`CallContext::abort_requested`]).
    pub fn abort_requested(&self) -> bool {
        self.call
            .as_ref()
            .is_some_and(|c| c.abort.requested().is_some())
    }
}

impl<S> std::ops::Deref for ComponentHost<'_, S> {
    type Target = S;
    fn deref(&self) -> &S {
        self.state
    }
}

impl<S> std::ops::DerefMut for ComponentHost<'_, S> {
    fn deref_mut(&mut self) -> &mut S {
        self.state
    }
}

/// The embedder states of one component domain, one per registered state type.
#[derive(Default)]
pub(crate) struct EmbedderStates(Vec<(TypeId, Box<dyn Any + Send>)>);

/// The getter for `S`. Linked only through [`HostFunctions::component`], which registers a
/// factory for `S`, and every component store is made with all the factories' states: the
/// state is always there.
fn get<S: Send + 'static>(st: &mut DomainState) -> ComponentHost<'_, S> {
    // Failpoint: the entry of an embedder's component function (every `bindgen!` function
    // starts by calling this getter). A getter cannot return an error, so it fails as a
    // panicking host function does: a trap of that call (`contain_panics`). Unwound without
    // the panic hook, so a stress run's stderr stays quiet.
    #[cfg(feature = "failpoints")]
    if warden_core::failpoints::eval("component-embedder-entry") {
        std::panic::resume_unwind(Box::new("failpoint component-embedder-entry"));
    }
    let DomainState {
        embedder,
        dom,
        call,
        ..
    } = st;
    let state = embedder
        .0
        .iter_mut()
        .find(|(t, _)| *t == TypeId::of::<S>())
        .and_then(|(_, s)| s.downcast_mut::<S>())
        .expect("every component store holds a state of each registered type");
    ComponentHost { state, dom, call }
}

impl HostFunctions {
    /// Adds an embedder interface for component guests: `link` is given the runtime's
    /// component linker and the getter for `S`, and calls the `add_to_linker` that
    /// `bindgen!` generated (`|l, get| my::kv::store::add_to_linker::<_, Embedded<S>>(l, get)`;
    /// a world's `add_to_linker` works the same way). `state` makes each component domain's
    /// `S`. `interface` names it in errors.
    ///
    /// Several interfaces may share one state type: each domain then holds one `S`, made by
    /// the factory registered first. An interface already defined (WASI's, `warden:host`, or
    /// one added twice) makes [`Runtime::new`](crate::Runtime::new) fail naming it.
    ///
    /// A guest's grant must hold the interface's category to import it: `host-state` unless
    /// [`requires`](HostFunctions::requires) follows this call.
    pub fn component<S, M, L>(&mut self, interface: &str, state: M, link: L) -> &mut Self
    where
        S: Send + 'static,
        M: Fn(DomainId) -> S + Send + Sync + 'static,
        L: Fn(&mut ComponentLinker, Getter<S>) -> wasmtime::Result<()> + Send + Sync + 'static,
    {
        self.components.push(ComponentEntry {
            interface: interface.to_string(),
            capability: super::embedder::DEFAULT_CAPABILITY,
            state: TypeId::of::<S>(),
            make: Arc::new(move |id| Box::new(state(id))),
            link: Arc::new(move |linker| link(linker, get::<S>)),
        });
        self.mark_component();
        self
    }

    /// Links every embedder interface; an error names the one that could not be.
    pub(crate) fn link_components(&self, linker: &mut ComponentLinker) -> Result<(), Error> {
        for e in &self.components {
            (e.link)(linker).map_err(|err| {
                Error::Config(format!(
                    "component host interface `{}`: {err:#}",
                    e.interface
                ))
            })?;
        }
        Ok(())
    }

    /// A component domain's states, one per state type (the first factory for each).
    pub(crate) fn make_states(&self, id: DomainId) -> Result<EmbedderStates, Error> {
        let mut states = EmbedderStates::default();
        for e in &self.components {
            if states.0.iter().any(|(t, _)| *t == e.state) {
                continue;
            }
            let made =
                std::panic::catch_unwind(AssertUnwindSafe(|| (e.make)(id))).map_err(|p| {
                    Error::Config(format!(
                        "component host interface `{}`: its state factory panicked: {}",
                        e.interface,
                        super::embedder::panic_message(&*p)
                    ))
                })?;
            states.0.push((e.state, made));
        }
        Ok(states)
    }
}

/// Polls a component's guest code, turning a panic in a host function into an error (a trap
/// of that call): `bindgen!`-generated host functions are not wrapped by Warden, and wasmtime
/// resumes their panics where the call future is polled. The guest's future is pinned by the
/// caller (see [`CatchUnwind`](super::embedder::CatchUnwind)).
pub(crate) fn contain_panics<T, F>(fut: std::pin::Pin<&mut F>) -> ContainPanics<'_, F>
where
    F: std::future::Future<Output = wasmtime::Result<T>>,
{
    ContainPanics(super::embedder::CatchUnwind(fut))
}

/// The future of [`contain_panics`].
pub(crate) struct ContainPanics<'a, F>(super::embedder::CatchUnwind<'a, F>);

impl<T, F> std::future::Future for ContainPanics<'_, F>
where
    F: std::future::Future<Output = wasmtime::Result<T>>,
{
    type Output = wasmtime::Result<T>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| match r {
            Ok(r) => r,
            Err(panic) => Err(wasmtime::format_err!("a host function panicked: {panic}")),
        })
    }
}
