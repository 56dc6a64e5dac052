//! The policy itself: the table, its checked setters, and the decision procedure.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::duration::format_duration;
use crate::error::PolicyError;
use crate::preset::{self, Preset};
use crate::vocabulary::{Action, Failure, Operation, allows_critical_escalation};

/// What the policy says about one [`Operation`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct OperationPolicy {
    /// The action the operation resolves to when it is asked for (see
    /// [`Policy::resolve`]): e.g. an `unload-domain` operation whose default is
    /// `rude-unload-domain` makes every requested polite unload a rude one.
    pub default: Action,
    /// How long the operation may take; `None` is infinite.
    pub timeout: Option<Duration>,
    /// The action taken when the timeout expires. Legal, but never taken, when the
    /// timeout is infinite.
    pub on_timeout: Action,
}

/// A complete, legal escalation policy.
///
/// Every `Policy` value is legal: the presets are, and the setters and the file parser refuse
/// what the legality tables forbid (see the [crate docs](crate)). Equality compares behaviour
/// only — two policies that decide alike are equal whichever preset they started from.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The preset this policy started from (what `to_toml` writes as `preset`).
    pub(crate) base: Preset,
    pub(crate) critical_escalation: Action,
    pub(crate) operations: [OperationPolicy; Operation::ALL.len()],
    pub(crate) failures: [Action; Failure::ALL.len()],
}

impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        // `base` is provenance, not behaviour.
        self.critical_escalation == other.critical_escalation
            && self.operations == other.operations
            && self.failures == other.failures
    }
}

impl Eq for Policy {}

impl Default for Policy {
    /// The [`Preset::Server`] policy.
    fn default() -> Self {
        Policy::preset(Preset::Server)
    }
}

impl Policy {
    /// The policy a preset names; see [`Preset`] for each one's values and reasons.
    pub fn preset(p: Preset) -> Policy {
        preset::build(p)
    }

    /// Parses a policy file's text (see the [crate docs](crate) for the format): the preset
    /// first, then the overrides, then the legality checks.
    pub fn from_toml_str(s: &str) -> Result<Policy, PolicyError> {
        crate::file::parse(s)
    }

    /// Reads and parses a policy file; every error names the file.
    ///
    /// The file is read once, and at most [`MAX_POLICY_FILE_BYTES`] of it: a larger one is
    /// refused while reading (a sparse or endless file costs no more than the bound). Only
    /// regular files are read; see [`Policy::from_file_with`] for pipes and devices.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        Policy::from_file_with(path, false)
    }

    /// [`Policy::from_file`], reading a non-regular file too when `allow_non_regular` (a
    /// pipe, as in `--policy <(cat policy.toml)`): read once, bounded all the same. A FIFO
    /// with no writer blocks in `open`, as any reader of it would.
    pub fn from_file_with(path: &Path, allow_non_regular: bool) -> Result<Policy, PolicyError> {
        let text = read_policy_text(path, allow_non_regular).map_err(|source| PolicyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Policy::from_toml_str(&text).map_err(|e| PolicyError::InFile {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// What `--policy PRESET|FILE` takes: a preset name, else the path of a policy file.
    /// A preset name wins over a file of the same name; write `./server` for the file.
    pub fn load(spec: &str) -> Result<Policy, PolicyError> {
        Policy::load_with(spec, false)
    }

    /// [`Policy::load`], with [`Policy::from_file_with`]'s choice for non-regular files.
    /// The file is read exactly once.
    pub fn load_with(spec: &str, allow_non_regular: bool) -> Result<Policy, PolicyError> {
        if let Ok(p) = spec.parse::<Preset>() {
            return Ok(Policy::preset(p));
        }
        let path = Path::new(spec);
        match std::fs::metadata(path) {
            Ok(_) => Policy::from_file_with(path, allow_non_regular),
            // A bare word that is no file was most likely meant as a preset.
            Err(source) if !looks_like_path(spec) => Err(PolicyError::NotPresetOrFile {
                spec: spec.to_owned(),
                source,
            }),
            Err(source) => Err(PolicyError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// The preset this policy started from.
    pub fn base_preset(&self) -> Preset {
        self.base
    }

    /// The policy as a complete policy file: `preset` and every key of every section spelled
    /// out, which [`Policy::from_toml_str`] reads back to an equal policy.
    pub fn to_toml(&self) -> String {
        crate::file::write(self)
    }

    /// What the policy says about an operation.
    pub fn operation(&self, op: Operation) -> OperationPolicy {
        self.operations[op.index()]
    }

    /// The action configured for a failure (before escalation and resolution; see
    /// [`Policy::decide`] for the action actually taken).
    pub fn failure(&self, f: Failure) -> Action {
        self.failures[f.index()]
    }

    /// The least action for a failure that hits a call in a critical region or holding
    /// host locks.
    pub fn critical_escalation(&self) -> Action {
        self.critical_escalation
    }

    /// Sets an operation's default action, if [`Operation::allows_default`] allows it.
    pub fn set_default(&mut self, op: Operation, a: Action) -> Result<(), PolicyError> {
        check(default_key(op), a, |a| op.allows_default(a))?;
        self.operations[op.index()].default = a;
        Ok(())
    }

    /// Sets an operation's timeout (`None`: infinite) and the action on expiry, if
    /// [`Operation::allows_on_timeout`] allows it.
    pub fn set_timeout(
        &mut self,
        op: Operation,
        after: Option<Duration>,
        on_timeout: Action,
    ) -> Result<(), PolicyError> {
        check(timeout_action_key(op), on_timeout, |a| {
            op.allows_on_timeout(a)
        })?;
        let entry = &mut self.operations[op.index()];
        entry.timeout = after;
        entry.on_timeout = on_timeout;
        Ok(())
    }

    /// Sets a failure's action, if [`Failure::allows`] allows it.
    pub fn set_failure(&mut self, f: Failure, a: Action) -> Result<(), PolicyError> {
        check(failure_key(f), a, |a| f.allows(a))?;
        self.failures[f.index()] = a;
        Ok(())
    }

    /// Sets the critical-escalation floor (every action is allowed; `none` turns it off).
    pub fn set_critical_escalation(&mut self, a: Action) -> Result<(), PolicyError> {
        check(
            CRITICAL_ESCALATION.to_owned(),
            a,
            allows_critical_escalation,
        )?;
        self.critical_escalation = a;
        Ok(())
    }

    /// The action a failure gets: [`Policy::failure`], raised to
    /// [`Policy::critical_escalation`] when `critical` (the call was in a critical region or
    /// held host locks) and the failure [interrupts](Failure::interrupts) the guest, then
    /// resolved with [`Policy::resolve_for`].
    pub fn decide(&self, f: Failure, critical: bool) -> Action {
        let mut a = self.failure(f);
        if critical && f.interrupts() {
            a = a.max(self.critical_escalation);
        }
        self.resolve_for(a, critical)
    }

    /// The final form of an action for a call that is not critical: see
    /// [`Policy::resolve_for`].
    pub fn resolve(&self, a: Action) -> Action {
        self.resolve_for(a, false)
    }

    /// The final form of an action (CLR 2.0's `GetFinalAction`): follow operations' default
    /// actions until stable — `abort` → the `abort` operation's default, `rude-abort` →
    /// `rude-abort`'s (or `rude-abort-critical`'s when `critical`), `unload-domain` →
    /// `unload-domain`'s, `rude-unload-domain` → `rude-unload-domain`'s, `exit-process` and
    /// `fast-exit-process` → `process-exit`'s. Each step takes the more severe of the two,
    /// so severity never goes down; since it only goes up a finite list, it always ends.
    /// `none`, `throw`, `rude-exit-process` and `disable-runtime` are final as they are.
    pub fn resolve_for(&self, a: Action, critical: bool) -> Action {
        let mut a = a;
        // Each round either stops or moves strictly up, so ALL.len() rounds always suffice.
        for _ in 0..Action::ALL.len() {
            let Some(op) = Operation::resolving(a, critical) else {
                return a;
            };
            let next = a.max(self.operation(op).default);
            if next == a {
                return a;
            }
            a = next;
        }
        a
    }

    /// A readable, aligned table of the whole policy (what `warden policy explain` prints):
    /// every failure with its configured action and its final action for a non-critical
    /// and a critical call, and every operation with its default action, final action,
    /// timeout, action on timeout and that action's final form.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "policy based on preset `{}`", self.base);
        let _ = writeln!(
            out,
            "critical-escalation: {} (the least action for a failure that interrupts a call in a critical region or with locks held)",
            self.critical_escalation
        );
        let _ = writeln!(
            out,
            "note: a deadlock interrupts nothing (the victim is told by -2 and backs out, so the floor does not apply to it); if the call then ends holding locks, orphaned-lock decides"
        );
        out.push('\n');
        let failures: Vec<Vec<String>> = Failure::ALL
            .iter()
            .map(|&f| {
                vec![
                    f.to_string(),
                    self.failure(f).to_string(),
                    self.decide(f, false).to_string(),
                    self.decide(f, true).to_string(),
                ]
            })
            .collect();
        table(
            &mut out,
            &["failure", "action", "final", "final (critical call)"],
            &failures,
        );
        out.push('\n');
        let operations: Vec<Vec<String>> = Operation::ALL
            .iter()
            .map(|&op| {
                let p = self.operation(op);
                let critical = op == Operation::RudeAbortCritical;
                vec![
                    op.to_string(),
                    p.default.to_string(),
                    self.resolve_for(p.default, critical).to_string(),
                    format_duration(p.timeout),
                    p.on_timeout.to_string(),
                    self.resolve_for(p.on_timeout, critical).to_string(),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "operation",
                "default",
                "final",
                "timeout",
                "on timeout",
                "final",
            ],
            &operations,
        );
        out
    }

    /// Checks every value against the legality tables, in file order; the first illegal one
    /// is the error. Presets are legal, so after a file is applied only its overrides can fail.
    pub(crate) fn validate(&self) -> Result<(), PolicyError> {
        check(
            CRITICAL_ESCALATION.to_owned(),
            self.critical_escalation,
            allows_critical_escalation,
        )?;
        for &op in Operation::ALL {
            let a = self.operation(op).default;
            check(default_key(op), a, |a| op.allows_default(a))?;
        }
        for &op in Operation::ALL {
            let a = self.operation(op).on_timeout;
            check(timeout_action_key(op), a, |a| op.allows_on_timeout(a))?;
        }
        for &f in Failure::ALL {
            check(failure_key(f), self.failure(f), |a| f.allows(a))?;
        }
        Ok(())
    }
}

pub(crate) const CRITICAL_ESCALATION: &str = "critical-escalation";

pub(crate) fn default_key(op: Operation) -> String {
    format!("[defaults] {op}")
}

pub(crate) fn timeout_action_key(op: Operation) -> String {
    format!("[timeouts] {op}.action")
}

pub(crate) fn failure_key(f: Failure) -> String {
    format!("[failures] {f}")
}

fn check(key: String, a: Action, allows: impl Fn(Action) -> bool) -> Result<(), PolicyError> {
    if allows(a) {
        return Ok(());
    }
    Err(PolicyError::Illegal {
        key,
        value: a,
        allowed: Action::ALL.iter().copied().filter(|&x| allows(x)).collect(),
    })
}

fn looks_like_path(spec: &str) -> bool {
    spec.contains(['/', '\\']) || spec.ends_with(".toml")
}

/// Writes rows under a header, columns padded to their widest cell.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].len())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            let _ = write!(text, "{cell:<width$}  ", width = widths[i]);
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
}

/// The largest policy file read (1 MiB; the longest legal policy is a few KiB).
pub const MAX_POLICY_FILE_BYTES: u64 = 1 << 20;

/// Reads a policy file once, refusing non-regular files (unless allowed) before opening
/// them, and anything longer than [`MAX_POLICY_FILE_BYTES`] while reading.
fn read_policy_text(path: &Path, allow_non_regular: bool) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Err(Error::new(ErrorKind::InvalidInput, "is a directory"));
    }
    if !meta.is_file() && !allow_non_regular {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a pipe, FIFO or device); refused unless reading non-regular files is allowed",
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_POLICY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_POLICY_FILE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("longer than the {MAX_POLICY_FILE_BYTES}-byte limit for policy files"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| Error::new(ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_reports_the_first_illegal_value_in_file_order() {
        // Only code inside the crate can build an illegal policy; validate() is the net
        // that the file parser relies on.
        let mut p = Policy::default();
        assert!(p.validate().is_ok());
        p.failures[Failure::FatalRuntime.index()] = Action::Throw;
        p.operations[Operation::FinalizerRun.index()].on_timeout = Action::Throw;
        let e = p.validate().unwrap_err();
        assert_eq!(e.key(), Some("[timeouts] finalizer-run.action"));
        p.operations[Operation::ProcessExit.index()].default = Action::UnloadDomain;
        let e = p.validate().unwrap_err();
        assert_eq!(e.key(), Some("[defaults] process-exit"));
    }

    #[test]
    fn every_preset_is_legal() {
        for &preset in Preset::ALL {
            assert!(Policy::preset(preset).validate().is_ok(), "{preset}");
        }
    }

    #[test]
    fn table_aligns_columns_and_trims_line_ends() {
        let mut out = String::new();
        table(
            &mut out,
            &["a", "bb"],
            &[
                vec!["xxx".into(), "y".into()],
                vec!["z".into(), String::new()],
            ],
        );
        assert_eq!(out, "a    bb\nxxx  y\nz\n");
    }
}
