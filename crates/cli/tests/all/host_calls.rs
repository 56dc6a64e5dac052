//! Issue #10 through the binary: WASI calls that block in the host — a `poll_oneoff` sleep, a
//! read of a stdin nobody writes, writes to a stdout nobody reads — end at the deadline and
//! at a signal, so no import holds `warden run` past the policy's bounds.

use crate::common::{self, Running, fixture, spawn, try_signal, wait_exit, warden};
use std::process::{ExitStatus, Stdio};

const STDOUT: u32 = 1;
const STDERR: u32 = 2;

/// A WASI module whose export `export` writes 64 KiB blocks to `fd` forever, with the
/// functions of `more` beside it.
fn flooder(export: &str, fd: u32, more: &str) -> String {
    flooding(export, fd, more, false)
}

/// [`flooder`]'s module; with `log_when_full`, it logs `full` once its fourth write has
/// returned: 256 KiB taken, of which at most the pipe's 64 KiB left the process, so from
/// then on an exit's flush has bytes to wait for. (A write returns only while the 256 KiB
/// buffer has room, so on a stalled stdout the sixth never does.)
fn flooding(export: &str, fd: u32, more: &str, log_when_full: bool) -> String {
    let (import, log) = match log_when_full {
        true => (
            r#"(import "warden" "log" (func $log (param i32 i32 i32)))"#,
            r#"(if (i32.eq (local.get $n) (i32.const 4))
        (then (call $log (i32.const 2) (i32.const 32) (i32.const 4))))"#,
        ),
        false => ("", ""),
    };
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  {import}
  (memory (export "memory") 2)
  (data (i32.const 32) "full")
  (func (export "{export}") (local $n i32)
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $l
      (drop (call $write (i32.const {fd}) (i32.const 0) (i32.const 1) (i32.const 16)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      {log}
      (br $l)))
  {more})"#
    )
}

/// A WASI command that writes to stdout forever.
fn stdout_flooder() -> String {
    guest("flooder.wat", &flooder("_start", STDOUT, ""))
}

/// [`stdout_flooder`], which logs once stdout is stalled for good.
fn stdout_flooder_that_logs_when_full() -> String {
    guest(
        "flooder-logs-full.wat",
        &flooding("_start", STDOUT, "", true),
    )
}

/// A scratch file of this module (`common::write`).
fn guest(name: &str, text: &str) -> String {
    common::write(name, text)
}

/// `warden run ARGS --events json` whose stdin and stdout are pipes the test holds and never
/// touches; its stderr (events) is read as it comes.
fn stalled(args: &[&str]) -> Running {
    Running::stalled(&[args, &["--events", "json"]].concat())
}

#[test]
fn a_poll_oneoff_sleep_ends_at_the_deadline() {
    for policy in ["server", "clr"] {
        let mut run = stalled(&[
            &fixture("sleeper.wat"),
            // poll_oneoff is a host wait: `blocking`, beyond the default `external`.
            "--grant",
            "external,blocking",
            "--deadline",
            "1s",
            "--policy",
            policy,
        ]);
        assert_eq!(
            run.finish().0.code(),
            Some(106),
            "{policy}: {}",
            run.stderr()
        );
        assert_eq!(run.named("abort_delivered").len(), 1, "{policy}");
    }
}

#[test]
fn a_read_of_a_silent_stdin_ends_at_the_deadline() {
    let mut run = stalled(&[&fixture("stdin_reader.wat"), "--deadline", "1s"]);
    assert_eq!(run.finish().0.code(), Some(106), "{}", run.stderr());
}

#[test]
fn writes_to_a_stalled_stdout_end_at_the_deadline() {
    let mut run = stalled(&[&stdout_flooder(), "--deadline", "1s"]);
    assert_eq!(run.finish().0.code(), Some(106), "{}", run.stderr());
}

#[test]
fn writes_to_a_stalled_stdout_do_not_hold_an_exit_at_sigterm() {
    let mut run = stalled(&[&stdout_flooder()]);
    run.wait_for_event("call_started");
    run.signal("TERM");
    assert_eq!(run.finish().0.code(), Some(117), "{}", run.stderr());
}

#[test]
fn a_read_of_a_silent_stdin_does_not_hold_an_exit_at_sigterm() {
    let mut run = stalled(&[&fixture("stdin_reader.wat")]);
    run.wait_for_event("call_started");
    run.signal("TERM");
    assert_eq!(run.finish().0.code(), Some(117), "{}", run.stderr());
}

#[test]
fn a_second_signal_ends_the_process_while_stdout_is_stalled() {
    let mut run = stalled(&[&stdout_flooder_that_logs_when_full()]);
    // Not at `call_started`: on a loaded machine the exit could come before the buffer
    // filled, and then nothing would hold it for the second signal to cut.
    run.wait_for_event("guest_log");
    run.signal("TERM");
    // The orderly exit waits (boundedly) for the stalled reader; the second signal cuts it.
    run.wait_for_event("shutdown_phase");
    run.signal("TERM");
    assert_eq!(run.finish().0.code(), Some(118), "{}", run.stderr());
}

#[test]
fn the_watchdog_ends_the_process_while_stdout_is_stalled() {
    // The idle background domain's finalizer never returns, so only the `process-exit`
    // watchdog ends this exit — while the foreground call's writes are stalled.
    let policy = guest(
        "watchdog.toml",
        r#"[timeouts]
finalizer-run = { after = "infinite", action = "none" }
process-exit = { after = "1s", action = "rude-exit-process" }
"#,
    );
    let mut run = stalled(&[
        // `flood` writes to stdout forever; `answer` is idle work; the finalizer never returns.
        &guest(
            "flood-and-hang.wat",
            &flooder(
                "flood",
                STDOUT,
                r#"(func (export "answer") (result i32) (i32.const 42))
                   (func (export "warden_on_unload") (loop $l (br $l)))"#,
            ),
        ),
        "--invoke",
        "flood",
        "--background-invoke",
        "answer",
        "--policy",
        &policy,
    ]);
    run.wait_for_event("call_started");
    run.signal("TERM");
    let code = run.finish().0.code();
    let stderr = run.stderr();
    assert!(
        stderr.contains("the watchdog ends the shutdown"),
        "the watchdog fired: {stderr}"
    );
    assert_eq!(code, Some(116), "{stderr}");
}

/// A `warden run` whose stdin, stdout and stderr are all pipes the test holds and never
/// reads: the guest fills stderr, which is also where warden's own messages and events go.
/// Returns the exit status, or None if it did not end within the bound (then it is killed).
fn run_with_stalled_stderr(args: &[&str], signals: &[&str]) -> Option<ExitStatus> {
    let mut child = spawn(warden().arg("run").args(args), Stdio::piped());
    let (_stdin, _stdout) = (child.stdin.take(), child.stdout.take());
    let mut stderr = child.stderr.take().unwrap();
    if !signals.is_empty() {
        // The guest runs (its first bytes arrive, so the signal handlers are in place); from
        // here on nobody reads stderr.
        let mut first = [0u8; 1];
        std::io::Read::read_exact(&mut stderr, &mut first).expect("guest output");
    }
    for sig in signals {
        // The first may already have ended it.
        try_signal(child.id(), sig);
    }
    wait_exit(&mut child)
}

#[test]
fn writes_to_a_stalled_stderr_end_at_the_deadline_even_with_events_on() {
    let flooder = guest("stderr-flooder.wat", &flooder("_start", STDERR, ""));
    for extra in [&[][..], &["--events", "json"][..]] {
        let mut args = vec![flooder.as_str(), "--deadline", "1s"];
        args.extend_from_slice(extra);
        let status = run_with_stalled_stderr(&args, &[]);
        assert_eq!(status.and_then(|s| s.code()), Some(106), "{extra:?}");
    }
}

#[test]
fn a_stalled_stderr_holds_neither_a_signalled_exit_nor_a_second_signal() {
    let flooder = guest("stderr-flooder.wat", &flooder("_start", STDERR, ""));
    let status = run_with_stalled_stderr(&[&flooder], &["TERM"]);
    assert_eq!(status.and_then(|s| s.code()), Some(117));
    let status = run_with_stalled_stderr(&[&flooder, "--events", "json"], &["TERM", "TERM"]);
    assert!(
        matches!(status.and_then(|s| s.code()), Some(117 | 118)),
        "{status:?}"
    );
}
