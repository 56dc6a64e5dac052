//! The process memory budget, per-domain accounts, the memory gate and memory pressure.
//!
//! # The model
//!
//! One [`MemoryBudget`] per process (an `Arc<MemoryBudget>`) caps the memory that guest work may
//! hold. Two kinds of claim are made against it:
//!
//! - **Charges** ("used"): memory that exists. Each domain has a [`MemoryAccount`]; the runtime
//!   charges it from wasmtime's `ResourceLimiter` before a linear memory or table grows
//!   ([`MemoryAccount::grow`]) and uncharges it when memory goes away
//!   ([`MemoryAccount::shrink`], or dropping the account when the domain is dropped).
//! - **Reservations** ("reserved"): memory that work *will* need. The memory gate (the CLR's
//!   `MemoryFailPoint`) is [`MemoryBudget::reserve`]: before starting a piece of work, ask for the
//!   bytes it will need; if `limit − used − reserved` is short the request fails at once with
//!   [`InsufficientMemory`] — a soft OOM: nothing was started, nothing is damaged, nothing
//!   escalates. A granted [`Reservation`] is an RAII guard; dropping it returns whatever is left.
//!   Growth by the call that holds a reservation spends the reservation first, so work that
//!   stays within its declared size can never be denied halfway through.
//!
//! Both are kept in one atomic counter, `committed = used + reserved`, which is compared with
//! the limit in a single compare-and-swap. So:
//!
//! - The budget is never oversubscribed, however many threads reserve and grow at once:
//!   `committed <= limit` at every instant, not just eventually.
//! - The hot path (a `memory.grow` in a guest) takes no lock and does not allocate (unless
//!   it is handed more than four reservations to spend).
//! - Accounting is exact: when no operation is in flight, [`MemoryBudget::used`] is the sum of
//!   the live accounts' [`MemoryAccount::used`] and [`MemoryBudget::reserved`] is the sum of the
//!   live reservations' [`Reservation::bytes`].
//!
//! Growth that would pass the budget is denied ([`Denied`]) even when the domain's own limit
//! would allow it; per-domain limits are the runtime's business (wasmtime's `StoreLimits`), this
//! module only enforces the process-wide cap.
//!
//! # Pressure
//!
//! Two water marks on `committed` ([`MemoryBudget::set_watermarks`]; by default 90 % and 80 % of
//! the limit) give the host a chance to act before requests start failing, e.g. by unloading
//! its largest idle domain. Rising to the high mark or above produces one [`Pressure::High`];
//! falling below the low mark afterwards produces one [`Pressure::Relieved`] (hysteresis, so a
//! budget hovering around one mark does not produce a storm of events). The pressure state is a
//! bit in the same atomic word as `committed`, so exactly one thread sees each crossing, and it
//! calls the handler ([`MemoryBudget::set_pressure_handler`]) itself, after its own operation is
//! complete and without holding any lock of the budget: the handler may use the budget freely.
//!
//! # What the budget covers, and what it does not
//!
//! The budget counts exactly what is charged to it, nothing else:
//!
//! - Covered, when the runtime charges it: guests' linear memories and tables (as their sizes in
//!   bytes, charged on growth, including the initial size at instantiation) and whatever per-domain
//!   host state the runtime decides to charge (handles and the like).
//! - Covered, when the embedder charges it: its own native work that it gates through
//!   [`MemoryBudget::reserve`] or charges to an account of its own.
//! - **Not covered**: the runtime's own heap (wasmtime's `Store`, compiled code, instance
//!   metadata, JIT and GC bookkeeping), thread stacks, the allocator's slack and fragmentation,
//!   and anything the process allocates without telling the budget. Nor does the budget look
//!   at the process's real resident size: it is an accounting system, not a memory probe. That is
//!   why [`MemoryBudget::from_machine`] keeps a margin below what the machine has.
//! - A reservation is a promise about the budget, not memory: nothing is allocated or
//!   pre-faulted, and an allocation made outside the budget can still fail.
//!
//! # Example
//!
//! ```
//! use warden_core::budget::MemoryBudget;
//!
//! let budget = MemoryBudget::new(64 << 20);
//! let domain = budget.account();
//!
//! // The gate: admit a call that declares it needs 16 MiB.
//! let gate = budget.reserve(16 << 20).expect("room for the call");
//! // The call's growth spends its reservation first...
//! domain.grow(4 << 20, &[&gate]).unwrap();
//! assert_eq!((budget.used(), budget.reserved()), (4 << 20, 12 << 20));
//! // ...and at the end of the call the rest goes back.
//! drop(gate);
//! assert_eq!((budget.used(), budget.reserved()), (4 << 20, 0));
//!
//! // A request the budget cannot meet fails at once: a soft OOM.
//! let err = budget.reserve(100 << 20).unwrap_err();
//! assert_eq!(err.available, 60 << 20);
//!
//! drop(domain); // dropping the domain's account returns its memory
//! assert_eq!(budget.used(), 0);
//! ```

use std::fmt;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// The pressure state lives in the top bit of the `committed` word, so the counter and the
/// state change in one atomic step and each crossing is seen by exactly one thread.
const PRESSURE_BIT: u64 = 1 << 63;

/// The largest limit a budget can have (2^63 − 1 bytes); [`MemoryBudget::new`] clamps to it.
///
/// The top bit of the budget's internal counter holds the pressure state. No machine comes near
/// this size, so a clamped budget is, for every practical purpose, unlimited.
pub const MAX_LIMIT: u64 = PRESSURE_BIT - 1;

/// What [`MemoryBudget::machine_limit`] returns when neither the cgroup limit nor
/// `/proc/meminfo` can be read (non-Linux systems, or a sandbox hiding both): 1 GiB.
pub const FALLBACK_MACHINE_LIMIT: u64 = 1 << 30;

/// The smallest margin [`MemoryBudget::machine_limit`] keeps back (unless the machine is tiny):
/// 256 MiB for the runtime's own heap, thread stacks and the rest of the system.
pub const MACHINE_MARGIN_MIN: u64 = 256 << 20;

/// The handler called on memory-pressure crossings; see [`MemoryBudget::set_pressure_handler`].
pub type PressureHandler = Arc<dyn Fn(Pressure) + Send + Sync>;

/// A crossing of one of the budget's water marks, passed to the pressure handler.
///
/// The figures are read just after the crossing; with other threads at work they are a snapshot,
/// not the exact values at the instant of the crossing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pressure {
    /// `used + reserved` rose to the high-water mark or above it.
    High {
        /// Bytes charged to accounts.
        used: u64,
        /// Bytes held by reservations.
        reserved: u64,
        /// The budget's limit.
        limit: u64,
    },
    /// `used + reserved` fell below the low-water mark after a [`Pressure::High`].
    Relieved {
        /// Bytes charged to accounts.
        used: u64,
        /// Bytes held by reservations.
        reserved: u64,
        /// The budget's limit.
        limit: u64,
    },
}

/// The memory gate refused a reservation: the budget cannot cover it (a soft OOM).
///
/// Nothing was reserved or started; the caller can fail the request, queue it, or retry later.
/// This is the `insufficient-memory` outcome, which never escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "insufficient memory: requested {requested} bytes, but only {available} bytes of the memory budget are available"
)]
pub struct InsufficientMemory {
    /// The bytes asked for.
    pub requested: u64,
    /// The bytes the budget had left (`limit − used − reserved`) when the request was refused.
    pub available: u64,
}

/// Growth was denied: the budget (after spending the given reservations) cannot cover it.
///
/// Nothing was charged and no reservation was spent. In a guest this is a failed
/// `memory.grow`, recorded so that the call's failure, if it fails, is `out-of-memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "memory growth denied: requested {requested} bytes, but only {available} bytes were available to it (its reservations plus the free budget)"
)]
pub struct Denied {
    /// The bytes of growth asked for.
    pub requested: u64,
    /// What could have been given: the reservations' remaining bytes plus the free budget.
    pub available: u64,
}

/// Water marks that do not satisfy `low <= high <= limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid memory water marks: high = {high}, low = {low}; they need low <= high <= limit ({limit})"
)]
pub struct InvalidWatermarks {
    /// The high-water mark given.
    pub high: u64,
    /// The low-water mark given.
    pub low: u64,
    /// The budget's limit.
    pub limit: u64,
}

/// A snapshot of a budget's figures, from [`MemoryBudget::stats`].
///
/// Each field is read atomically, but not all together: with other threads at work the fields
/// may come from slightly different moments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BudgetStats {
    /// The limit in bytes.
    pub limit: u64,
    /// Bytes charged to accounts.
    pub used: u64,
    /// Bytes held by reservations.
    pub reserved: u64,
    /// The highest `used` seen.
    pub peak: u64,
    /// The highest `used + reserved` seen: how close the budget came to its limit.
    pub peak_committed: u64,
    /// Growth requests denied ([`Denied`]).
    pub denials: u64,
    /// Reservations refused ([`InsufficientMemory`]).
    pub refusals: u64,
    /// Whether the budget is between a [`Pressure::High`] and the following
    /// [`Pressure::Relieved`].
    pub under_pressure: bool,
}

/// A snapshot of one account's figures, from [`MemoryAccount::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountStats {
    /// Bytes charged to the account.
    pub used: u64,
    /// Bytes held by live reservations taken through [`MemoryAccount::reserve`].
    pub reserved: u64,
    /// The highest `used` seen.
    pub peak: u64,
    /// Growth requests of this account denied.
    pub denials: u64,
    /// Reservations through this account refused.
    pub refusals: u64,
}

/// The process-wide memory budget. Always used as `Arc<MemoryBudget>`.
///
/// See the [module documentation](self) for the model and for what the budget does not cover.
pub struct MemoryBudget {
    limit: u64,
    /// `used + reserved`, with [`PRESSURE_BIT`] set while under pressure. The only counter the
    /// limit is enforced on; `used` and `reserved` below are for reporting.
    state: AtomicU64,
    used: AtomicU64,
    reserved: AtomicU64,
    peak: AtomicU64,
    peak_committed: AtomicU64,
    denials: AtomicU64,
    refusals: AtomicU64,
    high: AtomicU64,
    low: AtomicU64,
    /// Taken only on a crossing (to clone the handler out) and when the handler is replaced.
    handler: RwLock<Option<PressureHandler>>,
}

/// Which way an operation moved the pressure state.
#[derive(Clone, Copy)]
enum Edge {
    High,
    Relieved,
}

impl MemoryBudget {
    /// A budget of `limit` bytes (clamped to [`MAX_LIMIT`]), with water marks at 90 % and 80 %
    /// of it and no pressure handler.
    pub fn new(limit: u64) -> Arc<Self> {
        let limit = limit.min(MAX_LIMIT);
        Arc::new(Self {
            limit,
            state: AtomicU64::new(0),
            used: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            peak_committed: AtomicU64::new(0),
            denials: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            high: AtomicU64::new(percent(limit, 90)),
            low: AtomicU64::new(percent(limit, 80)),
            handler: RwLock::new(None),
        })
    }

    /// A budget of what the machine can give: [`MemoryBudget::machine_limit`] bytes.
    ///
    /// This is the budget to use when the embedder sets none, so that a gate never grants more
    /// memory than the machine (or the container) has.
    pub fn from_machine() -> Arc<Self> {
        Self::new(Self::machine_limit())
    }

    /// The limit [`MemoryBudget::from_machine`] uses, in bytes.
    ///
    /// The machine's memory is the smallest finite cgroup memory limit that applies to this
    /// process (cgroup v2 `memory.max`, or v1 `memory.limit_in_bytes`, in the process's own
    /// cgroup and its ancestors), or `MemTotal` from `/proc/meminfo` if that is smaller or there
    /// is no limit. From it a margin is kept back for what the budget does not count (the
    /// runtime's own heap, stacks, the rest of the system): 10 % or [`MACHINE_MARGIN_MIN`],
    /// whichever is larger — but never more than half, so a small container still gets half
    /// of its memory. If none of these files can be read, [`FALLBACK_MACHINE_LIMIT`].
    ///
    /// The value is read afresh on every call; it does not follow later changes of the cgroup
    /// limit into a budget already made.
    pub fn machine_limit() -> u64 {
        machine_limit_from(read_cgroup_limit(), read_mem_total())
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged to accounts: the sum of the live accounts' [`MemoryAccount::used`].
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Bytes held by reservations: the sum of the live reservations' [`Reservation::bytes`].
    pub fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::Relaxed)
    }

    /// `used + reserved`, read in one atomic load: the figure the limit and the water marks are
    /// checked against. Never more than [`MemoryBudget::limit`].
    pub fn committed(&self) -> u64 {
        self.state.load(Ordering::Acquire) & !PRESSURE_BIT
    }

    /// The highest [`MemoryBudget::used`] seen since the budget was made.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// The highest [`MemoryBudget::committed`] seen since the budget was made.
    pub fn peak_committed(&self) -> u64 {
        self.peak_committed.load(Ordering::Relaxed)
    }

    /// How many growth requests were denied ([`Denied`]), over all accounts.
    pub fn denials(&self) -> u64 {
        self.denials.load(Ordering::Relaxed)
    }

    /// How many reservations were refused ([`InsufficientMemory`]).
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// `limit − used − reserved`: what the gate could grant right now.
    pub fn available(&self) -> u64 {
        self.limit - self.committed()
    }

    /// Whether the budget is between a [`Pressure::High`] and the following
    /// [`Pressure::Relieved`].
    pub fn under_pressure(&self) -> bool {
        self.state.load(Ordering::Acquire) & PRESSURE_BIT != 0
    }

    /// The memory gate: reserve `bytes` of the budget for work about to start.
    ///
    /// Fails at once, without waiting and without side effects other than counting a refusal,
    /// when `limit − used − reserved < bytes`. Concurrent reservations never oversubscribe the
    /// budget. The reservation is released when the [`Reservation`] is dropped (or
    /// [`Reservation::release`]d); growth that is handed the reservation spends it first.
    ///
    /// A reservation of 0 bytes always succeeds. To attribute the reservation to a domain in
    /// its figures, use [`MemoryAccount::reserve`] instead.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, InsufficientMemory> {
        reserve_inner(self, None, bytes)
    }

    /// A new, empty account for one domain (or one piece of embedder work) charged to this
    /// budget, with no limit of its own ([`MemoryAccount::limit`] is `u64::MAX`).
    pub fn account(self: &Arc<Self>) -> MemoryAccount {
        self.account_limited(u64::MAX)
    }

    /// A new, empty account whose reservations ([`MemoryAccount::reserve`]) are bounded by
    /// `limit` less what the account holds: a domain with an 8 MiB memory limit can never
    /// reserve more than the 8 MiB it could use, however often it asks. Growth is not
    /// checked against `limit` here (the runtime checks its own per-domain limits before it
    /// charges); only the budget bounds [`MemoryAccount::grow`].
    pub fn account_limited(self: &Arc<Self>, limit: u64) -> MemoryAccount {
        MemoryAccount {
            inner: Arc::new(AccountInner {
                limit,
                budget: Arc::clone(self),
                used: AtomicU64::new(0),
                reserved: AtomicU64::new(0),
                peak: AtomicU64::new(0),
                denials: AtomicU64::new(0),
                refusals: AtomicU64::new(0),
            }),
        }
    }

    /// Sets the water marks, in bytes of `used + reserved`. Needs `low <= high <= limit`.
    ///
    /// The new marks apply from the next change of the budget: if that change finds the budget
    /// at or above the new high mark (and not already under pressure), it produces a
    /// [`Pressure::High`], and so on. A high mark of 0 means permanent pressure once anything
    /// is charged; `high == limit` means pressure only when the budget is full.
    pub fn set_watermarks(&self, high: u64, low: u64) -> Result<(), InvalidWatermarks> {
        if low > high || high > self.limit {
            return Err(InvalidWatermarks {
                high,
                low,
                limit: self.limit,
            });
        }
        self.high.store(high, Ordering::Relaxed);
        self.low.store(low, Ordering::Relaxed);
        Ok(())
    }

    /// The water marks as `(high, low)`.
    pub fn watermarks(&self) -> (u64, u64) {
        (
            self.high.load(Ordering::Relaxed),
            self.low.load(Ordering::Relaxed),
        )
    }

    /// Installs the handler called on each pressure crossing, replacing any previous one.
    ///
    /// The handler runs on the thread whose reservation, growth, release or shrink crossed the
    /// mark — possibly a guest's `memory.grow` inside wasmtime, so it should be quick and must
    /// not block (hand the event to a task if there is real work to do). It is called after that
    /// operation is complete and without any lock of the budget held, so it may use the budget
    /// (and even replace the handler). Crossings on different threads may call it concurrently,
    /// and calls may then finish out of order; [`MemoryBudget::under_pressure`] tells the
    /// current state. A panic in the handler is caught and logged; it does not affect the
    /// operation that crossed.
    pub fn set_pressure_handler(&self, handler: PressureHandler) {
        *self.handler.write().unwrap_or_else(PoisonError::into_inner) = Some(handler);
    }

    /// Removes the pressure handler; crossings still change [`MemoryBudget::under_pressure`].
    pub fn clear_pressure_handler(&self) {
        *self.handler.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// A snapshot of the budget's figures.
    pub fn stats(&self) -> BudgetStats {
        let state = self.state.load(Ordering::Acquire);
        BudgetStats {
            limit: self.limit,
            used: self.used(),
            reserved: self.reserved(),
            peak: self.peak(),
            peak_committed: self.peak_committed(),
            denials: self.denials(),
            refusals: self.refusals(),
            under_pressure: state & PRESSURE_BIT != 0,
        }
    }

    /// Adds `bytes` to `committed` if the limit allows it. On refusal, returns what was free.
    fn commit(&self, bytes: u64) -> Result<Option<Edge>, u64> {
        // Nothing changes, so nothing can cross a mark (a limit-0 budget stays calm).
        if bytes == 0 {
            return Ok(None);
        }
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let committed = cur & !PRESSURE_BIT;
            // `committed <= limit` always holds, so this cannot underflow, and comparing with
            // the headroom (rather than adding) keeps u64::MAX requests from wrapping.
            let free = self.limit - committed;
            if bytes > free {
                return Err(free);
            }
            let new = self.next_state(cur, committed + bytes);
            match self
                .state
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.peak_committed
                        .fetch_max(committed + bytes, Ordering::Relaxed);
                    return Ok(edge(cur, new));
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Takes `bytes` off `committed`. Callers only return what they were given.
    fn uncommit(&self, bytes: u64) -> Option<Edge> {
        if bytes == 0 {
            return None;
        }
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let committed = (cur & !PRESSURE_BIT).saturating_sub(bytes);
            let new = self.next_state(cur, committed);
            match self
                .state
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return edge(cur, new),
                Err(actual) => cur = actual,
            }
        }
    }

    /// The new state word for `committed`, with the pressure bit moved by the hysteresis rule.
    fn next_state(&self, cur: u64, committed: u64) -> u64 {
        let high = self.high.load(Ordering::Relaxed);
        let low = self.low.load(Ordering::Relaxed);
        let pressured = if cur & PRESSURE_BIT != 0 {
            committed >= low
        } else {
            committed >= high
        };
        committed | if pressured { PRESSURE_BIT } else { 0 }
    }

    /// Calls the handler for a crossing. Called at the end of the operation that crossed, so
    /// the figures it reports include that operation.
    fn notify(&self, edge: Option<Edge>) {
        let Some(edge) = edge else { return };
        let (used, reserved, limit) = (self.used(), self.reserved(), self.limit);
        let pressure = match edge {
            Edge::High => Pressure::High {
                used,
                reserved,
                limit,
            },
            Edge::Relieved => Pressure::Relieved {
                used,
                reserved,
                limit,
            },
        };
        tracing::debug!(?pressure, "memory pressure crossing");
        // Clone the handler out so that it runs with no lock held.
        let handler = self
            .handler
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(handler) = handler
            && catch_unwind(AssertUnwindSafe(|| handler(pressure))).is_err()
        {
            tracing::error!(?pressure, "memory pressure handler panicked");
        }
    }
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (high, low) = self.watermarks();
        let stats = self.stats();
        f.debug_struct("MemoryBudget")
            .field("limit", &stats.limit)
            .field("used", &stats.used)
            .field("reserved", &stats.reserved)
            .field("peak", &stats.peak)
            .field("peak_committed", &stats.peak_committed)
            .field("denials", &stats.denials)
            .field("refusals", &stats.refusals)
            .field("high", &high)
            .field("low", &low)
            .field("under_pressure", &stats.under_pressure)
            .finish_non_exhaustive()
    }
}

fn edge(old: u64, new: u64) -> Option<Edge> {
    match (old & PRESSURE_BIT != 0, new & PRESSURE_BIT != 0) {
        (false, true) => Some(Edge::High),
        (true, false) => Some(Edge::Relieved),
        _ => None,
    }
}

/// `limit * pct / 100` without overflow.
fn percent(limit: u64, pct: u64) -> u64 {
    (u128::from(limit) * u128::from(pct) / 100) as u64
}

fn reserve_inner(
    budget: &Arc<MemoryBudget>,
    account: Option<&Arc<AccountInner>>,
    bytes: u64,
) -> Result<Reservation, InsufficientMemory> {
    let edge = match budget.commit(bytes) {
        Ok(edge) => edge,
        Err(available) => {
            budget.refusals.fetch_add(1, Ordering::Relaxed);
            if let Some(account) = account {
                account.refusals.fetch_add(1, Ordering::Relaxed);
            }
            return Err(InsufficientMemory {
                requested: bytes,
                available,
            });
        }
    };
    budget.reserved.fetch_add(bytes, Ordering::Relaxed);
    if let Some(account) = account {
        account.reserved.fetch_add(bytes, Ordering::Relaxed);
    }
    budget.notify(edge);
    Ok(Reservation {
        budget: Arc::clone(budget),
        account: account.cloned(),
        remaining: AtomicU64::new(bytes),
    })
}

/// A granted memory-gate reservation: bytes of the budget set aside for work in progress.
///
/// Dropping it (or [`Reservation::release`]) returns whatever has not been spent to the budget.
/// Growth spends it when it is passed to [`MemoryAccount::grow`]; spending is atomic, so one
/// reservation may be shared by reference between threads. The runtime drops a call's
/// reservations when the call ends and a domain's when it is unloaded.
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    /// The account the reservation was taken through, for per-domain figures.
    account: Option<Arc<AccountInner>>,
    remaining: AtomicU64,
}

impl Reservation {
    /// The bytes not yet spent.
    pub fn bytes(&self) -> u64 {
        self.remaining.load(Ordering::Acquire)
    }

    /// The budget the reservation belongs to.
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// Returns the unspent bytes to the budget now (the same as dropping it).
    pub fn release(self) {
        drop(self);
    }

    /// Takes up to `want` bytes; returns how many were taken.
    fn take(&self, want: u64) -> u64 {
        match self
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                (left > 0).then(|| left - left.min(want))
            }) {
            Ok(left) => left.min(want),
            Err(_) => 0,
        }
    }

    /// Gives back bytes taken by [`Reservation::take`] for a growth that was then denied.
    fn give_back(&self, bytes: u64) {
        self.remaining.fetch_add(bytes, Ordering::AcqRel);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let left = self.remaining.swap(0, Ordering::AcqRel);
        if left == 0 {
            return;
        }
        // Reporting counters first, `committed` last: the figures never claim more than is
        // committed.
        if let Some(account) = &self.account {
            account.reserved.fetch_sub(left, Ordering::Relaxed);
        }
        self.budget.reserved.fetch_sub(left, Ordering::Relaxed);
        let edge = self.budget.uncommit(left);
        self.budget.notify(edge);
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

struct AccountInner {
    /// Bounds `used + reserved` for reservations through the account.
    limit: u64,
    budget: Arc<MemoryBudget>,
    used: AtomicU64,
    reserved: AtomicU64,
    peak: AtomicU64,
    denials: AtomicU64,
    refusals: AtomicU64,
}

/// One domain's share of the budget: what it has charged, its peak, its denials.
///
/// The runtime makes one per domain and charges it from wasmtime's `ResourceLimiter`. Dropping
/// the account uncharges everything still charged to it, so dropping a domain returns its
/// memory to the budget. (Reservations taken through the account live on until they are
/// dropped themselves.)
pub struct MemoryAccount {
    inner: Arc<AccountInner>,
}

/// How many spent amounts [`MemoryAccount::grow`] remembers without allocating.
const INLINE_SPENDS: usize = 4;

impl MemoryAccount {
    /// Charges `bytes` of growth to this account.
    ///
    /// The reservations in `spend_from` (the running call's gate reservations) are spent first,
    /// in order; the rest must fit in the budget's free space (`limit − used − reserved`). If it
    /// does not, the growth is denied: nothing is charged, nothing is spent, and a denial is
    /// counted on the account and the budget. Reservations of another budget are ignored. Lock
    /// free; growth of 0 bytes always succeeds.
    pub fn grow(&self, bytes: u64, spend_from: &[&Reservation]) -> Result<(), Denied> {
        if bytes == 0 {
            return Ok(());
        }
        #[cfg(feature = "failpoints")]
        crate::failpoint!(
            "budget-charge",
            Err(Denied {
                requested: bytes,
                available: 0
            })
        );
        let budget = &self.inner.budget;
        let mut inline = [0u64; INLINE_SPENDS];
        let mut spilled: Vec<u64> = Vec::new();
        let mut taken = 0u64;
        for (i, reservation) in spend_from.iter().enumerate() {
            let got = if taken < bytes && Arc::ptr_eq(&reservation.budget, budget) {
                reservation.take(bytes - taken)
            } else {
                0
            };
            taken += got;
            match inline.get_mut(i) {
                Some(slot) => *slot = got,
                None => spilled.push(got),
            }
        }
        let spent = |i: usize| match i.checked_sub(INLINE_SPENDS) {
            None => inline[i],
            Some(j) => spilled[j],
        };

        let edge = match budget.commit(bytes - taken) {
            Ok(edge) => edge,
            Err(free) => {
                for (i, reservation) in spend_from.iter().enumerate() {
                    let got = spent(i);
                    if got > 0 {
                        reservation.give_back(got);
                    }
                }
                self.inner.denials.fetch_add(1, Ordering::Relaxed);
                budget.denials.fetch_add(1, Ordering::Relaxed);
                return Err(Denied {
                    requested: bytes,
                    available: taken + free,
                });
            }
        };

        // The spent bytes move from reserved to used; `committed` already counts them. Take
        // them off `reserved` before adding to `used` so the figures never overstate.
        if taken > 0 {
            for (i, reservation) in spend_from.iter().enumerate() {
                let got = spent(i);
                if let (true, Some(owner)) = (got > 0, &reservation.account) {
                    owner.reserved.fetch_sub(got, Ordering::Relaxed);
                }
            }
            budget.reserved.fetch_sub(taken, Ordering::Relaxed);
        }
        let used = budget.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        budget.peak.fetch_max(used, Ordering::Relaxed);
        let mine = self.inner.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.inner.peak.fetch_max(mine, Ordering::Relaxed);
        budget.notify(edge);
        Ok(())
    }

    /// Uncharges `bytes` (memory that went away, or a growth charged but then not made).
    ///
    /// Uncharging more than is charged uncharges what there is, so an account never goes
    /// negative and never returns another account's bytes to the budget.
    pub fn shrink(&self, bytes: u64) {
        let removed =
            match self
                .inner
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    (used > 0 && bytes > 0).then(|| used - used.min(bytes))
                }) {
                Ok(prev) => prev.min(bytes),
                Err(_) => return,
            };
        self.inner.uncharge(removed);
    }

    /// Reserves `bytes` of the budget like [`MemoryBudget::reserve`], and shows the reservation
    /// in this account's figures ([`AccountStats::reserved`]) while it lives. A refusal is
    /// counted on the account too.
    ///
    /// The request is also refused when it would take the account's `used + reserved` past
    /// its [`limit`](MemoryAccount::limit); the refusal's `available` is then what the
    /// account's own limit leaves (or the budget's free space, if that is less).
    pub fn reserve(&self, bytes: u64) -> Result<Reservation, InsufficientMemory> {
        let inner = &self.inner;
        if bytes > 0 && inner.limit != u64::MAX {
            // Claim room under the account's limit first (one CAS on `reserved`), so that
            // concurrent reservations through one account cannot pass it together.
            let claimed =
                inner
                    .reserved
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |reserved| {
                        let held = inner.used.load(Ordering::Acquire).saturating_add(reserved);
                        (held.saturating_add(bytes) <= inner.limit).then(|| reserved + bytes)
                    });
            if let Err(reserved) = claimed {
                let held = inner.used.load(Ordering::Acquire).saturating_add(reserved);
                inner.refusals.fetch_add(1, Ordering::Relaxed);
                inner.budget.refusals.fetch_add(1, Ordering::Relaxed);
                return Err(InsufficientMemory {
                    requested: bytes,
                    available: inner
                        .limit
                        .saturating_sub(held)
                        .min(inner.budget.available()),
                });
            }
            // The account's share is counted already: only the budget's is left to take.
            return match inner.budget.commit(bytes) {
                Ok(edge) => {
                    inner.budget.reserved.fetch_add(bytes, Ordering::Relaxed);
                    inner.budget.notify(edge);
                    Ok(Reservation {
                        budget: Arc::clone(&inner.budget),
                        account: Some(Arc::clone(inner)),
                        remaining: AtomicU64::new(bytes),
                    })
                }
                Err(available) => {
                    inner.reserved.fetch_sub(bytes, Ordering::AcqRel);
                    inner.budget.refusals.fetch_add(1, Ordering::Relaxed);
                    inner.refusals.fetch_add(1, Ordering::Relaxed);
                    Err(InsufficientMemory {
                        requested: bytes,
                        available,
                    })
                }
            };
        }
        reserve_inner(&inner.budget, Some(inner), bytes)
    }

    /// The bound on `used + reserved` for this account's reservations (`u64::MAX`: none).
    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    /// Bytes charged to this account.
    pub fn used(&self) -> u64 {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// Bytes held by live reservations taken through [`MemoryAccount::reserve`].
    pub fn reserved(&self) -> u64 {
        self.inner.reserved.load(Ordering::Relaxed)
    }

    /// The highest [`MemoryAccount::used`] seen.
    pub fn peak(&self) -> u64 {
        self.inner.peak.load(Ordering::Relaxed)
    }

    /// How many of this account's growth requests were denied.
    pub fn denials(&self) -> u64 {
        self.inner.denials.load(Ordering::Relaxed)
    }

    /// How many reservations through [`MemoryAccount::reserve`] were refused.
    pub fn refusals(&self) -> u64 {
        self.inner.refusals.load(Ordering::Relaxed)
    }

    /// A snapshot of the account's figures.
    pub fn stats(&self) -> AccountStats {
        AccountStats {
            used: self.used(),
            reserved: self.reserved(),
            peak: self.peak(),
            denials: self.denials(),
            refusals: self.refusals(),
        }
    }

    /// The budget this account is charged to.
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.inner.budget
    }
}

impl AccountInner {
    /// Returns `bytes`, already taken off this account, to the budget.
    fn uncharge(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.budget.used.fetch_sub(bytes, Ordering::Relaxed);
        let edge = self.budget.uncommit(bytes);
        self.budget.notify(edge);
    }
}

impl Drop for MemoryAccount {
    fn drop(&mut self) {
        let left = self.inner.used.swap(0, Ordering::AcqRel);
        self.inner.uncharge(left);
    }
}

impl fmt::Debug for MemoryAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryAccount")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The machine's memory less the margin; see [`MemoryBudget::machine_limit`].
fn machine_limit_from(cgroup_limit: Option<u64>, mem_total: Option<u64>) -> u64 {
    let total = match (cgroup_limit, mem_total) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return FALLBACK_MACHINE_LIMIT,
    };
    let margin = (total / 10).max(MACHINE_MARGIN_MIN.min(total / 2));
    (total - margin).min(MAX_LIMIT)
}

/// `MemTotal` from `/proc/meminfo` text, in bytes.
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?;
    let mut words = line.split_whitespace();
    let number: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => number.checked_mul(1024),
        None => Some(number),
        Some(_) => None,
    }
}

/// A cgroup memory limit file's value: `None` for `max` (v2's "no limit") or garbage.
/// v1's "no limit" is a huge number, which the comparison with `MemTotal` takes care of.
fn parse_cgroup_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The cgroup paths of this process from `/proc/self/cgroup`: (v2 path, v1 memory path).
fn parse_proc_cgroup(text: &str) -> (Option<&str>, Option<&str>) {
    let mut v2 = None;
    let mut v1 = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path);
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path);
        }
    }
    (v2, v1)
}

fn read_mem_total() -> Option<u64> {
    parse_mem_total(&fs::read_to_string("/proc/meminfo").ok()?)
}

/// The smallest finite memory limit of this process's cgroup and its ancestors. Inside a
/// container the cgroup namespace usually makes the process's cgroup the mount's root, so the
/// root's own file is read too.
fn read_cgroup_limit() -> Option<u64> {
    let proc_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let (v2, v1) = parse_proc_cgroup(&proc_cgroup);
    let mut best: Option<u64> = None;
    let mut consider = |mount: &str, path: Option<&str>, file: &str| {
        let mut dirs = vec![Path::new(mount).to_path_buf()];
        if let Some(path) = path {
            let mut dir = Path::new(mount).join(path.trim_start_matches('/'));
            // Walk up from the process's cgroup to the mount root (which is already listed).
            while dir.starts_with(mount) && dir != Path::new(mount) {
                dirs.push(dir.clone());
                if !dir.pop() {
                    break;
                }
            }
        }
        for dir in dirs {
            if let Some(limit) = fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|text| parse_cgroup_limit(&text))
            {
                best = Some(best.map_or(limit, |b| b.min(limit)));
            }
        }
    };
    consider("/sys/fs/cgroup", v2, "memory.max");
    consider("/sys/fs/cgroup/memory", v1, "memory.limit_in_bytes");
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_parsed_in_bytes() {
        let text = "MemTotal:       24684096 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_mem_total(text), Some(24_684_096 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: lots kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: 5 MB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: 5\n"), Some(5));
        assert_eq!(parse_mem_total(&format!("MemTotal: {} kB", u64::MAX)), None);
    }

    #[test]
    fn cgroup_limit_max_means_none() {
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("1073741824\n"), Some(1 << 30));
        assert_eq!(parse_cgroup_limit(""), None);
        assert_eq!(parse_cgroup_limit("-1"), None);
    }

    #[test]
    fn proc_cgroup_finds_v2_and_v1_memory_paths() {
        let v1 = "9:name=systemd:/\n4:memory:/a/b\n3:cpu,cpuacct:/c\n0::/\n";
        assert_eq!(parse_proc_cgroup(v1), (Some("/"), Some("/a/b")));
        let v2 = "0::/user.slice/x.scope\n";
        assert_eq!(parse_proc_cgroup(v2), (Some("/user.slice/x.scope"), None));
        assert_eq!(parse_proc_cgroup("garbage\n"), (None, None));
        let both = "5:cpu,memory:/m\n";
        assert_eq!(parse_proc_cgroup(both), (None, Some("/m")));
    }

    #[test]
    fn machine_limit_keeps_a_margin() {
        const GIB: u64 = 1 << 30;
        // 10 % on a big machine.
        assert_eq!(machine_limit_from(None, Some(100 * GIB)), 90 * GIB);
        // 256 MiB on a small one.
        assert_eq!(
            machine_limit_from(None, Some(GIB)),
            GIB - MACHINE_MARGIN_MIN
        );
        // Never more than half.
        assert_eq!(machine_limit_from(Some(256 << 20), None), 128 << 20);
        // The smaller of the cgroup limit and physical memory.
        assert_eq!(machine_limit_from(Some(10 * GIB), Some(100 * GIB)), 9 * GIB);
        assert_eq!(
            machine_limit_from(Some(9_223_372_036_854_771_712), Some(100 * GIB)),
            90 * GIB
        );
        assert_eq!(machine_limit_from(None, None), FALLBACK_MACHINE_LIMIT);
        assert_eq!(machine_limit_from(Some(0), Some(GIB)), 0);
        assert_eq!(machine_limit_from(Some(u64::MAX), None), MAX_LIMIT);
    }

    #[test]
    fn percent_does_not_overflow() {
        assert_eq!(
            percent(u64::MAX, 90),
            (u128::from(u64::MAX) * 9 / 10) as u64
        );
        assert_eq!(percent(100, 80), 80);
        assert_eq!(percent(0, 90), 0);
    }

    #[test]
    fn rolled_back_spend_restores_each_reservation() {
        // More reservations than INLINE_SPENDS, so the spilled path is exercised too.
        let budget = MemoryBudget::new(100);
        let account = budget.account();
        let gates: Vec<Reservation> = (0..6).map(|_| budget.reserve(10).unwrap()).collect();
        let refs: Vec<&Reservation> = gates.iter().collect();
        let err = account.grow(101, &refs).unwrap_err();
        assert_eq!(
            err,
            Denied {
                requested: 101,
                available: 100
            }
        );
        assert!(gates.iter().all(|g| g.bytes() == 10));
        assert_eq!(budget.reserved(), 60);
        account.grow(100, &refs).unwrap();
        assert!(gates.iter().all(|g| g.bytes() == 0));
        assert_eq!(
            (budget.used(), budget.reserved(), budget.committed()),
            (100, 0, 100)
        );
    }
}
