//! Process-unique identifiers for domains and calls, as they appear in events.

use serde::Serialize;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_DOMAIN: AtomicU64 = AtomicU64::new(1);
static NEXT_CALL: AtomicU64 = AtomicU64::new(1);

/// Identifies a domain for the life of the process (never reused).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DomainId(pub u64);

/// Identifies a call for the life of the process (never reused). Also the owner id of the
/// host locks the call holds.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CallId(pub u64);

impl DomainId {
    pub(crate) fn next() -> Self {
        DomainId(NEXT_DOMAIN.fetch_add(1, Ordering::Relaxed))
    }
}

impl CallId {
    pub(crate) fn next() -> Self {
        CallId(NEXT_CALL.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "domain {}", self.0)
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call {}", self.0)
    }
}
