//! Review of issue #16 from outside: inputs and exit codes the first pass missed.

use std::process::{Command, Output, Stdio};

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

/// Runs to the end; stdout and stderr are read while it runs, so a chatty run cannot block.
fn run(args: &[&str]) -> Output {
    warden().args(args).stdin(Stdio::null()).output().unwrap()
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
