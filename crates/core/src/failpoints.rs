//! Fault injection for `warden stress` (feature `failpoints`, off by default): named
//! failpoints at the fallible host-side steps, driven by the [`fail`] crate, each counting its
//! hits so a stress run can report which ones fired and were survived.
//!
//! A site is one line, `failpoint!("name", error_expr)`: when the failpoint is configured to
//! `return` (see [`fail::cfg`]), the enclosing function returns `error_expr` — the same error a
//! real failure of that step returns.

use std::collections::BTreeMap;
use std::sync::Mutex;

pub use fail;

/// Every failpoint compiled into Warden's crates.
pub const NAMES: &[&str] = &[
    "budget-charge",
    "handle-insert",
    "lock-acquire",
    "store-create",
    "instantiate",
    "host-call-entry",
    "wasi-write",
    "wasi-read",
    "embedder-entry",
    "component-embedder-entry",
];

static HITS: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

/// Counts one hit of `name` (called by [`failpoint!`](crate::failpoint) when it fires).
pub fn hit(name: &'static str) {
    *HITS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(name)
        .or_default() += 1;
}

/// Whether `name` fires now (for sites that are not a plain early return); counts the hit.
pub fn eval(name: &'static str) -> bool {
    let fired = fail::eval(name, |_| ()).is_some();
    if fired {
        hit(name);
    }
    fired
}

/// Hits so far, by failpoint.
pub fn hits() -> BTreeMap<&'static str, u64> {
    HITS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// `failpoint!("name", expr)`: returns `expr` from the enclosing function when the failpoint
/// `name` is configured to fire.
#[macro_export]
macro_rules! failpoint {
    ($name:literal, $ret:expr) => {
        $crate::failpoints::fail::fail_point!($name, |_| {
            $crate::failpoints::hit($name);
            $ret
        })
    };
}
