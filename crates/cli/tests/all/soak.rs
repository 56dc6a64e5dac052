//! `warden run --repeat N --handles H`: the soak aid, through the binary.

use crate::common::{assert_said, events, hostile, named, repo, run, stderr, stdout, write};

#[test]
fn repeat_with_handles_releases_every_handle_once_per_cycle() {
    let o = run(&[
        "run",
        &hostile(),
        "--invoke",
        "answer",
        "--repeat",
        "40",
        "--handles",
        "3",
        "--events",
        "json",
    ]);
    let stderr = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout(&o), "answer: 42\n");
    assert!(
        stderr.contains("warden: handles 120 opened, 120 released"),
        "{stderr}"
    );
    assert!(stderr.contains("domains left 0"), "{stderr}");
    let events = events(&stderr);
    assert_eq!(named(&events, "handle_released").len(), 120);
    let unloaded = named(&events, "domain_unloaded");
    assert_eq!(unloaded.len(), 40);
    assert!(unloaded.iter().all(|e| e["handles_released"] == 3));
}

#[test]
fn without_handles_no_handle_line_is_printed() {
    let o = run(&["run", &hostile(), "--invoke", "answer", "--repeat", "3"]);
    let stderr = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("3 cycles"), "{stderr}");
    assert!(!stderr.contains("handles"), "{stderr}");
}

#[test]
fn handles_must_be_a_number() {
    let o = run(&["run", &hostile(), "--invoke", "answer", "--handles", "many"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn the_soak_guest_takes_locks_and_reservations_and_leaves_nothing() {
    let o = run(&[
        "run",
        &repo("guests/soak.wat"),
        // Locks are `synchronization`, beyond the default `external`.
        "--grant",
        "external,synchronization",
        "--invoke",
        "cycle",
        "--repeat",
        "100",
        "--handles",
        "2",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(stdout(&o), "cycle: 0\n");
    assert!(err.contains("100 cycles"), "{err}");
    assert!(err.contains("domains left 0"), "{err}");
    assert!(err.contains("handles 200 opened, 200 released"), "{err}");
}

/// `--handles` past what a domain's handle table can hold is refused at entry, not after
/// opening 8 million handles one by one (12 s and 1.6 GB).
#[test]
fn too_many_soak_handles_are_refused_at_entry() {
    let guest = write("answer.wat", r#"(module (func (export "f")))"#);
    let o = run(&["run", &guest, "--invoke", "f", "--handles", "4294967295"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_said(&o, "--handles: at most 8388608");
    let o = run(&["run", &guest, "--invoke", "f", "--handles", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
