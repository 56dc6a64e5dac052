//! Guests' `log` lines on their way to the host's logs, bounded: no guest can fill the
//! host's disk through its log.
//!
//! One [`GuestLog`] per runtime admits a burst of [`BURST_BYTES`] and then
//! [`BYTES_PER_SECOND`] (counted as the bytes the line takes once written — a control
//! character escapes to six — plus a fixed per-line cost, so empty lines are not free). Lines over the rate are dropped and counted; the next line that goes out is
//! preceded by one `guest_log` event saying how many were dropped. The bound is process-wide:
//! one chatty domain can crowd out another's lines (never its calls).

use warden_core::rate::{Admit, RateLimit};

use crate::events::{EventBus, EventKind};
use crate::ids::{CallId, DomainId};

/// Guest log bytes that may go out at once.
pub const BURST_BYTES: u64 = 1 << 20;
/// Guest log bytes a second, after the burst.
pub const BYTES_PER_SECOND: u64 = 256 << 10;
/// What a line costs on top of its bytes (an event's framing).
const LINE_COST: u64 = 128;

/// The rate limit of guests' log lines; see the [module documentation](self).
pub(crate) struct GuestLog {
    limit: RateLimit,
}

impl Default for GuestLog {
    fn default() -> Self {
        GuestLog {
            limit: RateLimit::new(BURST_BYTES, BYTES_PER_SECOND),
        }
    }
}

impl GuestLog {
    /// Emits a guest's log line as a `guest_log` event, unless it is over the rate.
    pub(crate) fn emit(
        &self,
        events: &EventBus,
        domain: DomainId,
        call: Option<CallId>,
        level: i32,
        bytes: &[u8],
    ) {
        let message = String::from_utf8_lossy(bytes);
        // What the line costs as written: a control character is escaped in JSON as six
        // bytes (`\u0000`), so a line of zero bytes counts six times its length. Counted
        // only when the line may go out at all, so a dropped line costs only the check.
        let Admit::Yes {
            suppressed,
            suppressed_units,
        } = self.limit.admit_with(bytes.len() as u64 + LINE_COST, || {
            let escaped = message.chars().filter(|c| c.is_control()).count() as u64 * 5;
            message.len() as u64 + escaped + LINE_COST
        })
        else {
            return;
        };
        if suppressed > 0 {
            events.emit(Some(domain), call, || EventKind::GuestLog {
                level: 0,
                message: format!(
                    "[warden: {suppressed} guest log lines ({suppressed_units} bytes with framing) were dropped: over the rate limit]"
                ),
            });
        }
        let message = message.into_owned();
        tracing::debug!(level, "{}", message.escape_debug());
        events.emit(Some(domain), call, || EventKind::GuestLog {
            level,
            message,
        });
    }
}
