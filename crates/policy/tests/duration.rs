//! Durations as policy files spell them.

use std::time::Duration;

use proptest::prelude::*;
use warden_policy::{PolicyError, format_duration, parse_duration};

#[test]
fn parses_every_unit() {
    let cases = [
        ("250ms", Duration::from_millis(250)),
        ("30s", Duration::from_secs(30)),
        ("2m", Duration::from_secs(120)),
        ("1h", Duration::from_secs(3600)),
        ("1.5s", Duration::from_millis(1500)),
        ("0.25m", Duration::from_secs(15)),
        ("7us", Duration::from_micros(7)),
        ("9ns", Duration::from_nanos(9)),
        ("0s", Duration::ZERO),
        (" 10s ", Duration::from_secs(10)),
        ("1.000000001s", Duration::new(1, 1)),
    ];
    for (text, d) in cases {
        assert_eq!(parse_duration(text).unwrap(), Some(d), "{text}");
    }
    assert_eq!(parse_duration("infinite").unwrap(), None);
}

#[test]
fn refuses_garbage_negatives_and_overflow() {
    let cases = [
        ("", "missing unit"),
        ("30", "missing unit"),
        ("s", "not a number"),
        ("-1s", "negative"),
        ("+1s", "not a number"),
        ("1.s", "not a number"),
        (".5s", "not a number"),
        ("1.2.3s", "not a number"),
        ("1e3s", "not a number"),
        ("10 s", "not a number"),
        ("10sec", "not a number"),
        ("10S", "not a number"),
        ("forever", "not a number"),
        ("Infinite", "not a number"),
        ("0.5ns", "finer than a nanosecond"),
        ("1.0000000001s", "finer than a nanosecond"),
        ("18446744073709551616s", "too large"),
        ("5124095576030432h", "too large"),
        ("999999999999999999999999999999999999999999h", "too large"),
    ];
    for (text, reason) in cases {
        let e = parse_duration(text).expect_err(text);
        let PolicyError::BadDuration {
            ref key, ref value, ..
        } = e
        else {
            panic!("{text}: {e:?}");
        };
        assert_eq!(key, "duration");
        assert_eq!(value, text);
        let msg = e.to_string();
        assert!(msg.contains(reason), "{text}: {msg}");
        assert!(msg.contains("\"infinite\""), "{msg}");
    }
}

#[test]
fn the_largest_duration_fits() {
    let max = Some(Duration::MAX);
    assert_eq!(parse_duration(&format_duration(max)).unwrap(), max);
    assert_eq!(
        parse_duration("18446744073709551615s").unwrap(),
        Some(Duration::from_secs(u64::MAX))
    );
}

#[test]
fn formats_in_the_largest_exact_unit() {
    let cases = [
        (None, "infinite"),
        (Some(Duration::ZERO), "0s"),
        (Some(Duration::from_secs(25)), "25s"),
        (Some(Duration::from_secs(90)), "90s"),
        (Some(Duration::from_secs(120)), "2m"),
        (Some(Duration::from_secs(7200)), "2h"),
        (Some(Duration::from_millis(1500)), "1500ms"),
        (Some(Duration::from_micros(3)), "3us"),
        (Some(Duration::new(1, 1)), "1000000001ns"),
    ];
    for (d, text) in cases {
        assert_eq!(format_duration(d), text);
    }
}

proptest! {
    #[test]
    fn format_then_parse_is_identity(secs in any::<u64>(), nanos in 0u32..1_000_000_000, infinite in any::<bool>()) {
        let d = if infinite { None } else { Some(Duration::new(secs, nanos)) };
        prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,24}") {
        let _ = parse_duration(&s);
    }

    #[test]
    fn parse_then_format_is_canonical(n in 0u64..1_000_000, unit in prop::sample::select(vec!["ns", "us", "ms", "s", "m", "h"])) {
        let d = parse_duration(&format!("{n}{unit}")).unwrap();
        prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
    }
}
