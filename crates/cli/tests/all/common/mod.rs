//! Helpers shared by the binary's test modules: spawn `warden`, write guests to a temporary
//! directory of the calling module, and run to the end within a bound, draining output as it
//! comes.
// Each test module uses its own subset of these.
#![allow(dead_code)]

/// The component guests the library's tests build from WAT and WIT, shared (one copy).
#[path = "../../../../warden/tests/all/common/components.rs"]
pub mod components;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A bound on "it ends", never a speed claim (CI is a loaded 2-core box).
pub const ENDS_WITHIN: Duration = Duration::from_secs(60);

pub fn warden() -> Command {
    Command::new(env!("CARGO_BIN_EXE_warden"))
}

/// The calling test module's own scratch directory.
#[track_caller]
pub fn dir() -> PathBuf {
    dir_for(std::panic::Location::caller())
}

/// One scratch directory per test file and process: two files writing a file of the same name
/// must not race (they may one day share a binary).
fn dir_for(caller: &std::panic::Location<'_>) -> PathBuf {
    let module = std::path::Path::new(caller.file())
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let d = std::env::temp_dir().join(format!(
        "warden-{}-tests-{}-{module}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[track_caller]
pub fn write(name: &str, bytes: impl AsRef<[u8]>) -> String {
    // Tests of one binary run in parallel and may write the same fixture while another test's
    // warden reads it: write a file of its own, then rename it into place (atomic), so a
    // reader never sees a truncated or half-written file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = dir_for(std::panic::Location::caller());
    let p = dir.join(name);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{n}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p.display().to_string()
}

/// Runs to the end, failing (and killing it) if it does not end in time. Its output is
/// drained as it comes, so a chatty run never blocks on a full pipe.
pub fn finish(mut child: Child) -> Output {
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let until = Instant::now() + ENDS_WITHIN;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("warden did not end");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// `warden ARGS` with no stdin, to the end.
pub fn run(args: &[&str]) -> Output {
    finish(
        warden()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
