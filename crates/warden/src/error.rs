//! Errors of the embedder API that are not call outcomes: bad modules, bad exports, bad
//! configuration. Every message names the thing that was wrong.
//!
//! An error that wraps another library's (wasmtime's, the WAT parser's, the OS's) keeps it as
//! its [`source`](std::error::Error::source), a [`Cause`]. Its `Display` still reads as one
//! line with the whole chain (`invalid module: failed to parse: ...`), as it always has, so a
//! message printed with `{}` loses nothing; a tool that walks `source()` finds the typed
//! original (for example a [`std::io::Error`] and its kind).

use crate::call::CallError;

/// The error another library gave, kept as the source of an [`Error`].
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A wasmtime error as a [`Cause`], its context chain intact.
pub(crate) fn cause(e: wasmtime::Error) -> Cause {
    e.into_boxed_dyn_error()
}

/// What Warden was doing, with the error that stopped it as its source.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub(crate) struct Doing {
    pub(crate) what: &'static str,
    #[source]
    pub(crate) source: std::io::Error,
}

/// Shows an error and its sources as one line: `top: cause: root`.
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

fn not_permitted(
    grant: crate::capability::Grant,
    imports: &[crate::capability::ImportCapability],
) -> String {
    let list: Vec<String> = imports.iter().map(|i| i.to_string()).collect();
    let enough = imports.iter().fold(grant, |g, i| g.with(i.capability));
    format!(
        "not permitted: the grant `{grant}` forbids {} import{}: {}; it would run under `{enough}`",
        imports.len(),
        if imports.len() == 1 { "" } else { "s" },
        list.join(", "),
    )
}

fn chain(e: &Cause) -> Chain<'_> {
    Chain(&**e)
}

/// An error from loading a module, creating a domain, or starting a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a valid WebAssembly module (or WAT text).
    #[error("invalid module: {}", chain(.0))]
    InvalidModule(#[source] Cause),
    /// The module is larger than the runtime accepts.
    #[error("module is {size} bytes, more than the {limit}-byte limit")]
    ModuleTooLarge {
        /// The module's size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The module has more functions than the runtime compiles
    /// ([`EngineConfig::max_functions`](crate::EngineConfig::max_functions)).
    #[error("module has {count} functions, more than the {limit}-function limit")]
    TooManyFunctions {
        /// Functions the module defines and imports.
        count: u32,
        /// The configured limit.
        limit: u32,
    },
    /// Compiling the module took longer than
    /// [`EngineConfig::compile_timeout`](crate::EngineConfig::compile_timeout).
    #[error("compiling the module took longer than {limit:?}; refused")]
    CompileTimeout {
        /// The configured bound.
        limit: std::time::Duration,
    },
    /// The module imports something nobody provides.
    #[error("module imports `{module}`.`{name}`, which this runtime does not provide")]
    UnknownImport {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
    },
    /// The module imports what the domain's grant forbids
    /// ([`DomainConfig::grant`](crate::DomainConfig::grant), [`capability`](crate::capability)).
    /// Refused before any guest code ran; every forbidden import is listed.
    #[error("{}", not_permitted(*.grant, .imports))]
    NotPermitted {
        /// The grant the domain was to have.
        grant: crate::capability::Grant,
        /// Every import it forbids, with its category, in the module's import order.
        imports: Vec<crate::capability::ImportCapability>,
    },
    /// Instantiation failed for a reason no guest code caused: an import of the wrong type,
    /// an unknown WASI function, a table or memory minimum the domain's limits cannot hold.
    /// (A start function that fails is a call that fails: [`Error::Call`].)
    #[error("cannot instantiate module: {}", chain(.0))]
    Instantiate(#[source] Cause),
    /// The start function called `proc_exit` with this code: the domain never came to be.
    #[error("the start function exited with code {0}")]
    StartExited(i32),
    /// An admission limit refused the domain before any guest code ran: the instance pool
    /// ([`EngineConfig::pool_slots`](crate::EngineConfig::pool_slots)) is full. A soft
    /// refusal, like `insufficient_memory`: retry when domains have been unloaded.
    #[error("at capacity: {0}")]
    AtCapacity(String),
    /// The export does not exist or is not a function.
    #[error("no exported function `{0}`")]
    NoSuchExport(String),
    /// A component function's own name names several functions (in different interfaces).
    #[error("export name `{name}` is ambiguous: it names {candidates}; give the full path")]
    AmbiguousExport {
        /// The name given.
        name: String,
        /// The full paths it matches, each in backticks.
        candidates: String,
    },
    /// The arguments do not match the export's parameters.
    #[error("export `{name}` takes ({expected}), got ({given})")]
    BadArguments {
        /// The export.
        name: String,
        /// Its parameter types.
        expected: String,
        /// The argument types given.
        given: String,
    },
    /// An HTTP request cannot be given to a handler (see
    /// [`Domain::call_http`](crate::Domain::call_http)); the message says what is missing.
    #[error("bad HTTP request: {0}")]
    BadRequest(String),
    /// The runtime configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The engine could not be created, or a thread it needs could not be started.
    #[error("cannot create engine: {}", chain(.0))]
    Engine(#[source] Cause),
    /// A handle operation failed: the handle is stale or forged, or the domain's handle
    /// quota is reached.
    #[error(transparent)]
    Handle(#[from] warden_core::handles::HandleError),
    /// The handle names a resource of another type than the one asked for.
    #[error("handle {handle:#010x} does not hold a `{expected}`")]
    HandleType {
        /// The handle value.
        handle: u32,
        /// The type asked for.
        expected: &'static str,
    },
    /// A call ended in a failure outcome.
    #[error(transparent)]
    Call(#[from] CallError),
}
