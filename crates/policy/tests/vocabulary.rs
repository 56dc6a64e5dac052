//! Names, parsing, serde and the explain table.

use warden_policy::{Action, Failure, Operation, Policy, Preset};

#[test]
fn names_round_trip_and_unknown_names_list_the_choices() {
    for &a in Action::ALL {
        assert_eq!(a.to_string().parse::<Action>().unwrap(), a);
        assert_eq!(a.name(), a.to_string());
    }
    for &o in Operation::ALL {
        assert_eq!(o.to_string().parse::<Operation>().unwrap(), o);
    }
    for &f in Failure::ALL {
        assert_eq!(f.to_string().parse::<Failure>().unwrap(), f);
    }
    assert_eq!(
        "rude-unload-domain".parse::<Action>().unwrap(),
        Action::RudeUnloadDomain
    );
    let e = "RudeUnloadDomain".parse::<Action>().unwrap_err();
    assert_eq!(e.kind, "action");
    assert_eq!(e.value, "RudeUnloadDomain");
    assert!(
        e.to_string()
            .starts_with("unknown action \"RudeUnloadDomain\": expected one of none, throw,")
    );
    let e = "oom".parse::<Failure>().unwrap_err();
    assert!(
        e.to_string()
            .contains("noncritical-resource, critical-resource"),
        "{e}"
    );
    let e = "exit".parse::<Operation>().unwrap_err();
    assert!(e.to_string().contains("process-exit"), "{e}");
}

#[test]
fn display_pads_for_tables() {
    assert_eq!(format!("[{:<8}]", Action::Throw), "[throw   ]");
}

#[test]
fn serde_uses_the_same_names() {
    let v = toml::Value::try_from(Action::RudeAbort).unwrap();
    assert_eq!(v.as_str(), Some("rude-abort"));
    #[derive(Debug, serde::Deserialize)]
    struct Event {
        failure: Failure,
        operation: Operation,
        preset: Preset,
    }
    let e: Event = toml::from_str(
        "failure = \"guest-trap\"\noperation = \"finalizer-run\"\npreset = \"sqlserver\"",
    )
    .unwrap();
    assert_eq!(
        (e.failure, e.operation, e.preset),
        (
            Failure::GuestTrap,
            Operation::FinalizerRun,
            Preset::SqlServer
        )
    );
    let bad =
        toml::from_str::<Event>("failure = \"oops\"\noperation = \"abort\"\npreset = \"clr\"");
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("unknown failure \"oops\"")
    );
}

#[test]
fn explain_lists_every_row_with_final_actions() {
    let mut p = Policy::preset(Preset::Server);
    p.set_default(Operation::UnloadDomain, Action::RudeUnloadDomain)
        .unwrap();
    let text = p.explain();
    assert!(
        text.starts_with("policy based on preset `server`\ncritical-escalation: unload-domain"),
        "{text}"
    );
    let row = |name: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name} in\n{text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // failure, action, final, final (critical call)
    assert_eq!(
        row("critical-resource"),
        [
            "critical-resource",
            "unload-domain",
            "rude-unload-domain",
            "rude-unload-domain"
        ]
    );
    assert_eq!(
        row("guest-trap"),
        ["guest-trap", "throw", "throw", "rude-unload-domain"]
    );
    // operation, default, final, timeout, on timeout, final
    assert_eq!(
        row("unload-domain"),
        [
            "unload-domain",
            "rude-unload-domain",
            "rude-unload-domain",
            "30s",
            "rude-unload-domain",
            "rude-unload-domain"
        ]
    );
    assert_eq!(
        row("finalizer-run"),
        ["finalizer-run", "none", "none", "5s", "abort", "abort"]
    );
    let clr = Policy::preset(Preset::Clr).explain();
    assert!(
        clr.lines()
            .any(|l| l.starts_with("abort ") && l.contains("infinite")),
        "{clr}"
    );
    // Columns are aligned: every failure row has its second column at the same offset.
    let offsets: Vec<usize> = Failure::ALL
        .iter()
        .map(|f| {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{f} ")))
                .unwrap();
            line.len() - line[f.name().len()..].trim_start().len()
        })
        .collect();
    assert!(
        offsets.windows(2).all(|w| w[0] == w[1]),
        "{offsets:?}\n{text}"
    );
}
