//! The three vocabularies of the policy — actions, operations, failures — and the legality
//! tables that say which action each operation and failure may be given.

/// A name that is not one of a vocabulary's kebab-case names (an action, an operation, a
/// failure or a preset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} \"{value}\": expected one of {expected}")]
pub struct ParseNameError {
    /// What was being parsed: `"action"`, `"operation"`, `"failure"` or `"preset"`.
    pub kind: &'static str,
    /// The text that was given.
    pub value: String,
    /// The names that are accepted, comma-separated.
    pub expected: String,
}

/// Declares a closed vocabulary: the enum, `ALL`, `name()`, `Display`/`FromStr` in
/// kebab-case and serde as that same string, so files, events and the CLI spell it alike.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        enum $name:ident ($kind:literal) {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The kebab-case name used in policy files, events and on the command line.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Position in [`Self::ALL`]; used to index per-value tables.
            #[allow(dead_code)]
            pub(crate) const fn index(self) -> usize {
                self as usize
            }

            /// Every name, comma-separated (for error messages).
            #[allow(dead_code)]
            pub(crate) fn expected() -> String {
                Self::ALL.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                // `pad` so that `{:<20}` aligns names in tables.
                f.pad(self.name())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::ParseNameError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL.iter().copied().find(|v| v.name() == s).ok_or_else(|| $crate::ParseNameError {
                    kind: $kind,
                    value: s.to_owned(),
                    expected: Self::expected(),
                })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use vocabulary;

vocabulary! {
    /// What the runtime does about a failure or an operation, ordered by severity: the
    /// derived `Ord` is the escalation order, and escalation only ever moves up it.
    ///
    /// The names and the order are CLR 2.0's `EPolicyAction`.
    enum Action ("action") {
        /// Do nothing more.
        None => "none",
        /// The call fails, with the failure as its error; the domain lives on.
        Throw => "throw",
        /// Polite abort of the call: deferred while it is in a critical region, holds a
        /// host lock or is inside a host function.
        Abort => "abort",
        /// Rude abort of the call: ignores critical regions and held locks, waits only for a
        /// constrained region.
        RudeAbort => "rude-abort",
        /// Polite unload of the call's domain (its finalizer runs).
        UnloadDomain => "unload-domain",
        /// Rude unload of the call's domain (guest finalizers are skipped).
        RudeUnloadDomain => "rude-unload-domain",
        /// Orderly process exit (exit hooks, finalizers, critical release).
        ExitProcess => "exit-process",
        /// Process exit that skips guest finalizers.
        FastExitProcess => "fast-exit-process",
        /// Immediate process exit: nothing more runs.
        RudeExitProcess => "rude-exit-process",
        /// The process stays up but admits no guest work.
        DisableRuntime => "disable-runtime",
    }
}

vocabulary! {
    /// Something the runtime does that the policy bounds: each operation has a default
    /// action (what the operation escalates to when asked for), a timeout, and an action on
    /// timeout. See [`crate::OperationPolicy`].
    enum Operation ("operation") {
        /// Polite abort of a call (deferral bounded by this operation's timeout).
        Abort => "abort",
        /// Rude abort of a call that is not in a critical region and holds no lock.
        RudeAbort => "rude-abort",
        /// Rude abort of a call in a critical region or holding host locks.
        RudeAbortCritical => "rude-abort-critical",
        /// Polite unload of a domain.
        UnloadDomain => "unload-domain",
        /// Rude unload of a domain.
        RudeUnloadDomain => "rude-unload-domain",
        /// Orderly process exit (the whole shutdown sequence).
        ProcessExit => "process-exit",
        /// A guest finalizer (`warden_on_unload`) run.
        FinalizerRun => "finalizer-run",
    }
}

vocabulary! {
    /// A kind of failure the runtime reports to the policy; each maps to an [`Action`].
    enum Failure ("failure") {
        /// A resource (memory) failure outside critical regions and with no locks held.
        NoncriticalResource => "noncritical-resource",
        /// A resource failure in a critical region or with host locks held.
        CriticalResource => "critical-resource",
        /// The guest overflowed its stack (contained in wasm, unlike in the CLR).
        StackOverflow => "stack-overflow",
        /// A call ended still holding host locks; they were released and poisoned.
        OrphanedLock => "orphaned-lock",
        /// The runtime's own invariants are broken.
        FatalRuntime => "fatal-runtime",
        /// A call passed its deadline (Warden).
        Deadline => "deadline",
        /// A call was chosen as a deadlock victim (Warden).
        Deadlock => "deadlock",
        /// The guest trapped (Warden).
        GuestTrap => "guest-trap",
    }
}

impl Operation {
    /// Whether `a` may be this operation's default action.
    ///
    /// CLR 2.0's `IsValidActionForOperation`: an operation's default may only be as severe
    /// as the operation itself or more — you cannot configure an unload to "mean" an abort.
    /// Rude aborts may not default to `unload-domain`: a polite unload would wait for the
    /// very call the rude abort is meant to cut short.
    pub fn allows_default(self, a: Action) -> bool {
        use Action as A;
        match self {
            Operation::Abort => a >= A::Abort,
            Operation::RudeAbort | Operation::RudeAbortCritical => {
                a >= A::RudeAbort && a != A::UnloadDomain
            }
            Operation::UnloadDomain => a >= A::UnloadDomain,
            Operation::RudeUnloadDomain => a >= A::RudeUnloadDomain,
            Operation::ProcessExit => a >= A::ExitProcess,
            Operation::FinalizerRun => a == A::None || a >= A::Abort,
        }
    }

    /// Whether `a` may be this operation's action on timeout.
    ///
    /// CLR 2.0's `IsValidActionForTimeout`: a timeout must escalate past the operation that
    /// timed out. Warden deviation: rude aborts may also time out into `rude-unload-domain`,
    /// because dropping a domain needs no cooperation from the guest, so a guest stuck in a
    /// constrained region costs its domain, never the process.
    pub fn allows_on_timeout(self, a: Action) -> bool {
        use Action as A;
        match self {
            Operation::Abort => a >= A::RudeAbort,
            Operation::RudeAbort | Operation::RudeAbortCritical => {
                a >= A::ExitProcess || a == A::RudeUnloadDomain
            }
            Operation::UnloadDomain => a >= A::RudeUnloadDomain,
            Operation::RudeUnloadDomain => a >= A::ExitProcess,
            Operation::ProcessExit => a >= A::FastExitProcess,
            Operation::FinalizerRun => a == A::None || a >= A::Abort,
        }
    }

    /// The actions [`Self::allows_default`] accepts, mildest first.
    pub fn allowed_defaults(self) -> Vec<Action> {
        Action::ALL
            .iter()
            .copied()
            .filter(|&a| self.allows_default(a))
            .collect()
    }

    /// The actions [`Self::allows_on_timeout`] accepts, mildest first.
    pub fn allowed_on_timeout(self) -> Vec<Action> {
        Action::ALL
            .iter()
            .copied()
            .filter(|&a| self.allows_on_timeout(a))
            .collect()
    }

    /// CLR 2.0's default action for this operation.
    pub fn clr_default(self) -> Action {
        match self {
            Operation::Abort => Action::Abort,
            Operation::RudeAbort | Operation::RudeAbortCritical => Action::RudeAbort,
            Operation::UnloadDomain => Action::UnloadDomain,
            Operation::RudeUnloadDomain => Action::RudeUnloadDomain,
            Operation::ProcessExit => Action::ExitProcess,
            Operation::FinalizerRun => Action::None,
        }
    }

    /// The operation whose default action an action resolves through (CLR 2.0's
    /// `GetFinalAction`), or `None` for actions that are final as they are.
    ///
    /// `critical` picks `rude-abort-critical` over `rude-abort`, as the CLR did for a thread
    /// holding a lock. `fast-exit-process` resolves through `process-exit` like
    /// `exit-process`, as in the CLR.
    pub(crate) fn resolving(a: Action, critical: bool) -> Option<Operation> {
        match a {
            Action::Abort => Some(Operation::Abort),
            Action::RudeAbort if critical => Some(Operation::RudeAbortCritical),
            Action::RudeAbort => Some(Operation::RudeAbort),
            Action::UnloadDomain => Some(Operation::UnloadDomain),
            Action::RudeUnloadDomain => Some(Operation::RudeUnloadDomain),
            Action::ExitProcess | Action::FastExitProcess => Some(Operation::ProcessExit),
            Action::None | Action::Throw | Action::RudeExitProcess | Action::DisableRuntime => None,
        }
    }
}

impl Failure {
    /// Whether this failure *interrupts* the guest (DESIGN §2): it unwinds guest code at a
    /// point the guest did not choose, so a call in a critical region or holding locks
    /// leaves its domain's state presumed inconsistent and the `critical-escalation` floor
    /// applies. A `deadlock` is not one: the victim is *told* by `-2` and backs out itself
    /// (SQL Server's error 1205); if it then ends holding locks, `orphaned-lock` decides.
    pub fn interrupts(self) -> bool {
        !matches!(self, Failure::Deadlock)
    }

    /// Whether `a` may be this failure's action.
    ///
    /// CLR 2.0's `IsValidActionForFailure`, plus the CLR default (`orphaned-lock = none`),
    /// plus Warden's deviations: a stack overflow may `throw` (wasm contains it), and
    /// Warden's own failures may take `throw` and anything above.
    pub fn allows(self, a: Action) -> bool {
        use Action as A;
        match self {
            Failure::NoncriticalResource
            | Failure::CriticalResource
            | Failure::StackOverflow
            | Failure::Deadline
            | Failure::Deadlock
            | Failure::GuestTrap => a >= A::Throw,
            Failure::FatalRuntime => a >= A::RudeExitProcess,
            Failure::OrphanedLock => a == A::None || a >= A::UnloadDomain,
        }
    }

    /// The actions [`Self::allows`] accepts, mildest first.
    pub fn allowed(self) -> Vec<Action> {
        Action::ALL
            .iter()
            .copied()
            .filter(|&a| self.allows(a))
            .collect()
    }

    /// CLR 2.0's default action for this failure; `None` for Warden's own failures, which
    /// the CLR did not have.
    pub fn clr_default(self) -> Option<Action> {
        match self {
            Failure::NoncriticalResource | Failure::CriticalResource => Some(Action::Throw),
            Failure::StackOverflow | Failure::FatalRuntime => Some(Action::RudeExitProcess),
            Failure::OrphanedLock => Some(Action::None),
            Failure::Deadline | Failure::Deadlock | Failure::GuestTrap => None,
        }
    }
}

/// Whether `a` may be the `critical-escalation` floor.
///
/// Every action is: `none` (and `throw`, which raises only `none`) turns the floor off, which
/// is the CLR's behaviour — it had no such floor; anything higher is a floor the host chose.
/// The floor is a minimum, so no choice can make a failure milder than its own action.
pub fn allows_critical_escalation(a: Action) -> bool {
    // Kept as a function so the rule lives in one place if it ever narrows.
    let _ = a;
    true
}

/// Joins actions as `a, b, c` for error messages.
pub(crate) fn join(actions: &[Action]) -> String {
    actions
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_operation_actions_resolve_through_an_operation() {
        for &a in Action::ALL {
            for critical in [false, true] {
                let op = Operation::resolving(a, critical);
                let expected = match a {
                    Action::None
                    | Action::Throw
                    | Action::RudeExitProcess
                    | Action::DisableRuntime => None,
                    Action::RudeAbort if critical => Some(Operation::RudeAbortCritical),
                    // As in the CLR, both orderly exits go through process-exit...
                    Action::ExitProcess | Action::FastExitProcess => Some(Operation::ProcessExit),
                    // ...and every other operation action is named after its operation.
                    other => other.name().parse().ok(),
                };
                assert_eq!(op, expected, "{a} critical={critical}");
            }
        }
    }

    #[test]
    fn an_operation_always_allows_its_own_action_as_default() {
        // A default only ever adds severity, so "mean yourself" is always allowed
        // (finalizer-run names no action and is covered by the legality tests).
        for &op in Operation::ALL {
            if let Ok(a) = op.name().parse::<Action>() {
                assert!(op.allows_default(a), "{op}");
            }
        }
    }
}
