//! The command line's errors: one type, each variant with its exit code
//! ([`CliError::exit_code`]) and a message that names what was wrong. Causes from other
//! crates (the OS, the policy, the runtime) are kept as sources, not flattened to text.

use std::fmt;
use warden::exit_code;

use crate::input::InputError;
use crate::serve::config::ConfigError;
use crate::size::SizeError;

/// `warden serve`'s configuration is wrong: a key, a component, an address to bind.
pub const BAD_CONFIG: i32 = 4;

/// Why `warden` stopped before (or instead of) running guests.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag's value is not what it takes: `--deadline: ...`.
    #[error("{flag}: {source}")]
    Flag {
        /// The flag, as typed (`--max-memory`).
        flag: &'static str,
        /// What is wrong with its value.
        #[source]
        source: FlagError,
    },
    /// Flags that do not fit together, or a module that does not fit them.
    #[error("{0}")]
    Usage(String),
    /// A file named on the command line cannot be used.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The policy is invalid or unreadable.
    #[error("{}", policy_message(.source, *.allowed))]
    Policy {
        /// What the policy crate said.
        #[source]
        source: warden_policy::PolicyError,
        /// Whether `--allow-non-regular` was given (the message names it when it was not).
        allowed: bool,
    },
    /// A name (a preset's) that the policy vocabulary does not have.
    #[error(transparent)]
    Name(#[from] warden_policy::ParseNameError),
    /// The runtime could not be made.
    #[error("{0}")]
    Runtime(#[source] warden::Error),
    /// The module could not be loaded: its exit code depends on why.
    #[error("{path}: {source}")]
    Load {
        /// The module's path, as given.
        path: String,
        /// Why it was refused.
        #[source]
        source: warden::Error,
    },
    /// `warden serve`'s configuration is wrong (exit code [`BAD_CONFIG`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The process could not set itself up (the async runtime, signal handlers).
    #[error("{what}: {source}")]
    Setup {
        /// What could not be done.
        what: String,
        /// The OS's reason.
        #[source]
        source: std::io::Error,
    },
}

/// What is wrong with a flag's value.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// A size (`8MiB`).
    #[error(transparent)]
    Size(#[from] SizeError),
    /// A duration (`250ms`).
    #[error(transparent)]
    Duration(#[from] warden_policy::PolicyError),
    /// Anything else, said in words.
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// A flag's bad value.
    pub fn flag(flag: &'static str, source: impl Into<FlagError>) -> Self {
        CliError::Flag {
            flag,
            source: source.into(),
        }
    }

    /// The exit code `warden` ends with for this error (`warden run --help` lists them).
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Flag { .. }
            | CliError::Usage(_)
            | CliError::Input(_)
            | CliError::Policy { .. }
            | CliError::Name(_)
            | CliError::Runtime(_) => exit_code::BAD_INPUT,
            CliError::Load { source, .. } => exit_code::for_error(source),
            CliError::Config(_) => BAD_CONFIG,
            CliError::Setup { .. } => exit_code::FATAL,
        }
    }
}

impl From<String> for FlagError {
    fn from(reason: String) -> Self {
        FlagError::Other(reason)
    }
}

/// A policy error as the command line shows it: a refused non-regular file names the flag
/// that allows it.
fn policy_message(e: &warden_policy::PolicyError, allowed: bool) -> PolicyMessage<'_> {
    PolicyMessage { e, allowed }
}

struct PolicyMessage<'a> {
    e: &'a warden_policy::PolicyError,
    allowed: bool,
}

impl fmt::Display for PolicyMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.e {
            warden_policy::PolicyError::Io { source, .. }
                if !self.allowed && source.kind() == std::io::ErrorKind::InvalidInput =>
            {
                write!(
                    f,
                    "{}; pass --allow-non-regular to read it once, bounded",
                    self.e
                )
            }
            e => write!(f, "{e}"),
        }
    }
}

/// The multi-threaded async runtime a command runs on.
pub fn async_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Setup {
            what: "cannot start the async runtime".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_carries_its_exit_code_and_its_cause() {
        let e = CliError::flag("--max-memory", crate::size::parse_size("8XB").unwrap_err());
        assert_eq!(e.exit_code(), exit_code::BAD_INPUT);
        assert!(
            e.to_string()
                .starts_with("--max-memory: `8XB` has an unknown unit"),
            "{e}"
        );
        let source = std::error::Error::source(&e).expect("the flag error is the source");
        assert!(source.to_string().contains("unknown unit"));
        let setup = CliError::Setup {
            what: "cannot watch SIGTERM".into(),
            source: std::io::Error::other("no"),
        };
        assert_eq!(setup.exit_code(), exit_code::FATAL);
        assert_eq!(setup.to_string(), "cannot watch SIGTERM: no");
    }
}
