//! Why a policy was refused.

use std::path::PathBuf;

use crate::vocabulary::{Action, join};

/// Why a policy (a file, a setter call, a duration, a `--policy` argument) was refused.
///
/// Every message names the key as it is spelled in a policy file (`preset`,
/// `critical-escalation`, `[defaults] unload-domain`, `[timeouts] abort.after`,
/// `[failures] orphaned-lock`), the value given, and what is allowed there; the setters of
/// [`crate::Policy`] use the same keys, so a program and a file get the same message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A known action that is not allowed at this key (the legality tables).
    #[error(
        "illegal policy: {key} = \"{value}\": allowed actions are {}",
        join(allowed)
    )]
    Illegal {
        /// The key, as in a policy file.
        key: String,
        /// The action that was given.
        value: Action,
        /// The actions allowed at this key, mildest first.
        allowed: Vec<Action>,
    },
    /// A value that is not one of the names of its vocabulary (action, preset).
    #[error("{key} = \"{value}\": unknown {kind}; expected one of {expected}")]
    UnknownName {
        /// The key, as in a policy file.
        key: String,
        /// `"action"` or `"preset"`.
        kind: &'static str,
        /// The text that was given.
        value: String,
        /// The accepted names, comma-separated.
        expected: String,
    },
    /// A key (or section, or operation/failure name) the format does not have.
    #[error("unknown key {key}: expected one of {expected}")]
    UnknownKey {
        /// The key, as in a policy file.
        key: String,
        /// The keys accepted there, comma-separated.
        expected: String,
    },
    /// A value of the wrong TOML type.
    #[error("{key}: expected {expected}, found a {found}")]
    WrongType {
        /// The key, as in a policy file.
        key: String,
        /// What is expected there.
        expected: &'static str,
        /// The TOML type that was found.
        found: &'static str,
    },
    /// A duration that does not parse, is negative, or does not fit.
    #[error(
        "{key} = \"{value}\": {reason}; expected a whole or decimal number and a unit \
         (ns, us, ms, s, m, h), e.g. \"250ms\", \"30s\", \"1.5m\", or \"infinite\""
    )]
    BadDuration {
        /// The key, as in a policy file (`duration` when parsed on its own).
        key: String,
        /// The text that was given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The text is not TOML; the message keeps toml's line and column.
    #[error("policy is not valid TOML: {0}")]
    Syntax(#[from] toml::de::Error),
    /// A policy file could not be read.
    #[error("cannot read policy file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `--policy` argument that is neither a preset name nor a readable file.
    #[error(
        "policy \"{spec}\" is neither a preset (server, clr, sqlserver, fail-fast) \
         nor a readable file: {source}"
    )]
    NotPresetOrFile {
        /// The argument.
        spec: String,
        /// Why it could not be read as a file.
        #[source]
        source: std::io::Error,
    },
    /// An error inside a policy file, with the file's name.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// The error in it.
        #[source]
        source: Box<PolicyError>,
    },
}

impl PolicyError {
    /// The offending key, as spelled in a policy file, when there is one (what
    /// `warden policy check` reports). Looks through [`PolicyError::InFile`].
    pub fn key(&self) -> Option<&str> {
        match self {
            PolicyError::Illegal { key, .. }
            | PolicyError::UnknownName { key, .. }
            | PolicyError::UnknownKey { key, .. }
            | PolicyError::WrongType { key, .. }
            | PolicyError::BadDuration { key, .. } => Some(key),
            PolicyError::InFile { source, .. } => source.key(),
            PolicyError::Syntax(_)
            | PolicyError::Io { .. }
            | PolicyError::NotPresetOrFile { .. } => None,
        }
    }

    /// Rewrites the key (used when a value parsed on its own turns out to sit at a key).
    pub(crate) fn at(self, at: &str) -> PolicyError {
        match self {
            PolicyError::BadDuration { value, reason, .. } => PolicyError::BadDuration {
                key: at.to_owned(),
                value,
                reason,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_moves_a_duration_error_to_its_key_and_leaves_others() {
        let e = crate::parse_duration("soon")
            .unwrap_err()
            .at("[timeouts] abort.after");
        assert_eq!(e.key(), Some("[timeouts] abort.after"));
        let illegal = PolicyError::Illegal {
            key: "[failures] deadline".into(),
            value: Action::None,
            allowed: vec![Action::Throw],
        };
        assert_eq!(illegal.at("elsewhere").key(), Some("[failures] deadline"));
    }
}
