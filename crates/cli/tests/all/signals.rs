//! How `warden run` ends: the orderly exit path when the foreground calls are done,
//! background calls that do not keep it alive, and SIGTERM/SIGINT (a second one is rude).

use crate::common::{Running, hostile, run, stderr, stdout, write};

const ORDERLY: [&str; 5] = [
    "stop_admitting",
    "exit_hooks",
    "finalizers",
    "critical_release",
    "exit",
];

/// The shutdown phases reported so far, in order.
fn phases(run: &Running) -> Vec<String> {
    run.named("shutdown_phase")
        .iter()
        .map(|e| e["phase"].as_str().unwrap().to_owned())
        .collect()
}

fn count(events: &[serde_json::Value], pred: impl Fn(&serde_json::Value) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

#[test]
fn a_first_signal_exits_in_order_with_117() {
    for sig in ["TERM", "INT"] {
        let mut run = Running::start(&[&hostile(), "--invoke", "spin", "--events", "json"]);
        run.wait_for("the call's start", |ev| {
            count(ev, |e| e["event"] == "call_started") == 1
        });
        run.signal(sig);
        let (status, _) = run.finish();
        assert_eq!(status.code(), Some(117), "SIG{sig}: {}", run.stderr());
        assert_eq!(phases(&run), ORDERLY, "SIG{sig}");
        let phases = run.named("shutdown_phase");
        assert!(phases.iter().all(|e| e["mode"] == "orderly"), "SIG{sig}");
        // The running call was neither unwound nor waited for, nor its domain unloaded.
        assert!(run.named("call_finished").is_empty(), "SIG{sig}");
        assert!(run.named("abort_requested").is_empty(), "SIG{sig}");
        assert!(run.named("domain_unloading").is_empty(), "SIG{sig}");
    }
}

#[test]
fn a_second_signal_exits_at_once_with_118() {
    // The background domain is idle at exit, so its finalizer runs in the finalizer phase,
    // and never returns; only a 10-minute watchdog would bound it.
    let guest = write(
        "finalizer-spins.wat",
        r#"(module
             (func (export "answer") (result i32) (i32.const 42))
             (func (export "spin") (loop $l (br $l)))
             (func (export "warden_on_unload") (loop $l (br $l))))"#,
    );
    let policy = write(
        "patient.toml",
        r#"[timeouts]
finalizer-run = { after = "infinite", action = "none" }
process-exit = { after = "10m", action = "rude-exit-process" }
"#,
    );
    let mut run = Running::start(&[
        &guest,
        "--invoke",
        "spin",
        "--background-invoke",
        "answer",
        "--policy",
        &policy,
        "--events",
        "json",
    ]);
    run.wait_for(
        "the background call's end and the foreground call's start",
        |ev| {
            count(ev, |e| {
                e["event"] == "call_finished" && e["outcome"] == "ok"
            }) == 1
                && count(ev, |e| e["event"] == "call_started") == 2
        },
    );
    run.signal("TERM");
    // The busy domain reports its skipped finalizer before the idle one's starts: wait for
    // both, so the second signal lands while the idle domain's finalizer spins.
    run.wait_for("the finalizer phase and the busy domain's skip", |ev| {
        count(ev, |e| {
            e["event"] == "shutdown_phase" && e["phase"] == "finalizers"
        }) == 1
            && count(ev, |e| e["event"] == "finalizer_ran") == 1
    });
    run.signal("TERM");
    let (status, stdout) = run.finish();
    assert_eq!(status.code(), Some(118), "{}", run.stderr());
    // The background call's result was printed when it finished.
    assert_eq!(stdout, "answer: 42\n");
    // Cut short in the finalizer phase: the finalizer never ended, nothing came after it.
    assert_eq!(phases(&run), ["stop_admitting", "exit_hooks", "finalizers"]);
    // The busy foreground domain skipped its finalizer; the idle one's never ended.
    let finalizers: Vec<_> = run
        .named("finalizer_ran")
        .iter()
        .map(|e| e["result"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(finalizers, ["skipped"]);
}

#[test]
fn background_calls_do_not_keep_the_run_alive() {
    let mut run = Running::start(&[
        &hostile(),
        "--invoke",
        "answer",
        "--background-invoke",
        "spin",
        "--events",
        "json",
    ]);
    let (status, stdout) = run.finish();
    assert_eq!(status.code(), Some(0), "{}", run.stderr());
    assert_eq!(stdout, "answer: 42\n");
    // The normal end is the orderly exit path, after the foreground domain's polite unload.
    assert_eq!(phases(&run), ORDERLY);
    let names: Vec<String> = run
        .events()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    let unloaded = names.iter().position(|n| n == "domain_unloaded").unwrap();
    let first_phase = names.iter().position(|n| n == "shutdown_phase").unwrap();
    assert!(unloaded < first_phase, "{names:?}");
    // The foreground call ended ok; the background spin was left running, or, when the exit
    // began before its domain was admitted (a race with a one-instruction foreground call),
    // it was refused `process_exiting`. Either way it did not hold the run.
    let outcomes: Vec<String> = run
        .named("call_finished")
        .iter()
        .map(|e| e["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        outcomes == ["ok"]
            || (outcomes.len() == 2
                && outcomes.iter().any(|o| o == "ok")
                && outcomes.iter().any(|o| o == "process_exiting")),
        "{outcomes:?}\n{}",
        run.stderr()
    );
}

#[test]
fn background_results_print_but_never_decide_the_exit_code() {
    let mut run = Running::start(&[
        &hostile(),
        "--invoke",
        "spin",
        "--deadline",
        "2s",
        "--background-invoke",
        "trap",
        "--background-invoke",
        "answer",
    ]);
    let (status, stdout) = run.finish();
    // The foreground call's outcome (timeout), not the background trap's.
    assert_eq!(status.code(), Some(106), "{}", run.stderr());
    assert_eq!(stdout, "answer: 42\n");
    let err = run.stderr();
    assert!(
        err.contains("warden: trap (background): guest trapped"),
        "{err}"
    );
    assert!(
        err.contains("warden: spin: call passed its deadline"),
        "{err}"
    );
}

#[test]
fn background_invoke_is_checked_and_documented() {
    let o = run(&[
        "run",
        &hostile(),
        "--invoke",
        "answer",
        "--background-invoke",
        "nope",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("no export `nope`"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let help = stdout(&run(&["run", "--help"]));
    assert!(help.contains("--background-invoke"), "{help}");
    assert!(help.contains("118"), "{help}");
}
