//! `warden demo` through the binary: it starts `warden serve` on the bundled example, drives
//! friendly and hostile requests at once and reports; the report must show every friendly
//! request answered, each hostility answered its own status, and the server's drain.

use crate::common::{assert_said, run, stderr};

#[test]
fn the_demo_contains_every_hostility_and_every_friendly_request_succeeds() {
    let o = run(&["demo", "--duration", "3s", "--friendly", "4"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}\n{}", stderr(&o));
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{text}"))
            .to_string()
    };
    let friendly = line("friendly:");
    assert!(friendly.contains(" 0 failed"), "{friendly}");
    assert!(!friendly.starts_with("friendly: 0 requests"), "{friendly}");
    // The first request of each hostility is admitted before any quarantine can begin.
    for (route, status) in [
        ("/loop", "× 504"),
        ("/sleep", "× 504"),
        ("/hog", "× 500"),
        ("/recurse", "× 500"),
        ("/trap", "× 500"),
    ] {
        let l = line(route);
        assert!(l.contains(status), "{route}: {l}");
        assert!(!l.contains("no answer"), "{route}: {l}");
    }
    // The runaways end at their 1 s deadline, not later.
    let longest = line("/loop");
    let secs: f64 = longest
        .rsplit("longest ")
        .next()
        .and_then(|t| t.strip_suffix('s'))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{longest}"));
    assert!((0.9..5.0).contains(&secs), "{longest}");
    assert!(line("server:").contains("drained and exited 0"), "{text}");
    assert!(text.contains("\ncontained:"), "{text}");
}

#[test]
fn a_bad_duration_is_refused_naming_the_option() {
    let o = run(&["demo", "--duration", "soon"]);
    assert_eq!(o.status.code(), Some(3));
    assert_said(&o, "--duration");
}
