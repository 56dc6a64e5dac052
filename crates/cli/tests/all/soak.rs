//! `warden run --repeat N --handles H`: the soak aid, through the binary.

use crate::common;
use std::path::PathBuf;
use std::process::Command;

fn hostile() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../guests/hostile.wat")
        .display()
        .to_string()
}

#[test]
fn repeat_with_handles_releases_every_handle_once_per_cycle() {
    let o = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["run", &hostile(), "--invoke", "answer"])
        .args(["--repeat", "40", "--handles", "3", "--events", "json"])
        .output()
        .expect("run warden");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "answer: 42\n");
    assert!(
        stderr.contains("warden: handles 120 opened, 120 released"),
        "{stderr}"
    );
    assert!(stderr.contains("domains left 0"), "{stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let named = |n: &str| events.iter().filter(|e| e["event"] == n).count();
    assert_eq!(named("handle_released"), 120);
    assert_eq!(named("domain_unloaded"), 40);
    assert!(
        events
            .iter()
            .filter(|e| e["event"] == "domain_unloaded")
            .all(|e| e["handles_released"] == 3)
    );
}

#[test]
fn without_handles_no_handle_line_is_printed() {
    let o = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["run", &hostile(), "--invoke", "answer", "--repeat", "3"])
        .output()
        .expect("run warden");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("3 cycles"), "{stderr}");
    assert!(!stderr.contains("handles"), "{stderr}");
}

#[test]
fn handles_must_be_a_number() {
    let o = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["run", &hostile(), "--invoke", "answer", "--handles", "many"])
        .output()
        .expect("run warden");
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn the_soak_guest_takes_locks_and_reservations_and_leaves_nothing() {
    let o = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["run"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../guests/soak.wat"))
        // Locks are `synchronization`, beyond the default `external`.
        .args(["--grant", "external,synchronization"])
        .args(["--invoke", "cycle", "--repeat", "100", "--handles", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "cycle: 0\n");
    assert!(err.contains("100 cycles"), "{err}");
    assert!(err.contains("domains left 0"), "{err}");
    assert!(err.contains("handles 200 opened, 200 released"), "{err}");
}

/// `--handles` past what a domain's handle table can hold is refused at entry, not after
/// opening 8 million handles one by one (12 s and 1.6 GB).
#[test]
fn too_many_soak_handles_are_refused_at_entry() {
    let guest = common::write("answer.wat", r#"(module (func (export "f")))"#);
    let o = common::run(&["run", &guest, "--invoke", "f", "--handles", "4294967295"]);
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("--handles: at most 8388608"),
        "{}",
        common::stderr(&o)
    );
    let o = common::run(&["run", &guest, "--invoke", "f", "--handles", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
}
