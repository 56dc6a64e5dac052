//! The named starting points for a policy.

use std::time::Duration;

use crate::policy::{OperationPolicy, Policy};
use crate::vocabulary::{Action, Failure, Operation, vocabulary};

vocabulary! {
    /// A named, complete policy to start from; a policy file names one with `preset = "…"`
    /// and overrides what it needs. The default is [`Preset::Server`].
    #[derive(Default)]
    enum Preset ("preset") {
        /// **The default.** A server that must stay up and shut down in bounded time:
        /// every wait is bounded, failures cost the call, and a failure that hits a call in
        /// a critical region or holding locks costs the domain.
        ///
        /// - `critical-escalation = unload-domain` (SQL Server's rule: a failure with locks
        ///   held leaves the domain's state suspect).
        /// - Operation defaults: the CLR's (an operation means itself).
        /// - Timeouts: `abort` 10 s → `rude-abort`; `rude-abort` and `rude-abort-critical`
        ///   10 s → `rude-unload-domain` (Warden's deviation: a stuck guest costs its domain,
        ///   never the process); `unload-domain` 30 s → `rude-unload-domain`;
        ///   `rude-unload-domain` 30 s → `exit-process`; `finalizer-run` 5 s → `abort`;
        ///   `process-exit` 25 s → `rude-exit-process`, inside Kubernetes' default 30 s
        ///   termination grace period so the process ends itself before it is killed.
        /// - Failures: `noncritical-resource`, `stack-overflow` (contained in wasm),
        ///   `guest-trap`, `deadlock` → `throw`; `critical-resource`, `orphaned-lock` →
        ///   `unload-domain`; `deadline` → `abort` (the call is cut off, politely so that its
        ///   critical regions finish); `fatal-runtime` → `rude-exit-process`.
        #[default]
        Server => "server",
        /// CLR 2.0's own defaults (SSCLI 2.0 `eepolicy.cpp`), for comparison and for hosts
        /// that want exactly the CLR's behaviour.
        ///
        /// - `critical-escalation = none`: the CLR had no such floor.
        /// - Operation defaults: the CLR's.
        /// - Timeouts: infinite, except `process-exit` 40 s → `rude-exit-process`. The CLR
        ///   stores placeholder actions for infinite timeouts (e.g. `abort` → `abort`) that
        ///   its own setter refuses; they never fire. This preset stores instead the mildest
        ///   action the CLR's setter accepts (`abort` → `rude-abort`, rude aborts →
        ///   `exit-process`, `unload-domain` → `rude-unload-domain`, `rude-unload-domain` →
        ///   `exit-process`, `finalizer-run` → `none`), so a file that sets only `after`
        ///   gets the CLR's first real escalation.
        /// - Failures: the CLR's (`noncritical-resource`, `critical-resource` → `throw`;
        ///   `stack-overflow`, `fatal-runtime` → `rude-exit-process`; `orphaned-lock` →
        ///   `none`). Warden's own failures take their nearest CLR analogue, which is also
        ///   Warden's default: `deadline` → `abort` (a host enforced a deadline with
        ///   Thread.Abort), `deadlock` → `throw` (the victim's wait fails, as with SQL
        ///   Server's error 1205), `guest-trap` → `throw` (an exception reaching the host).
        Clr => "clr",
        /// SQL Server's hosting behaviour: abort deferral is bounded at 30 s and then the
        /// domain is unloaded; any failure with locks held or in a critical region unloads
        /// the domain; running out of memory without locks fails the call.
        ///
        /// Everything else as [`Preset::Server`], except `abort` 30 s → `unload-domain`.
        /// `unload-domain` is a legal timeout action for `abort` (it is above `rude-abort`),
        /// and it is SQL Server's choice: the domain's finalizer still gets its chance, and
        /// the `unload-domain` timeout (30 s → `rude-unload-domain`) bounds the rest.
        /// `stack-overflow` stays `throw`: SQL Server unloaded the domain because the CLR
        /// could not contain a stack overflow, and wasm can; one that hits a critical region
        /// still unloads through `critical-escalation`.
        SqlServer => "sqlserver",
        /// Every failure → `rude-exit-process`, critical or not (`critical-escalation` too):
        /// the CLR 1.x console-application behaviour, where any unhandled failure ends the
        /// process. For tools, tests and batch jobs where a crash is better than a guess.
        /// Operations and timeouts as [`Preset::Server`], so exit stays bounded. Every
        /// failure allows `rude-exit-process`, so this preset is legal.
        FailFast => "fail-fast",
    }
}

fn secs(n: u64) -> Option<Duration> {
    Some(Duration::from_secs(n))
}

/// Builds a preset's policy.
pub(crate) fn build(p: Preset) -> Policy {
    match p {
        Preset::Server => server(),
        Preset::Clr => clr(),
        Preset::SqlServer => {
            let mut policy = server();
            policy.base = Preset::SqlServer;
            policy.operations[Operation::Abort.index()] = OperationPolicy {
                default: Action::Abort,
                timeout: secs(30),
                on_timeout: Action::UnloadDomain,
            };
            policy
        }
        Preset::FailFast => {
            let mut policy = server();
            policy.base = Preset::FailFast;
            policy.critical_escalation = Action::RudeExitProcess;
            policy.failures = [Action::RudeExitProcess; Failure::ALL.len()];
            policy
        }
    }
}

fn server() -> Policy {
    use Action as A;
    let op = |o: Operation, timeout, on_timeout| OperationPolicy {
        default: o.clr_default(),
        timeout,
        on_timeout,
    };
    Policy {
        base: Preset::Server,
        critical_escalation: A::UnloadDomain,
        operations: [
            op(Operation::Abort, secs(10), A::RudeAbort),
            op(Operation::RudeAbort, secs(10), A::RudeUnloadDomain),
            op(Operation::RudeAbortCritical, secs(10), A::RudeUnloadDomain),
            op(Operation::UnloadDomain, secs(30), A::RudeUnloadDomain),
            op(Operation::RudeUnloadDomain, secs(30), A::ExitProcess),
            op(Operation::ProcessExit, secs(25), A::RudeExitProcess),
            op(Operation::FinalizerRun, secs(5), A::Abort),
        ],
        failures: [
            A::Throw,           // noncritical-resource
            A::UnloadDomain,    // critical-resource
            A::Throw,           // stack-overflow
            A::UnloadDomain,    // orphaned-lock
            A::RudeExitProcess, // fatal-runtime
            A::Abort,           // deadline
            A::Throw,           // deadlock
            A::Throw,           // guest-trap
        ],
    }
}

fn clr() -> Policy {
    use Action as A;
    let op = |o: Operation, timeout, on_timeout| OperationPolicy {
        default: o.clr_default(),
        timeout,
        on_timeout,
    };
    Policy {
        base: Preset::Clr,
        critical_escalation: A::None,
        operations: [
            op(Operation::Abort, None, A::RudeAbort),
            op(Operation::RudeAbort, None, A::ExitProcess),
            op(Operation::RudeAbortCritical, None, A::ExitProcess),
            op(Operation::UnloadDomain, None, A::RudeUnloadDomain),
            op(Operation::RudeUnloadDomain, None, A::ExitProcess),
            op(Operation::ProcessExit, secs(40), A::RudeExitProcess),
            op(Operation::FinalizerRun, None, A::None),
        ],
        failures: [
            A::Throw,           // noncritical-resource
            A::Throw,           // critical-resource
            A::RudeExitProcess, // stack-overflow
            A::None,            // orphaned-lock
            A::RudeExitProcess, // fatal-runtime
            A::Abort,           // deadline
            A::Throw,           // deadlock
            A::Throw,           // guest-trap
        ],
    }
}
