//! The guest SDKs. The C SDK end to end: `sdk/c/examples/transfer.c` is compiled with clang against
//! wasi-libc and run through the binary. Two calls cross on host locks; the one chosen as
//! the deadlock victim backs out, the other completes, and both finalizers run.
//!
//! Needs clang with the wasm32 builtins and wasi-libc (Debian: `clang lld wasi-libc
//! libclang-rt-dev-wasm32`, which `.ci/run` installs). Where they are absent the test says so
//! and passes, except when `CI` is set: there, absence is a failure.

use crate::common::{self, events, named, repo, run, stderr};
use std::path::Path;
use std::process::Command;

/// How to compile for wasm32-wasi here: clang's arguments, or why it cannot be done.
fn toolchain() -> Result<Vec<String>, String> {
    let ask = |args: &[&str]| -> Result<String, String> {
        let o = Command::new("clang")
            .args(args)
            .output()
            .map_err(|e| format!("clang: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "clang {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    ask(&["--version"])?;
    let mut base = vec!["--target=wasm32-wasi".to_string()];
    // Debian puts wasi-libc in the multiarch paths clang searches by default; wasi-sdk and
    // other distributions use a sysroot.
    let sysroot = Path::new("/usr/share/wasi-sysroot");
    if sysroot.is_dir() {
        base.push(format!("--sysroot={}", sysroot.display()));
    }
    let found = |what: &str, flag: &str| -> Result<(), String> {
        let args: Vec<&str> = base.iter().map(String::as_str).chain([flag]).collect();
        let path = ask(&args)?;
        if Path::new(&path).is_absolute() && Path::new(&path).exists() {
            Ok(())
        } else {
            Err(format!("{what} not found (clang looked for {path})"))
        }
    };
    found("wasi-libc", "-print-file-name=libc.a")?;
    found("the wasm32 compiler-rt builtins", "-print-libgcc-file-name")?;
    Ok(base)
}

#[test]
fn the_c_example_backs_out_of_a_deadlock_and_runs_its_finalizers() {
    let base = match toolchain() {
        Ok(b) => b,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: no C toolchain for wasm32-wasi ({why})");
            return;
        }
        Err(why) => panic!("CI is set, and the C toolchain for wasm32-wasi is missing: {why}"),
    };
    let wasm = common::dir().join("transfer.wasm");
    let o = Command::new("clang")
        .args(&base)
        .args(["-O2", "-mexec-model=reactor", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(repo("sdk/c"))
        .arg(repo("sdk/c/examples/transfer.c"))
        .arg("-o")
        .arg(&wasm)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "compiling transfer.c: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    let w = wasm.display().to_string();
    let o = run(&[
        "run", &w, "--grant", "unsafe", "--invoke", "ab", "--invoke", "ba", "--events", "json",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out == "ab: -2\nba: 0\n" || out == "ab: 0\nba: -2\n",
        "one call backs out (-2), the other completes: {out}"
    );
    let events = events(&err);
    let named = |name: &str| named(&events, name);
    assert_eq!(named("deadlock_detected").len(), 1, "{err}");
    let logs: Vec<&str> = named("guest_log")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        logs.contains(&"deadlock victim, backing out of A: deadlock victim")
            || logs.contains(&"deadlock victim, backing out of B: deadlock victim"),
        "{logs:?}"
    );
    // Each domain's finalizer reports its own tally: the victim changed nothing, the other
    // moved 10 one way.
    let finals: Vec<&&str> = logs
        .iter()
        .filter(|m| m.starts_with("finalizer:"))
        .collect();
    assert_eq!(finals.len(), 2, "{logs:?}");
    assert!(
        finals.contains(&&"finalizer: 0 transferred, 1 backed out, A=100 B=100"),
        "{logs:?}"
    );
    assert!(
        finals.contains(&&"finalizer: 1 transferred, 0 backed out, A=90 B=110")
            || finals.contains(&&"finalizer: 1 transferred, 0 backed out, A=110 B=90"),
        "{logs:?}"
    );
    let ran = named("finalizer_ran");
    assert_eq!(ran.len(), 2, "{err}");
    assert!(ran.iter().all(|e| e["result"] == "ok"), "{err}");
    // Backing out left nothing held: no lock was released by the unloads.
    for e in named("domain_unloaded") {
        assert_eq!(e["locks_released"], 0, "{err}");
        assert_eq!(e["reservations_released"], 0, "{err}");
    }
}

/// `sdk/wit/warden-host.wit` is a valid WIT package that mirrors DESIGN §4: every core import
/// has its function, and every core error code its `error-code` case.
#[test]
fn the_wit_package_parses_and_mirrors_the_core_imports() {
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve
        .push_path(repo("sdk/wit/warden-host.wit"))
        .unwrap_or_else(|e| panic!("sdk/wit/warden-host.wit: {e:?}"));
    let package = &resolve.packages[pkg];
    assert_eq!(package.name.to_string(), "warden:host@0.1.0");
    let functions = |iface: &str| -> Vec<String> {
        let id = package.interfaces[iface];
        let mut names: Vec<String> = resolve.interfaces[id].functions.keys().cloned().collect();
        names.sort();
        names
    };
    let expected: &[(&str, &[&str])] = &[
        (
            "regions",
            &[
                "abort-requested",
                "constrained-enter",
                "constrained-exit",
                "critical-enter",
                "critical-exit",
            ],
        ),
        ("locks", &["acquire", "release"]),
        ("memory-gate", &["release", "reserve"]),
        ("host", &["log", "sleep"]),
        ("handles", &["close"]),
        ("domains", &["call"]),
        ("finalizer", &["on-unload"]),
    ];
    for (iface, names) in expected {
        assert_eq!(functions(iface), *names, "interface {iface}");
    }
    // Every core import of `"warden"` is mirrored by one function above.
    let mirrored = expected.iter().map(|(_, n)| n.len()).sum::<usize>() - 1; // less on-unload
    let core: Vec<&str> = warden::host::IMPORTS.iter().map(|i| i.name).collect();
    assert_eq!(mirrored, core.len(), "core imports: {core:?}");

    let types = &resolve.interfaces[package.interfaces["types"]];
    let code = &resolve.types[types.types["error-code"]];
    let wit_parser::TypeDefKind::Enum(e) = &code.kind else {
        panic!("error-code is not an enum");
    };
    let cases: Vec<&str> = e.cases.iter().map(|c| c.name.as_str()).collect();
    for (value, meaning) in warden::host::ERROR_CODES {
        let case = match *value {
            -1 => &["timeout"][..],
            -2 => &["deadlock-victim"],
            -3 => &["aborted"],
            -4 => &[], // not an error in WIT: `acquired.poisoned`
            -5 => &["not-permitted"],
            -6 => &["already-held", "not-held"],
            -7 => &["insufficient-memory"],
            -8 => &["bad-argument"],
            -9 => &["domain-unloaded"],
            -10 => &["callee-failed"],
            other => panic!("core code {other} ({meaning}) has no WIT counterpart"),
        };
        for c in case {
            assert!(cases.contains(c), "{c} for {value} ({meaning}): {cases:?}");
        }
    }
    let locks = &resolve.interfaces[package.interfaces["locks"]];
    let acquired = &resolve.types[locks.types["acquired"]];
    assert!(
        matches!(&acquired.kind, wit_parser::TypeDefKind::Enum(e)
            if e.cases.iter().map(|c| c.name.as_str()).eq(["clean", "poisoned"])),
        "locks.acquired: {:?}",
        acquired.kind
    );
    assert!(package.worlds.contains_key("imports") && package.worlds.contains_key("guest"));
}
