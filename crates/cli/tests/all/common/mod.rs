//! Helpers shared by the binary's test modules: spawn `warden`, write guests to a temporary
//! directory of the calling module, and run to the end within a bound, draining output as it
//! comes.
// Each test module uses its own subset of these.
#![allow(dead_code)]

/// The component guests the library's tests build from WAT and WIT, shared (one copy).
#[path = "../../../../warden/tests/all/common/components.rs"]
pub mod components;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A bound on "it ends", never a speed claim (CI is a loaded 2-core box).
pub const ENDS_WITHIN: Duration = Duration::from_secs(60);

pub fn warden() -> Command {
    Command::new(env!("CARGO_BIN_EXE_warden"))
}

/// A path in the repository, as an argument.
pub fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
        .display()
        .to_string()
}

/// `guests/hostile.wat`: `answer`, and the runaways `spin`, `recurse`, `hog`, `trap`.
pub fn hostile() -> String {
    repo("guests/hostile.wat")
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

/// `cmd` with no stdin, to the end within the bound: `Command::output` that cannot hang.
pub fn output(cmd: &mut Command) -> Output {
    finish(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
    )
}

/// `warden ARGS` with no stdin, to the end.
pub fn run(args: &[&str]) -> Output {
    output(warden().args(args))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The `--events json` lines of `text`. Every line that opens with `{` must be one event
/// object (the contract); the others are warden's or the guest's own words.
pub fn events(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not an event ({e}): {l}")))
        .collect()
}

/// The events of `events` called `name`.
pub fn named<'a>(events: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}
