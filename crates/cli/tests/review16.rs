//! Review of issue #16 from outside: inputs and exit codes the first pass missed.

mod common;
use common::{dir, run, stderr, write};

/// WAT text with more functions than the limit is refused on its tokens, before it is
/// parsed (parsing text costs tens of bytes per byte: 21 MB of `(func)` took 1.3 GB): the
/// parse error after the functions is never reached.
#[test]
fn wat_text_with_too_many_functions_is_refused_before_parsing() {
    let wat = format!("(module\n{} this is not wat", "(func)\n".repeat(100_001));
    let path = write("many.wat", wat);
    let o = run(&["run", &path, "--invoke", "f"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("100001 functions, more than the 100000-function limit"),
        "{}",
        stderr(&o)
    );
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
        assert!(stderr(&o).contains("passed its deadline"), "{}", stderr(&o));
    }
}

/// `--handles` past what a domain's handle table can hold is refused at entry, not after
/// opening 8 million handles one by one (12 s and 1.6 GB).
#[test]
fn too_many_soak_handles_are_refused_at_entry() {
    let guest = write("answer.wat", r#"(module (func (export "f")))"#);
    let o = run(&["run", &guest, "--invoke", "f", "--handles", "4294967295"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--handles: at most 8388608"),
        "{}",
        stderr(&o)
    );
    let o = run(&["run", &guest, "--invoke", "f", "--handles", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// A wasm binary with one function, exported as `f`, that traps, whose name section names
/// it `name`.
fn trapping_module_named(name: &str) -> Vec<u8> {
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
    fn string(s: &str, out: &mut Vec<u8>) {
        leb(s.len(), out);
        out.extend_from_slice(s.as_bytes());
    }
    fn section(id: u8, body: Vec<u8>, out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len(), out);
        out.extend(body);
    }
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
    let named = dir().join("forge-name.wasm");
    std::fs::write(&named, trapping_module_named("evil\nwarden: g: FORGED")).unwrap();
    let named = named.display().to_string();
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
