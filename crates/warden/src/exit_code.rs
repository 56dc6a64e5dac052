//! Stable process exit codes of `warden run`, one per outcome (DESIGN §5). All are below 124,
//! so none looks like a death by signal. A WASI command's own `proc_exit` code passes through
//! unchanged, so a guest can in principle return any of these itself.

use crate::call::Outcome;
use crate::error::Error;
use warden_policy::Action;

/// Every call succeeded.
pub const SUCCESS: i32 = 0;
/// Bad command line (clap's own convention).
pub const USAGE: i32 = 2;
/// Bad input: a missing or malformed module, an invalid policy, a missing export, an import
/// nobody provides, a nonsense size or duration.
pub const BAD_INPUT: i32 = 3;
/// The guest trapped.
pub const TRAP: i32 = 103;
/// The guest overflowed its stack.
pub const STACK_OVERFLOW: i32 = 104;
/// The guest ran out of memory.
pub const OUT_OF_MEMORY: i32 = 105;
/// The call passed its deadline.
pub const TIMEOUT: i32 = 106;
/// The call was aborted.
pub const ABORTED: i32 = 107;
/// The call was rudely aborted.
pub const RUDE_ABORTED: i32 = 108;
/// The call was ended as a deadlock victim.
pub const DEADLOCK_VICTIM: i32 = 109;
/// The domain was unloaded under the call.
pub const DOMAIN_UNLOADED: i32 = 110;
/// Refused before any guest code ran, for want of memory: the memory gate refused the
/// call, the budget could not give a new domain its initial memory, or the instance pool
/// is full.
pub const INSUFFICIENT_MEMORY: i32 = 111;
/// The call was refused because the process is exiting.
pub const PROCESS_EXITING: i32 = 112;
/// The call was refused because the runtime is disabled.
pub const RUNTIME_DISABLED: i32 = 113;
/// The policy chose `exit-process`.
pub const POLICY_EXIT: i32 = 114;
/// The policy chose `fast-exit-process`.
pub const POLICY_FAST_EXIT: i32 = 115;
/// The policy chose `rude-exit-process`; also the code of an exit the shutdown watchdog
/// ended (whatever code the exit had started with).
pub const POLICY_RUDE_EXIT: i32 = 116;
/// A first SIGTERM/SIGINT ended the run in order.
pub const SIGNALLED: i32 = 117;
/// A second signal ended the run at once.
pub const SIGNALLED_RUDE: i32 = 118;
/// Warden's own invariant broke (fail-fast).
pub const FATAL: i32 = 119;
/// Not permitted: the module imports what its grant forbids (refused before any guest code
/// ran; see [`capability`](crate::capability)).
pub const NOT_PERMITTED: i32 = 120;

/// The exit code for a call outcome.
pub fn for_outcome(outcome: Outcome) -> i32 {
    match outcome {
        Outcome::Ok => SUCCESS,
        Outcome::Trap => TRAP,
        Outcome::StackOverflow => STACK_OVERFLOW,
        Outcome::OutOfMemory => OUT_OF_MEMORY,
        Outcome::Timeout => TIMEOUT,
        Outcome::Aborted => ABORTED,
        Outcome::RudeAborted => RUDE_ABORTED,
        Outcome::DeadlockVictim => DEADLOCK_VICTIM,
        Outcome::DomainUnloaded => DOMAIN_UNLOADED,
        Outcome::InsufficientMemory => INSUFFICIENT_MEMORY,
        Outcome::ProcessExiting => PROCESS_EXITING,
        Outcome::RuntimeDisabled => RUNTIME_DISABLED,
    }
}

/// The exit code for a process action chosen by the policy.
pub fn for_action(action: Action) -> i32 {
    match action {
        Action::FastExitProcess => POLICY_FAST_EXIT,
        Action::RudeExitProcess => POLICY_RUDE_EXIT,
        _ => POLICY_EXIT,
    }
}

/// The exit code for an error of loading a module, creating a domain or making a call: the
/// outcome's code for a call (a failed start function included), the guest's own code for
/// a start function that called `proc_exit`, [`INSUFFICIENT_MEMORY`] for a full instance
/// pool, [`NOT_PERMITTED`] for an import the grant forbids, and [`BAD_INPUT`] for everything about the input itself (an invalid, oversized or
/// over-long-to-compile module, an unknown or wrongly typed import, a missing export).
pub fn for_error(error: &Error) -> i32 {
    match error {
        Error::Call(err) => for_outcome(err.outcome()),
        Error::StartExited(code) => *code,
        Error::AtCapacity(_) => INSUFFICIENT_MEMORY,
        Error::NotPermitted { .. } => NOT_PERMITTED,
        _ => BAD_INPUT,
    }
}
