//! Warden's escalation policy: what the runtime does when a guest fails or an operation
//! takes too long.
//!
//! This crate is the policy alone — the model, its legality rules, the presets and the TOML
//! file — with no wasmtime in it, so an embedding application can load, check, explain and
//! consult a policy (for its own native work too) without a runtime. It is the CLR 2.0
//! hosting model's `ICLRPolicyManager` with Warden's few deviations.
//!
//! # The model
//!
//! Three vocabularies:
//!
//! - An [`Action`] is what the runtime does, in increasing severity: `none` < `throw` (the
//!   call fails) < `abort` < `rude-abort` (of the call) < `unload-domain` <
//!   `rude-unload-domain` < `exit-process` < `fast-exit-process` < `rude-exit-process` <
//!   `disable-runtime`. Escalation only ever moves up this list.
//! - A [`Failure`] is something that went wrong (`critical-resource`, `orphaned-lock`,
//!   `deadline`, …). Each failure maps to an action ([`Policy::failure`]).
//! - An [`Operation`] is something the runtime does that can itself be configured and must
//!   be bounded (`abort`, `unload-domain`, `process-exit`, `finalizer-run`, …). Each has a
//!   *default action*, a *timeout* and an *action on timeout* ([`OperationPolicy`]).
//!
//! # Deciding
//!
//! When a failure happens, the runtime asks [`Policy::decide`], which does three things:
//!
//! 1. takes the failure's configured action;
//! 2. if the call was *critical* — in a guest-declared critical region, or holding host
//!    locks — raises it to at least the [`critical-escalation`](Policy::critical_escalation)
//!    floor (default `unload-domain`: the domain's state is presumed inconsistent, SQL
//!    Server's rule);
//! 3. *resolves* it ([`Policy::resolve_for`]): an action that is itself an operation is
//!    replaced by that operation's default action when that is more severe, repeatedly.
//!    So `[defaults] unload-domain = "rude-unload-domain"` turns every polite unload — asked
//!    for by any failure or timeout — into a rude one.
//!
//! When an operation runs out of time (an abort deferred too long, an unload that does not
//! finish, a finalizer that hangs, an exit that stalls), the runtime takes that operation's
//! [`on_timeout`](OperationPolicy::on_timeout) action, resolved the same way.
//!
//! ```
//! use warden_policy::{Action, Failure, Policy};
//!
//! let policy = Policy::default(); // the `server` preset
//! // Out of memory outside critical regions: the call fails, nothing else.
//! assert_eq!(policy.decide(Failure::NoncriticalResource, false), Action::Throw);
//! // The same while holding a lock: the domain is unloaded.
//! assert_eq!(policy.decide(Failure::NoncriticalResource, true), Action::UnloadDomain);
//! ```
//!
//! # What is legal
//!
//! Not every action makes sense everywhere, and a policy that could say "on unload timeout,
//! abort the call" would let a hung unload hang forever. These are CLR 2.0's own checks
//! (`eepolicy.cpp`), with Warden's deviations marked; "a …" means `a` and every more severe
//! action:
//!
//! | operation | default action | action on timeout |
//! |---|---|---|
//! | `abort` | `abort` … | `rude-abort` … |
//! | `rude-abort`, `rude-abort-critical` | `rude-abort`, `rude-unload-domain` … (not `unload-domain`) | `exit-process` …, and `rude-unload-domain` (Warden) |
//! | `unload-domain` | `unload-domain` … | `rude-unload-domain` … |
//! | `rude-unload-domain` | `rude-unload-domain` … | `exit-process` … |
//! | `process-exit` | `exit-process` … | `fast-exit-process` … |
//! | `finalizer-run` | `none`, `abort` … | `none`, `abort` … |
//!
//! | failure | action |
//! |---|---|
//! | `noncritical-resource`, `critical-resource` | `throw` … |
//! | `stack-overflow` | `throw` … (Warden: wasm contains a stack overflow; the CLR required `rude-unload-domain` …) |
//! | `orphaned-lock` | `none` (the CLR default), `unload-domain` … |
//! | `fatal-runtime` | `rude-exit-process`, `disable-runtime` |
//! | `deadline`, `deadlock`, `guest-trap` (Warden) | `throw` … |
//!
//! `critical-escalation` may be any action; `none` turns the floor off (the CLR had none).
//! A timeout's action is checked even when the timeout is infinite (it then never fires).
//! The predicates are public: [`Operation::allows_default`], [`Operation::allows_on_timeout`],
//! [`Failure::allows`], [`allows_critical_escalation`].
//!
//! # Presets
//!
//! [`Preset::Server`] (the default), [`Preset::Clr`], [`Preset::SqlServer`] and
//! [`Preset::FailFast`]; each variant's docs list its values and why.
//!
//! # The file
//!
//! Every key is optional. `preset` (default `server`) is applied first, then the overrides,
//! then the whole result is checked. Unknown keys, sections, operations, failures, actions
//! and presets, wrong types and bad durations are all refused, naming the key.
//!
//! ```
//! let policy = warden_policy::Policy::from_toml_str(r#"
//!     preset = "server"
//!     critical-escalation = "unload-domain"
//!
//!     [defaults]                       # operation -> default action
//!     rude-abort-critical = "rude-unload-domain"
//!
//!     [timeouts]                       # operation -> bound and action on expiry
//!     abort = { after = "30s", action = "rude-abort" }
//!     finalizer-run = { after = "infinite" }      # action: keep the preset's
//!
//!     [failures]                       # failure -> action
//!     deadline = "abort"
//! "#)?;
//! # Ok::<(), warden_policy::PolicyError>(())
//! ```
//!
//! Durations are a whole or decimal number and a unit (`ns`, `us`, `ms`, `s`, `m`, `h`), or
//! `"infinite"`: see [`parse_duration`]. [`Policy::to_toml`] writes any policy back as a
//! complete file, and [`Policy::explain`] as a table.
//!
//! # What this crate does not do
//!
//! It decides; it does not act. Delivering aborts, unloading domains, running the
//! watchdogs that enforce the timeouts and exiting the process are the runtime's job.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod duration;
mod error;
mod file;
mod policy;
mod preset;
mod vocabulary;

pub use duration::{INFINITE, format_duration, parse_duration};
pub use error::PolicyError;
pub use policy::{MAX_POLICY_FILE_BYTES, OperationPolicy, Policy};
pub use preset::Preset;
pub use vocabulary::{Action, Failure, Operation, ParseNameError, allows_critical_escalation};
