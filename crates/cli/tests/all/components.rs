//! `warden run` with component guests (preview2 commands, typed `--invoke` in WAVE) and WAVE
//! arguments for core exports, through the binary.

use crate::common::{
    self, Preopen, assert_said, components, events, named, preopen, run, run_with_stdin, stderr,
    stdout,
};

fn typed() -> String {
    common::write("typed.wasm", components::typed())
}

#[test]
fn a_preview2_command_gets_its_args_and_writes_stdout() {
    let cmd = common::write("command.wasm", components::command());
    let o = run(&["run", &cmd, "--", "one", "two"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "one\ntwo\n");
}

#[test]
fn a_preview2_exit_status_is_the_exit_code() {
    let cmd = common::write("command.wasm", components::command());
    let o = run(&["run", &cmd, "--events", "json", "--", "fail"]);
    // `wasi:cli/exit` with an error status is 1, as `wasmtime run` makes it.
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stdout(&o), "fail\n");
    let events = events(&stderr(&o));
    assert!(
        named(&events, "call_finished")
            .iter()
            .any(|e| e["outcome"] == "ok"),
        "{events:?}"
    );
}

#[test]
fn typed_invoke_of_component_exports_prints_wave() {
    let guest = typed();
    let o = run(&[
        "run",
        &guest,
        "--invoke",
        "add(40, 2)",
        "--invoke",
        r#"echo("hi \"there\"")"#,
        "--invoke",
        "sum([1, 2, 4294967295])",
        "--invoke",
        "swap({x: 1, y: -2})",
        "--invoke",
        "half(some(10))",
        "--invoke",
        "half(none)",
        "--invoke",
        "api#get()",
        "--invoke",
        "get",
        "--invoke",
        "trap()",
    ]);
    assert_eq!(
        stdout(&o),
        "add: 42\n\
         echo: \"hi \\\"there\\\"\"\n\
         sum: 4294967298\n\
         swap: {x: -2, y: 1}\n\
         half: ok(5)\n\
         half: err(\"none\")\n\
         api#get: 7\n\
         api#get: 7\n"
    );
    // The failing call (last on the line) decides the code; the others printed.
    assert_eq!(o.status.code(), Some(103), "{}", stderr(&o));
}

#[test]
fn core_exports_take_wave_arguments() {
    let guest = common::write(
        "core-args.wat",
        r#"(module
          (func (export "mix") (param i32 i64 f32 f64) (result f64)
            (f64.add
              (f64.add (f64.convert_i32_s (local.get 0)) (f64.convert_i64_s (local.get 1)))
              (f64.add (f64.promote_f32 (local.get 2)) (local.get 3))))
          (func (export "pair") (param i64) (result i64 i32)
            (local.get 0) (i32.wrap_i64 (local.get 0)))
          (func (export "answer") (result i32) (i32.const 42)))"#,
    );
    let o = run(&[
        "run",
        &guest,
        "--invoke",
        "mix(-1, 10000000000, 0.5, 1.25)",
        "--invoke",
        "pair(4294967297)",
        "--invoke",
        "answer",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "mix: 10000000000.75\npair: (4294967297, 1)\nanswer: 42\n"
    );
}

#[test]
fn bad_invocations_are_one_line_and_exit_3() {
    let comp = typed();
    let core = common::write(
        "core-bad.wat",
        r#"(module (func (export "f") (param i32 f64)) (global (export "g") i32 (i32.const 1)))"#,
    );
    let cases: &[(&str, &str, &str)] = &[
        (&comp, "add(1,", "arguments for `add`"),
        (&comp, "add(1)", "arguments for `add`"),
        (&comp, r#"add("x", 2)"#, "arguments for `add`"),
        (&comp, "echo(1)", "arguments for `echo`"),
        (&comp, "nope()", "`nope`"),
        (&comp, "add", "takes parameters (a, b)"),
        (&comp, "add(1, 2) x", "must end with `)`"),
        (&core, "f(1)", "arguments for `f`"),
        (&core, "f(1, \"x\")", "arguments for `f`"),
        (&core, "f", "takes parameters (i32, f64)"),
        (&core, "g()", "`g` is not a function"),
        (&core, "h()", "no export `h`"),
    ];
    for (guest, invoke, names) in cases {
        let o = run(&["run", guest, "--invoke", invoke]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(3), "{invoke}: {err}");
        assert_eq!(err.lines().count(), 1, "{invoke}: one line: {err}");
        assert!(err.starts_with("warden: "), "{invoke}: {err}");
        assert!(err.contains(names), "{invoke}: `{names}` in {err}");
        assert!(stdout(&o).is_empty());
    }
}

#[test]
fn a_component_that_is_no_command_needs_invoke() {
    let o = run(&["run", &typed()]);
    assert_eq!(o.status.code(), Some(3));
    assert_said(&o, "does not export `wasi:cli/run`");
}

#[test]
fn hostile_component_calls_have_their_outcomes_codes() {
    let guest = typed();
    for (invoke, extra, code, outcome) in [
        ("spin", &["--deadline", "100ms"][..], 106, "timeout"),
        ("recurse", &[][..], 104, "stack_overflow"),
        ("hog", &["--max-memory", "4MiB"][..], 105, "out_of_memory"),
        ("trap", &[][..], 103, "trap"),
    ] {
        let mut args = vec!["run", &guest, "--events", "json", "--invoke", invoke];
        args.extend_from_slice(extra);
        let o = run(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{invoke}: {err}");
        let events = events(&err);
        assert!(
            named(&events, "call_finished")
                .iter()
                .any(|e| e["outcome"] == outcome),
            "{invoke}: {err}"
        );
        // The domain was unloaded, and the run ended in order.
        assert!(err.contains("\"domain_unloaded\""), "{invoke}: {err}");
        assert!(!err.contains("panicked"), "{invoke}: {err}");
    }
}

// ---- a preview2 command under --dir, and stdin for --invoke ----

/// A [`Preopen`] and the preview2 command that reads and writes files in it.
#[track_caller]
fn layout(name: &str) -> (Preopen, String) {
    let files = common::write(&format!("{name}-files.wasm"), components::files_command());
    (preopen(name), files)
}

#[test]
fn a_preview2_command_reads_and_writes_under_dir() {
    let (Preopen { granted, .. }, files) = layout("p2-dir");
    let g = granted.display().to_string();
    let o = run(&["run", "--dir", &g, &files, "--", "read", "in.txt"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "inside");
    let o = run(&[
        "run", "--dir", &g, &files, "--", "write", "out.txt", "hello",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "wrote\n");
    assert_eq!(
        std::fs::read_to_string(granted.join("out.txt")).unwrap(),
        "hello"
    );
    // HOST::GUEST names the preopen for the guest; the files are the same.
    let mapped = format!("{g}::/data");
    let o = run(&["run", "--dir", &mapped, &files, "--", "read", "out.txt"]);
    assert_eq!(stdout(&o), "hello", "{}", stderr(&o));
    // Without --dir the guest has no file system at all.
    let o = run(&["run", &files, "--", "read", "in.txt"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "no preopen\n");
}

#[test]
fn a_preview2_command_is_refused_outside_its_preopen() {
    let (
        Preopen {
            root,
            granted,
            secret,
        },
        files,
    ) = layout("p2-escape");
    let g = granted.display().to_string();
    let secret = secret.display().to_string();
    for path in [
        "../secret.txt",
        "./../granted/../secret.txt",
        secret.as_str(),
    ] {
        let o = run(&["run", "--dir", &g, &files, "--", "read", path]);
        assert_eq!(o.status.code(), Some(1), "reading {path}: {}", stderr(&o));
        // wasmtime refuses these as not-permitted (31), as Warden does.
        assert_eq!(stdout(&o), "error 31\n", "reading {path}");
        let o = run(&["run", "--dir", &g, &files, "--", "write", path, "owned"]);
        assert_eq!(o.status.code(), Some(1), "writing {path}");
        assert_eq!(stdout(&o), "error 31\n", "writing {path}");
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "SECRET");
    let o = run(&["run", "--dir", &g, &files, "--", "write", "../new.txt", "x"]);
    assert_eq!(stdout(&o), "error 31\n");
    assert!(!root.join("new.txt").exists());
}

#[test]
fn a_preview2_command_under_dir_ro_reads_but_cannot_write() {
    let (Preopen { granted, .. }, files) = layout("p2-ro");
    let g = granted.display().to_string();
    let o = run(&["run", "--dir-ro", &g, &files, "--", "read", "in.txt"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "inside");
    for path in ["in.txt", "new.txt"] {
        let o = run(&["run", "--dir-ro", &g, &files, "--", "write", path, "x"]);
        assert_eq!(o.status.code(), Some(1), "writing {path}: {}", stderr(&o));
        assert!(
            stdout(&o).starts_with("error "),
            "writing {path}: {}",
            stdout(&o)
        );
    }
    assert_eq!(
        std::fs::read_to_string(granted.join("in.txt")).unwrap(),
        "inside"
    );
    assert!(!granted.join("new.txt").exists());
}

#[test]
fn an_invoked_component_export_reads_the_process_stdin() {
    let (_, files) = layout("p2-stdin");
    let o = run_with_stdin(
        &["run", &files, "--invoke", "read-stdin()"],
        b"from the pipe",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "read-stdin: \"from the pipe\"\n");
}

#[test]
fn typed_invoke_of_lists_of_strings_options_and_results_as_arguments() {
    let guest = typed();
    let o = run(&[
        "run",
        &guest,
        "--invoke",
        r#"rev(["a", "bc", "d"])"#,
        "--invoke",
        "rev([])",
        "--invoke",
        r#"maybe(some("x y"))"#,
        "--invoke",
        "maybe(none)",
        "--invoke",
        "check(ok(3))",
        "--invoke",
        r#"check(err("bad"))"#,
        "--invoke",
        "sum([])",
        "--invoke",
        "swap({x: 2147483647, y: -2147483648})",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "rev: [\"d\", \"bc\", \"a\"]\n\
         rev: []\n\
         maybe: some(\"x y\")\n\
         maybe: none\n\
         check: ok(3)\n\
         check: err(\"bad\")\n\
         sum: 0\n\
         swap: {x: -2147483648, y: 2147483647}\n"
    );
    // A value of the wrong type is refused before any guest code, naming the parameter.
    let o = run(&["run", &guest, "--invoke", "check(some(1))"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_said(&o, "check");
}
