//! `warden policy check|show|explain` and `warden run --policy` through the binary.

use crate::common::{assert_said, events, hostile, run, stderr, stdout, write};

const PRESETS: [&str; 4] = ["server", "clr", "sqlserver", "fail-fast"];

const FAILURES: [&str; 8] = [
    "noncritical-resource",
    "critical-resource",
    "stack-overflow",
    "orphaned-lock",
    "fatal-runtime",
    "deadline",
    "deadlock",
    "guest-trap",
];

const OPERATIONS: [&str; 7] = [
    "abort",
    "rude-abort",
    "rude-abort-critical",
    "unload-domain",
    "rude-unload-domain",
    "process-exit",
    "finalizer-run",
];

#[test]
fn every_preset_round_trips_through_show_and_check() {
    for preset in PRESETS {
        let shown = run(&["policy", "show", preset]);
        assert_eq!(shown.status.code(), Some(0), "{preset}: {}", stderr(&shown));
        let text = stdout(&shown);
        assert!(text.contains(&format!("preset = \"{preset}\"")), "{text}");
        let file = write(&format!("{preset}.toml"), &text);
        let checked = run(&["policy", "check", &file]);
        assert_eq!(
            checked.status.code(),
            Some(0),
            "{preset}: {}",
            stderr(&checked)
        );
        assert!(stdout(&checked).contains("ok"), "{}", stdout(&checked));
        // The file means what the preset means: explaining either prints the same table.
        let of_preset = run(&["policy", "explain", preset]);
        let of_file = run(&["policy", "explain", &file]);
        assert_eq!(of_preset.status.code(), Some(0));
        assert_eq!(stdout(&of_preset), stdout(&of_file), "{preset}");
    }
}

#[test]
fn check_of_an_illegal_file_names_the_key_the_value_and_what_is_allowed() {
    let file = write("illegal.toml", "[failures]\nfatal-runtime = \"throw\"\n");
    let o = run(&["policy", "check", &file]);
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    for part in [
        "[failures] fatal-runtime",
        "\"throw\"",
        "rude-exit-process, disable-runtime",
        &file,
    ] {
        assert!(err.contains(part), "{err} lacks {part}");
    }
    let file = write("illegal-op.toml", "[defaults]\nunload-domain = \"abort\"\n");
    let o = run(&["policy", "check", &file]);
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert!(err.contains("[defaults] unload-domain"), "{err}");
    assert!(err.contains("\"abort\""), "{err}");
    assert!(err.contains("unload-domain, rude-unload-domain"), "{err}");
}

#[test]
fn check_refuses_unknown_keys_and_missing_files() {
    let file = write("unknown.toml", "[failures]\nguest-crash = \"throw\"\n");
    let o = run(&["policy", "check", &file]);
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert!(err.contains("guest-crash"), "{err}");
    assert!(
        err.contains("guest-trap"),
        "the accepted names are listed: {err}"
    );
    let file = write("unknown-top.toml", "escalate = \"throw\"\n");
    let o = run(&["policy", "check", &file]);
    assert_eq!(o.status.code(), Some(3));
    assert_said(&o, "escalate");
    let o = run(&["policy", "check", "/nonexistent/policy.toml"]);
    assert_eq!(o.status.code(), Some(3));
    assert_said(&o, "/nonexistent/policy.toml");
}

#[test]
fn show_of_an_unknown_preset_fails_naming_it() {
    let o = run(&["policy", "show", "lenient"]);
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert!(err.contains("lenient"), "{err}");
    assert!(err.contains("sqlserver"), "the presets are listed: {err}");
}

#[test]
fn explain_prints_every_failure_and_operation() {
    let file = write(
        "explain.toml",
        "preset = \"clr\"\n[failures]\nguest-trap = \"rude-unload-domain\"\n",
    );
    for spec in ["server", &file] {
        let o = run(&["policy", "explain", spec]);
        assert_eq!(o.status.code(), Some(0), "{spec}: {}", stderr(&o));
        let text = stdout(&o);
        for name in FAILURES.iter().chain(OPERATIONS.iter()) {
            assert!(
                text.lines()
                    .any(|l| l.split_whitespace().next() == Some(name)),
                "{spec}: no row for {name} in\n{text}"
            );
        }
    }
    let o = run(&["policy", "explain", &file]);
    let text = stdout(&o);
    assert!(text.contains("preset `clr`"), "{text}");
    let row = text.lines().find(|l| l.starts_with("guest-trap")).unwrap();
    assert!(row.contains("rude-unload-domain"), "{row}");
}

#[test]
fn run_with_a_policy_file_exits_as_the_policy_says() {
    let file = write("exit.toml", "[failures]\nguest-trap = \"exit-process\"\n");
    let o = run(&[
        "run",
        &hostile(),
        "--invoke",
        "trap",
        "--policy",
        &file,
        "--events",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(114), "{}", stderr(&o));
    let events = events(&stderr(&o));
    let e = events
        .iter()
        .find(|e| e["event"] == "escalation")
        .unwrap_or_else(|| panic!("no escalation in {events:?}"));
    assert_eq!(e["failure"], "guest-trap");
    assert_eq!(e["action"], "exit-process");
    assert!(e["domain"].is_u64() && e["call"].is_u64(), "{e}");
}

#[test]
fn run_with_fail_fast_ends_rudely_on_a_trap() {
    let o = run(&[
        "run",
        &hostile(),
        "--invoke",
        "trap",
        "--policy",
        "fail-fast",
        "--events",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(116), "{}", stderr(&o));
    assert!(
        events(&stderr(&o))
            .iter()
            .any(|e| e["event"] == "escalation" && e["action"] == "rude-exit-process"),
        "{}",
        stderr(&o)
    );
    // The same guest under the default policy fails only its call.
    let o = run(&["run", &hostile(), "--invoke", "trap"]);
    assert_eq!(o.status.code(), Some(103), "{}", stderr(&o));
}

#[test]
fn run_with_an_unknown_policy_is_bad_input_naming_it() {
    let o = run(&[
        "run",
        &hostile(),
        "--invoke",
        "answer",
        "--policy",
        "nonsense",
    ]);
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert!(err.contains("nonsense"), "{err}");
    assert!(stdout(&o).is_empty(), "nothing ran: {}", stdout(&o));
    let file = write("bad-run.toml", "[failures]\nguest-trap = \"none\"\n");
    let o = run(&["run", &hostile(), "--invoke", "answer", "--policy", &file]);
    assert_eq!(o.status.code(), Some(3));
    assert_said(&o, "[failures] guest-trap");
}

/// A passed deadline answered by `disable-runtime` ends the call (the most severe action
/// does at least what a rude unload does): the run ends with the deadline's 106, as the
/// README says of a disabled runtime. The call spun for ever and the run never ended.
#[test]
fn a_deadline_answered_by_disable_runtime_ends_the_run_with_106() {
    let guest = write(
        "spin.wat",
        r#"(module
             (import "warden" "critical_enter" (func $enter))
             (func (export "spin") (loop $l (br $l)))
             (func (export "critical_spin") (call $enter) (loop $l (br $l))))"#,
    );
    let policy = write(
        "disable.toml",
        "[failures]\ndeadline = \"disable-runtime\"\n",
    );
    for export in ["spin", "critical_spin"] {
        let o = run(&[
            "run",
            &guest,
            "--invoke",
            export,
            "--deadline",
            "100ms",
            "--policy",
            &policy,
        ]);
        assert_eq!(o.status.code(), Some(106), "{export}: {}", stderr(&o));
        assert_said(&o, "passed its deadline");
    }
}
