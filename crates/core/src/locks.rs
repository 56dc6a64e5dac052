//! Host locks: named, owned by a call, FIFO, poisoning, and deadlock detection.
//!
//! A guest cannot block an OS thread; when it needs mutual exclusion with other calls it asks the
//! host for a **lock** by name (`lock_acquire` / `lock_release`, DESIGN §4). This module is the
//! table behind those imports. It is also usable on its own by the embedding application for its
//! native work: it needs nothing but a tokio runtime (and only for timed waits).
//!
//! # The model
//!
//! - **Names, not objects.** A lock is a string (1 to [`MAX_NAME_LEN`] bytes), process-wide within
//!   one [`LockTable`]. An entry exists while the lock is held, waited on, or poisoned; a free,
//!   clean lock takes no memory, so the table does not grow with the number of names ever used.
//! - **Owners are calls.** Every operation names an [`OwnerId`] (a call id). Locks are
//!   **non-recursive**: acquiring a lock you hold is [`LockError::AlreadyHeld`], releasing one you do
//!   not hold is [`LockError::NotHeld`] (both `-6`).
//! - **FIFO, no barging.** A release hands the lock *directly* to the first waiter: ownership moves
//!   inside the release, before the waiter has even been polled, so a newcomer cannot overtake a
//!   queued waiter. A free lock therefore never has waiters.
//! - **Waiting is an async host wait.** A waiter is a future that parks nothing but a [`Waker`];
//!   no OS thread is blocked per waiter, and no lock of the table is held while it waits (the
//!   table's internal mutex is held only for short, non-blocking bookkeeping, never across an
//!   `.await`). An optional timeout (tokio time) ends the wait with [`LockError::Timeout`] (`-1`).
//! - **Cancel-safe.** The runtime aborts a waiting call by dropping its [`LockTable::acquire`]
//!   future. Dropping it at any point removes the waiter and its wait-for edge; if the lock had
//!   already been handed to it, the lock is passed on to the next waiter as if it had been released
//!   (its poison mark, if any, is left as it was). No wake-up is lost and no ownership leaks.
//! - **Orphans and poison.** A call that ends still holding locks (rude abort, unload, guest bug)
//!   must be reported with [`LockTable::release_orphaned`]: each lock is released, handed on, and
//!   marked **poisoned**. The next acquirer gets it with [`Acquired::Poisoned`] (`-4`: "acquired,
//!   but the previous owner did not release it cleanly — repair the state"). The mark stays while
//!   that owner holds the lock and clears when it releases normally; if it is orphaned in turn, the
//!   lock stays poisoned. Whether an orphaned lock is a failure, and what it costs, is decided by
//!   the policy (`orphaned-lock`), not here.
//! - **Deadlock detection.** The table keeps a **wait-for graph**: a waiter has an edge to the
//!   owner of what it waits on (the current holder of a lock, or — for cross-domain calls, see
//!   [`LockTable::wait_for_owner`] — the call it waits for). The graph is checked when a wait
//!   *begins*, never by a periodic scan. A wait that would close a cycle is the **victim**: it is
//!   refused at once with [`LockError::Deadlock`] (`-2`, like SQL Server error 1205) carrying the
//!   cycle, and a `deadlock_detected` tracing event names the calls and locks in it. The other
//!   calls keep waiting; once the victim's call gives up its locks (it releases them, or it fails
//!   and they are orphaned), the survivors complete.
//!
//! # Why checking at wait start is enough
//!
//! Each owner waits on at most one thing at a time (a call is sequential; a second concurrent wait
//! by the same owner is refused with [`LockError::AlreadyWaiting`]). The graph is kept acyclic:
//!
//! - *A wait begins*: its edge is the only new one; we follow the chain from the owner it would
//!   wait on, and if the chain leads back to the new waiter the wait is refused. Otherwise the
//!   graph stays acyclic.
//! - *A lock is handed on* (release, orphan, cancelled hand-off): the new holder's edge disappears
//!   (it no longer waits), and the remaining waiters' edges move from the old holder to the new
//!   one. The new holder has no outgoing edge at that moment (its only wait just ended), so no
//!   cycle can pass through it; any later wait it begins is checked when it begins.
//! - *A wait ends* (grant, timeout, cancellation, guard drop): only removes edges.
//!
//! So a cycle can only ever be closed by a wait that is beginning, and that is where we look.
//! Because out-degree is at most one, the check is a walk along one chain, not a graph search.
//!
//! # What this does not cover
//!
//! - Victim selection is always "the wait that closed the cycle"; a policy that picks another
//!   victim would have to abort that call itself.
//! - One table is one graph: cycles that run through waits the table is not told about (another
//!   [`LockTable`], an OS mutex, a channel) are not seen. Cross-domain calls must be reported with
//!   [`LockTable::wait_for_owner`] for cycles through them to be found.
//! - There is no priority inheritance and no reader/writer mode.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//! use warden_core::locks::{Acquired, LockError, LockTable};
//!
//! let table = LockTable::new();
//! assert_eq!(table.acquire(1, "accounts", None).await, Ok(Acquired::Clean));
//! // Call 2 cannot get it within 10 ms: -1.
//! let err = table.acquire(2, "accounts", Some(Duration::from_millis(10))).await.unwrap_err();
//! assert_eq!(err, LockError::Timeout);
//! assert_eq!(err.code(), -1);
//!
//! // Call 1 ends without releasing: the lock is released and poisoned.
//! assert_eq!(table.release_orphaned(1), vec!["accounts".to_string()]);
//! assert_eq!(table.acquire(2, "accounts", None).await, Ok(Acquired::Poisoned));
//! table.release(2, "accounts").unwrap(); // a clean release clears the mark
//! assert_eq!(table.lock_count(), 0);
//! # }
//! ```

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::PoisonError;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

// In loom test builds the table's mutex is loom's, so the model checker explores every
// interleaving of hand-off, cancellation and release (`loom_tests` below).
#[cfg(all(test, loom))]
use loom::sync::{Arc as InnerArc, Mutex, MutexGuard};
#[cfg(not(all(test, loom)))]
use std::sync::{Arc as InnerArc, Mutex, MutexGuard};

use crate::sync::{AtomicU32, SeqCst};

/// Who owns a lock or waits: a call id.
pub type OwnerId = u64;

/// The longest lock name accepted, in bytes. Longer (or empty) names are [`LockError::BadName`].
pub const MAX_NAME_LEN: usize = 256;

/// How a lock was acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// The previous owner (if any) released it normally.
    Clean,
    /// The lock is now held, but its previous owner ended without releasing it, so whatever it
    /// protects may be inconsistent. The guest sees `-4`. The mark clears when this owner
    /// releases the lock normally.
    Poisoned,
}

impl Acquired {
    /// The guest-facing result of `lock_acquire` (DESIGN §4): `0` clean, `-4` poisoned.
    pub fn code(self) -> i32 {
        match self {
            Acquired::Clean => 0,
            Acquired::Poisoned => -4,
        }
    }
}

/// Why a lock operation failed.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum LockError {
    /// The wait's timeout passed before the lock was handed over. The caller does not hold it.
    #[error("timed out waiting for the lock")]
    Timeout,
    /// This wait would have closed a cycle in the wait-for graph, so it was refused (the caller is
    /// the deadlock victim). The caller still holds whatever it held before.
    #[error("deadlock victim: {0}")]
    Deadlock(DeadlockCycle),
    /// The owner already holds this lock (locks are not recursive).
    #[error("the lock is already held by this owner")]
    AlreadyHeld,
    /// The owner does not hold the lock it tried to release.
    #[error("the lock is not held by this owner")]
    NotHeld,
    /// The lock name is empty or longer than [`MAX_NAME_LEN`] bytes.
    #[error("bad lock name: it must be 1 to {MAX_NAME_LEN} bytes")]
    BadName,
    /// The owner already has a wait in progress (a lock wait or a cross-domain wait). A call is
    /// sequential, so this is a misuse of the table; it is refused because the deadlock check
    /// relies on one wait per owner.
    #[error("this owner is already waiting")]
    AlreadyWaiting,
    /// The owner was declared ended ([`LockTable::release_orphaned`]) while this wait was still in
    /// progress; the wait is void and the caller holds nothing.
    #[error("the owner ended while waiting")]
    OwnerEnded,
}

impl LockError {
    /// The guest-facing error code (DESIGN §4): `Timeout` -1, `Deadlock` -2, `OwnerEnded` -3
    /// (aborted), `AlreadyHeld` / `NotHeld` / `AlreadyWaiting` -6, `BadName` -8.
    pub fn code(&self) -> i32 {
        match self {
            LockError::Timeout => -1,
            LockError::Deadlock(_) => -2,
            LockError::OwnerEnded => -3,
            LockError::AlreadyHeld | LockError::NotHeld | LockError::AlreadyWaiting => -6,
            LockError::BadName => -8,
        }
    }
}

/// What a waiter waits on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WaitTarget {
    /// A named lock; the edge points at its current holder.
    Lock(String),
    /// Another owner to finish (a cross-domain call); the edge points at that owner.
    Owner(OwnerId),
}

/// One edge of the wait-for graph: `waiter` waits on `on`, which `owner` holds (or is).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WaitEdge {
    /// The waiting call.
    pub waiter: OwnerId,
    /// What it waits on.
    pub on: WaitTarget,
    /// The call it therefore waits for.
    pub owner: OwnerId,
}

/// A cycle in the wait-for graph, reported to its victim.
///
/// `edges` are in cycle order, starting with the victim's refused wait: `edges[i].owner ==
/// edges[i + 1].waiter`, and the last edge's `owner` is the victim again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeadlockCycle {
    /// The edges of the cycle, victim first.
    pub edges: Vec<WaitEdge>,
}

impl DeadlockCycle {
    /// The call whose wait closed the cycle and was refused.
    pub fn victim(&self) -> Option<OwnerId> {
        self.edges.first().map(|e| e.waiter)
    }

    /// The calls in the cycle, victim first, each once.
    pub fn owners(&self) -> Vec<OwnerId> {
        self.edges.iter().map(|e| e.waiter).collect()
    }

    /// The lock names waited on in the cycle, in cycle order (cross-domain edges have none).
    pub fn locks(&self) -> Vec<&str> {
        self.edges
            .iter()
            .filter_map(|e| match &e.on {
                WaitTarget::Lock(name) => Some(name.as_str()),
                WaitTarget::Owner(_) => None,
            })
            .collect()
    }
}

impl fmt::Display for DeadlockCycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, edge) in self.edges.iter().enumerate() {
            if i > 0 {
                f.write_str(" -> ")?;
            }
            match &edge.on {
                WaitTarget::Lock(name) => write!(
                    f,
                    "call {} waits for lock {:?} held by call {}",
                    edge.waiter, name, edge.owner
                )?,
                WaitTarget::Owner(_) => {
                    write!(f, "call {} waits for call {}", edge.waiter, edge.owner)?
                }
            }
        }
        Ok(())
    }
}

/// The table of named host locks. `Send + Sync`; share it as `Arc<LockTable>`.
///
/// See the [module docs](self) for the model.
pub struct LockTable {
    inner: InnerArc<Mutex<Inner>>,
    /// Which owners may be in the table, readable without its mutex (see [`Presence`]).
    present: InnerArc<Presence>,
    /// Bounds the `orphaned_locks` and `poison_mark_dropped` warnings a hostile guest can
    /// cause (each cycle that orphans locks would otherwise write a line).
    warnings: crate::rate::RateLimit,
}

/// How many poison marks a table keeps by default ([`LockTable::with_poison_limit`]).
pub const DEFAULT_POISON_LIMIT: usize = 4096;

impl fmt::Debug for LockTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockTable")
            .field("locks", &self.lock_count())
            .finish_non_exhaustive()
    }
}

/// Identifies one wait (or one grant) so a late poll or drop acts only on its own wait.
type Ticket = u64;

struct Inner {
    locks: HashMap<String, Entry>,
    /// Owners that hold or wait on something; every insert and removal goes through
    /// `owner_state` and `gc_owner`, which keep `present` in step.
    owners: HashMap<OwnerId, OwnerState>,
    present: InnerArc<Presence>,
    next_ticket: Ticket,
    /// Marks in the order they were made, as (name, the mark's ticket); a pair whose entry
    /// has another ticket (or no mark) is stale and skipped.
    poison_order: VecDeque<(String, Ticket)>,
    /// Entries with the poison mark now (exact).
    poisoned: usize,
    /// Most marks kept; past it the oldest goes.
    poison_limit: usize,
    /// Marks dropped for the bound, and the names dropped since the last look.
    dropped: u64,
    dropped_names: Vec<String>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            locks: HashMap::new(),
            owners: HashMap::new(),
            present: InnerArc::new(Presence::new()),
            next_ticket: 0,
            poison_order: VecDeque::new(),
            poisoned: 0,
            poison_limit: DEFAULT_POISON_LIMIT,
            dropped: 0,
            dropped_names: Vec::new(),
        }
    }
}

#[derive(Default)]
struct Entry {
    /// Invariant: `holder.is_none()` implies `queue.is_empty()` (hand-off is direct).
    holder: Option<Holder>,
    poisoned: bool,
    /// The ticket of the mark, to find it in `poison_order`.
    poison_ticket: Ticket,
    queue: VecDeque<Queued>,
}

#[derive(Clone, Copy)]
struct Holder {
    owner: OwnerId,
    /// The ticket of the acquire that got it; lets a handed-to-but-unpolled waiter recognise it.
    ticket: Ticket,
}

struct Queued {
    owner: OwnerId,
    ticket: Ticket,
    waker: Option<Waker>,
}

#[derive(Default)]
struct OwnerState {
    held: BTreeSet<String>,
    /// The owner's single outgoing wait-for edge, if it is waiting.
    waiting: Option<Waiting>,
}

enum Waiting {
    Lock { name: String, ticket: Ticket },
    Owner { target: OwnerId, guard: Ticket },
}

/// How a held lock is being given up, which decides its poison mark.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReleaseKind {
    /// The owner released it: the mark clears.
    Normal,
    /// The owner ended holding it: the lock is poisoned.
    Orphaned,
    /// It was handed to a waiter that was cancelled before it saw it: the mark is unchanged.
    Unclaimed,
}

/// Where a wait stands, seen from its future.
enum WaitState {
    Granted(Acquired),
    Queued,
    Gone,
}

enum Begin {
    Acquired(Acquired),
    Wait(Ticket),
}

/// How many presence buckets a table has (owner id modulo this). Under loom, two, so the
/// models see owners share a bucket.
#[cfg(not(all(test, loom)))]
const PRESENCE_BUCKETS: usize = 256;
#[cfg(all(test, loom))]
const PRESENCE_BUCKETS: usize = 2;

/// The lock-free fast path of [`LockTable::release_orphaned`]: per bucket of owner ids, the
/// number of entries of `Inner::owners` in it. Written only under the table's mutex, when an
/// owner's entry is made or forgotten; read without it.
///
/// Why a zero read means "nothing to release": an owner's entry is only ever made by that
/// owner's own acquire or cross-domain wait (a hand-off goes to a waiter, which has its entry
/// already). Those happen before its call ends, so the read at the end sees their increment
/// or a later value (coherence), and every later value counts the entry for as long as it
/// exists. Zero therefore means the entry is gone, and the mutex path would find nothing
/// either. A call that ends while its own acquire is still beginning on another thread races
/// it either way; the zero read is the order in which the end came first. Another owner in
/// the same bucket only sends the call down the mutex path.
struct Presence {
    buckets: Vec<AtomicU32>,
}

impl Presence {
    fn new() -> Self {
        Presence {
            buckets: (0..PRESENCE_BUCKETS).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn bucket(&self, owner: OwnerId) -> &AtomicU32 {
        &self.buckets[(owner % PRESENCE_BUCKETS as u64) as usize]
    }

    /// Whether `owner` may have an entry (false: it certainly has none).
    fn may_have(&self, owner: OwnerId) -> bool {
        self.bucket(owner).load(SeqCst) != 0
    }
}

fn check_name(name: &str) -> Result<(), LockError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        Err(LockError::BadName)
    } else {
        Ok(())
    }
}

impl Inner {
    fn ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        self.next_ticket
    }

    fn is_waiting(&self, owner: OwnerId) -> bool {
        self.owners.get(&owner).is_some_and(|s| s.waiting.is_some())
    }

    /// The entry of `owner`, made (and counted in `present`) if it has none.
    fn owner_state(&mut self, owner: OwnerId) -> &mut OwnerState {
        match self.owners.entry(owner) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                self.present.bucket(owner).fetch_add(1, SeqCst);
                e.insert(OwnerState::default())
            }
        }
    }

    /// Forgets an owner that holds nothing and waits on nothing, so the map does not grow.
    fn gc_owner(&mut self, owner: OwnerId) {
        if self
            .owners
            .get(&owner)
            .is_some_and(|s| s.held.is_empty() && s.waiting.is_none())
        {
            self.owners.remove(&owner);
            self.present.bucket(owner).fetch_sub(1, SeqCst);
        }
    }

    /// Forgets a free, clean lock with no waiters.
    fn gc_lock(&mut self, name: &str) {
        if self
            .locks
            .get(name)
            .is_some_and(|e| e.holder.is_none() && e.queue.is_empty() && !e.poisoned)
        {
            self.locks.remove(name);
        }
    }

    /// Gives up `owner`'s hold on `name` (the caller has checked it holds it) and hands the lock
    /// to the first waiter, whose waker is pushed to `wakers`.
    fn release_held(
        &mut self,
        owner: OwnerId,
        name: &str,
        kind: ReleaseKind,
        wakers: &mut Vec<Waker>,
    ) {
        if let Some(state) = self.owners.get_mut(&owner) {
            state.held.remove(name);
        }
        self.gc_owner(owner);
        self.next_ticket += 1;
        let mark = self.next_ticket;
        let Some(entry) = self.locks.get_mut(name) else {
            return;
        };
        let was = entry.poisoned;
        match kind {
            ReleaseKind::Normal => entry.poisoned = false,
            ReleaseKind::Orphaned => {
                entry.poisoned = true;
                entry.poison_ticket = mark;
            }
            ReleaseKind::Unclaimed => {}
        }
        let marked = kind == ReleaseKind::Orphaned;
        match (was, entry.poisoned) {
            (false, true) => self.poisoned += 1,
            (true, false) => self.poisoned -= 1,
            _ => {}
        }
        let entry = self.locks.get_mut(name).expect("looked up above");
        entry.holder = None;
        if let Some(next) = entry.queue.pop_front() {
            // Direct hand-off: the waiter owns the lock from now on, even before it is polled.
            entry.holder = Some(Holder {
                owner: next.owner,
                ticket: next.ticket,
            });
            let state = self.owner_state(next.owner);
            state.held.insert(name.to_string());
            state.waiting = None;
            if let Some(waker) = next.waker {
                wakers.push(waker);
            }
        } else {
            self.gc_lock(name);
        }
        if marked {
            self.poison_order.push_back((name.to_string(), mark));
            self.bound_poison();
        }
    }

    /// Keeps at most `poison_limit` marks: past it the oldest goes (its entry too, if the lock
    /// is idle), so locks orphaned under ever new names cannot grow the table without end.
    fn bound_poison(&mut self) {
        while self.poisoned > self.poison_limit {
            let Some((name, mark)) = self.poison_order.pop_front() else {
                break;
            };
            let Some(entry) = self.locks.get_mut(&name) else {
                continue;
            };
            if !entry.poisoned || entry.poison_ticket != mark {
                continue; // stale: cleared, or marked again later
            }
            entry.poisoned = false;
            self.poisoned -= 1;
            self.dropped += 1;
            self.gc_lock(&name);
            self.dropped_names.push(name);
        }
        // Stale pairs are only skipped when a mark must go; compact so they stay bounded too.
        if self.poison_order.len() > 2 * self.poison_limit + 64 {
            let locks = &self.locks;
            self.poison_order.retain(|(name, mark)| {
                locks
                    .get(name)
                    .is_some_and(|e| e.poisoned && e.poison_ticket == *mark)
            });
        }
    }

    /// Where the wait `ticket` on `name` stands; refreshes its waker if it is still queued.
    fn wait_state(&mut self, name: &str, ticket: Ticket, waker: Option<&Waker>) -> WaitState {
        let Some(entry) = self.locks.get_mut(name) else {
            return WaitState::Gone;
        };
        if entry.holder.is_some_and(|h| h.ticket == ticket) {
            return WaitState::Granted(if entry.poisoned {
                Acquired::Poisoned
            } else {
                Acquired::Clean
            });
        }
        match entry.queue.iter_mut().find(|q| q.ticket == ticket) {
            Some(queued) => {
                if let Some(waker) = waker
                    && !queued.waker.as_ref().is_some_and(|w| w.will_wake(waker))
                {
                    queued.waker = Some(waker.clone());
                }
                WaitState::Queued
            }
            None => WaitState::Gone,
        }
    }

    /// Ends the wait `ticket` of `owner` on `name` without success: removes it from the queue and
    /// the graph, or, if the lock had already been handed to it, passes the lock on.
    fn cancel_wait(&mut self, owner: OwnerId, name: &str, ticket: Ticket, wakers: &mut Vec<Waker>) {
        let Some(entry) = self.locks.get_mut(name) else {
            return;
        };
        if entry.holder.is_some_and(|h| h.ticket == ticket) {
            self.release_held(owner, name, ReleaseKind::Unclaimed, wakers);
            return;
        }
        entry.queue.retain(|q| q.ticket != ticket);
        if let Some(state) = self.owners.get_mut(&owner)
            && matches!(&state.waiting, Some(Waiting::Lock { ticket: t, .. }) if *t == ticket)
        {
            state.waiting = None;
        }
        self.gc_owner(owner);
        self.gc_lock(name);
    }

    /// Would the wait `first` (by `victim`) close a cycle? Returns the cycle, victim first.
    ///
    /// Every owner has at most one outgoing edge, and the graph is acyclic before this wait (see
    /// the module docs), so following the chain from the owner `first` points at either ends at an
    /// owner that is not waiting (no cycle) or comes back to `victim` (this wait closes a cycle).
    fn find_cycle(&self, first: WaitEdge) -> Option<DeadlockCycle> {
        let victim = first.waiter;
        let mut cur = first.owner;
        let mut edges = vec![first];
        // The bound only guards against a broken invariant; an acyclic chain is never longer.
        for _ in 0..=self.owners.len() {
            if cur == victim {
                return Some(DeadlockCycle { edges });
            }
            let edge = match self.owners.get(&cur)?.waiting.as_ref()? {
                Waiting::Lock { name, .. } => WaitEdge {
                    waiter: cur,
                    on: WaitTarget::Lock(name.clone()),
                    owner: self.locks.get(name)?.holder?.owner,
                },
                Waiting::Owner { target, .. } => WaitEdge {
                    waiter: cur,
                    on: WaitTarget::Owner(*target),
                    owner: *target,
                },
            };
            cur = edge.owner;
            edges.push(edge);
        }
        None
    }

    /// The synchronous start of an acquire: take a free lock, or refuse, or join the queue.
    fn begin_acquire(
        &mut self,
        owner: OwnerId,
        name: &str,
        try_only: bool,
    ) -> Result<Begin, LockError> {
        let holder = self.locks.get(name).and_then(|e| e.holder);
        match holder {
            Some(h) if h.owner == owner => return Err(LockError::AlreadyHeld),
            _ if self.is_waiting(owner) => return Err(LockError::AlreadyWaiting),
            None => {
                let ticket = self.ticket();
                let entry = self.locks.entry(name.to_string()).or_default();
                entry.holder = Some(Holder { owner, ticket });
                let acquired = if entry.poisoned {
                    Acquired::Poisoned
                } else {
                    Acquired::Clean
                };
                let state = self.owner_state(owner);
                state.held.insert(name.to_string());
                return Ok(Begin::Acquired(acquired));
            }
            Some(_) if try_only => return Err(LockError::Timeout),
            Some(h) => {
                let first = WaitEdge {
                    waiter: owner,
                    on: WaitTarget::Lock(name.to_string()),
                    owner: h.owner,
                };
                if let Some(cycle) = self.find_cycle(first) {
                    return Err(LockError::Deadlock(cycle));
                }
            }
        }
        let ticket = self.ticket();
        if let Some(entry) = self.locks.get_mut(name) {
            entry.queue.push_back(Queued {
                owner,
                ticket,
                waker: None,
            });
        }
        self.owner_state(owner).waiting = Some(Waiting::Lock {
            name: name.to_string(),
            ticket,
        });
        Ok(Begin::Wait(ticket))
    }
}

fn lock_inner(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // No code panics while holding the guard; if something ever did, the bookkeeping is still
    // the best state we have, so carry on rather than fail every later call.
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` on the table, then wakes the waiters it handed locks to — after the mutex is
/// dropped, so a waker that polls inline cannot deadlock on it.
fn with_inner<R>(inner: &Mutex<Inner>, f: impl FnOnce(&mut Inner, &mut Vec<Waker>) -> R) -> R {
    let mut wakers = Vec::new();
    let result = {
        let mut guard = lock_inner(inner);
        f(&mut guard, &mut wakers)
    };
    for waker in wakers {
        waker.wake();
    }
    result
}

fn report_deadlock(result: &Result<Begin, LockError>) {
    if let Err(LockError::Deadlock(cycle)) = result {
        report_cycle(cycle);
    }
}

fn report_cycle(cycle: &DeadlockCycle) {
    tracing::warn!(
        event = "deadlock_detected",
        victim = cycle.victim(),
        calls = ?cycle.owners(),
        locks = ?cycle.locks(),
        "deadlock detected: {cycle}"
    );
}

impl LockTable {
    /// An empty table.
    pub fn new() -> std::sync::Arc<Self> {
        Self::with_poison_limit(DEFAULT_POISON_LIMIT)
    }

    /// An empty table that keeps at most `limit` poison marks. Past it, the oldest mark goes
    /// (and the lock's entry, if the lock is idle), with a `poison_mark_dropped` warning: its
    /// next acquirer gets it clean (`0`, not `-4`). That is the price of a bound: a host that
    /// orphans locks under ever new names would otherwise grow the table without end.
    pub fn with_poison_limit(limit: usize) -> std::sync::Arc<Self> {
        let inner = Inner {
            poison_limit: limit,
            ..Inner::default()
        };
        std::sync::Arc::new(LockTable {
            present: InnerArc::clone(&inner.present),
            inner: InnerArc::new(Mutex::new(inner)),
            warnings: crate::rate::RateLimit::new(20, 1),
        })
    }

    /// How many poison marks are held now.
    pub fn poisoned_count(&self) -> usize {
        lock_inner(&self.inner).poisoned
    }

    /// How many poison marks were dropped for the bound since the table was made.
    pub fn dropped_poison_marks(&self) -> u64 {
        lock_inner(&self.inner).dropped
    }

    /// A warning, unless too many came lately; the next one that goes out counts the rest.
    fn warn(&self, message: std::fmt::Arguments<'_>) {
        if let crate::rate::Admit::Yes { suppressed, .. } = self.warnings.admit(1) {
            if suppressed > 0 {
                tracing::warn!("{message} ({suppressed} similar warnings suppressed)");
            } else {
                tracing::warn!("{message}");
            }
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner, &mut Vec<Waker>) -> R) -> R {
        with_inner(&self.inner, f)
    }

    /// Acquires `name` for `owner`, waiting (asynchronously, FIFO) while another owner holds it.
    ///
    /// `timeout`: `None` waits forever; `Some(Duration::ZERO)` only tries (a held lock is
    /// [`LockError::Timeout`] at once, and no wait — so no deadlock check — begins). A timed wait
    /// needs a tokio runtime with time enabled.
    ///
    /// Returns [`Acquired::Poisoned`] if the previous owner ended without releasing it. Errors:
    /// [`LockError::BadName`], [`LockError::AlreadyHeld`], [`LockError::AlreadyWaiting`],
    /// [`LockError::Deadlock`] (at once, when this wait would close a cycle; the caller keeps what
    /// it holds), [`LockError::Timeout`], [`LockError::OwnerEnded`].
    ///
    /// **Cancel-safe**: dropping the future at any point leaves the table as if this call had never
    /// asked, except that a lock handed to it in the meantime has been passed on to the next
    /// waiter. If a timeout fires just as the lock is handed over, the acquire succeeds.
    pub async fn acquire(
        &self,
        owner: OwnerId,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<Acquired, LockError> {
        check_name(name)?;
        #[cfg(feature = "failpoints")]
        crate::failpoint!("lock-acquire", Err(LockError::Timeout));
        let try_only = timeout.is_some_and(|d| d.is_zero());
        let begun = self.with(|inner, _| inner.begin_acquire(owner, name, try_only));
        report_deadlock(&begun);
        let ticket = match begun? {
            Begin::Acquired(acquired) => return Ok(acquired),
            Begin::Wait(ticket) => ticket,
        };
        let mut wait = LockWait {
            table: self,
            owner,
            name,
            ticket,
            finished: false,
        };
        match timeout {
            None => (&mut wait).await,
            Some(limit) => match tokio::time::timeout(limit, &mut wait).await {
                Ok(result) => result,
                Err(_elapsed) => wait.settle_on_timeout(),
            },
        }
    }

    /// Releases `name`, held by `owner`, normally: its poison mark (if any) clears, and it is
    /// handed to the first waiter, which is woken.
    ///
    /// Errors: [`LockError::BadName`], [`LockError::NotHeld`] (the owner does not hold it; nothing
    /// changes).
    pub fn release(&self, owner: OwnerId, name: &str) -> Result<(), LockError> {
        check_name(name)?;
        self.with(|inner, wakers| {
            let held = inner
                .locks
                .get(name)
                .and_then(|e| e.holder)
                .is_some_and(|h| h.owner == owner);
            if !held {
                return Err(LockError::NotHeld);
            }
            inner.release_held(owner, name, ReleaseKind::Normal, wakers);
            Ok(())
        })
    }

    /// Declares that `owner`'s call has ended: every lock it still holds is released, handed on,
    /// and marked poisoned. Returns their names, sorted (empty if it held none — then the call
    /// ended cleanly and no `orphaned-lock` failure arises).
    ///
    /// The call should have ended its waits first (the runtime drops the acquire future before
    /// calling this). A wait of `owner` still in progress is cancelled and ends with
    /// [`LockError::OwnerEnded`]; a cross-domain edge of `owner` is removed.
    pub fn release_orphaned(&self, owner: OwnerId) -> Vec<String> {
        self.release_orphaned_report(owner).orphaned
    }

    /// [`release_orphaned`](Self::release_orphaned), also telling which poison marks the
    /// table's bound dropped to make room for the new ones (the runtime reports them as a
    /// `poison_mark_dropped` event).
    ///
    /// An owner that holds and waits on nothing (most calls) costs one atomic load here, not
    /// the table's mutex.
    pub fn release_orphaned_report(&self, owner: OwnerId) -> Orphaned {
        if !self.present.may_have(owner) {
            return Orphaned::default();
        }
        let (names, dropped) = self.with(|inner, wakers| {
            let Some(state) = inner.owners.get_mut(&owner) else {
                return (Vec::new(), Vec::new());
            };
            let waiting = state.waiting.take();
            let names: Vec<String> = state.held.iter().cloned().collect();
            if let Some(Waiting::Lock { name, ticket }) = waiting
                && let Some(entry) = inner.locks.get_mut(&name)
                && let Some(at) = entry.queue.iter().position(|q| q.ticket == ticket)
                && let Some(queued) = entry.queue.remove(at)
            {
                // Wake the orphaned waiter so its future ends now rather than at its timeout.
                if let Some(waker) = queued.waker {
                    wakers.push(waker);
                }
                inner.gc_lock(&name);
            }
            for name in &names {
                inner.release_held(owner, name, ReleaseKind::Orphaned, wakers);
            }
            inner.gc_owner(owner);
            (names, std::mem::take(&mut inner.dropped_names))
        });
        if !names.is_empty() {
            // At most 8 names: a line, not a page, per orphaning call.
            let shown: Vec<&str> = names.iter().take(8).map(String::as_str).collect();
            let more = names.len() - shown.len();
            self.warn(format_args!(
                "orphaned_locks: call {owner} ended holding {} locks; they are released and poisoned: {shown:?}{}",
                names.len(),
                if more > 0 { format!(" and {more} more") } else { String::new() }
            ));
        }
        if !dropped.is_empty() {
            self.warn(format_args!(
                "poison_mark_dropped: {} poison marks dropped (the table keeps at most {}), the oldest first: {:?}",
                dropped.len(),
                lock_inner(&self.inner).poison_limit,
                dropped[0]
            ));
        }
        Orphaned {
            orphaned: names,
            marks_dropped: dropped.len() as u64,
            oldest_dropped: dropped.into_iter().next(),
        }
    }

    /// How many poison marks the table keeps at most ([`LockTable::with_poison_limit`]).
    pub fn poison_limit(&self) -> usize {
        lock_inner(&self.inner).poison_limit
    }

    /// The locks `owner` holds, sorted. A lock handed to a waiter that has not yet been polled
    /// counts as held: ownership moves at hand-off.
    pub fn held_by(&self, owner: OwnerId) -> Vec<String> {
        let inner = lock_inner(&self.inner);
        inner
            .owners
            .get(&owner)
            .map(|s| s.held.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many locks `owner` holds (one map look-up; for "does this call hold locks?").
    pub fn held_count(&self, owner: OwnerId) -> usize {
        let inner = lock_inner(&self.inner);
        inner.owners.get(&owner).map_or(0, |s| s.held.len())
    }

    /// Whether some owner holds `name`.
    pub fn is_held(&self, name: &str) -> bool {
        let inner = lock_inner(&self.inner);
        inner.locks.get(name).is_some_and(|e| e.holder.is_some())
    }

    /// The owner holding `name`, if any.
    pub fn holder(&self, name: &str) -> Option<OwnerId> {
        let inner = lock_inner(&self.inner);
        inner
            .locks
            .get(name)
            .and_then(|e| e.holder)
            .map(|h| h.owner)
    }

    /// Whether `name` carries the poison mark (its last owner ended holding it, and nobody has
    /// released it normally since).
    pub fn is_poisoned(&self, name: &str) -> bool {
        let inner = lock_inner(&self.inner);
        inner.locks.get(name).is_some_and(|e| e.poisoned)
    }

    /// How many owners are queued for `name`.
    pub fn waiter_count(&self, name: &str) -> usize {
        let inner = lock_inner(&self.inner);
        inner.locks.get(name).map_or(0, |e| e.queue.len())
    }

    /// The number of entries in the table: locks that are held, waited on, or poisoned. Free,
    /// clean locks are removed, so this is 0 when nothing is in use.
    pub fn lock_count(&self) -> usize {
        lock_inner(&self.inner).locks.len()
    }

    /// Records that `waiter` waits for `target` to finish (a cross-domain call), as an edge of the
    /// wait-for graph, so cycles that mix lock waits and calls are found. The returned guard
    /// removes the edge when dropped; hold it for as long as the wait lasts.
    ///
    /// Errors: [`LockError::Deadlock`] if the edge would close a cycle (including `waiter ==
    /// target`); [`LockError::AlreadyWaiting`] if `waiter` is already waiting.
    pub fn wait_for_owner(&self, waiter: OwnerId, target: OwnerId) -> Result<WaitGuard, LockError> {
        let first = WaitEdge {
            waiter,
            on: WaitTarget::Owner(target),
            owner: target,
        };
        let result = self.with(|inner, _| {
            if inner.is_waiting(waiter) {
                return Err(LockError::AlreadyWaiting);
            }
            if let Some(cycle) = inner.find_cycle(first) {
                return Err(LockError::Deadlock(cycle));
            }
            let guard = inner.ticket();
            inner.owner_state(waiter).waiting = Some(Waiting::Owner { target, guard });
            Ok(WaitGuard {
                inner: InnerArc::clone(&self.inner),
                waiter,
                guard,
            })
        });
        if let Err(LockError::Deadlock(cycle)) = &result {
            report_cycle(cycle);
        }
        result
    }
}

/// What [`LockTable::release_orphaned_report`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Orphaned {
    /// The locks the owner still held, now released and poisoned, sorted.
    pub orphaned: Vec<String>,
    /// Poison marks (of earlier owners) dropped because the table keeps at most
    /// [`LockTable::poison_limit`]; their locks are acquired clean from now on.
    pub marks_dropped: u64,
    /// The oldest mark dropped, when any was.
    pub oldest_dropped: Option<String>,
}

/// A cross-domain wait-for edge (see [`LockTable::wait_for_owner`]); dropping it removes the edge.
#[must_use = "the wait-for edge is removed when the guard is dropped"]
pub struct WaitGuard {
    inner: InnerArc<Mutex<Inner>>,
    waiter: OwnerId,
    guard: Ticket,
}

impl fmt::Debug for WaitGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitGuard")
            .field("waiter", &self.waiter)
            .finish_non_exhaustive()
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let mut inner = lock_inner(&self.inner);
        if let Some(state) = inner.owners.get_mut(&self.waiter)
            && matches!(&state.waiting, Some(Waiting::Owner { guard, .. }) if *guard == self.guard)
        {
            state.waiting = None;
        }
        inner.gc_owner(self.waiter);
    }
}

/// The waiting part of an acquire. Its `Drop` is what makes `acquire` cancel-safe.
struct LockWait<'a> {
    table: &'a LockTable,
    owner: OwnerId,
    name: &'a str,
    ticket: Ticket,
    /// Set once the outcome has been returned; after that, drop leaves the table alone.
    finished: bool,
}

impl LockWait<'_> {
    /// The timeout fired: take the lock if it was handed over meanwhile, otherwise leave the queue.
    fn settle_on_timeout(&mut self) -> Result<Acquired, LockError> {
        self.finished = true;
        let (owner, name, ticket) = (self.owner, self.name, self.ticket);
        self.table
            .with(|inner, wakers| match inner.wait_state(name, ticket, None) {
                WaitState::Granted(acquired) => Ok(acquired),
                WaitState::Queued => {
                    inner.cancel_wait(owner, name, ticket, wakers);
                    Err(LockError::Timeout)
                }
                WaitState::Gone => Err(LockError::OwnerEnded),
            })
    }
}

impl Future for LockWait<'_> {
    type Output = Result<Acquired, LockError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.finished {
            // Polled again after completion: a misuse; answer without touching the table.
            return Poll::Ready(Err(LockError::OwnerEnded));
        }
        let state =
            lock_inner(&this.table.inner).wait_state(this.name, this.ticket, Some(cx.waker()));
        match state {
            WaitState::Granted(acquired) => {
                this.finished = true;
                Poll::Ready(Ok(acquired))
            }
            WaitState::Queued => Poll::Pending,
            WaitState::Gone => {
                this.finished = true;
                Poll::Ready(Err(LockError::OwnerEnded))
            }
        }
    }
}

impl Drop for LockWait<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let (owner, name, ticket) = (self.owner, self.name, self.ticket);
            self.table
                .with(|inner, wakers| inner.cancel_wait(owner, name, ticket, wakers));
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::pin::pin;

    fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name(""), Err(LockError::BadName));
        assert_eq!(
            check_name(&"x".repeat(MAX_NAME_LEN + 1)),
            Err(LockError::BadName)
        );
        assert_eq!(check_name(&"x".repeat(MAX_NAME_LEN)), Ok(()));
        let t = LockTable::new();
        assert_eq!(t.release(1, ""), Err(LockError::BadName));
        let long = "é".repeat(129); // 258 bytes
        let mut f = pin!(t.acquire(1, &long, None));
        assert_eq!(poll_once(f.as_mut()), Poll::Ready(Err(LockError::BadName)));
    }

    #[test]
    fn codes_match_design() {
        assert_eq!(LockError::Timeout.code(), -1);
        assert_eq!(
            LockError::Deadlock(DeadlockCycle { edges: vec![] }).code(),
            -2
        );
        assert_eq!(LockError::OwnerEnded.code(), -3);
        assert_eq!(LockError::AlreadyHeld.code(), -6);
        assert_eq!(LockError::NotHeld.code(), -6);
        assert_eq!(LockError::AlreadyWaiting.code(), -6);
        assert_eq!(LockError::BadName.code(), -8);
        assert_eq!(Acquired::Clean.code(), 0);
        assert_eq!(Acquired::Poisoned.code(), -4);
    }

    #[test]
    fn owners_and_entries_are_forgotten_when_unused() {
        let t = LockTable::new();
        let mut a = pin!(t.acquire(1, "a", None));
        assert_eq!(poll_once(a.as_mut()), Poll::Ready(Ok(Acquired::Clean)));
        let mut w = pin!(t.acquire(2, "a", None));
        assert!(poll_once(w.as_mut()).is_pending());
        {
            let inner = lock_inner(&t.inner);
            assert_eq!(inner.owners.len(), 2);
        }
        assert_eq!(presence_total(&t), 2);
        t.release(1, "a").unwrap();
        assert_eq!(poll_once(w.as_mut()), Poll::Ready(Ok(Acquired::Clean)));
        t.release(2, "a").unwrap();
        assert_eq!(presence_total(&t), 0);
        let inner = lock_inner(&t.inner);
        assert!(inner.owners.is_empty());
        assert!(inner.locks.is_empty());
    }

    fn presence_total(t: &LockTable) -> u32 {
        t.present.buckets.iter().map(|b| b.load(SeqCst)).sum()
    }

    #[test]
    fn orphan_release_of_an_owner_in_a_shared_bucket_still_finds_its_locks() {
        let t = LockTable::new();
        let sharing = 1 + PRESENCE_BUCKETS as u64;
        let mut a = pin!(t.acquire(sharing, "a", None));
        assert_eq!(poll_once(a.as_mut()), Poll::Ready(Ok(Acquired::Clean)));
        // 1 is not in the table but shares the bucket: the slow path, which finds nothing.
        assert!(t.release_orphaned(1).is_empty());
        assert_eq!(t.release_orphaned(sharing), vec!["a".to_string()]);
        // An owner whose only entry is a cross-domain wait goes the slow path too.
        let guard = t.wait_for_owner(2, 3).unwrap();
        assert_eq!(presence_total(&t), 1);
        assert!(t.release_orphaned(2).is_empty());
        assert_eq!(presence_total(&t), 0);
        drop(guard);
        assert_eq!(presence_total(&t), 0);
        assert!(t.is_poisoned("a"));
    }

    #[test]
    fn cycle_display_names_calls_and_locks() {
        let cycle = DeadlockCycle {
            edges: vec![
                WaitEdge {
                    waiter: 1,
                    on: WaitTarget::Lock("a".into()),
                    owner: 2,
                },
                WaitEdge {
                    waiter: 2,
                    on: WaitTarget::Owner(1),
                    owner: 1,
                },
            ],
        };
        assert_eq!(
            cycle.to_string(),
            "call 1 waits for lock \"a\" held by call 2 -> call 2 waits for call 1"
        );
        assert_eq!(cycle.victim(), Some(1));
        assert_eq!(cycle.owners(), vec![1, 2]);
        assert_eq!(cycle.locks(), vec!["a"]);
        assert!(
            LockError::Deadlock(cycle)
                .to_string()
                .starts_with("deadlock victim: call 1")
        );
    }

    #[test]
    fn poll_after_completion_does_not_touch_the_table() {
        let t = LockTable::new();
        let mut a = pin!(t.acquire(1, "a", None));
        assert_eq!(poll_once(a.as_mut()), Poll::Ready(Ok(Acquired::Clean)));
        let mut w = LockWait {
            table: &t,
            owner: 2,
            name: "a",
            ticket: 999,
            finished: true,
        };
        assert_eq!(
            poll_once(Pin::new(&mut w)),
            Poll::Ready(Err(LockError::OwnerEnded))
        );
        drop(w);
        assert_eq!(t.holder("a"), Some(1));
    }
}

/// Model checks (loom) of the races that matter: a waiter cancelled while the lock is handed to
/// it, a timeout settling while the holder releases, an orphan release racing a cancellation, and
/// two calls closing a cycle at the same time. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p warden-core --lib --release locks::loom_tests`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::thread;
    use std::pin::pin;

    /// Wakes a parked loom thread (loom's own `block_on` needs its `futures` feature).
    struct Unpark(thread::Thread);

    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }

    /// Drives `f` on this loom thread, parking between polls; a lost wake-up shows up as a
    /// deadlock that loom reports.
    fn block_on<F: Future>(f: F) -> F::Output {
        let mut f = pin!(f);
        let waker = Waker::from(std::sync::Arc::new(Unpark(thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
                return out;
            }
            thread::park();
        }
    }

    fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    fn take(t: &LockTable, owner: OwnerId, name: &str) {
        let f = pin!(t.acquire(owner, name, None));
        assert!(matches!(poll_once(f), Poll::Ready(Ok(_))));
    }

    /// Waiter 2 is queued and then cancelled (dropped) while 1 releases; waiter 3 blocks. In every
    /// interleaving 3 is woken and gets the lock, and the table ends empty.
    #[test]
    fn cancel_races_hand_off_and_the_next_waiter_is_woken() {
        loom::model(|| {
            let t = LockTable::new();
            take(&t, 1, "L");
            let tb = t.clone();
            let cancelled = thread::spawn(move || {
                let mut f = pin!(tb.acquire(2, "L", None));
                if let Poll::Ready(r) = poll_once(f.as_mut()) {
                    // 1 had already released and 3 had not queued: 2 took the free lock.
                    r.unwrap();
                    tb.release(2, "L").unwrap();
                }
                // Dropped here: queued, or handed the lock, or done.
            });
            let tc = t.clone();
            let patient = thread::spawn(move || {
                let r = block_on(tc.acquire(3, "L", None));
                assert_eq!(r, Ok(Acquired::Clean));
                tc.release(3, "L").unwrap();
            });
            t.release(1, "L").unwrap();
            cancelled.join().unwrap();
            patient.join().unwrap();
            assert_eq!(t.lock_count(), 0);
            assert_eq!(t.held_count(2), 0);
        });
    }

    /// The same race after an orphan release: the first owner to get the lock afterwards is told
    /// it is poisoned, even when the hand-off went to the cancelled waiter first.
    #[test]
    fn orphan_release_races_cancellation_and_the_poison_is_not_lost() {
        use loom::sync::atomic::{AtomicUsize, Ordering};
        loom::model(|| {
            let t = LockTable::new();
            // Counts acquisitions after the orphan; bumped while holding, so it is exact.
            let taken = InnerArc::new(AtomicUsize::new(0));
            take(&t, 1, "L");
            let (tb, taken_b) = (t.clone(), taken.clone());
            let cancelled = thread::spawn(move || {
                let mut f = pin!(tb.acquire(2, "L", None));
                if let Poll::Ready(r) = poll_once(f.as_mut()) {
                    let first = taken_b.fetch_add(1, Ordering::SeqCst) == 0;
                    assert_eq!(r.unwrap() == Acquired::Poisoned, first);
                    tb.release(2, "L").unwrap();
                }
            });
            let (tc, taken_c) = (t.clone(), taken.clone());
            let patient = thread::spawn(move || {
                let r = block_on(tc.acquire(3, "L", None)).unwrap();
                let first = taken_c.fetch_add(1, Ordering::SeqCst) == 0;
                assert_eq!(r == Acquired::Poisoned, first);
                tc.release(3, "L").unwrap();
            });
            assert_eq!(t.release_orphaned(1), vec!["L".to_string()]);
            cancelled.join().unwrap();
            patient.join().unwrap();
            assert_eq!(t.lock_count(), 0);
        });
    }

    /// The lock-free fast path of `release_orphaned` (the presence count per bucket of owners,
    /// read without the mutex; two buckets under loom) never misses a held lock. Owner 1 waits
    /// for L held by 2, gets it (free or by hand-off) and ends holding it, while owner 3 — in
    /// the same bucket — takes and releases a lock of its own, so the count goes up and down
    /// around 1's read. 1's end always finds L; owner 5 (same bucket, never in the table)
    /// always finds nothing; and the counts are back to zero at the end.
    #[test]
    fn orphan_fast_path_never_misses_a_held_lock() {
        loom::model(|| {
            let t = LockTable::new();
            take(&t, 2, "L");
            let t1 = t.clone();
            let ends = thread::spawn(move || {
                assert_eq!(block_on(t1.acquire(1, "L", None)), Ok(Acquired::Clean));
                assert_eq!(t1.release_orphaned(1), vec!["L".to_string()]);
            });
            let t3 = t.clone();
            let other = thread::spawn(move || {
                take(&t3, 3, "M");
                t3.release(3, "M").unwrap();
                assert!(t3.release_orphaned(5).is_empty());
            });
            t.release(2, "L").unwrap();
            ends.join().unwrap();
            other.join().unwrap();
            assert!(t.is_poisoned("L"));
            assert_eq!(t.held_count(1), 0);
            assert!(t.present.buckets.iter().all(|b| b.load(SeqCst) == 0));
        });
    }

    /// A timeout settles while 1 releases: the timed waiter either gets the lock or leaves the
    /// queue, and in both cases the waiter behind it gets the lock.
    #[test]
    fn timeout_races_release() {
        loom::model(|| {
            let t = LockTable::new();
            take(&t, 1, "L");
            let ticket = match t.with(|inner, _| inner.begin_acquire(2, "L", false)) {
                Ok(Begin::Wait(ticket)) => ticket,
                _ => panic!("2 should have to wait"),
            };
            let tb = t.clone();
            let timed = thread::spawn(move || {
                let mut wait = LockWait {
                    table: &tb,
                    owner: 2,
                    name: "L",
                    ticket,
                    finished: false,
                };
                match wait.settle_on_timeout() {
                    Ok(Acquired::Clean) => tb.release(2, "L").unwrap(),
                    Err(LockError::Timeout) => assert_eq!(tb.held_count(2), 0),
                    other => panic!("unexpected {other:?}"),
                }
            });
            let tc = t.clone();
            let patient = thread::spawn(move || {
                assert_eq!(block_on(tc.acquire(3, "L", None)), Ok(Acquired::Clean));
                tc.release(3, "L").unwrap();
            });
            t.release(1, "L").unwrap();
            timed.join().unwrap();
            patient.join().unwrap();
            assert_eq!(t.lock_count(), 0);
        });
    }

    /// Two calls close the same cycle concurrently: exactly one is the victim, and after it
    /// backs out the other completes.
    #[test]
    fn concurrent_cycle_has_exactly_one_victim() {
        loom::model(|| {
            let t = LockTable::new();
            take(&t, 1, "a");
            take(&t, 2, "b");
            let spawn = |owner: OwnerId, mine: &'static str, want: &'static str| {
                let t = t.clone();
                thread::spawn(move || match block_on(t.acquire(owner, want, None)) {
                    Ok(_) => {
                        t.release(owner, want).unwrap();
                        t.release(owner, mine).unwrap();
                        false
                    }
                    Err(LockError::Deadlock(cycle)) => {
                        assert_eq!(cycle.victim(), Some(owner));
                        assert_eq!(cycle.edges.len(), 2);
                        t.release(owner, mine).unwrap();
                        true
                    }
                    Err(other) => panic!("unexpected {other:?}"),
                })
            };
            let x = spawn(1, "a", "b");
            let y = spawn(2, "b", "a");
            let victims = [x.join().unwrap(), y.join().unwrap()];
            assert_eq!(victims.iter().filter(|v| **v).count(), 1);
            assert_eq!(t.lock_count(), 0);
        });
    }
}
