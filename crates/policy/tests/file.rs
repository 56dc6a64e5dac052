//! The policy file: order of application, every refusal (naming its key), `from_file`,
//! `load`, and the shipped example.

use std::path::{Path, PathBuf};
use std::time::Duration;

use warden_policy::{Action, Failure, Operation, Policy, PolicyError, Preset};

fn err(text: &str) -> PolicyError {
    Policy::from_toml_str(text).expect_err(text)
}

#[test]
fn preset_first_then_overrides() {
    // Written before the preset, applied after it.
    let p = Policy::from_toml_str(
        "critical-escalation = \"rude-unload-domain\"\n\
         [failures]\norphaned-lock = \"none\"\n\
         [defaults]\nunload-domain = \"rude-unload-domain\"\n\
         [timeouts]\nabort = { after = \"250ms\" }\n\
         process-exit = { action = \"disable-runtime\" }\n",
    )
    .unwrap();
    let mut expected = Policy::default();
    expected
        .set_critical_escalation(Action::RudeUnloadDomain)
        .unwrap();
    expected
        .set_failure(Failure::OrphanedLock, Action::None)
        .unwrap();
    expected
        .set_default(Operation::UnloadDomain, Action::RudeUnloadDomain)
        .unwrap();
    // `action` omitted: the preset's is kept; `after` omitted: likewise.
    expected
        .set_timeout(
            Operation::Abort,
            Some(Duration::from_millis(250)),
            Action::RudeAbort,
        )
        .unwrap();
    expected
        .set_timeout(
            Operation::ProcessExit,
            Some(Duration::from_secs(25)),
            Action::DisableRuntime,
        )
        .unwrap();
    assert_eq!(p, expected);

    let clr =
        Policy::from_toml_str("preset = \"clr\"\n[timeouts]\nabort = { after = \"1s\" }").unwrap();
    assert_eq!(clr.base_preset(), Preset::Clr);
    // The clr preset's timeout action, now that the timeout is finite.
    assert_eq!(
        clr.operation(Operation::Abort).on_timeout,
        Action::RudeAbort
    );
    assert_eq!(clr.failure(Failure::OrphanedLock), Action::None);
}

#[test]
fn design_example_is_legal() {
    let p = Policy::from_toml_str(
        r#"
preset = "server"                       # the preset to start from (default: server), then override
critical-escalation = "unload-domain"

[defaults]                              # operation -> default action
rude-abort-critical = "rude-unload-domain"

[timeouts]                              # operation -> bound and action on expiry
abort = { after = "30s", action = "rude-abort" }
process-exit = { after = "40s", action = "rude-exit-process" }

[failures]                              # failure -> action
critical-resource = "unload-domain"
deadline = "abort"
"#,
    )
    .unwrap();
    assert_eq!(
        p.operation(Operation::RudeAbortCritical).default,
        Action::RudeUnloadDomain
    );
    assert_eq!(
        p.operation(Operation::Abort).timeout,
        Some(Duration::from_secs(30))
    );
}

#[test]
fn infinite_timeouts_and_table_syntax() {
    let p = Policy::from_toml_str(
        "[timeouts.unload-domain]\nafter = \"infinite\"\naction = \"exit-process\"\n",
    )
    .unwrap();
    let o = p.operation(Operation::UnloadDomain);
    assert_eq!((o.timeout, o.on_timeout), (None, Action::ExitProcess));
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let cases = [
        (
            "frobnicate = 1",
            "frobnicate",
            "preset, critical-escalation",
        ),
        (
            "[default]\nabort = \"abort\"",
            "[default]",
            "[defaults], [timeouts], [failures]",
        ),
        (
            "[defaults]\nthread-abort = \"abort\"",
            "[defaults] thread-abort",
            "abort, rude-abort, rude-abort-critical",
        ),
        (
            "[failures]\nout-of-memory = \"throw\"",
            "[failures] out-of-memory",
            "noncritical-resource, critical-resource",
        ),
        (
            "[timeouts]\nteardown = { after = \"1s\" }",
            "[timeouts] teardown",
            "finalizer-run",
        ),
        (
            "[timeouts]\nabort = { after = \"1s\", then = \"rude-abort\" }",
            "[timeouts] abort.then",
            "after, action",
        ),
    ];
    for (text, key, expected) in cases {
        let e = err(text);
        assert!(matches!(e, PolicyError::UnknownKey { .. }), "{text}: {e:?}");
        assert_eq!(e.key(), Some(key), "{text}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("unknown key {key}: expected one of ")),
            "{msg}"
        );
        assert!(msg.contains(expected), "{msg}");
    }
}

#[test]
fn unknown_names_are_refused_with_the_choices() {
    let e = err("preset = \"sql\"");
    assert_eq!(e.key(), Some("preset"));
    assert_eq!(
        e.to_string(),
        "preset = \"sql\": unknown preset; expected one of server, clr, sqlserver, fail-fast"
    );
    let e = err("[failures]\ndeadline = \"kill\"");
    assert_eq!(e.key(), Some("[failures] deadline"));
    assert_eq!(
        e.to_string(),
        "[failures] deadline = \"kill\": unknown action; expected one of none, throw, abort, \
         rude-abort, unload-domain, rude-unload-domain, exit-process, fast-exit-process, \
         rude-exit-process, disable-runtime"
    );
    for (text, key) in [
        (
            "critical-escalation = \"Unload-Domain\"",
            "critical-escalation",
        ),
        ("[defaults]\nabort = \"\"", "[defaults] abort"),
        (
            "[timeouts]\nabort = { action = \"later\" }",
            "[timeouts] abort.action",
        ),
    ] {
        let e = err(text);
        assert!(
            matches!(e, PolicyError::UnknownName { .. }),
            "{text}: {e:?}"
        );
        assert_eq!(e.key(), Some(key));
    }
}

#[test]
fn wrong_types_are_refused() {
    let cases = [
        ("preset = 1", "preset", "a string", "integer"),
        (
            "critical-escalation = [\"abort\"]",
            "critical-escalation",
            "a string",
            "array",
        ),
        ("defaults = \"abort\"", "[defaults]", "a table", "string"),
        (
            "[failures]\ndeadline = true",
            "[failures] deadline",
            "a string",
            "boolean",
        ),
        (
            "[timeouts]\nabort = \"30s\"",
            "[timeouts] abort",
            "a table like",
            "string",
        ),
        (
            "[timeouts]\nabort = { after = 30 }",
            "[timeouts] abort.after",
            "a duration string",
            "integer",
        ),
        (
            "[timeouts]\nabort = { action = 3.5 }",
            "[timeouts] abort.action",
            "a string",
            "float",
        ),
    ];
    for (text, key, expected, found) in cases {
        let e = err(text);
        assert!(matches!(e, PolicyError::WrongType { .. }), "{text}: {e:?}");
        assert_eq!(e.key(), Some(key), "{text}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("{key}: expected {expected}")),
            "{msg}"
        );
        assert!(msg.ends_with(&format!("found a {found}")), "{msg}");
    }
}

#[test]
fn bad_durations_are_refused_with_the_key() {
    for bad in [
        "soon",
        "-5s",
        "30",
        "5 parsecs",
        "1e3s",
        "99999999999999999999999h",
        "",
    ] {
        let text = format!("[timeouts]\nabort = {{ after = \"{bad}\" }}");
        let e = err(&text);
        assert!(
            matches!(e, PolicyError::BadDuration { .. }),
            "{text}: {e:?}"
        );
        assert_eq!(e.key(), Some("[timeouts] abort.after"));
        assert!(
            e.to_string()
                .starts_with(&format!("[timeouts] abort.after = \"{bad}\": ")),
            "{e}"
        );
    }
}

#[test]
fn syntax_errors_keep_line_and_column() {
    let e = err("preset = \"server\"\n[failures\n");
    assert!(matches!(e, PolicyError::Syntax(_)), "{e:?}");
    assert_eq!(e.key(), None);
    let msg = e.to_string();
    assert!(msg.contains("line 2, column"), "{msg}");
    // Duplicate keys are a TOML error too.
    let e = err("[failures]\ndeadline = \"abort\"\ndeadline = \"throw\"\n");
    assert!(e.to_string().contains("line 3"), "{e}");
}

#[test]
fn illegal_choices_are_checked_after_overrides() {
    // The first illegal value in file order is reported.
    let e =
        err("[failures]\nfatal-runtime = \"exit-process\"\n[defaults]\nprocess-exit = \"abort\"");
    assert_eq!(e.key(), Some("[defaults] process-exit"));
    let e = err("[failures]\nfatal-runtime = \"exit-process\"");
    assert_eq!(
        e.to_string(),
        "illegal policy: [failures] fatal-runtime = \"exit-process\": allowed actions are \
         rude-exit-process, disable-runtime"
    );
    // Warden's deviation: a rude abort may time out into rude-unload-domain, not unload-domain.
    assert!(
        Policy::from_toml_str("[timeouts]\nrude-abort = { action = \"rude-unload-domain\" }")
            .is_ok()
    );
    let e = err("[timeouts]\nrude-abort-critical = { action = \"unload-domain\" }");
    assert_eq!(e.key(), Some("[timeouts] rude-abort-critical.action"));
    // An infinite timeout's action is checked all the same.
    let e = err("[timeouts]\nunload-domain = { after = \"infinite\", action = \"abort\" }");
    assert_eq!(e.key(), Some("[timeouts] unload-domain.action"));
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn from_file_names_the_file() {
    let good = temp_file("good.toml", "preset = \"fail-fast\"\n");
    assert_eq!(
        Policy::from_file(&good).unwrap(),
        Policy::preset(Preset::FailFast)
    );

    let bad = temp_file("bad.toml", "[failures]\norphaned-lock = \"throw\"\n");
    let e = Policy::from_file(&bad).unwrap_err();
    assert!(matches!(e, PolicyError::InFile { .. }), "{e:?}");
    assert_eq!(e.key(), Some("[failures] orphaned-lock"));
    assert!(
        e.to_string().starts_with(&format!(
            "{}: illegal policy: [failures] orphaned-lock",
            bad.display()
        )),
        "{e}"
    );

    let missing = good.with_file_name("missing.toml");
    let e = Policy::from_file(&missing).unwrap_err();
    assert!(matches!(e, PolicyError::Io { .. }), "{e:?}");
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
}

#[test]
fn load_takes_a_preset_or_a_file() {
    for &p in Preset::ALL {
        assert_eq!(Policy::load(&p.to_string()).unwrap(), Policy::preset(p));
    }
    let file = temp_file(
        "load.toml",
        "preset = \"clr\"\n[failures]\ndeadline = \"throw\"\n",
    );
    let loaded = Policy::load(file.to_str().unwrap()).unwrap();
    assert_eq!(loaded.base_preset(), Preset::Clr);
    assert_eq!(loaded.failure(Failure::Deadline), Action::Throw);

    // A bare word that is neither: the message lists the presets.
    let e = Policy::load("sqlsrever").unwrap_err();
    assert!(matches!(e, PolicyError::NotPresetOrFile { .. }), "{e:?}");
    assert!(
        e.to_string().contains("server, clr, sqlserver, fail-fast"),
        "{e}"
    );
    // Something that looks like a path: the message is about the file.
    let e = Policy::load("/nonexistent/policy.toml").unwrap_err();
    assert!(matches!(e, PolicyError::Io { .. }), "{e:?}");
    // A file with an error: named.
    let bad = temp_file("load-bad.toml", "preset = \"nope\"");
    let e = Policy::load(bad.to_str().unwrap()).unwrap_err();
    assert!(e.to_string().contains("load-bad.toml"), "{e}");
    assert_eq!(e.key(), Some("preset"));
}

#[test]
fn shipped_example_is_legal_and_sqlserver_like() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sqlserver-like.toml");
    let p = Policy::from_file(&path).unwrap();
    assert_eq!(p.base_preset(), Preset::Clr);
    assert_eq!(p.decide(Failure::NoncriticalResource, false), Action::Throw);
    for &f in Failure::ALL.iter().filter(|f| f.interrupts()) {
        assert!(p.decide(f, true) >= Action::UnloadDomain, "{f}");
    }
    let abort = p.operation(Operation::Abort);
    assert_eq!(abort.timeout, Some(Duration::from_secs(30)));
    assert_eq!(p.resolve(abort.on_timeout), Action::UnloadDomain);
    // Every wait is bounded; process-exit keeps the CLR's 40 s.
    for &op in Operation::ALL {
        assert!(p.operation(op).timeout.is_some(), "{op}");
    }
    assert_eq!(
        p.operation(Operation::ProcessExit).timeout,
        Some(Duration::from_secs(40))
    );
}
