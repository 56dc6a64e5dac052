//! `warden policy check|show|explain` and `warden run --policy` through the binary.

use crate::common;
use std::path::PathBuf;
use std::process::{Command, Output};

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

fn warden(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .output()
        .expect("run warden")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-cli-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn hostile() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../guests/hostile.wat")
        .display()
        .to_string()
}

/// The JSON event lines of a run's stderr.
fn events(o: &Output) -> Vec<serde_json::Value> {
    stderr(o)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn every_preset_round_trips_through_show_and_check() {
    for preset in PRESETS {
        let shown = warden(&["policy", "show", preset]);
        assert_eq!(shown.status.code(), Some(0), "{preset}: {}", stderr(&shown));
        let text = stdout(&shown);
        assert!(text.contains(&format!("preset = \"{preset}\"")), "{text}");
        let file = temp_file(&format!("{preset}.toml"), &text);
        let checked = warden(&["policy", "check", file.to_str().unwrap()]);
        assert_eq!(
            checked.status.code(),
            Some(0),
            "{preset}: {}",
            stderr(&checked)
        );
        assert!(stdout(&checked).contains("ok"), "{}", stdout(&checked));
        // The file means what the preset means: explaining either prints the same table.
        let of_preset = warden(&["policy", "explain", preset]);
        let of_file = warden(&["policy", "explain", file.to_str().unwrap()]);
        assert_eq!(of_preset.status.code(), Some(0));
        assert_eq!(stdout(&of_preset), stdout(&of_file), "{preset}");
    }
}

#[test]
fn check_of_an_illegal_file_names_the_key_the_value_and_what_is_allowed() {
    let file = temp_file("illegal.toml", "[failures]\nfatal-runtime = \"throw\"\n");
    let o = warden(&["policy", "check", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    for part in [
        "[failures] fatal-runtime",
        "\"throw\"",
        "rude-exit-process, disable-runtime",
        file.to_str().unwrap(),
    ] {
        assert!(err.contains(part), "{err} lacks {part}");
    }
    let file = temp_file("illegal-op.toml", "[defaults]\nunload-domain = \"abort\"\n");
    let o = warden(&["policy", "check", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert!(err.contains("[defaults] unload-domain"), "{err}");
    assert!(err.contains("\"abort\""), "{err}");
    assert!(err.contains("unload-domain, rude-unload-domain"), "{err}");
}

#[test]
fn check_refuses_unknown_keys_and_missing_files() {
    let file = temp_file("unknown.toml", "[failures]\nguest-crash = \"throw\"\n");
    let o = warden(&["policy", "check", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert!(err.contains("guest-crash"), "{err}");
    assert!(
        err.contains("guest-trap"),
        "the accepted names are listed: {err}"
    );
    let file = temp_file("unknown-top.toml", "escalate = \"throw\"\n");
    let o = warden(&["policy", "check", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("escalate"), "{}", stderr(&o));
    let o = warden(&["policy", "check", "/nonexistent/policy.toml"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("/nonexistent/policy.toml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn show_of_an_unknown_preset_fails_naming_it() {
    let o = warden(&["policy", "show", "lenient"]);
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert!(err.contains("lenient"), "{err}");
    assert!(err.contains("sqlserver"), "the presets are listed: {err}");
}

#[test]
fn explain_prints_every_failure_and_operation() {
    let file = temp_file(
        "explain.toml",
        "preset = \"clr\"\n[failures]\nguest-trap = \"rude-unload-domain\"\n",
    );
    for spec in ["server", file.to_str().unwrap()] {
        let o = warden(&["policy", "explain", spec]);
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
    let o = warden(&["policy", "explain", file.to_str().unwrap()]);
    let text = stdout(&o);
    assert!(text.contains("preset `clr`"), "{text}");
    let row = text.lines().find(|l| l.starts_with("guest-trap")).unwrap();
    assert!(row.contains("rude-unload-domain"), "{row}");
}

#[test]
fn run_with_a_policy_file_exits_as_the_policy_says() {
    let file = temp_file("exit.toml", "[failures]\nguest-trap = \"exit-process\"\n");
    let o = warden(&[
        "run",
        &hostile(),
        "--invoke",
        "trap",
        "--policy",
        file.to_str().unwrap(),
        "--events",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(114), "{}", stderr(&o));
    let events = events(&o);
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
    let o = warden(&[
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
        events(&o)
            .iter()
            .any(|e| e["event"] == "escalation" && e["action"] == "rude-exit-process"),
        "{}",
        stderr(&o)
    );
    // The same guest under the default policy fails only its call.
    let o = warden(&["run", &hostile(), "--invoke", "trap"]);
    assert_eq!(o.status.code(), Some(103), "{}", stderr(&o));
}

#[test]
fn run_with_an_unknown_policy_is_bad_input_naming_it() {
    let o = warden(&[
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
    let file = temp_file("bad-run.toml", "[failures]\nguest-trap = \"none\"\n");
    let o = warden(&[
        "run",
        &hostile(),
        "--invoke",
        "answer",
        "--policy",
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("[failures] guest-trap"),
        "{}",
        stderr(&o)
    );
}

/// A passed deadline answered by `disable-runtime` ends the call (the most severe action
/// does at least what a rude unload does): the run ends with the deadline's 106, as the
/// README says of a disabled runtime. The call spun for ever and the run never ended.
#[test]
fn a_deadline_answered_by_disable_runtime_ends_the_run_with_106() {
    let guest = common::write(
        "spin.wat",
        r#"(module
             (import "warden" "critical_enter" (func $enter))
             (func (export "spin") (loop $l (br $l)))
             (func (export "critical_spin") (call $enter) (loop $l (br $l))))"#,
    );
    let policy = common::write(
        "disable.toml",
        "[failures]\ndeadline = \"disable-runtime\"\n",
    );
    for export in ["spin", "critical_spin"] {
        let o = common::run(&[
            "run",
            &guest,
            "--invoke",
            export,
            "--deadline",
            "100ms",
            "--policy",
            &policy,
        ]);
        assert_eq!(
            o.status.code(),
            Some(106),
            "{export}: {}",
            common::stderr(&o)
        );
        assert!(
            common::stderr(&o).contains("passed its deadline"),
            "{}",
            common::stderr(&o)
        );
    }
}
