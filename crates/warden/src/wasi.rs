//! WASI for a domain's guest: what it may reach is exactly what its [`WasiConfig`] grants.
//!
//! [`builder`] turns a config into a `wasmtime_wasi::WasiCtxBuilder`, independent of the
//! WASI version: a core module's domain calls `.build_p1()` on it, a component's `.build()`.
//! Every domain gets its own context, built when the domain is created; nothing of it is
//! shared between domains but the process's stdio buffers ([`stdio`](crate::stdio)).
//!
//! What a guest gets, and nothing else:
//! - **args**: [`WasiConfig::args`], program name first.
//! - **environment**: [`WasiConfig::env`] only; the host's environment is never passed
//!   implicitly (the `warden` binary resolves a bare `--env KEY` against it before it gets
//!   here).
//! - **files**: the [`Preopen`]s, each a host directory under a guest name. wasmtime-wasi
//!   resolves every guest path inside its preopen with `cap-std`, so `..` past the preopen's
//!   root, absolute paths and symlinks that lead outside it all fail (`ENOTCAPABLE`/`EPERM`
//!   to the guest). A read-only preopen refuses every write: creating, writing, truncating,
//!   renaming, removing, linking, setting times. Without a preopen the guest has no file
//!   system at all.
//! - **stdio**: stdout and stderr through Warden's bounded buffers (a stalled reader makes
//!   guest writes wait abortably); stdin only when granted — the process's stdin
//!   (wasmtime-wasi's reader thread: a read is an abortable wait, and the thread reads only as
//!   much as a guest asks for) or an embedder's [`GuestInput`](crate::stdio::GuestInput).
//! - **clocks and random**: wasmtime-wasi's defaults (the host's wall and monotonic clocks; a
//!   per-context CSPRNG for `random_get`).
//! - **no network**: sockets stay off (wasmtime-wasi's default).
//!
//! Where the promise ends: a preopen is opened when each domain is created, so a host path
//! that changes later (a directory replaced, a mount) is seen as it is then; file operations
//! run on tokio's blocking pool, where an aborted call's OS operation finishes on its thread
//! after the guest has gone (see [`host`](crate::host)). Permissions are the host process's
//! own inside a preopen: read-only is Warden's refusal, not the OS's.

use std::path::PathBuf;

use crate::error::Error;
use crate::stdio::{GuestInput, GuestOutput};

/// WASI settings for a domain's guest. Environment, files and stdin are off unless given;
/// stdout and stderr are inherited (through bounded buffers: see [`stdio`](crate::stdio)).
#[derive(Clone, Debug)]
pub struct WasiConfig {
    /// `argv`, program name first.
    pub args: Vec<String>,
    /// Environment variables the guest sees.
    pub env: Vec<(String, String)>,
    /// Host directories the guest may reach, in order (the guest sees them as fds 3, 4, …).
    pub preopens: Vec<Preopen>,
    /// Inherit the host's stdout and stderr (default true).
    pub inherit_stdio: bool,
    /// Inherit the host's stdin (default false: a server's stdin is not the guest's).
    pub inherit_stdin: bool,
    /// The guest's stdin, fed by the embedder (overrides `inherit_stdin`).
    pub stdin: Option<GuestInput>,
    /// Where the guest's stdout goes (overrides `inherit_stdio` for stdout).
    pub stdout: Option<GuestOutput>,
    /// Where the guest's stderr goes (overrides `inherit_stdio` for stderr).
    pub stderr: Option<GuestOutput>,
}

impl Default for WasiConfig {
    fn default() -> Self {
        WasiConfig {
            args: Vec::new(),
            env: Vec::new(),
            preopens: Vec::new(),
            inherit_stdio: true,
            inherit_stdin: false,
            stdin: None,
            stdout: None,
            stderr: None,
        }
    }
}

impl WasiConfig {
    /// Checks every preopen ([`Preopen::check`]) without creating a domain, so bad input is
    /// refused before any module is compiled.
    pub fn check(&self) -> Result<(), PreopenError> {
        self.preopens.iter().try_for_each(Preopen::check)
    }
}

/// A host directory granted to the guest under a name of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preopen {
    /// The directory on the host.
    pub host: PathBuf,
    /// The name the guest opens it by (wasmtime's CLI uses the host path when none is given).
    pub guest: String,
    /// Refuse every write under it.
    pub read_only: bool,
}

impl Preopen {
    /// A read-write preopen.
    pub fn new(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Preopen {
            host: host.into(),
            guest: guest.into(),
            read_only: false,
        }
    }

    /// A read-only preopen.
    pub fn read_only(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Preopen {
            read_only: true,
            ..Preopen::new(host, guest)
        }
    }

    /// Checks that the host path is a directory this process can list: the error names the
    /// path and what is wrong with it (missing, not a directory, unreadable).
    pub fn check(&self) -> Result<(), PreopenError> {
        let meta = std::fs::metadata(&self.host).map_err(|e| self.error(e.to_string()))?;
        if !meta.is_dir() {
            return Err(self.error("not a directory".into()));
        }
        std::fs::read_dir(&self.host)
            .map(drop)
            .map_err(|e| self.error(format!("cannot read it: {e}")))
    }

    fn error(&self, why: String) -> PreopenError {
        PreopenError {
            host: self.host.clone(),
            why,
        }
    }
}

/// A preopen that cannot be granted: its host path and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("preopen {}: {why}", host.display())]
pub struct PreopenError {
    /// The host path.
    pub host: PathBuf,
    /// What is wrong with it, e.g. `not a directory`.
    pub why: String,
}

impl From<PreopenError> for Error {
    fn from(e: PreopenError) -> Self {
        Error::Config(e.to_string())
    }
}

/// The WASI context builder for `cfg`, with every grant applied; the caller builds it for its
/// WASI version (`.build_p1()` for a core module, `.build()` for a component). A preopen that
/// cannot be opened is an error naming its host path.
pub(crate) fn builder(cfg: &WasiConfig) -> Result<wasmtime_wasi::WasiCtxBuilder, Error> {
    let mut b = wasmtime_wasi::WasiCtxBuilder::new();
    b.args(&cfg.args);
    for (k, v) in &cfg.env {
        b.env(k, v);
    }
    for p in &cfg.preopens {
        // Checked first for a message that says what is wrong; the open below still decides
        // (the path may change in between).
        p.check()?;
        let perms = if p.read_only {
            wasmtime_wasi::FsPerms::ReadOnly
        } else {
            wasmtime_wasi::FsPerms::ReadWrite
        };
        b.preopened_dir(&p.host, &p.guest, perms)
            .map_err(|e| p.error(format!("cannot open it: {e:#}")))?;
    }
    // Through bounded buffers and writer threads (`stdio.rs`): a stalled reader makes guest
    // writes wait abortably, and never holds a thread or std's stdout lock.
    let inherit = |o: GuestOutput| cfg.inherit_stdio.then_some(o);
    if let Some(out) = cfg
        .stdout
        .clone()
        .or_else(|| inherit(GuestOutput::stdout()))
    {
        b.stdout(out);
    }
    if let Some(err) = cfg
        .stderr
        .clone()
        .or_else(|| inherit(GuestOutput::stderr()))
    {
        b.stderr(err);
    }
    if let Some(input) = &cfg.stdin {
        b.stdin(input.clone());
    } else if cfg.inherit_stdin {
        b.inherit_stdin();
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("warden-wasi-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn refusal(cfg: &WasiConfig) -> String {
        match builder(cfg) {
            Ok(_) => panic!("built a context for {:?}", cfg.preopens),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_preopen_that_cannot_be_granted_is_an_error_naming_its_path() {
        let d = scratch("bad");
        let missing = d.join("missing");
        let file = d.join("file");
        std::fs::write(&file, "x").unwrap();
        let cfg = |p: &Path| WasiConfig {
            preopens: vec![Preopen::new(p, "g")],
            ..WasiConfig::default()
        };
        let e = refusal(&cfg(&missing));
        assert!(e.contains(&missing.display().to_string()), "{e}");
        let e = refusal(&cfg(&file));
        assert!(e.contains("not a directory"), "{e}");
        assert!(e.contains(&file.display().to_string()), "{e}");
        assert_eq!(
            cfg(&file).check().unwrap_err().why,
            "not a directory".to_string()
        );
        // A good one builds, for either WASI version.
        assert!(cfg(&d).check().is_ok());
        builder(&cfg(&d)).unwrap().build_p1();
    }
}
