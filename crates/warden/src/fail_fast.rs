//! Fail-fast: what Warden does when its own invariant breaks (a domain's worker panics, a
//! state machine reaches an impossible state), or an embedder says its own did
//! ([`Runtime::fail_fast`], the CLR's `Environment.FailFast`).
//!
//! Nothing is trusted any more, so nothing is run in order: a report — what broke, the
//! domain and call, the last events, a backtrace — goes to stderr, to the file set with
//! [`Runtime::set_fail_fast_report`] if there is one, and to the hook set with
//! [`Runtime::on_fail_fast`]; then the process exits at once (a rude exit, no phases) with
//! [`exit_code::FATAL`] (119). For a broken invariant of Warden's own, the policy's
//! `fatal-runtime` action may instead be `disable-runtime`: the report is written and the
//! process stays up, admitting no guest work.
//!
//! The last events are kept (a ring of [`LAST_EVENTS`]) only once a report file or a hook
//! is set, so a runtime that never asks pays nothing for it.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::events::Event;
use crate::exit_code;
use crate::ids::{CallId, DomainId};
use crate::runtime::{Runtime, RuntimeInner};

/// How many of the last events a report carries.
pub const LAST_EVENTS: usize = 32;

/// What a fail-fast tells: see the [module documentation](self).
#[derive(Clone, Debug)]
pub struct FailFastReport {
    /// What broke.
    pub what: String,
    /// The domain it broke in, if any.
    pub domain: Option<DomainId>,
    /// The call it broke in, if any.
    pub call: Option<CallId>,
    /// The last events (JSON lines), oldest first; empty unless a file or hook was set.
    pub last_events: Vec<String>,
    /// Where it broke (the thread that failed fast).
    pub backtrace: String,
}

impl std::fmt::Display for FailFastReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "warden: FAIL-FAST: {}", self.what)?;
        if let Some(d) = self.domain {
            writeln!(f, "  domain: {d}")?;
        }
        if let Some(c) = self.call {
            writeln!(f, "  call: {c}")?;
        }
        writeln!(f, "  last events ({}):", self.last_events.len())?;
        for e in &self.last_events {
            writeln!(f, "    {e}")?;
        }
        writeln!(f, "  backtrace:\n{}", self.backtrace)
    }
}

type Hook = Arc<dyn Fn(&FailFastReport) + Send + Sync>;

/// The runtime's fail-fast settings and its ring of last events.
#[derive(Default)]
pub(crate) struct FailFast {
    recording: AtomicBool,
    ring: Arc<Mutex<VecDeque<String>>>,
    hook: RwLock<Option<Hook>>,
    path: RwLock<Option<PathBuf>>,
}

impl RuntimeInner {
    fn record_last_events(&self) {
        if self.fail_fast.recording.swap(true, Ordering::AcqRel) {
            return;
        }
        let ring = self.fail_fast.ring.clone();
        self.events.subscribe(Arc::new(move |e: &Event| {
            let mut ring = ring.lock().unwrap_or_else(|p| p.into_inner());
            if ring.len() == LAST_EVENTS {
                ring.pop_front();
            }
            ring.push_back(e.to_json());
        }));
    }

    /// Writes the report everywhere it goes. Never panics: every write may fail.
    pub(crate) fn report_fail_fast(
        &self,
        what: &str,
        domain: Option<DomainId>,
        call: Option<CallId>,
    ) {
        let report = FailFastReport {
            what: what.to_string(),
            domain,
            call,
            last_events: self
                .fail_fast
                .ring
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect(),
            backtrace: std::backtrace::Backtrace::force_capture().to_string(),
        };
        let text = report.to_string();
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
        let path = self
            .fail_fast
            .path
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(path) = path
            && let Err(e) = write_report(&path, &text)
        {
            let _ = writeln!(
                std::io::stderr().lock(),
                "warden: cannot write the fail-fast report to {}: {e}",
                path.display()
            );
        }
        let hook = self
            .fail_fast
            .hook
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(hook) = hook {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(&report)));
        }
    }

    /// Warden's own invariant broke: the report, then the policy's `fatal-runtime` action
    /// (`rude-exit-process`, the default: exit at once with 119; or `disable-runtime`).
    pub(crate) fn fatal(
        &self,
        what: &str,
        domain: Option<DomainId>,
        call: Option<CallId>,
        action: warden_policy::Action,
    ) {
        self.report_fail_fast(what, domain, call);
        match action {
            warden_policy::Action::DisableRuntime => self.apply_process_action(action),
            _ => self.exit_now(exit_code::FATAL),
        }
    }

    /// A rude exit with `code`: no phases, the exit function at once.
    fn exit_now(&self, code: i32) {
        self.shutdown
            .escalate(code, warden_core::shutdown::ExitMode::Rude);
    }
}

/// Writes the report file: only a regular file (or a new one), since the exit must not wait
/// (opening a FIFO no one reads blocks for ever).
fn write_report(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )),
        _ => std::fs::write(path, text),
    }
}

impl Runtime {
    /// Fail-fast (the CLR's `Environment.FailFast`): the embedder's own invariant broke.
    /// Writes the report (stderr, the report file, the hook), then exits at once, rudely,
    /// with 119. Returns only if the exit function does (as a test's recorder does).
    pub fn fail_fast(&self, what: &str) {
        self.inner.report_fail_fast(what, None, None);
        self.inner.exit_now(exit_code::FATAL);
    }

    /// Also writes fail-fast reports to `path` (replacing it), and from now on keeps the
    /// last events for them.
    pub fn set_fail_fast_report(&self, path: impl Into<PathBuf>) {
        *self
            .inner
            .fail_fast
            .path
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(path.into());
        self.inner.record_last_events();
    }

    /// Calls `hook` with every fail-fast report, before the exit (a panic in it is ignored),
    /// and from now on keeps the last events for it. Replaces an earlier hook.
    pub fn on_fail_fast(&self, hook: impl Fn(&FailFastReport) + Send + Sync + 'static) {
        *self
            .inner
            .fail_fast
            .hook
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(hook));
        self.inner.record_last_events();
    }
}
