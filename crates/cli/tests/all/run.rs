//! `warden run` through the binary: outcomes, exit codes, events, bad input.

use crate::common::{
    assert_said, events, fixture, hostile, output, repo, run, stderr, stdout, write,
};
use std::process::Command;

#[test]
fn bundled_example_runs_as_a_wasi_command_with_args() {
    let o = run(&["run", &repo("guests/hello.wat"), "--", "a", "b"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello from a Warden domain\narguments: 2\n");
}

#[test]
fn invoke_prints_name_and_values() {
    let o = run(&["run", &hostile(), "--invoke", "answer"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "answer: 42\n");
}

#[test]
fn each_outcome_has_its_exit_code() {
    let cases = [
        ("trap", 103, "divide by zero"),
        ("recurse", 104, "stack"),
        ("hog", 105, "out of memory"),
        ("spin", 106, "deadline"),
    ];
    for (export, code, text) in cases {
        let o = run(&[
            "run",
            &hostile(),
            "--invoke",
            export,
            "--deadline",
            "200ms",
            "--max-memory",
            "4MiB",
        ]);
        assert_eq!(o.status.code(), Some(code), "{export}: {}", stderr(&o));
        assert!(stderr(&o).contains(text), "{export}: {}", stderr(&o));
    }
}

#[test]
fn several_invokes_run_concurrently_and_friendly_ones_still_succeed() {
    let o = run(&[
        "run",
        &hostile(),
        "--invoke",
        "answer",
        "--invoke",
        "spin",
        "--invoke",
        "recurse",
        "--invoke",
        "hog",
        "--deadline",
        "300ms",
        "--max-memory",
        "4MiB",
    ]);
    // The first failing invoke in command-line order decides the code: spin -> timeout.
    assert_eq!(o.status.code(), Some(106), "{}", stderr(&o));
    assert_eq!(stdout(&o), "answer: 42\n");
}

#[test]
fn proc_exit_code_passes_through() {
    let g = write(
        "exit7.wat",
        r#"(module
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start") (call $exit (i32.const 7))))"#,
    );
    let o = run(&["run", &g]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
}

#[test]
fn events_json_are_one_object_per_line_with_contract_names() {
    let o = run(&[
        "run",
        &hostile(),
        "--invoke",
        "spin",
        "--deadline",
        "100ms",
        "--events",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(106));
    let events = events(&stderr(&o));
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for want in [
        "domain_loaded",
        "call_started",
        "escalation",
        "abort_requested",
        "abort_delivered",
        "call_finished",
        "domain_unloading",
        "domain_unloaded",
    ] {
        assert!(names.contains(&want), "missing {want} in {names:?}");
    }
    let finished = events
        .iter()
        .find(|e| e["event"] == "call_finished")
        .unwrap();
    assert_eq!(finished["outcome"], "timeout");
    assert!(finished["call"].is_u64() && finished["domain"].is_u64());
    assert!(events.iter().all(|e| e["ts"].is_f64()));
}

#[test]
fn repeat_cycles_report_memory_and_leave_no_domain() {
    let o = run(&["run", &hostile(), "--invoke", "answer", "--repeat", "200"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("200 cycles"), "{err}");
    assert!(err.contains("domains left 0"), "{err}");
    let o = run(&[
        "run",
        &hostile(),
        "--invoke",
        "answer",
        "--repeat",
        "50",
        "--reuse-domain",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "answer: 42\n");
}

#[test]
fn bad_input_is_one_clear_line_and_exit_3() {
    let bad = write("bad.wasm", "\0asm garbage");
    let unknown = write(
        "imp.wat",
        r#"(module (import "env" "f" (func)) (func (export "g")))"#,
    );
    let params = write("params.wat", r#"(module (func (export "f") (param i32)))"#);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["run".into(), "/nonexistent/x.wasm".into()],
            "cannot read /nonexistent/x.wasm",
        ),
        (vec!["run".into(), bad.clone()], "invalid module"),
        (vec!["run".into(), hostile()], "no `_start` export"),
        (
            vec!["run".into(), hostile(), "--invoke".into(), "nope".into()],
            "no export `nope`",
        ),
        (
            vec!["run".into(), hostile(), "--invoke".into(), "memory".into()],
            "`memory` is not a function",
        ),
        (
            vec!["run".into(), params.clone(), "--invoke".into(), "f".into()],
            "takes parameters (i32)",
        ),
        (
            vec!["run".into(), unknown.clone(), "--invoke".into(), "g".into()],
            "`env`.`f`",
        ),
        (
            vec![
                "run".into(),
                hostile(),
                "--invoke".into(),
                "answer".into(),
                "--max-memory".into(),
                "lots".into(),
            ],
            "--max-memory",
        ),
        (
            vec![
                "run".into(),
                hostile(),
                "--invoke".into(),
                "answer".into(),
                "--deadline".into(),
                "soon".into(),
            ],
            "--deadline",
        ),
        (
            vec![
                "run".into(),
                hostile(),
                "--invoke".into(),
                "answer".into(),
                "--policy".into(),
                "/nonexistent.toml".into(),
            ],
            "nonexistent.toml",
        ),
    ];
    for (args, text) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains(text), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn help_documents_exit_codes() {
    let o = run(&["run", "--help"]);
    let out = stdout(&o);
    for code in ["103", "106", "110", "116", "117"] {
        assert!(out.contains(code), "{out}");
    }
}

#[test]
fn memory_budget_caps_guest_memory_across_the_process() {
    // The domain's own limit would allow 64 MiB; the process budget of 2 MiB denies first.
    let o = run(&[
        "run",
        &hostile(),
        "--invoke",
        "hog",
        "--max-memory",
        "64MiB",
        "--memory-budget",
        "2MiB",
        "--events",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(105), "{}", stderr(&o));
    assert_said(&o, r#""limit":"budget""#);
    let o = run(&[
        "run",
        &hostile(),
        "--invoke",
        "answer",
        "--memory-budget",
        "tons",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert_said(&o, "--memory-budget");
}

#[test]
fn pooling_falls_back_to_on_demand_when_address_space_is_short_and_says_so() {
    // 1000 pool slots of 4 GiB cannot be reserved under a 16 GiB address-space limit.
    let cmd = format!(
        "ulimit -v 16000000 && exec {} run {} --invoke answer",
        env!("CARGO_BIN_EXE_warden"),
        hostile()
    );
    let o = output(Command::new("bash").arg("-c").arg(&cmd));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "answer: 42\n");
    assert_said(&o, "falling back to on-demand");
}

#[test]
fn a_deadlock_between_two_invokes_has_one_victim_and_one_survivor() {
    let g = repo("guests/deadlock.wat");
    let o = run(&[
        "run", &g, "--grant", "unsafe", "--invoke", "ab", "--invoke", "ba", "--events", "json",
    ]);
    // `deadlock = throw` (server): the victim is told -2, backs out and returns normally.
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out == "ab: -2\nba: 0\n" || out == "ab: 0\nba: -2\n",
        "{out}"
    );
    let err = stderr(&o);
    assert!(err.contains(r#""event":"deadlock_detected""#), "{err}");
    // Told, not interrupted: no floor, so no unload for the victim that held a lock.
    assert!(
        !err.lines()
            .any(|l| l.contains(r#""failure":"deadlock""#) && l.contains("unload")),
        "{err}"
    );
    // Under `deadlock = abort` the victim is ended: 109.
    let policy = write("deadlock-abort.toml", "[failures]\ndeadlock = \"abort\"\n");
    let o = run(&[
        "run",
        &g,
        "--grant",
        "external,synchronization,blocking",
        "--invoke",
        "ab",
        "--invoke",
        "ba",
        "--policy",
        &policy,
    ]);
    assert_eq!(o.status.code(), Some(109), "{}", stderr(&o));
    assert_said(&o, "deadlock victim");
}

/// A guest whose start function would print: refused under `safe` before it runs, each
/// forbidden import named with its category, exit 120.
#[test]
fn a_grant_refuses_forbidden_imports_before_the_guest_runs() {
    let g = &fixture("grant_refused.wat");
    let o = run(&["run", g, "--grant", "safe", "--events", "json"]);
    assert_eq!(o.status.code(), Some(120), "{}", stderr(&o));
    assert_eq!(stdout(&o), "", "the start function ran");
    let err = stderr(&o);
    assert!(
        err.contains("`wasi_snapshot_preview1`.`fd_write` (stdio)")
            && err.contains("`warden`.`lock_acquire` (synchronization)")
            && err.contains("grant `safe` forbids 2 imports")
            && !err.contains("`log`"),
        "{err}"
    );
    assert!(
        !err.contains("\"domain_loaded\"") && !err.contains("\"call_started\""),
        "{err}"
    );
    // The default, `external`, has stdio but not locks: only the lock is named.
    let o = run(&["run", g]);
    assert_eq!(o.status.code(), Some(120), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(
            "grant `external` forbids 1 import: `warden`.`lock_acquire` (synchronization)"
        ) && err.contains("`external,synchronization`"),
        "{err}"
    );
    // Granted, it runs (so the refusals above were the grant's).
    let o = run(&["run", g, "--grant", "external,synchronization"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "started\n");
}

#[test]
fn the_default_grant_runs_a_wasi_hello_and_safe_does_not() {
    let hello = &repo("guests/hello.wat");
    let o = run(&["run", "--grant", "external", hello, "--", "x"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello from a Warden domain\narguments: 1\n");
    let o = run(&["run", "--grant", "safe", hello]);
    assert_eq!(o.status.code(), Some(120), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("`fd_write` (stdio)") && err.contains("`args_sizes_get` (environment)"),
        "{err}"
    );
    // A list naming exactly what it needs.
    let o = run(&["run", "--grant", "safe,stdio,environment", hello]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn a_bad_grant_is_bad_input_naming_it() {
    let o = run(&[
        "run",
        &hostile(),
        "--invoke",
        "answer",
        "--grant",
        "safe,sockets",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_said(&o, "--grant: unknown capability `sockets`");
    let o = run(&["run", &hostile(), "--invoke", "answer", "--grant", ""]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_said(&o, "--grant: empty grant");
    // A preopen under a grant without `filesystem` is refused before anything runs.
    let dir = std::env::temp_dir();
    let o = run(&[
        "run",
        &hostile(),
        "--invoke",
        "answer",
        "--grant",
        "safe",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--dir/--dir-ro need the filesystem capability")
            && stderr(&o).contains("--grant safe,filesystem"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&o), "");
}
