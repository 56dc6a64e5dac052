//! Review of issue #16 from outside: inputs and exit codes the first pass missed.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn warden() -> Command {
    Command::new(env!("CARGO_BIN_EXE_warden"))
}

fn dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("warden-review16-tests-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(name: &str, bytes: impl AsRef<[u8]>) -> String {
    let p = dir().join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

/// A bound on "it ends", never a speed claim.
const ENDS_WITHIN: Duration = Duration::from_secs(60);

/// Runs to the end (killed, and the test failed, if it does not end within the bound);
/// stdout and stderr are read while it runs, so a chatty run cannot block.
fn run(args: &[&str]) -> Output {
    let mut child = warden()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let until = Instant::now() + ENDS_WITHIN;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("warden {args:?} did not end");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
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
