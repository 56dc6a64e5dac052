//! WASI grants through `warden run`: `--dir` and `--dir-ro` preopens (and nothing outside
//! them), `--env KEY[=VALUE]`, stdin, and bad `--dir` arguments. Guests are preview1 commands
//! written as WAT here.

use crate::common::{
    Preopen, fixture, output, preopen, read_fixture, run, run_with_stdin, scratch, stderr, stdout,
    warden, write_in,
};
use std::process::Output;

/// preview1 errno values the guests exit with.
const EBADF: i32 = 8;

/// A WAT string literal of `s`, every byte escaped.
fn wat_bytes(s: &str) -> String {
    s.bytes().map(|b| format!("\\{b:02x}")).collect()
}

const IMPORTS: &str = r#"
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; exit with the errno of a failed step
  (func $check (param $e i32) (if (local.get $e) (then (call $proc_exit (local.get $e)))))
"#;

/// A command that opens `path` in the first preopen (fd 3, following symlinks) and copies it
/// to stdout; it exits with the errno of the first step that fails.
fn reader(path: &str) -> String {
    format!(
        r#"(module {IMPORTS}
  (data (i32.const 1024) "{p}")
  (func (export "_start")
    ;; path_open(3, LOOKUP_SYMLINK_FOLLOW, path, oflags 0, rights FD_READ, 0, 0, &fd @0)
    (call $check (call $path_open (i32.const 3) (i32.const 1) (i32.const 1024) (i32.const {n})
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 0)))
    ;; iovec @16 = (4096, 4096); nread @24
    (i32.store (i32.const 16) (i32.const 4096))
    (i32.store (i32.const 20) (i32.const 4096))
    (call $check (call $fd_read (i32.load (i32.const 0)) (i32.const 16) (i32.const 1) (i32.const 24)))
    (i32.store (i32.const 20) (i32.load (i32.const 24)))
    (call $check (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 28)))))"#,
        p = wat_bytes(path),
        n = path.len()
    )
}

/// A command that creates (or truncates) `path` in the first preopen and writes `written`.
fn writer(path: &str) -> String {
    format!(
        r#"(module {IMPORTS}
  (data (i32.const 1024) "{p}")
  (data (i32.const 2048) "written")
  (func (export "_start")
    ;; path_open(3, LOOKUP_SYMLINK_FOLLOW, path, O_CREAT|O_TRUNC, rights FD_WRITE, 0, 0, &fd @0)
    (call $check (call $path_open (i32.const 3) (i32.const 1) (i32.const 1024) (i32.const {n})
      (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 0)))
    (i32.store (i32.const 16) (i32.const 2048))
    (i32.store (i32.const 20) (i32.const 7))
    (call $check (call $fd_write (i32.load (i32.const 0)) (i32.const 16) (i32.const 1) (i32.const 24)))))"#,
        p = wat_bytes(path),
        n = path.len()
    )
}

#[test]
fn a_command_reads_and_writes_files_under_dir() {
    let Preopen { root, granted, .. } = preopen("rw");
    let g = granted.display().to_string();
    let read = write_in(&root, "read.wat", reader("in.txt"));
    let o = run(&["run", "--dir", &g, &read]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "inside");

    let write = write_in(&root, "write.wat", writer("sub-out.txt"));
    let o = run(&["run", "--dir", &format!("{g}::/data"), &write]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(granted.join("sub-out.txt")).unwrap(),
        "written"
    );
}

#[test]
fn without_dir_the_guest_has_no_file_system() {
    let Preopen { root, .. } = preopen("none");
    let read = write_in(&root, "read.wat", reader("in.txt"));
    let o = run(&["run", &read]);
    assert_eq!(o.status.code(), Some(EBADF), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
}

/// Every way out of the preopen is refused: the guest exits with an errno, reads nothing,
/// creates nothing, changes nothing outside.
#[test]
fn nothing_outside_the_preopen_is_reachable() {
    let Preopen {
        root,
        granted,
        secret,
    } = preopen("escape");
    std::os::unix::fs::symlink("../secret.txt", granted.join("up-link")).unwrap();
    std::os::unix::fs::symlink(&secret, granted.join("abs-link")).unwrap();
    std::os::unix::fs::symlink(&root, granted.join("root-link")).unwrap();
    let g = granted.display().to_string();
    let abs = secret.display().to_string();
    for path in [
        "../secret.txt",
        "./../granted/../secret.txt",
        abs.as_str(),
        "up-link",
        "abs-link",
        "root-link/secret.txt",
    ] {
        let read = write_in(&root, "read.wat", reader(path));
        let o = run(&["run", "--dir", &g, &read]);
        let code = o.status.code().unwrap();
        assert!(
            code != 0 && code < 100,
            "reading {path} outside the preopen: code {code}, {}",
            stderr(&o)
        );
        assert!(!stdout(&o).contains("SECRET"), "read {path}");

        let write = write_in(&root, "write.wat", writer(path));
        let o = run(&["run", "--dir", &g, &write]);
        let code = o.status.code().unwrap();
        assert!(code != 0 && code < 100, "writing {path}: code {code}");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "SECRET");
    }
    let write = write_in(&root, "write.wat", writer("../created.txt"));
    let o = run(&["run", "--dir", &g, &write]);
    assert_ne!(o.status.code(), Some(0));
    assert!(!root.join("created.txt").exists());
}

#[test]
fn dir_ro_reads_but_refuses_every_write() {
    let Preopen { root, granted, .. } = preopen("ro");
    let g = granted.display().to_string();
    let read = write_in(&root, "read.wat", reader("in.txt"));
    let o = run(&["run", "--dir-ro", &g, &read]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "inside");

    for path in ["new.txt", "in.txt"] {
        let write = write_in(&root, "write.wat", writer(path));
        let o = run(&["run", "--dir-ro", &format!("{g}::ro"), &write]);
        let code = o.status.code().unwrap();
        assert!(code != 0 && code < 100, "writing {path}: code {code}");
    }
    assert!(!granted.join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(granted.join("in.txt")).unwrap(),
        "inside"
    );
}

#[test]
fn env_sets_inherits_a_bare_key_and_passes_nothing_else() {
    let g = fixture("print_env.wat");
    let o = output(
        warden()
            .args(["run", "--env", "GIVEN=a=b", "--env", "WARDEN_T_INHERITED"])
            .args(["--env", "WARDEN_T_ABSENT", &g])
            .env("WARDEN_T_INHERITED", "from the host")
            .env("WARDEN_T_NOT_GRANTED", "x")
            .env_remove("WARDEN_T_ABSENT"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert_eq!(lines, ["GIVEN=a=b", "WARDEN_T_INHERITED=from the host"]);
}

#[test]
fn stdin_reaches_a_command() {
    let g = fixture("cat.wat");
    let text = "line one\nline two, longer than the first\n".repeat(500);
    let o = run_with_stdin(&["run", &g], text.as_bytes());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), text);
}

/// One line on stderr, naming what is wrong; exit 3; no guest code ran.
fn assert_refused(o: &Output, names: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    for n in names {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
    assert_eq!(stdout(o), "");
}

#[test]
fn bad_dir_arguments_are_refused_naming_flag_and_path() {
    let root = scratch("bad");
    let hello = fixture("print_env.wat");
    let missing = root.join("missing").display().to_string();
    let file = root.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let file = file.display().to_string();

    let o = run(&["run", "--dir", &missing, &hello]);
    assert_refused(&o, &["--dir", &missing, "No such file"]);
    let o = run(&["run", "--dir-ro", &format!("{missing}::g"), &hello]);
    assert_refused(&o, &["--dir-ro", &missing]);
    let o = run(&["run", "--dir", &file, &hello]);
    assert_refused(&o, &["--dir", &file, "not a directory"]);
    for spelling in ["", "::guest", "host::", "a::b::c"] {
        let o = run(&["run", "--dir", spelling, &hello]);
        assert_refused(&o, &["--dir", "HOST::GUEST"]);
    }
    let o = run(&["run", "--env", "=value", &hello]);
    assert_refused(&o, &["--env"]);
}

#[test]
fn an_unreadable_dir_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let root = scratch("unreadable");
    let hello = fixture("print_env.wat");
    let locked = root.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read_dir(&locked).is_ok() {
        // Root reads any directory: there is no unreadable one to refuse.
        eprintln!("skipped: this user can read a mode-000 directory (root)");
        return;
    }
    let l = locked.display().to_string();
    let o = run(&["run", "--dir", &l, &hello]);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_refused(&o, &["--dir", &l, "cannot read"]);
}

#[test]
fn stdin_reaches_an_invoked_core_export() {
    let root = scratch("stdin-invoke");
    let g = write_in(
        &root,
        "cat-export.wat",
        read_fixture("cat.wat").replace(r#"(export "_start")"#, r#"(export "cat")"#),
    );
    let o = run_with_stdin(&["run", &g, "--invoke", "cat"], b"piped to an export\n");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "piped to an export\ncat: ()\n");
}
