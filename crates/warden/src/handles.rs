//! A domain's handle table: host resources the domain's guest names by opaque `u32` handles
//! (DESIGN §2 "Handles", the CLR's `SafeHandle`).
//!
//! Every domain owns one [`HandleTable`] with a quota of
//! [`DomainConfig::max_handles`](crate::DomainConfig::max_handles) live handles. The embedder
//! puts its own resources in it with [`Domain::insert_handle`] and hands the returned `u32` to
//! the guest (as a call argument or result); the guest gives it back later, and the host
//! resolves it again with [`Domain::handle`] or [`Domain::with_handle`]. A stale or forged
//! value resolves to an error, never to another resource. The guest may close a handle with
//! the `handle_close(h i32) -> i32` import (`0`, or `-8` for a stale, forged or foreign value;
//! a Warden addition to DESIGN §4).
//!
//! - **Each use holds a reference.** [`Domain::handle`] returns a [`HandleGuard`] that keeps
//!   the resource alive until it is dropped, even if the handle is closed meanwhile (by the
//!   guest's `handle_close`, by [`Domain::close_handle`], or by unload).
//! - **Close drops the owner's reference**: [`Domain::close_handle`] from the host, the
//!   `handle_close` import from the guest.
//! - **Release runs exactly once, when the last reference goes**, on the thread that drops it.
//!   Release functions are trusted host code: synchronous and bounded (close a descriptor, free
//!   a buffer), never a wait for a guest or the network. They are never timed out.
//! - **Unload closes every handle** in the critical release, after the guest's finalizer
//!   (which may still use its handles) and before the store is dropped. A handle borrowed by
//!   host code at that moment is released when that use ends: a use is never cut short.
//!
//! Every release emits a `handle_released` event. The table is also dropped (closing whatever
//! is open) when the domain's last reference goes, so even a domain whose unload never ran —
//! its tokio runtime shut down under it — releases its handles.
//!
//! Where the promise ends: a [`HandleGuard`] kept forever (or `mem::forget`-ed) keeps its
//! resource forever; the handle values' scrambling is not a secret (see
//! [`warden_core::handles`]).

use std::any::Any;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use warden_core::handles::{Handle, HandleError, HandleRef, HandleTable};

use crate::call::CallError;
use crate::domain::{Domain, DomainShared};
use crate::error::Error;
use crate::events::EventKind;
use crate::ids::DomainId;
use crate::runtime::RuntimeInner;

/// What a domain's table holds: any host resource.
type Resource = Box<dyn Any + Send + Sync>;

/// A domain's handle table and whether its critical release has begun.
pub(crate) struct DomainHandles {
    table: HandleTable<Resource>,
    /// Set once, at the critical release; inserts after it are refused.
    closed: AtomicBool,
}

impl DomainHandles {
    /// A table with `quota` live handles whose releases are reported as `handle_released`.
    pub(crate) fn new(quota: usize, domain: DomainId, rt: Weak<RuntimeInner>) -> DomainHandles {
        let table = HandleTable::new(quota);
        table.set_release_observer(Arc::new(move |h: Handle| {
            // Weak: a guard that outlives the runtime must not keep it alive.
            if let Some(rt) = rt.upgrade() {
                rt.events
                    .emit(Some(domain), None, || EventKind::HandleReleased {
                        handle: h.to_raw(),
                    });
            }
        }));
        DomainHandles {
            table,
            closed: AtomicBool::new(false),
        }
    }

    /// Whether no handle is live: releasing them would run no embedder code.
    pub(crate) fn none_live(&self) -> bool {
        self.table.live() == 0
    }

    /// The guest's `handle_close`: drops the owner's reference.
    pub(crate) fn close(&self, raw: u32) -> Result<(), HandleError> {
        self.table.close(Handle::from_raw(raw))
    }
}

impl DomainHandles {
    /// Critical release of handles: refuses further inserts and closes every open handle.
    /// Each one is released now, or when the host use that borrows it ends. Returns how many
    /// handles were closed. Runs after all guest code of the domain (see `release.rs`).
    pub(crate) fn release_all(&self) -> u64 {
        // SeqCst pairs with `insert_handle`'s check after inserting: an insert racing this
        // either is closed by `close_all` below or sees `closed` and closes itself.
        self.closed.store(true, Ordering::SeqCst);
        self.table.close_all() as u64
    }
}

impl DomainShared {
    /// See [`Domain::insert_handle`].
    pub(crate) fn insert_handle<T: Any + Send + Sync>(
        &self,
        value: T,
        release: impl FnOnce(T) + Send + 'static,
    ) -> Result<u32, Error> {
        let handles = &self.handles;
        if handles.closed.load(Ordering::SeqCst) {
            release(value);
            return Err(Error::Call(CallError::DomainUnloaded));
        }
        let handle = handles.table.insert(Box::new(value), move |resource| {
            // The table holds only what was inserted here, so the downcast cannot fail.
            if let Ok(value) = resource.downcast::<T>() {
                release(*value);
            }
        })?;
        if handles.closed.load(Ordering::SeqCst) {
            // Unload's critical release ran meanwhile and may have missed this handle: close
            // it here (if `close_all` got it first, this is a harmless `Stale`).
            let _ = handles.table.close(handle);
            return Err(Error::Call(CallError::DomainUnloaded));
        }
        Ok(handle.to_raw())
    }

    /// See [`Domain::handle`].
    pub(crate) fn handle<T: Any + Send + Sync>(&self, raw: u32) -> Result<HandleGuard<T>, Error> {
        let reference = self.handles.table.borrow(Handle::from_raw(raw))?;
        if !reference.is::<T>() {
            return Err(Error::HandleType {
                handle: raw,
                expected: std::any::type_name::<T>(),
            });
        }
        Ok(HandleGuard {
            reference,
            _type: PhantomData,
        })
    }
}

impl Domain {
    /// Puts an embedder resource in the domain's handle table and returns the handle value
    /// to give the guest. `release` runs exactly once with the value: when the handle has
    /// been closed (by [`close_handle`](Self::close_handle), the guest's `handle_close`, or
    /// unload) and no [`HandleGuard`] to it remains.
    ///
    /// `release` must be synchronous and bounded; it runs on whichever thread drops the last
    /// reference, possibly a runtime worker, and is never timed out.
    ///
    /// Fails with [`Error::Handle`] when the domain's quota
    /// ([`DomainConfig::max_handles`](crate::DomainConfig::max_handles)) is reached, and with
    /// [`CallError::DomainUnloaded`] once unload's critical release has begun. In both cases
    /// `release` has already run: a resource handed to a domain is never leaked.
    pub fn insert_handle<T: Any + Send + Sync>(
        &self,
        value: T,
        release: impl FnOnce(T) + Send + 'static,
    ) -> Result<u32, Error> {
        self.shared.insert_handle(value, release)
    }

    /// Closes a handle: drops the owner's reference. Its release runs now if no
    /// [`HandleGuard`] borrows it, otherwise when the last guard is dropped.
    ///
    /// Fails with [`Error::Handle`] for a handle that is already closed (so of two racing
    /// closes exactly one succeeds) or was never issued by this domain.
    pub fn close_handle(&self, raw: u32) -> Result<(), Error> {
        Ok(self.shared.handles.close(raw)?)
    }

    /// Borrows the resource behind `raw` for the duration of one use: the returned guard
    /// derefs to it and keeps it alive (its release waits) until dropped, even if the handle
    /// is closed or the domain unloaded meanwhile. Drop the guard when the use is done; it is
    /// `Send`, so a use may span `.await` points.
    ///
    /// Fails with [`Error::Handle`] for a stale or forged value and [`Error::HandleType`]
    /// when the resource is not a `T`.
    pub fn handle<T: Any + Send + Sync>(&self, raw: u32) -> Result<HandleGuard<T>, Error> {
        self.shared.handle(raw)
    }

    /// Runs `f` on the resource behind `raw`, holding a reference for exactly that long
    /// (see [`handle`](Self::handle)).
    pub fn with_handle<T: Any + Send + Sync, R>(
        &self,
        raw: u32,
        f: impl FnOnce(&T) -> R,
    ) -> Result<R, Error> {
        let guard = self.handle::<T>(raw)?;
        Ok(f(&guard))
    }

    /// Handles not yet closed.
    pub fn handles_open(&self) -> usize {
        self.shared.handles.table.open()
    }

    /// Handles not yet released: open ones plus closed ones still borrowed. This is what
    /// [`DomainConfig::max_handles`](crate::DomainConfig::max_handles) bounds; after unload
    /// it reaches 0 once the last [`HandleGuard`] is dropped.
    pub fn handles_live(&self) -> usize {
        self.shared.handles.table.live()
    }
}

/// One use of a domain's handle: derefs to the resource, which is not released while the
/// guard lives. Obtained from [`Domain::handle`].
pub struct HandleGuard<T: Any + Send + Sync> {
    reference: HandleRef<Resource>,
    _type: PhantomData<fn() -> T>,
}

impl<T: Any + Send + Sync> HandleGuard<T> {
    /// The handle value this guard was borrowed through.
    pub fn raw(&self) -> u32 {
        self.reference.handle().to_raw()
    }
}

impl<T: Any + Send + Sync> std::ops::Deref for HandleGuard<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self.reference.downcast_ref::<T>() {
            Some(value) => value,
            // `Domain::handle` checked the type, and a resource never changes type.
            None => unreachable!("a HandleGuard's resource is checked to be a T"),
        }
    }
}

impl<T: Any + Send + Sync> std::fmt::Debug for HandleGuard<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandleGuard")
            .field("handle", &format_args!("{:#010x}", self.raw()))
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}
