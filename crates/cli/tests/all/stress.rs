//! `warden stress` through the binary: a tiny seeded run holds its invariants, an injected
//! leak is caught with a replay command that reproduces it, and bad input is refused clearly.

use crate::common::{assert_said, dir, output, stderr, warden, write};
use serde_json::Value;
use std::process::Output;

fn stress(args: &[&str], self_test: bool) -> Output {
    let mut cmd = warden();
    cmd.arg("stress").args(args);
    if self_test {
        cmd.env("WARDEN_STRESS_SELF_TEST", "1");
    } else {
        cmd.env_remove("WARDEN_STRESS_SELF_TEST");
    }
    output(&mut cmd)
}

fn report(name: &str) -> (String, impl Fn() -> Value) {
    let path = dir().join(name).display().to_string();
    let p = path.clone();
    (path, move || {
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
    })
}

#[test]
fn a_tiny_seeded_run_holds_every_invariant_and_reports_it() {
    let (path, read) = report("tiny.json");
    let plots = dir().join("plots");
    let o = stress(
        &[
            "--seed",
            "7",
            "--cycles",
            "24",
            "--concurrency",
            "4",
            "--exit-every",
            "12",
            "--differential",
            "--report",
            &path,
            "--plots",
            plots.to_str().unwrap(),
        ],
        false,
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let r = read();
    assert_eq!(r["invariants"]["ok"], true, "{r:#}");
    assert_eq!(r["invariants"]["violations"].as_array().unwrap().len(), 0);
    assert_eq!(r["cycles"], 24);
    assert_eq!(r["rounds"], 6);
    assert_eq!(r["run"]["seed"], 7);
    // Every call is counted under exactly one outcome of its kind.
    let kinds = r["kinds"].as_object().unwrap();
    let counted: u64 = kinds
        .values()
        .flat_map(|k| k["outcomes"].as_object().unwrap().values())
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(counted, r["calls"].as_u64().unwrap());
    assert!(counted > 0);
    let runs: u64 = kinds.values().map(|k| k["runs"].as_u64().unwrap()).sum();
    assert_eq!(runs, 24);
    // Exit races ran in child processes and ended with a racer's code or the watchdog's.
    assert!(r["exits"]["runs"].as_u64().unwrap() >= 1, "{r:#}");
    assert_eq!(r["exits"]["process_deaths"], 0);
    for name in ["rss", "latency", "outcomes"] {
        for ext in ["svg", "png"] {
            let f = plots.join(format!("{name}.{ext}"));
            assert!(std::fs::metadata(&f).unwrap().len() > 0, "{}", f.display());
        }
    }
    let png = std::fs::read(plots.join("rss.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
}

#[test]
fn a_users_module_is_mixed_in() {
    let module = write(
        "user.wat",
        r#"(module (func (export "echo") (param i32 i64) (result i32) local.get 0))"#,
    );
    let (path, read) = report("user.json");
    let o = stress(
        &[
            "--seed",
            "3",
            "--cycles",
            "32",
            "--concurrency",
            "4",
            "--exit-every",
            "0",
            "--no-generated",
            "--report",
            &path,
            &module,
        ],
        false,
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let r = read();
    assert_eq!(r["invariants"]["ok"], true, "{r:#}");
    assert!(r["kinds"]["user0"]["runs"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(r["generated"]["modules"], 0);
}

#[test]
fn an_injected_leak_is_a_violation_with_a_replay_command_that_reproduces_it() {
    let (path, read) = report("leak.json");
    let o = stress(
        &[
            "--seed",
            "11",
            "--cycles",
            "16",
            "--concurrency",
            "4",
            "--exit-every",
            "0",
            "--inject-leak-at",
            "6",
            "--report",
            &path,
        ],
        true,
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("memory-gate reservations left"), "{err}");
    let replay = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("replay: "))
        .unwrap_or_else(|| panic!("no replay line in: {err}"))
        .to_string();
    assert!(
        replay.starts_with("warden stress --seed 11 --from-cycle 4 --cycles 4 --concurrency 4"),
        "{replay}"
    );
    let r = read();
    assert_eq!(r["invariants"]["ok"], false);
    assert_eq!(r["invariants"]["violations"][0]["replay"], replay.as_str());
    // The printed command, run as printed, finds the same violation.
    let args: Vec<&str> = replay.split_whitespace().skip(2).collect();
    let again = stress(&args, true);
    assert_eq!(again.status.code(), Some(1), "stderr: {}", stderr(&again));
    assert!(stderr(&again).contains("memory-gate reservations left"));
}

#[test]
fn the_leak_injection_is_not_reachable_without_its_environment_variable() {
    let o = stress(&["--cycles", "4", "--inject-leak-at", "1"], false);
    assert_eq!(o.status.code(), Some(3));
    assert_said(&o, "WARDEN_STRESS_SELF_TEST=1");
}

#[test]
fn bad_input_is_refused_with_what_was_wrong() {
    let cases: &[(&[&str], &str)] = &[
        (&["--seed", "banana"], "--seed: `banana` is not a number"),
        (&["--duration", "soon"], "--duration"),
        (&["--duration", "0s"], "must be a positive duration"),
        (&["--cycles", "0"], "--cycles: must be at least 1"),
        (&["--concurrency", "0"], "--concurrency: must be 1 to 1024"),
        (
            &["--concurrency", "1025"],
            "--concurrency: must be 1 to 1024",
        ),
        (&["--max-memory", "lots"], "--max-memory"),
        (&["--policy", "nonsense-preset"], "nonsense-preset"),
    ];
    for (args, want) in cases {
        let o = stress(args, false);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    let broken = write("broken.wat", "(module (func (export \"f\") i32.add))");
    let o = stress(&["--cycles", "1", &broken], false);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_said(&o, "broken.wat: cannot load");
    let nothing = write(
        "nothing.wat",
        "(module (func (export \"f\") (param externref)))",
    );
    let o = stress(&["--cycles", "1", &nothing], false);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_said(&o, "no export to call");
}

/// With `cargo test -p warden-cli --features failpoints`: every round arms a failpoint, they
/// fire, and the run survives them with every invariant held.
#[cfg(feature = "failpoints")]
#[test]
fn failpoints_fire_and_are_survived() {
    let (path, read) = report("failpoints.json");
    let o = stress(
        &[
            "--seed",
            "5",
            "--cycles",
            "96",
            "--concurrency",
            "4",
            "--exit-every",
            "0",
            "--failpoint-rate",
            "1",
            "--report",
            &path,
        ],
        false,
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let r = read();
    assert_eq!(r["failpoints"]["compiled"], true);
    let points = r["failpoints"]["points"].as_object().unwrap();
    let hits: u64 = points.values().map(|p| p["hits"].as_u64().unwrap()).sum();
    assert!(hits > 0, "{r:#}");
    assert_eq!(r["invariants"]["ok"], true, "{r:#}");
}

/// With `--features failpoints`: the failpoints at the entry of the WASI layer (stdio writes
/// and reads, preview1 and preview2) and of the embedder's host functions fire in the bundled
/// mix (its `wasi_io`, `stalled_io`, `component_write` and `embedder` guests reach them), and
/// each is survived.
#[cfg(feature = "failpoints")]
#[test]
fn the_host_call_layer_failpoints_fire_and_are_survived() {
    let (path, read) = report("layer-failpoints.json");
    let o = stress(
        &[
            "--seed",
            "9",
            "--cycles",
            "192",
            "--concurrency",
            "8",
            "--exit-every",
            "0",
            "--no-generated",
            "--kind",
            "wasi_io",
            "--kind",
            "stalled_io",
            "--kind",
            "embedder",
            "--kind",
            "component_write",
            "--failpoint-rate",
            "1",
            "--failpoint",
            "wasi-write",
            "--failpoint",
            "wasi-read",
            "--failpoint",
            "embedder-entry",
            "--report",
            &path,
        ],
        false,
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let r = read();
    assert_eq!(r["invariants"]["ok"], true, "{r:#}");
    let points = r["failpoints"]["points"].as_object().unwrap();
    assert_eq!(points.len(), 3, "only the chosen ones are armed: {r:#}");
    assert_eq!(r["failpoints"]["covered"], 3, "{r:#}");
    assert_eq!(
        r["failpoints"]["not_covered"],
        serde_json::json!([]),
        "{r:#}"
    );
    let names = r["failpoints"]["names"].as_array().unwrap();
    for name in [
        "wasi-write",
        "wasi-read",
        "embedder-entry",
        "host-call-entry",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} is listed: {r:#}");
    }
    for name in ["wasi-write", "wasi-read", "embedder-entry"] {
        let p = &points[name];
        assert!(p["hits"].as_u64().unwrap() > 0, "{name}: {r:#}");
        assert!(p["survived_rounds"].as_u64().unwrap() > 0, "{name}: {r:#}");
    }
    // Preview2's write (a component's `blocking-write-and-flush` to stdout) reaches it too.
    let (p2, read_p2) = report("layer-failpoints-p2.json");
    let o = stress(
        &[
            "--seed",
            "4",
            "--cycles",
            "64",
            "--exit-every",
            "0",
            "--no-generated",
            "--failpoint-rate",
            "1",
            "--failpoint",
            "wasi-write",
            "--kind",
            "component_write",
            "--report",
            &p2,
        ],
        false,
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let r2 = read_p2();
    assert_eq!(r2["invariants"]["ok"], true, "{r2:#}");
    assert!(
        r2["failpoints"]["points"]["wasi-write"]["hits"]
            .as_u64()
            .unwrap()
            > 0,
        "{r2:#}"
    );
    // An injected embedder failure is a trap of that call, never more.
    let runs: u64 = ["wasi_io", "stalled_io", "embedder", "component_write"]
        .iter()
        .map(|k| r["kinds"][k]["runs"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(runs, 192, "only the chosen kinds run: {r:#}");
    let embedder = r["kinds"]["embedder"]["outcomes"].as_object().unwrap();
    assert!(embedder.contains_key("trap"), "{r:#}");
}

/// With `--features failpoints`: the entry of the embedder's `bindgen!` functions (the
/// `component_embedder` guest calls one synchronous and one asynchronous) fails, and each
/// failure is a trap of that call only: the round's invariants hold, and the kind also ends
/// ok in the rounds where the failpoint does not fire.
#[cfg(feature = "failpoints")]
#[test]
fn a_failing_component_embedder_function_traps_only_its_call() {
    let (path, read) = report("component-embedder-failpoint.json");
    let o = stress(
        &[
            "--seed",
            "11",
            "--cycles",
            "96",
            "--concurrency",
            "8",
            "--exit-every",
            "0",
            "--no-generated",
            "--kind",
            "component_embedder",
            "--failpoint-rate",
            "1",
            "--failpoint",
            "component-embedder-entry",
            "--report",
            &path,
        ],
        false,
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let r = read();
    assert_eq!(r["invariants"]["ok"], true, "{r:#}");
    let p = &r["failpoints"]["points"]["component-embedder-entry"];
    assert!(p["hits"].as_u64().unwrap() > 0, "{r:#}");
    assert!(p["survived_rounds"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(r["kinds"]["component_embedder"]["runs"], 96, "{r:#}");
    let outcomes = r["kinds"]["component_embedder"]["outcomes"]
        .as_object()
        .unwrap();
    assert!(outcomes.contains_key("trap"), "{r:#}");
    assert!(
        !stderr(&o).contains("panicked"),
        "an injected failure is not reported as a panic: {}",
        stderr(&o)
    );
}

#[test]
fn an_unknown_kind_or_failpoint_is_refused_naming_the_known_ones() {
    let o = stress(&["--cycles", "1", "--kind", "nope"], false);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_said(&o, "no kind `nope`");
    assert_said(&o, "wasi_io");
    let o = stress(&["--cycles", "1", "--failpoint", "nope"], false);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    if cfg!(feature = "failpoints") {
        assert!(e.contains("no failpoint `nope`"), "{e}");
        assert!(
            e.contains("wasi-write") && e.contains("embedder-entry"),
            "{e}"
        );
    } else {
        assert!(e.contains("no failpoints"), "{e}");
    }
}

/// Component guests are in the mix (built from WAT with wit-component at run time), each
/// kind counted and held to its expected outcome: a typed call's value (42) and the
/// `wasi:http` handler's status (200) are checked too, and the invariants are the same.
#[test]
fn component_kinds_are_mixed_in_counted_and_checked() {
    let (path, read) = report("components.json");
    let kinds = [
        "component_answer",
        "component_write",
        "component_loop",
        "component_trap",
        "component_hog",
        "component_embedder",
        "http_hello",
        "http_loop",
    ];
    let mut args = vec![
        "--seed",
        "4",
        "--cycles",
        "96",
        "--exit-every",
        "0",
        "--no-generated",
        "--failpoint-rate",
        "0",
        "--report",
        &path,
    ];
    for k in &kinds {
        args.extend(["--kind", k]);
    }
    let o = stress(&args, false);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let r = read();
    assert_eq!(r["invariants"]["ok"], true, "{r:#}");
    let mut runs = 0;
    for k in kinds {
        let n = r["kinds"][k]["runs"].as_u64().unwrap_or(0);
        assert!(n > 0, "{k} ran: {r:#}");
        runs += n;
    }
    assert_eq!(runs, 96, "{r:#}");
    let outcomes = |k: &str| r["kinds"][k]["outcomes"].as_object().unwrap().clone();
    assert!(
        outcomes("component_hog").contains_key("out_of_memory"),
        "{r:#}"
    );
    assert!(outcomes("component_trap").contains_key("trap"), "{r:#}");
    assert!(outcomes("component_answer").contains_key("ok"), "{r:#}");
    assert!(outcomes("component_write").contains_key("ok"), "{r:#}");
    // Its `bindgen!` functions answered (42 is checked) through the runtime's linker.
    assert!(outcomes("component_embedder").contains_key("ok"), "{r:#}");
    assert!(outcomes("http_hello").contains_key("ok"), "{r:#}");
    assert!(!outcomes("http_loop").contains_key("ok"), "{r:#}");
}
