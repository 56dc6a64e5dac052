//! Warden: a reliability-first host for WebAssembly guests.
//!
//! Guest code runs in isolated **domains** ([`Domain`]): one wasmtime store, one instance of
//! one core module or component ([`component`]), one call at a time. Whatever a guest does — loop forever, exhaust memory,
//! overflow its stack, trap — comes back to the host as a typed [`Outcome`] of its **call**
//! ([`CallHandle`]), in bounded time, with the process and every other domain untouched. What a
//! failure costs beyond its call (nothing, the domain, the process) is decided by the
//! escalation [`Policy`], and every decision is an [`Event`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), warden::Error> {
//! use warden::{CallOptions, DomainConfig, Runtime, RuntimeConfig};
//! let rt = Runtime::new(RuntimeConfig::default())?;
//! let module = rt.load_module(br#"(module (func (export "answer") (result i32) i32.const 42))"#)?;
//! let domain = rt.create_domain(&module, DomainConfig::default()).await?;
//! let out = domain.invoke("answer", &[], CallOptions::default()).await?;
//! assert_eq!(out.values[0].unwrap_i32(), 42);
//! domain.unload().await;
//! # Ok(()) }
//! ```
//!
//! Each domain also owns a table of host resources the guest names by opaque handles
//! ([`Domain::insert_handle`], [`HandleGuard`], the guest's `handle_close`); unloading a domain
//! releases every one of them after the guest's last code has run (see [`handles`]).
//!
//! The guest-free primitives (memory budget, handle tables, host locks, shutdown) live in
//! [`warden_core`] and the policy model in [`warden_policy`]; both are re-exported.
#![warn(missing_docs)]
// `deny`, not `forbid`: one function, `precompiled::deserialize`, allows it (with its SAFETY
// argument); nothing else may.
#![deny(unsafe_code)]

pub mod call;
pub mod capability;
pub mod component;
pub mod domain;
pub mod domain_call;
pub mod engine;
pub mod error;
mod escalation;
pub mod events;
pub mod exit_code;
pub mod fail_fast;
mod guest_log;
pub mod handles;
pub mod host;
pub mod http;
pub mod ids;
mod memory;
pub mod module_store;
pub mod precompiled;
mod release;
pub mod runtime;
pub mod scheduler;
pub mod shutdown;
mod signature;
mod start;
pub mod stdio;
mod typed_call;
mod unload;
pub mod wasi;
mod worker;

pub use call::{CallError, CallHandle, CallOptions, CallOutput, CallResult, Outcome};
pub use capability::{Capability, Grant};
pub use component::ComponentExport;
pub use domain::{Domain, DomainConfig, UnloadReport};
pub use engine::{Allocator, EngineConfig, Module};
pub use error::Error;
pub use events::{Event, EventKind};
pub use fail_fast::FailFastReport;
pub use handles::HandleGuard;
pub use host::{CallContext, HostContext, HostError, HostFunctions};
pub use http::{HttpCall, HttpConfig, HttpError};
pub use ids::{CallId, DomainId};
pub use module_store::{DirStore, ModuleRef, ModuleStore, StoreError, StoredModule};
pub use precompiled::CacheStats;
pub use runtime::{ExitFn, Runtime, RuntimeConfig};
pub use scheduler::{SchedulerConfig, SchedulerStats};
pub use shutdown::{ExitMode, ExitReport, ExitStart, HookId, ShutdownStarted};
pub use warden_core;
pub use warden_policy;
pub use warden_policy::{Action, Failure, Operation, Policy, Preset};
pub use wasi::{Preopen, PreopenError, WasiConfig};
/// The wasmtime this runtime is built on (its component `Val` and types are in the API).
pub use wasmtime;
pub use wasmtime::Val;
