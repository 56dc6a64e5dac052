//! Every preset's values, as DESIGN.md §3 gives them, and every preset's round trip
//! through its own policy file.

use std::time::Duration;

use warden_policy::{Action, Failure, Operation, OperationPolicy, Policy, Preset};

use Action as A;
use Failure as F;
use Operation as O;

fn op(default: Action, timeout: Option<u64>, on_timeout: Action) -> OperationPolicy {
    OperationPolicy {
        default,
        timeout: timeout.map(Duration::from_secs),
        on_timeout,
    }
}

/// Asserts every value of a policy against a table written out here.
fn assert_policy(
    p: &Policy,
    critical: Action,
    ops: [(Operation, OperationPolicy); 7],
    failures: [(Failure, Action); 8],
) {
    assert_eq!(p.critical_escalation(), critical, "critical-escalation");
    for (o, expected) in ops {
        assert_eq!(p.operation(o), expected, "{o}");
    }
    for (f, expected) in failures {
        assert_eq!(p.failure(f), expected, "{f}");
    }
}

const CLR_DEFAULTS: [(Operation, Action); 7] = [
    (O::Abort, A::Abort),
    (O::RudeAbort, A::RudeAbort),
    (O::RudeAbortCritical, A::RudeAbort),
    (O::UnloadDomain, A::UnloadDomain),
    (O::RudeUnloadDomain, A::RudeUnloadDomain),
    (O::ProcessExit, A::ExitProcess),
    (O::FinalizerRun, A::None),
];

fn server_ops() -> [(Operation, OperationPolicy); 7] {
    [
        (O::Abort, op(A::Abort, Some(10), A::RudeAbort)),
        (
            O::RudeAbort,
            op(A::RudeAbort, Some(10), A::RudeUnloadDomain),
        ),
        (
            O::RudeAbortCritical,
            op(A::RudeAbort, Some(10), A::RudeUnloadDomain),
        ),
        (
            O::UnloadDomain,
            op(A::UnloadDomain, Some(30), A::RudeUnloadDomain),
        ),
        (
            O::RudeUnloadDomain,
            op(A::RudeUnloadDomain, Some(30), A::ExitProcess),
        ),
        (
            O::ProcessExit,
            op(A::ExitProcess, Some(25), A::RudeExitProcess),
        ),
        (O::FinalizerRun, op(A::None, Some(5), A::Abort)),
    ]
}

const SERVER_FAILURES: [(Failure, Action); 8] = [
    (F::NoncriticalResource, A::Throw),
    (F::CriticalResource, A::UnloadDomain),
    (F::StackOverflow, A::Throw),
    (F::OrphanedLock, A::UnloadDomain),
    (F::FatalRuntime, A::RudeExitProcess),
    (F::Deadline, A::Abort),
    (F::Deadlock, A::Throw),
    (F::GuestTrap, A::Throw),
];

#[test]
fn server_is_the_default() {
    assert_eq!(Policy::default(), Policy::preset(Preset::Server));
    assert_eq!(Preset::default(), Preset::Server);
    assert_eq!(Policy::from_toml_str("").unwrap(), Policy::default());
    assert_policy(
        &Policy::default(),
        A::UnloadDomain,
        server_ops(),
        SERVER_FAILURES,
    );
    for (o, a) in CLR_DEFAULTS {
        assert_eq!(Policy::default().operation(o).default, a);
    }
}

#[test]
fn clr_is_clr_2_exactly() {
    let p = Policy::preset(Preset::Clr);
    assert_policy(
        &p,
        A::None,
        [
            (O::Abort, op(A::Abort, None, A::RudeAbort)),
            (O::RudeAbort, op(A::RudeAbort, None, A::ExitProcess)),
            (O::RudeAbortCritical, op(A::RudeAbort, None, A::ExitProcess)),
            (
                O::UnloadDomain,
                op(A::UnloadDomain, None, A::RudeUnloadDomain),
            ),
            (
                O::RudeUnloadDomain,
                op(A::RudeUnloadDomain, None, A::ExitProcess),
            ),
            (
                O::ProcessExit,
                op(A::ExitProcess, Some(40), A::RudeExitProcess),
            ),
            (O::FinalizerRun, op(A::None, None, A::None)),
        ],
        [
            (F::NoncriticalResource, A::Throw),
            (F::CriticalResource, A::Throw),
            (F::StackOverflow, A::RudeExitProcess),
            (F::OrphanedLock, A::None),
            (F::FatalRuntime, A::RudeExitProcess),
            (F::Deadline, A::Abort),
            (F::Deadlock, A::Throw),
            (F::GuestTrap, A::Throw),
        ],
    );
    // The failures the CLR had take its defaults.
    for &f in Failure::ALL {
        if let Some(a) = f.clr_default() {
            assert_eq!(p.failure(f), a, "{f}");
        }
    }
    // No floor: an orphaned lock does nothing, as in the CLR.
    assert_eq!(p.decide(F::OrphanedLock, true), A::None);
    assert_eq!(p.decide(F::CriticalResource, true), A::Throw);
}

#[test]
fn sqlserver_bounds_abort_then_unloads() {
    let p = Policy::preset(Preset::SqlServer);
    let mut ops = server_ops();
    ops[0] = (O::Abort, op(A::Abort, Some(30), A::UnloadDomain));
    assert_policy(&p, A::UnloadDomain, ops, SERVER_FAILURES);
    // Any failure with locks held or in a critical region costs the domain (at least).
    for &f in Failure::ALL.iter().filter(|f| f.interrupts()) {
        assert!(p.decide(f, true) >= A::UnloadDomain, "{f}");
    }
    // OOM without locks fails the call.
    assert_eq!(p.decide(F::NoncriticalResource, false), A::Throw);
    assert_eq!(p.decide(F::NoncriticalResource, true), A::UnloadDomain);
    // The abort timeout ends in an unload.
    assert_eq!(p.resolve(p.operation(O::Abort).on_timeout), A::UnloadDomain);
}

#[test]
fn fail_fast_exits_on_every_failure() {
    let p = Policy::preset(Preset::FailFast);
    let failures = std::array::from_fn(|i| (Failure::ALL[i], A::RudeExitProcess));
    assert_policy(&p, A::RudeExitProcess, server_ops(), failures);
    for &f in Failure::ALL {
        for critical in [false, true] {
            assert_eq!(p.decide(f, critical), A::RudeExitProcess, "{f}");
        }
    }
}

#[test]
fn presets_are_distinct_and_parse_by_name() {
    let names: Vec<String> = Preset::ALL.iter().map(ToString::to_string).collect();
    assert_eq!(names, ["server", "clr", "sqlserver", "fail-fast"]);
    for &p in Preset::ALL {
        assert_eq!(p.to_string().parse::<Preset>().unwrap(), p);
        assert_eq!(Policy::preset(p).base_preset(), p);
        for &q in Preset::ALL {
            assert_eq!(Policy::preset(p) == Policy::preset(q), p == q, "{p} vs {q}");
        }
    }
    let e = "sql-server".parse::<Preset>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown preset \"sql-server\": expected one of server, clr, sqlserver, fail-fast"
    );
}

#[test]
fn every_preset_round_trips_through_its_file() {
    for &p in Preset::ALL {
        let policy = Policy::preset(p);
        let text = policy.to_toml();
        assert!(text.contains(&format!("preset = \"{p}\"")), "{text}");
        // Every section, every key spelled out.
        for &o in Operation::ALL {
            assert_eq!(
                text.matches(&format!("\n{o} ")).count(),
                2,
                "{o} in\n{text}"
            );
        }
        for &f in Failure::ALL {
            assert!(text.contains(&format!("\n{f} ")), "{f} in\n{text}");
        }
        let back = Policy::from_toml_str(&text).unwrap_or_else(|e| panic!("{p}: {e}\n{text}"));
        assert_eq!(back, policy, "{p}");
        assert_eq!(back.base_preset(), p);
        // The file is complete: read on top of another preset it gives the same policy.
        let other = text.replace(&format!("preset = \"{p}\""), "preset = \"clr\"");
        assert_eq!(
            Policy::from_toml_str(&other).unwrap(),
            policy,
            "{p} over clr"
        );
    }
}

#[test]
fn policy_show_output_for_server_reads_well() {
    let text = Policy::default().to_toml();
    assert!(text.contains("abort               = { after = \"10s\", action = \"rude-abort\" }"));
    assert!(text.contains("finalizer-run       = { after = \"5s\", action = \"abort\" }"));
    assert!(text.contains("critical-escalation = \"unload-domain\""));
    let clr = Policy::preset(Preset::Clr).to_toml();
    assert!(clr.contains(
        "unload-domain       = { after = \"infinite\", action = \"rude-unload-domain\" }"
    ));
    assert!(
        clr.contains("process-exit        = { after = \"40s\", action = \"rude-exit-process\" }")
    );
}

/// A deadlock victim is told by -2 and backs out: under every preset but `fail-fast` (whose
/// deadlock action is itself an exit) it keeps its domain even with locks held, and
/// `policy explain` says so.
#[test]
fn deadlock_victims_keep_their_domain_even_with_locks_held() {
    for preset in [Preset::Server, Preset::SqlServer, Preset::Clr] {
        let p = Policy::preset(preset);
        assert_eq!(p.decide(F::Deadlock, true), A::Throw, "{preset:?}");
        assert!(p.explain().contains("a deadlock interrupts nothing"));
    }
    assert!(!F::Deadlock.interrupts());
    assert!(F::GuestTrap.interrupts() && F::Deadline.interrupts());
}
