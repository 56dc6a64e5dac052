//! Timeouts as policy files spell them: `"250ms"`, `"30s"`, `"1.5m"`, `"infinite"`.

use std::time::Duration;

use crate::error::PolicyError;

/// Units, largest first (the order [`format_duration`] tries them in), with their length
/// in nanoseconds.
const UNITS: &[(&str, u128)] = &[
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// The word for "no timeout".
pub const INFINITE: &str = "infinite";

/// Parses a timeout: a whole or decimal number immediately followed by a unit (`ns`, `us`,
/// `ms`, `s`, `m`, `h`), or `"infinite"` (→ `None`). Surrounding whitespace is ignored.
///
/// Rejects signs (a timeout cannot be negative), missing or unknown units, exponents,
/// values finer than a nanosecond, and values larger than [`Duration::MAX`]. The error's
/// key is `duration`; the policy file parser replaces it with the real key.
///
/// ```
/// use std::time::Duration;
/// use warden_policy::parse_duration;
/// assert_eq!(parse_duration("1.5s").unwrap(), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("infinite").unwrap(), None);
/// assert!(parse_duration("-1s").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Option<Duration>, PolicyError> {
    let bad = |reason| PolicyError::BadDuration {
        key: "duration".to_owned(),
        value: s.to_owned(),
        reason,
    };
    let text = s.trim();
    if text == INFINITE {
        return Ok(None);
    }
    if text.starts_with('-') {
        return Err(bad("a timeout cannot be negative"));
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| bad("missing unit"))?;
    let (number, unit) = text.split_at(split);
    let unit_ns = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|&(_, ns)| ns)
        .ok_or_else(|| bad("not a number followed by a known unit"))?;
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() || (number.contains('.') && fraction.is_empty()) || fraction.contains('.') {
        return Err(bad("not a number followed by a known unit"));
    }
    let too_big = || bad("too large");
    let digits = |d: &str| -> Option<u128> {
        d.bytes().try_fold(0u128, |acc, b| {
            acc.checked_mul(10)?.checked_add(u128::from(b - b'0'))
        })
    };
    let whole_ns = digits(whole)
        .and_then(|w| w.checked_mul(unit_ns))
        .ok_or_else(too_big)?;
    // fraction * unit / 10^len must be whole nanoseconds.
    let scale = 10u128
        .checked_pow(u32::try_from(fraction.len()).map_err(|_| too_big())?)
        .ok_or_else(|| bad("finer than a nanosecond"))?;
    let fraction_scaled = digits(fraction)
        .and_then(|f| f.checked_mul(unit_ns))
        .ok_or_else(|| bad("finer than a nanosecond"))?;
    if fraction_scaled % scale != 0 {
        return Err(bad("finer than a nanosecond"));
    }
    let total = whole_ns
        .checked_add(fraction_scaled / scale)
        .ok_or_else(too_big)?;
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| too_big())?;
    // The remainder is below 10^9, so it always fits.
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| too_big())?;
    Ok(Some(Duration::new(secs, nanos)))
}

/// Formats a timeout the way [`parse_duration`] reads it, in the largest unit that is exact
/// (`Some(90s)` → `"90s"`, `Some(2m)` → `"2m"`, `None` → `"infinite"`), so that
/// `parse_duration(&format_duration(d)) == Ok(d)` for every `d`.
pub fn format_duration(d: Option<Duration>) -> String {
    let Some(d) = d else {
        return INFINITE.to_owned();
    };
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_owned();
    }
    let (unit, len) = UNITS
        .iter()
        .copied()
        .find(|&(_, len)| ns % len == 0)
        .unwrap_or(("ns", 1));
    format!("{}{unit}", ns / len)
}
