//! Issue #16 through the binary: every input bounded, every exit code exact.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    ENDS_WITHIN, assert_said, dir, events, finish, fixture, hostile, named, output, repo, run,
    signal, spawn, stderr, stdout, warden, write,
};

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

#[test]
fn endless_and_huge_files_are_refused_without_reading_them() {
    // A 4 GiB sparse file: refused by its size, not after reading it.
    let sparse = dir().join("sparse.wasm");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    let sparse = sparse.display().to_string();
    for args in [
        vec!["run", "/dev/zero", "--invoke", "x"],
        vec!["policy", "check", "/dev/zero"],
        vec!["run", &sparse, "--invoke", "x"],
        vec!["policy", "check", &sparse],
    ] {
        let o = run(&args);
        assert_eq!(code(&o), Some(3), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("not a regular file") || err.contains("limit"),
            "{args:?}: {err}"
        );
    }
    // Allowed, /dev/zero is still read no further than the bound.
    let o = run(&["policy", "check", "/dev/zero", "--allow-non-regular"]);
    assert_eq!(code(&o), Some(3), "{}", stderr(&o));
    assert_said(&o, "limit");
}

#[test]
fn a_fifo_is_refused_not_waited_on() {
    let fifo = dir().join("module.fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        return; // no mkfifo here
    }
    let fifo = fifo.display().to_string();
    for args in [
        vec!["run", &fifo, "--invoke", "x"],
        vec!["run", &hostile(), "--policy", &fifo],
        vec!["policy", "check", &fifo],
    ] {
        let o = run(&args);
        assert_eq!(code(&o), Some(3), "{args:?}: {}", stderr(&o));
        assert_said(&o, "not a regular file");
    }
}

/// `--policy <(cat f.toml)`: refused without the flag; with it, read once, the policy given.
#[test]
fn a_policy_from_a_pipe_is_read_once_and_applied() {
    if Command::new("bash").arg("-c").arg("true").status().is_err() {
        return;
    }
    let fail_fast = write("ff.toml", "preset = \"fail-fast\"\n");
    let bad = write("bad.toml", "[failures]\nguest-trap = \"none\"\n");
    let bin = env!("CARGO_BIN_EXE_warden");
    let hostile = hostile();
    let sh = |policy: &str, allow: &str| {
        output(Command::new("bash").arg("-c").arg(format!(
            "exec '{bin}' run '{hostile}' --invoke trap --policy <(cat '{policy}') {allow}"
        )))
    };
    let o = sh(&fail_fast, "");
    assert_eq!(code(&o), Some(3), "{}", stderr(&o));
    assert_said(&o, "--allow-non-regular");
    // fail-fast: a trap exits rudely (116), not `server`'s 103.
    let o = sh(&fail_fast, "--allow-non-regular");
    assert_eq!(code(&o), Some(116), "{}", stderr(&o));
    let o = sh(&bad, "--allow-non-regular");
    assert_eq!(code(&o), Some(3), "{}", stderr(&o));
    assert_said(&o, "guest-trap");
}

/// A full disk or a closed pipe loses the text, never the exit code.
#[test]
fn failed_writes_to_stdout_or_stderr_never_panic() {
    let hostile = hostile();
    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        let o = finish(
            warden()
                .args(["run", &hostile, "--invoke", "answer"])
                .stdout(full.try_clone().unwrap())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        assert_eq!(code(&o), Some(0), "{}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
        let o = finish(
            warden()
                .args(["run", &hostile, "--invoke", "trap", "--events", "json"])
                .stdout(Stdio::null())
                .stderr(full)
                .spawn()
                .unwrap(),
        );
        assert_eq!(code(&o), Some(103));
    }
    // `warden policy explain server | true`: the reader is gone before the first write.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = finish(
        warden()
            .args(["policy", "explain", "server"])
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

/// A guest's export name cannot forge an output line or send a terminal sequence.
#[test]
fn names_from_guests_are_escaped_when_printed() {
    let name = "ok\nwarden: forged\u{1b}[2J";
    let g = write(
        "forger.wat",
        r#"(module (func (export "ok\0awarden: forged\1b[2J") (result i32) (i32.const 42)))"#,
    );
    let o = run(&["run", &g, "--invoke", name]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out, "ok\\nwarden: forged\\u{1b}[2J: 42\n");
    assert!(!out.contains('\u{1b}'));
}

// Wasm binaries written byte by byte, where WAT cannot say it (a newline in a function's
// name) or would cost too much to parse (a million functions).

/// `v` as unsigned LEB128.
fn leb(mut v: usize, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A wasm name: its length, then its bytes.
fn string(s: &str, out: &mut Vec<u8>) {
    leb(s.len(), out);
    out.extend_from_slice(s.as_bytes());
}

/// A section: its id, its length, then `body`.
fn section(id: u8, body: Vec<u8>, out: &mut Vec<u8>) {
    out.push(id);
    leb(body.len(), out);
    out.extend(body);
}

/// A wasm binary with one function, exported as `f`, that traps, whose name section names
/// it `name`.
fn trapping_module_named(name: &str) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    section(1, vec![1, 0x60, 0, 0], &mut m);
    section(3, vec![1, 0], &mut m);
    let mut export = vec![1];
    string("f", &mut export);
    export.extend([0, 0]);
    section(7, export, &mut m);
    section(10, vec![1, 3, 0, 0x00, 0x0b], &mut m);
    let mut names = vec![1, 0];
    string(name, &mut names);
    let mut custom = Vec::new();
    string("name", &mut custom);
    custom.push(1);
    leb(names.len(), &mut custom);
    custom.extend(names);
    section(0, custom, &mut m);
    m
}

/// Names from a guest (an import's name in a link error, a function's name in a trap's
/// backtrace) cannot forge an output line: a newline in them is printed escaped.
#[test]
fn guest_names_in_errors_and_backtraces_cannot_forge_lines() {
    let import = write(
        "forge-import.wat",
        "(module (import \"env\" \"x\\0awarden: g: FORGED\\0a\" (func)) (func (export \"f\")))",
    );
    let named = write(
        "forge-name.wasm",
        trapping_module_named("evil\nwarden: g: FORGED"),
    );
    for (guest, code) in [(import, 3), (named, 103)] {
        let o = run(&["run", &guest, "--invoke", "f"]);
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("FORGED"), "{err}");
        assert!(
            err.lines().all(|l| !l.starts_with("warden: g:")),
            "a forged line:\n{err}"
        );
    }
}

#[test]
fn unrepresentable_durations_saturate_instead_of_panicking() {
    let hostile = hostile();
    let o = run(&[
        "run",
        &hostile,
        "--invoke",
        "answer",
        "--deadline",
        "18446744073709551615s",
    ]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let policy = write(
        "long.toml",
        "[timeouts]\nabort = { after = \"18446744073709551615s\", action = \"rude-abort\" }\n",
    );
    let o = run(&["policy", "check", &policy]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    // A deadline whose abort is deferred by a critical region arms that endless timeout.
    let g = write(
        "critical.wat",
        r#"(module
          (import "warden" "critical_enter" (func $cin))
          (import "warden" "critical_exit" (func $cout))
          (import "warden" "sleep_ms" (func $sleep (param i64) (result i32)))
          (func (export "slow") (call $cin) (drop (call $sleep (i64.const 300))) (call $cout)))"#,
    );
    let o = run(&[
        "run",
        &g,
        "--invoke",
        "slow",
        "--deadline",
        "50ms",
        "--grant",
        "safe,blocking",
        "--policy",
        &policy,
    ]);
    assert_eq!(code(&o), Some(106), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

/// A module of `n` empty functions, as a wasm binary (one type, `n` bodies).
fn many_functions(n: u32) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    section(1, vec![1, 0x60, 0, 0], &mut m);
    let mut funcs = Vec::new();
    leb(n as usize, &mut funcs);
    funcs.extend(std::iter::repeat_n(0u8, n as usize));
    section(3, funcs, &mut m);
    // Export function 0 as "f".
    section(7, vec![1, 1, b'f', 0, 0], &mut m);
    let mut code = Vec::new();
    leb(n as usize, &mut code);
    for _ in 0..n {
        code.extend([2, 0, 0x0b]);
    }
    section(10, code, &mut m);
    m
}

#[test]
fn a_module_of_a_million_functions_is_refused_before_compiling() {
    let big = write("million.wasm", many_functions(1_000_000));
    let o = run(&["run", &big, "--invoke", "f", "--memory-budget", "64MiB"]);
    assert_eq!(code(&o), Some(3), "{}", stderr(&o));
    assert_said(&o, "1000000 functions, more than the 100000-function limit");
}

/// WAT text with more functions than the limit is refused on its tokens, before it is
/// parsed (parsing text costs tens of bytes per byte: 21 MB of `(func)` took 1.3 GB): the
/// parse error after the functions is never reached.
#[test]
fn wat_text_with_too_many_functions_is_refused_before_parsing() {
    let wat = format!("(module\n{} this is not wat", "(func)\n".repeat(100_001));
    let path = write("many.wat", wat);
    let o = run(&["run", &path, "--invoke", "f"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_said(&o, "100001 functions, more than the 100000-function limit");
}

#[test]
fn load_and_link_errors_are_bad_input() {
    for (name, wat) in [
        (
            "typed.wat",
            r#"(module (import "warden" "abort_requested" (func (param i64))) (func (export "f")))"#,
        ),
        (
            "wasi.wat",
            r#"(module (import "wasi_snapshot_preview1" "no_such_fn" (func)) (func (export "f")))"#,
        ),
    ] {
        let o = run(&["run", &write(name, wat), "--invoke", "f"]);
        assert_eq!(code(&o), Some(3), "{name}: {}", stderr(&o));
    }
}

/// A failing start function is a call: its outcome's code, its `call_finished`, and the
/// start is bounded by `--deadline`.
#[test]
fn start_function_failures_exit_with_their_outcomes_code() {
    let cases = [
        (
            "start-loop.wat",
            r#"(module (func $s (loop $l (br $l))) (start $s) (func (export "f")))"#,
            106,
            "timeout",
        ),
        (
            "start-recurse.wat",
            r#"(module (func $s (call $s)) (start $s) (func (export "f")))"#,
            104,
            "stack_overflow",
        ),
        (
            "start-hog.wat",
            r#"(module (memory 1)
                 (func $s (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
                   unreachable)
                 (start $s) (func (export "f")))"#,
            105,
            "out_of_memory",
        ),
        (
            "start-exit.wat",
            r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                 (memory (export "memory") 1)
                 (func $s (call $exit (i32.const 42))) (start $s) (func (export "f")))"#,
            42,
            "ok",
        ),
    ];
    for (name, wat, want, outcome) in cases {
        let o = run(&[
            "run",
            &write(name, wat),
            "--invoke",
            "f",
            "--deadline",
            "200ms",
            "--max-memory",
            "1MiB",
            "--events",
            "json",
        ]);
        assert_eq!(code(&o), Some(want), "{name}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.lines().any(|l| l.contains(r#""event":"call_finished""#)
                && l.contains(&format!(r#""outcome":"{outcome}""#))),
            "{name}: {err}"
        );
    }
}

#[test]
fn a_domain_that_cannot_get_its_initial_memory_exits_111() {
    let g = write(
        "big-initial.wat",
        r#"(module (memory 100) (func (export "f")))"#,
    );
    let o = run(&["run", &g, "--invoke", "f", "--memory-budget", "1MiB"]);
    assert_eq!(code(&o), Some(111), "{}", stderr(&o));
}

#[test]
fn the_soak_summary_reports_the_cycles_actually_run() {
    let o = run(&["run", &hostile(), "--invoke", "trap", "--repeat", "5"]);
    assert_eq!(code(&o), Some(103));
    assert_said(&o, "warden: 1 of 5 cycles");
}

/// SIGTERM while a large module still compiles: the signal is handled (117), not fatal.
#[cfg(target_os = "linux")]
#[test]
fn a_signal_during_compilation_exits_117() {
    let big = write("big.wasm", many_functions(90_000));
    let mut child = warden()
        .args(["run", &big, "--invoke", "f"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait for the compiler thread to show up.
    let until = Instant::now() + ENDS_WITHIN;
    let compiling = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "warden-compile")
            })
    };
    while !compiling() {
        if child.try_wait().unwrap().is_some() || Instant::now() > until {
            let _ = child.kill();
            panic!("never saw the compiler thread");
        }
        std::thread::yield_now();
    }
    signal(pid, "TERM");
    let o = finish(child);
    assert_eq!(code(&o), Some(117), "{}", stderr(&o));
}

/// Every code in the README's exit-code table is reachable and means what it says: each row
/// not marked † (an API-only outcome) has a run here that ends with it. 117 and 118 are
/// `signals::a_first_signal_exits_in_order_with_117` and `..._118`'s, 119 is the library's
/// `bounds::fail_fast_writes_a_report_and_exits_119`'s, N is 42 here.
#[test]
fn every_exit_code_in_the_readme_is_reachable_and_exact() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let table: Vec<(String, bool)> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| code | meaning |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].to_string(), cells[2].contains('†'))
        })
        .collect();
    assert!(table.len() > 20, "{table:?}");
    let hostile = hostile();
    let deadlock = repo("guests/deadlock.wat");
    let policy = |name: &str, toml: &str| write(name, toml);
    let exit42 = write(
        "exit42.wat",
        r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
             (memory (export "memory") 1)
             (func (export "_start") (call $exit (i32.const 42))))"#,
    );
    let big = write(
        "initial.wat",
        r#"(module (memory 100) (func (export "f")))"#,
    );
    let deadlock_abort = policy("dl.toml", "[failures]\ndeadlock = \"abort\"\n");
    let exit = policy("exit.toml", "[failures]\nguest-trap = \"exit-process\"\n");
    let fast = policy(
        "fast.toml",
        "[failures]\nguest-trap = \"fast-exit-process\"\n",
    );
    let bad_serve = write(
        "bad-serve.toml",
        "listen = \"127.0.0.1:0\"\nno-such-key = 1\n",
    );
    let reached: Vec<(&str, Vec<&str>)> = vec![
        ("0", vec!["run", &hostile, "--invoke", "answer"]),
        ("4", vec!["serve", &bad_serve]),
        ("N", vec!["run", &exit42]),
        ("2", vec!["run", &hostile, "--no-such-flag"]),
        ("3", vec!["run", "/no/such/module.wasm"]),
        ("103", vec!["run", &hostile, "--invoke", "trap"]),
        ("104", vec!["run", &hostile, "--invoke", "recurse"]),
        (
            "105",
            vec!["run", &hostile, "--invoke", "hog", "--max-memory", "4MiB"],
        ),
        (
            "106",
            vec!["run", &hostile, "--invoke", "spin", "--deadline", "100ms"],
        ),
        (
            "109",
            vec![
                "run",
                &deadlock,
                "--grant",
                "unsafe",
                "--invoke",
                "ab",
                "--invoke",
                "ba",
                "--policy",
                &deadlock_abort,
            ],
        ),
        (
            "120",
            vec!["run", &deadlock, "--grant", "safe", "--invoke", "ab"],
        ),
        (
            "111",
            vec!["run", &big, "--invoke", "f", "--memory-budget", "1MiB"],
        ),
        (
            "114",
            vec!["run", &hostile, "--invoke", "trap", "--policy", &exit],
        ),
        (
            "115",
            vec!["run", &hostile, "--invoke", "trap", "--policy", &fast],
        ),
        (
            "116",
            vec!["run", &hostile, "--invoke", "trap", "--policy", "fail-fast"],
        ),
    ];
    for (row, args) in &reached {
        let want = if *row == "N" {
            42
        } else {
            row.parse().unwrap()
        };
        let o = run(args);
        assert_eq!(code(&o), Some(want), "{row} via {args:?}: {}", stderr(&o));
    }
    let elsewhere = ["117", "118", "119"];
    for (row, api_only) in &table {
        let covered = reached.iter().any(|(r, _)| r == row) || elsewhere.contains(&row.as_str());
        assert!(
            covered != *api_only,
            "README row {row}: {}",
            if *api_only {
                "marked API-only but reached"
            } else {
                "no run here reaches it"
            }
        );
    }
}

/// The orphaned-lock warnings and the events share stderr. A slow reader keeps the pipe full,
/// so every write to it is partial: each event line must still arrive whole, never with a
/// warning inside it.
#[test]
fn warnings_never_split_an_event_line_for_a_slow_reader() {
    let mut child = spawn(
        warden().args([
            "run",
            &fixture("lock_storm.wat"),
            "--grant",
            "safe,synchronization",
            "--invoke",
            "storm",
            "--repeat",
            "100",
            "--events",
            "json",
        ]),
        Stdio::null(),
    );
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n @ 1..) = err.read(&mut buf) {
            all.extend_from_slice(&buf[..n]);
            // The slowness is the thing under test, not a wait for anything.
            std::thread::sleep(Duration::from_millis(2));
        }
        all
    });
    let o = finish(child);
    let text = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert_eq!(code(&o), Some(0), "{text}");
    // `events` fails on a line that opens as an event and is not one.
    let events = events(&text);
    assert!(!named(&events, "locks_orphaned").is_empty(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("WARN orphaned_locks") && !l.starts_with('{')),
        "the warnings are there, on lines of their own:\n{text}"
    );
}

/// Cycles that each leave 256 uniquely named locks orphaned: the poison marks stay bounded
/// and so do the warnings about them.
#[test]
fn orphaned_lock_storms_leave_bounded_state_and_bounded_warnings() {
    // Each call takes 256 locks named after the clock and returns holding them all.
    let g = fixture("lock_storm.wat");
    let o = run(&[
        "run",
        &g,
        "--grant",
        "safe,synchronization",
        "--invoke",
        "storm",
        "--repeat",
        "40",
    ]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("40 of 40 cycles"), "{err}");
    // 10,240 marks made, at most 4,096 kept: the oldest went, and it was said.
    assert!(err.contains("poison_mark_dropped"), "{err}");
    // 40 orphaning calls, but a bounded number of warning lines, each of bounded length.
    let warnings = err.lines().filter(|l| l.contains("orphaned_locks")).count();
    assert!((1..=25).contains(&warnings), "{warnings} warnings:\n{err}");
    assert!(err.len() < 64 << 10, "{} bytes on stderr", err.len());

    // The events say so too: 5,120 marks made, so some of the oldest went.
    let o = run(&[
        "run",
        &g,
        "--grant",
        "safe,synchronization",
        "--invoke",
        "storm",
        "--repeat",
        "20",
        "--events",
        "json",
    ]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let events = events(&stderr(&o));
    let dropped = named(&events, "poison_mark_dropped");
    assert!(!dropped.is_empty(), "no poison_mark_dropped event");
    // Event lines are dropped rather than waited for when stderr's buffer is full (a slow
    // reader, a loaded machine), so the events seen may add up to less, never to more.
    let total: u64 = dropped.iter().map(|e| e["dropped"].as_u64().unwrap()).sum();
    assert!(
        (1..=20 * 256 - 4096).contains(&total),
        "{total} marks said dropped: {dropped:?}"
    );
    assert!(
        dropped
            .iter()
            .all(|e| e["limit"] == 4096 && e["oldest"].is_string())
    );
}
