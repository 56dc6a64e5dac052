//! Errors of the embedder API that are not call outcomes: bad modules, bad exports, bad
//! configuration. Every message names the thing that was wrong.

use crate::call::CallError;

/// An error from loading a module, creating a domain, or starting a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a valid WebAssembly module (or WAT text).
    #[error("invalid module: {0}")]
    InvalidModule(String),
    /// The module is larger than the runtime accepts.
    #[error("module is {size} bytes, more than the {limit}-byte limit")]
    ModuleTooLarge {
        /// The module's size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The module imports something nobody provides.
    #[error("module imports `{module}`.`{name}`, which this runtime does not provide")]
    UnknownImport {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
    },
    /// Instantiation failed (a start function trapped, a limit was hit, a signature mismatch).
    #[error("cannot instantiate module: {0}")]
    Instantiate(String),
    /// The export does not exist or is not a function.
    #[error("no exported function `{0}`")]
    NoSuchExport(String),
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
    /// The runtime configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The engine could not be created.
    #[error("cannot create engine: {0}")]
    Engine(String),
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
