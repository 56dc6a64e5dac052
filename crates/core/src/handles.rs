//! Handle tables: generation-checked, reference-counted host resources (the SafeHandle model).
//!
//! A guest never holds a host resource directly. It holds a [`Handle`]: an opaque `u32` that names
//! an entry in its domain's [`HandleTable`]. The host resolves that number on every use, so a guest
//! can pass any number it likes and the worst it gets back is a [`HandleError`].
//!
//! # The model
//!
//! Every entry has a **value** (the resource, any `T: Send + Sync`) and a **release function**
//! (`FnOnce(T)`), given together to [`HandleTable::insert`]. The entry is reference-counted:
//!
//! - The **owner's reference** is created by `insert` and dropped by [`HandleTable::close`] (or
//!   [`HandleTable::close_all`] when the domain unloads). An entry is *open* until then.
//! - Each **use** holds a reference: [`HandleTable::borrow`] returns a [`HandleRef`] that derefs to
//!   the value and keeps it alive until the `HandleRef` is dropped. A host function borrows the
//!   handle for the duration of its work and drops the `HandleRef` when done.
//! - The **release function runs exactly once, when the last reference goes**: inside `close` if
//!   nothing is borrowed, otherwise on the thread that drops the last `HandleRef`. Until then the
//!   entry is *live* and counts against the quota.
//!
//! This is the CLR's `SafeHandle`: closing a resource while another thread is using it does not
//! free it under that thread's feet, and no interleaving of `close`, `close_all`, `borrow` and
//! `HandleRef` drops can release it twice or not at all (the last reference is decided by
//! [`Arc::into_inner`], which hands the value to exactly one caller).
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use warden_core::handles::{HandleError, HandleTable};
//!
//! let table = HandleTable::new(16);
//! let released = Arc::new(AtomicUsize::new(0));
//! let counter = released.clone();
//! let h = table.insert(String::from("socket 7"), move |_s| {
//!     counter.fetch_add(1, Ordering::SeqCst);
//! })?;
//!
//! let guest_value = h.to_raw(); // what the guest sees
//! let in_use = table.borrow(warden_core::handles::Handle::from_raw(guest_value))?;
//! table.close(h)?; // the owner lets go while a use is in flight...
//! assert_eq!(released.load(Ordering::SeqCst), 0); // ...so nothing is released yet
//! assert_eq!(&*in_use, "socket 7");
//! drop(in_use); // the last reference: the release runs here
//! assert_eq!(released.load(Ordering::SeqCst), 1);
//! assert_eq!(table.borrow(h).unwrap_err(), HandleError::Stale);
//! # Ok::<(), HandleError>(())
//! ```
//!
//! # Handle values
//!
//! A handle encodes a **slot** (an index into the table) and that slot's **generation** (bumped
//! each time the slot is reused). A closed handle's slot may be reused at once, but with a new
//! generation, so the old value is [`HandleError::Stale`], never the new resource. A slot whose
//! generation would wrap is **retired** instead: no `(slot, generation)` pair is ever issued twice
//! by one table, so an old value can never name a new resource.
//!
//! The `(slot, generation)` number is then scrambled by a keyed permutation of the non-zero `u32`s
//! (a small Feistel network), with a key chosen at random per table ([`HandleTable::new`]) or given
//! ([`HandleTable::with_key`]). This is what makes a handle from another domain's table fail: it
//! unscrambles to a slot and generation the receiving table has almost certainly never issued, so
//! it is rejected (as `Invalid`, or in rare cases `Stale`). It also spreads handle values over the
//! whole `u32` range, so guests cannot guess a neighbour's handle by adding one. `0` is never a
//! handle.
//!
//! # Where the promise ends
//!
//! - **The scramble is not a secret.** Rejecting a handle from another table is probabilistic:
//!   a foreign value is accepted only if it happens to equal one of this table's open handles,
//!   a chance of about `open / 2^32` per try. Isolation between domains rests on each domain
//!   resolving handles only through its own table, not on the key.
//! - **`Invalid` versus `Stale` is a diagnosis, not a proof.** `Invalid` means this table never
//!   issued the value. `Stale` means the value names a slot and generation this table issued and
//!   has since closed; a forged value can land there by chance. Both are errors and neither
//!   resolves to a resource.
//! - **A table's handle values are finite.** Over its lifetime a table issues at most about
//!   2^32 handles (every `(slot, generation)` pair once). After that, [`HandleTable::insert`]
//!   fails with [`HandleError::Exhausted`]; a domain that churns that many handles has to be
//!   reloaded. As slots retire near the end of that lifetime the table may run out of slots before
//!   it reaches its quota.
//! - **Release functions are trusted host code.** They are never timed out (a release is the
//!   critical finalizer of a resource) and run on whatever thread drops the last reference,
//!   including a tokio worker, so they must be synchronous and bounded: close a descriptor, free a
//!   buffer, send on a channel; never wait for a guest, a lock held by a guest, or the network.
//!   A panicking release function is caught (with `panic = "unwind"`), counted in
//!   [`HandleTable::release_panics`] and logged; the entry still counts as released and the
//!   table and all other releases carry on. With `panic = "abort"` the process aborts.
//! - **Leaked references are leaks.** A `HandleRef` passed to `std::mem::forget` keeps its entry
//!   live forever; its release never runs.
//!
//! # Quota and memory
//!
//! The quota bounds **live** handles: open ones plus closed ones still borrowed (not yet
//! released). A value whose `insert` is refused (quota, exhaustion) is released at once, so a
//! resource handed to the table can never leak. The table's storage is bounded by its quota, not
//! by how many handles it has issued: freed slots are reused (first-in first-out, so a closed
//! slot waits as long as possible before its next generation), and a table never has more than
//! [`HandleTable::allocated_slots`] `<= max(16, 4 × quota)` slots, retired ones included.
//!
//! # Concurrency
//!
//! A table is `Send + Sync`; share it by reference or in an `Arc`. One short internal mutex
//! guards the slots; it is never held while a release function or the release observer runs,
//! so both may call back into the table (insert, borrow, close, even `close_all`).
//! [`HandleRef`] is `Send`: a use can move between threads or across `.await` points.

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The largest quota a table accepts; [`HandleTable::new`] clamps larger quotas to it.
///
/// A handle is 32 bits; reserving enough slot bits for more concurrent handles would leave too
/// few generation bits per slot.
pub const MAX_QUOTA: usize = 1 << 23;

/// Fewest slot bits a table uses, so small tables still have spare slots to retire into.
const MIN_SLOT_BITS: u32 = 4;
/// Most slot bits a table uses (for [`MAX_QUOTA`]), leaving at least 8 generation bits.
const MAX_SLOT_BITS: u32 = 24;

/// A guest-visible handle: an opaque `u32` naming an entry in one [`HandleTable`].
///
/// A `Handle` is only a number. Any `u32` converts to a `Handle`; whether it names anything is
/// decided by the table it is presented to ([`HandleTable::borrow`], [`HandleTable::close`]).
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct Handle(u32);

impl Handle {
    /// The value to hand to the guest.
    pub fn to_raw(self) -> u32 {
        self.0
    }

    /// A handle from a value the guest passed in. Every `u32` is accepted here; the table checks
    /// validity on use, so a forged value becomes an error there, never a resource.
    pub fn from_raw(raw: u32) -> Handle {
        Handle(raw)
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({:#010x})", self.0)
    }
}

/// Why a handle operation failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The value was never issued by this table: `0`, forged, or from another domain's table.
    #[error("invalid handle: this table never issued it (zero, forged, or another domain's)")]
    Invalid,
    /// The value was issued by this table but has been closed; its resource is released or
    /// about to be, and it will never name another resource.
    #[error("stale handle: it has been closed and can no longer be used")]
    Stale,
    /// The table already holds `quota` live handles (open, or closed but still borrowed).
    #[error("handle quota exceeded: at most {quota} live handles; close some before opening more")]
    QuotaExceeded {
        /// The table's quota.
        quota: usize,
    },
    /// The table has issued every handle value it can (about 2^32 over its lifetime) and has
    /// no slot left to issue from.
    #[error("handle table exhausted: every handle value has been used; reload the domain")]
    Exhausted,
}

/// A callback told about each release, after the release function returns.
pub type ReleaseObserver = Arc<dyn Fn(Handle) + Send + Sync>;

type ReleaseFn<T> = Box<dyn FnOnce(T) + Send>;

/// How a table splits the 32 bits between slot and generation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Layout {
    slot_bits: u32,
    gen_bits: u32,
}

impl Layout {
    /// Twice as many slots as the quota needs (at least 16): the spare slots take over from
    /// retired ones, so the quota stays reachable for most of the table's lifetime.
    fn for_quota(quota: usize) -> Layout {
        let needed = usize::BITS - quota.saturating_sub(1).leading_zeros();
        let slot_bits = (needed + 1).clamp(MIN_SLOT_BITS, MAX_SLOT_BITS);
        Layout {
            slot_bits,
            gen_bits: 32 - slot_bits,
        }
    }

    fn slot_capacity(self) -> usize {
        1usize << self.slot_bits
    }

    fn max_gen(self) -> u32 {
        ((1u64 << self.gen_bits) - 1) as u32
    }

    /// `gen >= 1`, so the result is never 0.
    fn pack(self, slot: u32, generation: u32) -> u32 {
        (generation << self.slot_bits) | slot
    }

    fn unpack(self, plain: u32) -> Option<(usize, u32)> {
        let used = self.slot_bits + self.gen_bits;
        if used < 32 && plain >> used != 0 {
            return None;
        }
        let slot = plain & ((1u32 << self.slot_bits) - 1);
        Some((slot as usize, plain >> self.slot_bits))
    }
}

/// A keyed permutation of the non-zero `u32`s: a four-round Feistel network over 16-bit halves,
/// with cycle walking so that 0 maps only to 0.
#[derive(Copy, Clone)]
struct Scramble {
    round_keys: [u32; 4],
}

impl Scramble {
    fn new(key: u64) -> Scramble {
        let mut state = key;
        let mut next = || {
            // splitmix64: spreads any key, even 0 or 1, over all round-key bits.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u32
        };
        Scramble {
            round_keys: [next(), next(), next(), next()],
        }
    }

    fn round(half: u32, key: u32) -> u32 {
        let mut y = (half ^ key).wrapping_mul(0x7feb_352d);
        y ^= y >> 15;
        y = y.wrapping_mul(0x846c_a68b);
        y >> 16
    }

    fn feistel(self, x: u32) -> u32 {
        let (mut l, mut r) = (x >> 16, x & 0xffff);
        for k in self.round_keys {
            (l, r) = (r, l ^ Self::round(r, k));
        }
        (l << 16) | r
    }

    fn feistel_inverse(self, x: u32) -> u32 {
        let (mut l, mut r) = (x >> 16, x & 0xffff);
        for k in self.round_keys.into_iter().rev() {
            (l, r) = (r ^ Self::round(l, k), l);
        }
        (l << 16) | r
    }

    /// 0 maps to 0; other values are permuted among themselves by cycle walking (if the
    /// Feistel lands on 0, apply it once more: the value before 0 in its cycle takes the value
    /// after it), so an issued handle is never 0.
    fn encode(self, plain: u32) -> u32 {
        if plain == 0 {
            return 0;
        }
        match self.feistel(plain) {
            0 => self.feistel(0),
            x => x,
        }
    }

    fn decode(self, raw: u32) -> u32 {
        if raw == 0 {
            return 0;
        }
        match self.feistel_inverse(raw) {
            0 => self.feistel_inverse(0),
            x => x,
        }
    }
}

/// A per-process fresh key: `RandomState` is randomly seeded and differs on every call.
fn fresh_key() -> u64 {
    static TABLES: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(TABLES.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// State shared by a table and all its entries (which may outlive it while borrowed).
struct Shared {
    live: AtomicUsize,
    release_panics: AtomicUsize,
    observer: Mutex<Option<ReleaseObserver>>,
}

/// One entry's value, shared by the owner's reference (in the slot) and each `HandleRef`.
struct Inner<T> {
    value: T,
    // A Mutex only to make `Inner` Sync without requiring `Sync` of the release function; it is
    // taken exactly once, by value, from the last reference.
    release: Mutex<ReleaseFn<T>>,
    handle: Handle,
    /// Insertion order, for `close_all`'s newest-first release.
    seq: u64,
    shared: Arc<Shared>,
}

impl<T> Inner<T> {
    fn release(self) {
        let Inner {
            value,
            release,
            handle,
            shared,
            ..
        } = self;
        let release = release.into_inner().unwrap_or_else(PoisonError::into_inner);
        run_release(release, value, &shared, Some(handle));
        let observer = lock(&shared.observer).clone();
        if let Some(observer) = observer
            && catch_unwind(AssertUnwindSafe(|| observer(handle))).is_err()
        {
            tracing::error!(?handle, "handle release observer panicked");
        }
        // Last, so that `live() == 0` means every release and observer call has returned.
        shared.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs a release function, catching and counting a panic.
fn run_release<T>(release: ReleaseFn<T>, value: T, shared: &Shared, handle: Option<Handle>) {
    if catch_unwind(AssertUnwindSafe(move || release(value))).is_err() {
        shared.release_panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!(?handle, "handle release function panicked");
    }
}

/// Drops one reference; the last one runs the release.
fn drop_ref<T>(inner: Arc<Inner<T>>) {
    if let Some(inner) = Arc::into_inner(inner) {
        inner.release();
    }
}

fn lock<S>(mutex: &Mutex<S>) -> MutexGuard<'_, S> {
    // No user code runs under our locks, so a poisoned lock still guards consistent state.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Slot<T> {
    /// The generation most recently issued from this slot (0: never issued).
    generation: u32,
    /// The owner's reference while the handle is open.
    entry: Option<Arc<Inner<T>>>,
}

struct Slots<T> {
    slots: Vec<Slot<T>>,
    /// Closed slots that still have a generation to give, oldest first.
    free: VecDeque<usize>,
    open: usize,
    next_seq: u64,
}

/// A per-domain table of host resources, addressed by generation-checked [`Handle`]s.
///
/// See the [module documentation](self) for the model. Dropping the table closes every open
/// handle, like [`close_all`](HandleTable::close_all).
pub struct HandleTable<T: Send + Sync + 'static> {
    slots: Mutex<Slots<T>>,
    shared: Arc<Shared>,
    quota: usize,
    layout: Layout,
    scramble: Scramble,
}

impl<T: Send + Sync + 'static> HandleTable<T> {
    /// An empty table holding at most `quota` live handles, with a random key (so its handle
    /// values differ from every other table's). A quota above [`MAX_QUOTA`] is clamped to it.
    pub fn new(quota: usize) -> Self {
        Self::with_key(quota, fresh_key())
    }

    /// Like [`new`](HandleTable::new), with a chosen key: two tables with the same key and
    /// quota issue the same handle values for the same sequence of operations. For tests and
    /// record/replay; domains should use distinct keys so that they reject each other's handles.
    pub fn with_key(quota: usize, key: u64) -> Self {
        let quota = quota.min(MAX_QUOTA);
        Self::with_layout(quota, Layout::for_quota(quota), key)
    }

    fn with_layout(quota: usize, layout: Layout, key: u64) -> Self {
        HandleTable {
            slots: Mutex::new(Slots {
                slots: Vec::new(),
                free: VecDeque::new(),
                open: 0,
                next_seq: 0,
            }),
            shared: Arc::new(Shared {
                live: AtomicUsize::new(0),
                release_panics: AtomicUsize::new(0),
                observer: Mutex::new(None),
            }),
            quota,
            layout,
            scramble: Scramble::new(key),
        }
    }

    /// Puts `value` in the table and returns its handle. `release` runs exactly once with the
    /// value, when the handle has been closed and no [`HandleRef`] to it remains.
    ///
    /// `release` must be synchronous and bounded (see the module docs). If the insert is refused
    /// ([`HandleError::QuotaExceeded`], [`HandleError::Exhausted`]) `release` runs before this
    /// returns, so the resource is never leaked; the release observer is not called for it.
    pub fn insert(
        &self,
        value: T,
        release: impl FnOnce(T) + Send + 'static,
    ) -> Result<Handle, HandleError> {
        #[cfg(feature = "failpoints")]
        if crate::failpoints::eval("handle-insert") {
            release(value);
            return Err(HandleError::QuotaExceeded {
                quota: self.quota(),
            });
        }
        let release: ReleaseFn<T> = Box::new(release);
        let refused = {
            let mut slots = lock(&self.slots);
            match self.issue(&mut slots) {
                Ok((index, handle)) => {
                    let seq = slots.next_seq;
                    slots.next_seq += 1;
                    slots.slots[index].entry = Some(Arc::new(Inner {
                        value,
                        release: Mutex::new(release),
                        handle,
                        seq,
                        shared: self.shared.clone(),
                    }));
                    slots.open += 1;
                    self.shared.live.fetch_add(1, Ordering::AcqRel);
                    return Ok(handle);
                }
                Err(error) => (error, value, release),
            }
        };
        let (error, value, release) = refused;
        run_release(release, value, &self.shared, None);
        Err(error)
    }

    /// Picks a slot and its next generation. Called under the lock.
    fn issue(&self, slots: &mut Slots<T>) -> Result<(usize, Handle), HandleError> {
        // Only inserts raise `live`, and they hold the lock: the check cannot be raced past.
        if self.shared.live.load(Ordering::Acquire) >= self.quota {
            return Err(HandleError::QuotaExceeded { quota: self.quota });
        }
        loop {
            let index = match slots.free.pop_front() {
                Some(index) => index,
                None if slots.slots.len() < self.layout.slot_capacity() => {
                    slots.slots.push(Slot {
                        generation: 0,
                        entry: None,
                    });
                    slots.slots.len() - 1
                }
                None => return Err(HandleError::Exhausted),
            };
            let slot = &mut slots.slots[index];
            if slot.generation >= self.layout.max_gen() {
                // Retired: not returned to the free list, so its values are never reissued.
                continue;
            }
            slot.generation += 1;
            let plain = self.layout.pack(index as u32, slot.generation);
            return Ok((index, Handle(self.scramble.encode(plain))));
        }
    }

    /// Finds the slot `handle` names while it is open. Called under the lock.
    fn locate(&self, slots: &Slots<T>, handle: Handle) -> Result<usize, HandleError> {
        if handle.0 == 0 {
            return Err(HandleError::Invalid);
        }
        let plain = self.scramble.decode(handle.0);
        let (index, generation) = self.layout.unpack(plain).ok_or(HandleError::Invalid)?;
        let slot = slots.slots.get(index).ok_or(HandleError::Invalid)?;
        if generation == 0 || generation > slot.generation {
            return Err(HandleError::Invalid);
        }
        if generation < slot.generation || slot.entry.is_none() {
            return Err(HandleError::Stale);
        }
        Ok(index)
    }

    /// Takes a reference to the handle's value for the duration of a use. The value stays alive
    /// (and its release waits) until the returned [`HandleRef`] is dropped, even if the handle
    /// is closed meanwhile.
    ///
    /// Fails with [`HandleError::Invalid`] for a value this table never issued and
    /// [`HandleError::Stale`] for a closed handle, even if it is still borrowed elsewhere: a
    /// closed handle admits no new uses.
    pub fn borrow(&self, handle: Handle) -> Result<HandleRef<T>, HandleError> {
        let slots = lock(&self.slots);
        let index = self.locate(&slots, handle)?;
        let inner = slots.slots[index].entry.clone();
        Ok(HandleRef { inner })
    }

    /// Closes the handle: drops the owner's reference. The release runs now, on this thread,
    /// if no [`HandleRef`] is live, otherwise when the last one is dropped.
    ///
    /// Fails with [`HandleError::Stale`] if the handle is already closed (so of two racing
    /// closes exactly one succeeds), and [`HandleError::Invalid`] for a value this table never
    /// issued.
    pub fn close(&self, handle: Handle) -> Result<(), HandleError> {
        let owner = {
            let mut slots = lock(&self.slots);
            let index = self.locate(&slots, handle)?;
            let owner = slots.slots[index].entry.take();
            slots.free.push_back(index);
            slots.open -= 1;
            owner
        };
        // Released outside the lock: a release function may call back into the table.
        if let Some(owner) = owner {
            drop_ref(owner);
        }
        Ok(())
    }

    /// Closes every open handle (a domain unload's critical release) and returns how many it
    /// closed. Handles that are not borrowed are released before this returns, newest first (the
    /// reverse of insertion, so a resource opened on top of another is released before it); the
    /// others are released when their last [`HandleRef`] drops.
    ///
    /// This does not stop new inserts: handles inserted while or after it runs (for instance by
    /// a release function) stay open. Stop the guest first.
    pub fn close_all(&self) -> usize {
        let mut owners: Vec<Arc<Inner<T>>> = {
            let mut slots = lock(&self.slots);
            let Slots {
                slots: entries,
                free,
                open,
                ..
            } = &mut *slots;
            let mut owners = Vec::with_capacity(*open);
            for (index, slot) in entries.iter_mut().enumerate() {
                if let Some(owner) = slot.entry.take() {
                    owners.push(owner);
                    free.push_back(index);
                }
            }
            *open = 0;
            owners
        };
        owners.sort_unstable_by_key(|owner| std::cmp::Reverse(owner.seq));
        let closed = owners.len();
        for owner in owners {
            drop_ref(owner);
        }
        closed
    }

    /// Handles not yet released: open ones, plus closed ones whose last [`HandleRef`] is still
    /// out (or whose release function or observer is running right now). This is what the quota
    /// bounds; after an unload's `close_all`, the domain is fully released when it reaches 0.
    pub fn live(&self) -> usize {
        self.shared.live.load(Ordering::Acquire)
    }

    /// Handles not yet closed.
    pub fn open(&self) -> usize {
        lock(&self.slots).open
    }

    /// The most live handles this table holds at once.
    pub fn quota(&self) -> usize {
        self.quota
    }

    /// How many release functions have panicked (each was caught and its entry counted as
    /// released). Refused inserts' release functions are counted too.
    pub fn release_panics(&self) -> usize {
        self.shared.release_panics.load(Ordering::Relaxed)
    }

    /// How many slots the table's storage holds (open, free and retired). It grows only to the
    /// peak number of live-or-free slots needed and never beyond `max(16, 4 × quota)`, however
    /// many handles are inserted and closed.
    pub fn allocated_slots(&self) -> usize {
        lock(&self.slots).slots.len()
    }

    /// Sets the callback told about each release: it is called with the released handle after
    /// the release function returns (or panics), on the releasing thread, outside any table
    /// lock. Replaces any previous observer; releases already running may still call the old
    /// one. A panicking observer is caught and logged.
    pub fn set_release_observer(&self, observer: ReleaseObserver) {
        *lock(&self.shared.observer) = Some(observer);
    }
}

impl<T: Send + Sync + 'static> Drop for HandleTable<T> {
    fn drop(&mut self) {
        self.close_all();
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for HandleTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (open, allocated) = {
            let slots = lock(&self.slots);
            (slots.open, slots.slots.len())
        };
        f.debug_struct("HandleTable")
            .field("quota", &self.quota)
            .field("live", &self.live())
            .field("open", &open)
            .field("allocated_slots", &allocated)
            .finish_non_exhaustive()
    }
}

/// A reference to a handle's value, held for the duration of one use.
///
/// Derefs to the value. While it exists the value is not released, even if the handle is closed.
/// Dropping the last reference to a closed handle runs its release function, once, on the
/// dropping thread. Cloning takes another reference.
pub struct HandleRef<T: Send + Sync + 'static> {
    /// `None` only inside `drop`, which moves the reference out to release it.
    inner: Option<Arc<Inner<T>>>,
}

impl<T: Send + Sync + 'static> HandleRef<T> {
    /// The handle this reference was borrowed through.
    pub fn handle(&self) -> Handle {
        self.entry().handle
    }

    fn entry(&self) -> &Inner<T> {
        match &self.inner {
            Some(inner) => inner,
            None => unreachable!("a HandleRef is emptied only by its own drop"),
        }
    }
}

impl<T: Send + Sync + 'static> Deref for HandleRef<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.entry().value
    }
}

impl<T: Send + Sync + 'static> Clone for HandleRef<T> {
    fn clone(&self) -> Self {
        HandleRef {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Send + Sync + 'static> Drop for HandleRef<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            drop_ref(inner);
        }
    }
}

impl<T: Send + Sync + fmt::Debug + 'static> fmt::Debug for HandleRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandleRef")
            .field("handle", &self.handle())
            .field("value", &**self)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn layout_leaves_spare_slots_and_fills_32_bits() {
        for (quota, slot_bits) in [
            (0, 4),
            (1, 4),
            (8, 4),
            (9, 5),
            (1000, 11),
            (1024, 11),
            (MAX_QUOTA, 24),
        ] {
            let layout = Layout::for_quota(quota);
            assert_eq!(layout.slot_bits, slot_bits, "quota {quota}");
            assert_eq!(layout.slot_bits + layout.gen_bits, 32);
            assert!(layout.slot_capacity() >= 2 * quota, "quota {quota}");
        }
        assert_eq!(Layout::for_quota(MAX_QUOTA).max_gen(), 255);
    }

    #[test]
    fn layout_round_trips_and_rejects_unused_bits() {
        let layout = Layout {
            slot_bits: 3,
            gen_bits: 4,
        };
        assert_eq!(layout.unpack(layout.pack(5, 9)), Some((5, 9)));
        assert_eq!(layout.unpack(1 << 7), None);
        let full = Layout::for_quota(100);
        assert_eq!(
            full.unpack(full.pack(99, full.max_gen())),
            Some((99, full.max_gen()))
        );
    }

    #[test]
    fn scramble_is_a_bijection_on_nonzero_values() {
        for key in [0, 1, 42, u64::MAX, fresh_key()] {
            let s = Scramble::new(key);
            assert_eq!(s.encode(0), 0);
            assert_eq!(s.decode(0), 0);
            let mut x = 1u32;
            for _ in 0..20_000 {
                let e = s.encode(x);
                assert_ne!(e, 0);
                assert_eq!(s.decode(e), x);
                x = x.wrapping_mul(2_654_435_761).wrapping_add(7) | 1;
            }
            // The one value the raw Feistel sends to 0 exercises the cycle walk.
            let to_zero = s.feistel_inverse(0);
            if to_zero != 0 {
                let e = s.encode(to_zero);
                assert_ne!(e, 0);
                assert_eq!(s.decode(e), to_zero);
            }
        }
    }

    #[test]
    fn different_keys_scramble_differently() {
        let a = Scramble::new(1);
        let b = Scramble::new(2);
        let same = (1..1000u32).filter(|&x| a.encode(x) == b.encode(x)).count();
        assert_eq!(same, 0);
    }

    /// A tiny layout: 4 slots × 7 generations = 28 handle values in the table's lifetime.
    fn tiny(quota: usize) -> HandleTable<u32> {
        HandleTable::with_layout(
            quota,
            Layout {
                slot_bits: 2,
                gen_bits: 3,
            },
            7,
        )
    }

    #[test]
    fn slots_retire_instead_of_wrapping_and_the_table_exhausts() {
        let table = tiny(4);
        let released = Arc::new(AtomicUsize::new(0));
        let mut issued = Vec::new();
        loop {
            let counter = released.clone();
            match table.insert(0, move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            }) {
                Ok(h) => {
                    table.close(h).unwrap();
                    issued.push(h);
                }
                Err(e) => {
                    assert_eq!(e, HandleError::Exhausted);
                    break;
                }
            }
        }
        assert_eq!(issued.len(), 4 * 7, "every (slot, generation) pair once");
        let distinct: HashSet<_> = issued.iter().collect();
        assert_eq!(distinct.len(), issued.len());
        for h in &issued {
            assert_eq!(table.borrow(*h).unwrap_err(), HandleError::Stale);
        }
        // The refused value was released too; nothing is live.
        assert_eq!(released.load(Ordering::SeqCst), 4 * 7 + 1);
        assert_eq!(table.live(), 0);
        assert_eq!(table.allocated_slots(), 4);
        assert_eq!(table.insert(1, |_| {}), Err(HandleError::Exhausted));
    }

    #[test]
    fn exhaustion_leaves_open_handles_usable() {
        let table = tiny(8);
        let keep: Vec<_> = (0..3).map(|i| table.insert(i, |_| {}).unwrap()).collect();
        // The fourth slot cycles through its 7 generations, then nothing is left.
        for _ in 0..7 {
            let h = table.insert(9, |_| {}).unwrap();
            table.close(h).unwrap();
        }
        assert_eq!(table.insert(9, |_| {}), Err(HandleError::Exhausted));
        for (i, h) in keep.iter().enumerate() {
            assert_eq!(*table.borrow(*h).unwrap(), i as u32);
        }
        assert_eq!(table.close_all(), 3);
        assert_eq!(table.live(), 0);
    }

    #[test]
    fn free_slots_are_reused_oldest_first() {
        let table = HandleTable::<u32>::with_key(8, 3);
        let a = table.insert(0, |_| {}).unwrap();
        let b = table.insert(1, |_| {}).unwrap();
        table.close(a).unwrap();
        table.close(b).unwrap();
        let c = table.insert(2, |_| {}).unwrap();
        let slot_of = |h: Handle| {
            let plain = table.scramble.decode(h.to_raw());
            table.layout.unpack(plain).unwrap()
        };
        assert_eq!(slot_of(a), (0, 1));
        assert_eq!(slot_of(b), (1, 1));
        assert_eq!(slot_of(c), (0, 2));
    }
}
