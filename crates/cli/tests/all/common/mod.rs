//! Helpers shared by the binary's test modules, one copy each:
//! - paths and scratch files: [`repo`], [`hostile`], [`fixture`] (guests too long to read
//!   inline, as `.wat` files in `fixtures/`), [`dir`], [`write`], [`scratch`], [`preopen`]
//!   (each module writes in a directory of its own);
//! - running `warden` to the end within [`ENDS_WITHIN`]: [`run`], [`run_with_stdin`],
//!   [`output`], [`finish`], and reading what it said: [`stdout`], [`stderr`], [`events`],
//!   [`assert_said`];
//! - acting while it runs: [`Running`] (wait for an event, [`signal`] it, finish);
//! - waiting on a state, never for a fixed time: [`until`], [`until_ok`], [`wait_exit`].
//!
//! There is no module-wide `allow(dead_code)`: a helper no test uses any more is a warning.

/// The component guests the library's tests build from WAT and WIT, shared (one copy).
#[path = "../../../../warden/tests/all/common/components.rs"]
pub mod components;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
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

/// `crates/cli/tests/all/fixtures/NAME`, a guest warden reads as it is.
pub fn fixture(name: &str) -> String {
    repo(&format!("crates/cli/tests/all/fixtures/{name}"))
}

/// The text of the fixture `name`, to vary it.
pub fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
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

/// `bytes` as the file `name` in the calling module's scratch directory: its path.
#[track_caller]
pub fn write(name: &str, bytes: impl AsRef<[u8]>) -> String {
    write_in(&dir_for(std::panic::Location::caller()), name, bytes)
}

/// `bytes` as the file `name` in `dir`: its path.
pub fn write_in(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> String {
    // Tests of one binary run in parallel and may write the same fixture while another test's
    // warden reads it: write a file of its own, then rename it into place (atomic), so a
    // reader never sees a truncated or half-written file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let p = dir.join(name);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{n}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p.display().to_string()
}

/// A fresh, empty directory `name` in the calling module's scratch directory (one test's
/// own: what an earlier run left there is gone).
#[track_caller]
pub fn scratch(name: &str) -> PathBuf {
    let d = dir_for(std::panic::Location::caller()).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A directory to grant a guest (`--dir`), with a file inside and a secret beside it.
pub struct Preopen {
    /// The scratch directory that holds the other two.
    pub root: PathBuf,
    /// `root/granted`, holding `in.txt` ("inside").
    pub granted: PathBuf,
    /// `root/secret.txt` ("SECRET"): outside the grant.
    pub secret: PathBuf,
}

/// A [`Preopen`] in a fresh scratch directory `name`.
#[track_caller]
pub fn preopen(name: &str) -> Preopen {
    let root = scratch(name);
    let granted = root.join("granted");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(granted.join("in.txt"), "inside").unwrap();
    let secret = root.join("secret.txt");
    std::fs::write(&secret, "SECRET").unwrap();
    Preopen {
        root,
        granted,
        secret,
    }
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
    let Some(status) = wait_exit(&mut child) else {
        panic!("warden did not end within {ENDS_WITHIN:?}");
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Starts `cmd` with `stdin`, its stdout and stderr piped to the test.
pub fn spawn(cmd: &mut Command, stdin: Stdio) -> Child {
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// `cmd` with no stdin, to the end within the bound: `Command::output` that cannot hang.
pub fn output(cmd: &mut Command) -> Output {
    finish(spawn(cmd, Stdio::null()))
}

/// `warden ARGS` with no stdin, to the end.
pub fn run(args: &[&str]) -> Output {
    output(warden().args(args))
}

/// `warden ARGS` with `input` on its stdin, then end of file, to the end. The input is fed
/// from a thread of its own, so a guest that writes before it reads cannot deadlock it.
pub fn run_with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = spawn(warden().args(args), Stdio::piped());
    let mut pipe = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feed = std::thread::spawn(move || std::io::Write::write_all(&mut pipe, &input));
    let o = finish(child);
    feed.join().unwrap().expect("warden read its stdin");
    o
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that `o`'s stderr says `text`, showing all it said if not.
#[track_caller]
pub fn assert_said(o: &Output, text: &str) {
    let err = stderr(o);
    assert!(err.contains(text), "`{text}` not in stderr:\n{err}");
}

/// The `--events json` lines of `text`. Every line that opens with `{` must be one event
/// object (the contract); the others are warden's or the guest's own words. The one
/// exception is an unterminated last line: warden's exit waits for a slow reader only so
/// long (`stdio::flush` is bounded), so a loaded machine may see the output cut mid-line.
pub fn events(text: &str) -> Vec<serde_json::Value> {
    let cut = (!text.ends_with('\n'))
        .then(|| text.lines().last())
        .flatten();
    text.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| match serde_json::from_str(l) {
            Ok(e) => Some(e),
            Err(_) if cut.is_some_and(|c| std::ptr::eq(c, l)) => None,
            Err(e) => panic!("not an event ({e}): {l}"),
        })
        .collect()
}

/// The events of `events` called `name`.
pub fn named<'a>(events: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// Polls `done` until it holds, failing (naming `what`) if it does not within the bound.
#[track_caller]
pub fn until(what: &str, mut done: impl FnMut() -> bool) {
    until_ok(what, || if done() { Ok(()) } else { Err(String::new()) })
}

/// Polls `check` until it gives `Ok`, failing with `what` and the last `Err` (what it saw
/// instead) if that does not come within the bound.
#[track_caller]
pub fn until_ok<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + ENDS_WITHIN;
    loop {
        match check() {
            Ok(v) => return v,
            Err(saw) if Instant::now() > deadline => {
                panic!("waited {ENDS_WITHIN:?} for {what}; saw:\n{saw}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// How often a wait on a state looks again.
const POLL: Duration = Duration::from_millis(5);

/// The child's exit status, or None if it has not ended within the bound (then it is killed
/// and reaped, so nothing outlives the test).
pub fn wait_exit(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + ENDS_WITHIN;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Sends `sig` (`TERM`, `INT`, ...) to the process `pid`, which must still be there.
pub fn signal(pid: u32, sig: &str) {
    assert!(try_signal(pid, sig), "kill -s {sig} {pid}");
}

/// Sends `sig` to `pid` if it is still there: whether it was.
pub fn try_signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .expect("run kill")
        .success()
}

/// A running `warden run`, its stderr (where the events go) read line by line as it comes,
/// so a test can wait for an event and then act (signal it) while it runs.
pub struct Running {
    child: Child,
    lines: Receiver<String>,
    /// The stderr lines read so far.
    pub seen: Vec<String>,
    /// Stdout read to its end, when it is not held.
    stdout: Option<JoinHandle<String>>,
    /// Stdin and stdout held open and never touched (`stalled`): a reader or writer that
    /// never comes.
    _held: Option<(ChildStdin, ChildStdout)>,
}

impl Running {
    /// `warden run ARGS` with no stdin; its stdout is collected.
    pub fn start(args: &[&str]) -> Running {
        Running::spawn(args, false)
    }

    /// `warden run ARGS` whose stdin and stdout are pipes the test holds and never touches.
    pub fn stalled(args: &[&str]) -> Running {
        Running::spawn(args, true)
    }

    fn spawn(args: &[&str], stalled: bool) -> Running {
        let stdin = if stalled {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let mut child = spawn(warden().arg("run").args(args), stdin);
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let out = child.stdout.take().unwrap();
        let (stdout, held) = if stalled {
            (None, Some((child.stdin.take().unwrap(), out)))
        } else {
            let mut out = out;
            let reader = std::thread::spawn(move || {
                let mut s = String::new();
                let _ = out.read_to_string(&mut s);
                s
            });
            (Some(reader), None)
        };
        Running {
            child,
            lines,
            seen: Vec::new(),
            stdout,
            _held: held,
        }
    }

    /// Reads stderr until the events so far satisfy `done`, failing (and killing the
    /// process) if they do not within the bound.
    pub fn wait_for(&mut self, what: &str, done: impl Fn(&[serde_json::Value]) -> bool) {
        let deadline = Instant::now() + ENDS_WITHIN;
        while !done(&self.events()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("waited for {what}; stderr so far:\n{}", self.stderr());
                }
            }
        }
    }

    /// Reads stderr until an event called `name` has come.
    pub fn wait_for_event(&mut self, name: &str) {
        self.wait_for(name, |ev| ev.iter().any(|e| e["event"] == name));
    }

    pub fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    /// Waits for the exit (killing the process and failing if it does not come within the
    /// bound), then reads the rest of stderr: the status and stdout (empty when stalled).
    pub fn finish(&mut self) -> (ExitStatus, String) {
        let Some(status) = wait_exit(&mut self.child) else {
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            panic!("warden did not end; stderr:\n{}", self.stderr());
        };
        // The reader ends at EOF.
        while let Ok(line) = self.lines.recv_timeout(ENDS_WITHIN) {
            self.seen.push(line);
        }
        let out = self
            .stdout
            .take()
            .map(|r| r.join().unwrap())
            .unwrap_or_default();
        (status, out)
    }

    /// The events among the stderr lines read so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        events(&self.stderr())
    }

    /// The events so far called `name`.
    pub fn named(&self, name: &str) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    }

    /// The stderr lines read so far.
    pub fn stderr(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Running {
    /// A failed test leaves no process behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
