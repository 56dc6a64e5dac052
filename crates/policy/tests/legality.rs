//! The legality matrix, exhaustively: every operation × action (default and on-timeout) and
//! every failure × action, through the predicates, the setters and the file parser, against
//! a table copied independently from DESIGN.md §3.

use std::time::Duration;

use warden_policy::{
    Action, Failure, Operation, Policy, PolicyError, Preset, allows_critical_escalation,
};

/// The severity order, written out again rather than taken from the crate.
const ORDER: [&str; 10] = [
    "none",
    "throw",
    "abort",
    "rude-abort",
    "unload-domain",
    "rude-unload-domain",
    "exit-process",
    "fast-exit-process",
    "rude-exit-process",
    "disable-runtime",
];

/// DESIGN §3, operations: (operation, default action may be, action on timeout may be).
/// Includes Warden's deviation: rude aborts may time out into rude-unload-domain.
const OPERATIONS: [(&str, &str, &str); 7] = [
    ("abort", "abort …", "rude-abort …"),
    (
        "rude-abort",
        "rude-abort, rude-unload-domain …",
        "rude-unload-domain, exit-process …",
    ),
    (
        "rude-abort-critical",
        "rude-abort, rude-unload-domain …",
        "rude-unload-domain, exit-process …",
    ),
    ("unload-domain", "unload-domain …", "rude-unload-domain …"),
    (
        "rude-unload-domain",
        "rude-unload-domain …",
        "exit-process …",
    ),
    ("process-exit", "exit-process …", "fast-exit-process …"),
    ("finalizer-run", "none, abort …", "none, abort …"),
];

/// DESIGN §3, failures: (failure, action may be), with the CLR defaults that are legal
/// regardless (orphaned-lock = none) and Warden's range for stack-overflow.
const FAILURES: [(&str, &str); 8] = [
    ("noncritical-resource", "throw …"),
    ("critical-resource", "throw …"),
    ("stack-overflow", "throw …"),
    ("orphaned-lock", "none, unload-domain …"),
    ("fatal-runtime", "rude-exit-process, disable-runtime"),
    ("deadline", "throw …"),
    ("deadlock", "throw …"),
    ("guest-trap", "throw …"),
];

/// Expands "a, b …" into the set of names: "b …" is b and every more severe action.
fn expand(spec: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    for item in spec.split(", ") {
        if let Some(from) = item.strip_suffix(" …") {
            let start = ORDER
                .iter()
                .position(|a| *a == from)
                .expect("name in ORDER");
            out.extend_from_slice(&ORDER[start..]);
        } else {
            out.push(*ORDER.iter().find(|a| **a == item).expect("name in ORDER"));
        }
    }
    out
}

fn allowed(spec: &str, action: Action) -> bool {
    expand(spec).contains(&action.to_string().as_str())
}

#[test]
fn vocabulary_is_design_s() {
    let names: Vec<String> = Action::ALL.iter().map(ToString::to_string).collect();
    assert_eq!(names, ORDER);
    // Declaration order is the severity order.
    assert!(Action::ALL.windows(2).all(|w| w[0] < w[1]));
    let ops: Vec<String> = Operation::ALL.iter().map(ToString::to_string).collect();
    assert_eq!(ops, OPERATIONS.map(|o| o.0));
    let failures: Vec<String> = Failure::ALL.iter().map(ToString::to_string).collect();
    assert_eq!(failures, FAILURES.map(|f| f.0));
}

#[test]
fn operation_defaults_match_the_table() {
    for (op_name, defaults, _) in OPERATIONS {
        let op: Operation = op_name.parse().unwrap();
        for &a in Action::ALL {
            let legal = allowed(defaults, a);
            assert_eq!(op.allows_default(a), legal, "[defaults] {op} = {a}");
            assert_eq!(op.allowed_defaults().contains(&a), legal);

            let mut p = Policy::default();
            let set = p.set_default(op, a);
            assert_eq!(set.is_ok(), legal, "set_default({op}, {a})");
            if legal {
                assert_eq!(p.operation(op).default, a);
            } else {
                assert_eq!(p, Policy::default(), "a refused setter changes nothing");
            }

            let file = format!("[defaults]\n{op} = \"{a}\"\n");
            match Policy::from_toml_str(&file) {
                Ok(p) => {
                    assert!(legal, "file accepted illegal {file}");
                    assert_eq!(p.operation(op).default, a);
                }
                Err(e) => {
                    assert!(!legal, "file refused legal {file}: {e}");
                    assert_illegal(&e, &format!("[defaults] {op}"), a, defaults);
                }
            }
        }
    }
}

#[test]
fn timeout_actions_match_the_table() {
    for (op_name, _, timeouts) in OPERATIONS {
        let op: Operation = op_name.parse().unwrap();
        for &a in Action::ALL {
            let legal = allowed(timeouts, a);
            assert_eq!(op.allows_on_timeout(a), legal, "[timeouts] {op} -> {a}");
            assert_eq!(op.allowed_on_timeout().contains(&a), legal);

            // Finite and infinite timeouts are checked alike.
            for after in [Some(Duration::from_secs(3)), None] {
                let mut p = Policy::default();
                let set = p.set_timeout(op, after, a);
                assert_eq!(set.is_ok(), legal, "set_timeout({op}, {after:?}, {a})");
                if legal {
                    assert_eq!(p.operation(op).timeout, after);
                    assert_eq!(p.operation(op).on_timeout, a);
                } else {
                    assert_eq!(p, Policy::default(), "a refused setter changes nothing");
                }
            }

            let file = format!("[timeouts]\n{op} = {{ after = \"3s\", action = \"{a}\" }}\n");
            match Policy::from_toml_str(&file) {
                Ok(p) => {
                    assert!(legal, "file accepted illegal {file}");
                    assert_eq!(p.operation(op).on_timeout, a);
                    assert_eq!(p.operation(op).timeout, Some(Duration::from_secs(3)));
                }
                Err(e) => {
                    assert!(!legal, "file refused legal {file}: {e}");
                    assert_illegal(&e, &format!("[timeouts] {op}.action"), a, timeouts);
                }
            }
        }
    }
}

#[test]
fn failure_actions_match_the_table() {
    for (f_name, actions) in FAILURES {
        let f: Failure = f_name.parse().unwrap();
        for &a in Action::ALL {
            let legal = allowed(actions, a);
            assert_eq!(f.allows(a), legal, "[failures] {f} = {a}");
            assert_eq!(f.allowed().contains(&a), legal);

            let mut p = Policy::default();
            assert_eq!(p.set_failure(f, a).is_ok(), legal, "set_failure({f}, {a})");
            if legal {
                assert_eq!(p.failure(f), a);
            } else {
                assert_eq!(p, Policy::default());
            }

            let file = format!("[failures]\n{f} = \"{a}\"\n");
            match Policy::from_toml_str(&file) {
                Ok(p) => {
                    assert!(legal, "file accepted illegal {file}");
                    assert_eq!(p.failure(f), a);
                }
                Err(e) => {
                    assert!(!legal, "file refused legal {file}: {e}");
                    assert_illegal(&e, &format!("[failures] {f}"), a, actions);
                }
            }
        }
    }
}

#[test]
fn clr_defaults_are_always_legal() {
    for &op in Operation::ALL {
        assert!(op.allows_default(op.clr_default()), "{op}");
    }
    for &f in Failure::ALL {
        if let Some(a) = f.clr_default() {
            assert!(f.allows(a), "{f}");
        }
    }
    assert_eq!(Failure::OrphanedLock.clr_default(), Some(Action::None));
    assert_eq!(Failure::Deadline.clr_default(), None);
}

#[test]
fn critical_escalation_accepts_every_action() {
    for &a in Action::ALL {
        assert!(allows_critical_escalation(a));
        let mut p = Policy::preset(Preset::Clr);
        p.set_critical_escalation(a).unwrap();
        assert_eq!(p.critical_escalation(), a);
        let p = Policy::from_toml_str(&format!("critical-escalation = \"{a}\"")).unwrap();
        assert_eq!(p.critical_escalation(), a);
    }
}

/// The error names the key, the value, and exactly the allowed actions, in the message too.
fn assert_illegal(e: &PolicyError, key: &str, value: Action, spec: &str) {
    let PolicyError::Illegal {
        key: k,
        value: v,
        allowed,
    } = e
    else {
        panic!("expected Illegal, got {e:?}");
    };
    assert_eq!(k, key);
    assert_eq!(*v, value);
    let names: Vec<String> = allowed.iter().map(ToString::to_string).collect();
    let expected = expand(spec);
    assert_eq!(names, expected);
    assert_eq!(
        e.to_string(),
        format!(
            "illegal policy: {key} = \"{value}\": allowed actions are {}",
            expected.join(", ")
        )
    );
    assert_eq!(e.key(), Some(key));
}

#[test]
fn setter_errors_name_the_file_key() {
    let mut p = Policy::default();
    let e = p
        .set_default(Operation::UnloadDomain, Action::Abort)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "illegal policy: [defaults] unload-domain = \"abort\": allowed actions are unload-domain, \
         rude-unload-domain, exit-process, fast-exit-process, rude-exit-process, disable-runtime"
    );
    let e = p
        .set_failure(Failure::OrphanedLock, Action::Throw)
        .unwrap_err();
    assert_eq!(e.key(), Some("[failures] orphaned-lock"));
    assert!(
        e.to_string()
            .contains("allowed actions are none, unload-domain,")
    );
}
