//! Resolution and decisions: worked cases, then properties over random legal policies.

use std::time::Duration;

use proptest::prelude::*;
use warden_policy::{Action, Failure, Operation, Policy, Preset};

use Action as A;

#[test]
fn resolution_follows_operation_defaults() {
    let mut p = Policy::preset(Preset::Clr);
    // Actions with no operation are final as they are.
    for a in [A::None, A::Throw, A::RudeExitProcess, A::DisableRuntime] {
        assert_eq!(p.resolve(a), a);
    }
    // CLR defaults: everything means itself.
    for &a in Action::ALL {
        assert_eq!(p.resolve(a), a, "{a}");
    }
    // A chain: abort -> rude-abort -> rude-unload-domain -> exit-process -> rude-exit-process.
    p.set_default(Operation::Abort, A::RudeAbort).unwrap();
    p.set_default(Operation::RudeAbort, A::RudeUnloadDomain)
        .unwrap();
    p.set_default(Operation::RudeUnloadDomain, A::ExitProcess)
        .unwrap();
    p.set_default(Operation::ProcessExit, A::RudeExitProcess)
        .unwrap();
    assert_eq!(p.resolve(A::Abort), A::RudeExitProcess);
    assert_eq!(p.resolve(A::UnloadDomain), A::UnloadDomain);
    // fast-exit-process resolves through process-exit as in the CLR.
    assert_eq!(p.resolve(A::FastExitProcess), A::RudeExitProcess);
}

#[test]
fn critical_rude_abort_uses_its_own_operation() {
    let mut p = Policy::default();
    p.set_default(Operation::RudeAbortCritical, A::RudeUnloadDomain)
        .unwrap();
    assert_eq!(p.resolve(A::RudeAbort), A::RudeAbort);
    assert_eq!(p.resolve_for(A::RudeAbort, false), A::RudeAbort);
    assert_eq!(p.resolve_for(A::RudeAbort, true), A::RudeUnloadDomain);
    // decide() resolves in the call's context: with the floor off, a critical
    // rude-abort decision takes the critical operation's default.
    p.set_critical_escalation(A::None).unwrap();
    p.set_failure(Failure::Deadline, A::RudeAbort).unwrap();
    assert_eq!(p.decide(Failure::Deadline, false), A::RudeAbort);
    assert_eq!(p.decide(Failure::Deadline, true), A::RudeUnloadDomain);
}

#[test]
fn decide_raises_to_the_floor_then_resolves() {
    let mut p = Policy::default();
    assert_eq!(p.decide(Failure::Deadline, false), A::Abort);
    assert_eq!(p.decide(Failure::Deadline, true), A::UnloadDomain);
    // The floor never lowers: fatal-runtime stays above it.
    assert_eq!(p.decide(Failure::FatalRuntime, true), A::RudeExitProcess);
    // The floor is resolved like any action.
    p.set_default(Operation::UnloadDomain, A::RudeUnloadDomain)
        .unwrap();
    assert_eq!(p.decide(Failure::GuestTrap, true), A::RudeUnloadDomain);
    assert_eq!(p.decide(Failure::GuestTrap, false), A::Throw);
}

#[derive(Debug, Clone)]
enum Call {
    Default(usize, usize),
    Timeout(usize, Option<u64>, usize),
    Failure(usize, usize),
    Critical(usize),
}

fn call() -> impl Strategy<Value = Call> {
    let op = 0..Operation::ALL.len();
    let action = 0..Action::ALL.len();
    let failure = 0..Failure::ALL.len();
    prop_oneof![
        (op.clone(), action.clone()).prop_map(|(o, a)| Call::Default(o, a)),
        (op, proptest::option::of(0..100_000u64), action.clone())
            .prop_map(|(o, t, a)| Call::Timeout(o, t, a)),
        (failure, action.clone()).prop_map(|(f, a)| Call::Failure(f, a)),
        action.prop_map(Call::Critical),
    ]
}

/// Applies random setter calls to a random preset; refused calls must change nothing, and
/// a call is refused exactly when the legality predicates say so.
fn policy() -> impl Strategy<Value = Policy> {
    (
        0..Preset::ALL.len(),
        proptest::collection::vec(call(), 0..40),
    )
        .prop_map(|(preset, calls)| {
            let mut p = Policy::preset(Preset::ALL[preset]);
            for c in calls {
                let before = p.clone();
                let (result, legal) = match c {
                    Call::Default(o, a) => {
                        let (o, a) = (Operation::ALL[o], Action::ALL[a]);
                        (p.set_default(o, a), o.allows_default(a))
                    }
                    Call::Timeout(o, t, a) => {
                        let (o, a) = (Operation::ALL[o], Action::ALL[a]);
                        let t = t.map(Duration::from_millis);
                        (p.set_timeout(o, t, a), o.allows_on_timeout(a))
                    }
                    Call::Failure(f, a) => {
                        let (f, a) = (Failure::ALL[f], Action::ALL[a]);
                        (p.set_failure(f, a), f.allows(a))
                    }
                    Call::Critical(a) => (p.set_critical_escalation(Action::ALL[a]), true),
                };
                assert_eq!(result.is_ok(), legal);
                if !legal {
                    assert_eq!(p, before);
                }
            }
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn resolve_never_lowers_and_is_idempotent(p in policy()) {
        for &a in Action::ALL {
            for critical in [false, true] {
                let r = p.resolve_for(a, critical);
                prop_assert!(r >= a, "{a} resolved down to {r}");
                prop_assert_eq!(p.resolve_for(r, critical), r);
                // Stable: the operation the result names asks for nothing more severe.
                for &op in Operation::ALL {
                    let names_it = matches!(
                        (op, r),
                        (Operation::Abort, A::Abort)
                            | (Operation::UnloadDomain, A::UnloadDomain)
                            | (Operation::RudeUnloadDomain, A::RudeUnloadDomain)
                            | (Operation::ProcessExit, A::ExitProcess | A::FastExitProcess)
                    ) || (r == A::RudeAbort
                        && op == if critical { Operation::RudeAbortCritical } else { Operation::RudeAbort });
                    if names_it {
                        prop_assert!(p.operation(op).default <= r);
                    }
                }
            }
            prop_assert_eq!(p.resolve(a), p.resolve_for(a, false));
        }
    }

    #[test]
    fn decide_respects_the_failure_and_the_floor(p in policy()) {
        for &f in Failure::ALL {
            let plain = p.decide(f, false);
            let critical = p.decide(f, true);
            prop_assert!(plain >= p.failure(f));
            prop_assert!(critical >= p.failure(f));
            if f.interrupts() {
                prop_assert!(critical >= p.critical_escalation());
            } else {
                // Told, not interrupted: the floor does not apply.
                prop_assert_eq!(critical, p.resolve_for(p.failure(f), true));
            }
            prop_assert_eq!(plain, p.resolve(p.failure(f)));
        }
    }

    #[test]
    fn any_legal_policy_round_trips(p in policy()) {
        let text = p.to_toml();
        let back = Policy::from_toml_str(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&back, &p);
        prop_assert_eq!(back.base_preset(), p.base_preset());
        // explain() covers every row of any legal policy.
        let table = p.explain();
        prop_assert_eq!(table.lines().count(), 4 + 1 + Failure::ALL.len() + 1 + 1 + Operation::ALL.len());
    }
}
