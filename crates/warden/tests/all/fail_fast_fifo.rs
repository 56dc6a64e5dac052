//! Review of issue #16: fail-fast exits at once, whatever its report file is. A FIFO that
//! no one reads blocked the report (and so the exit) for ever.

use crate::common;
use std::sync::mpsc;
use std::time::Duration;
use warden::exit_code;

/// A bound on "it ends", never a speed claim.
const ENDS_WITHIN: Duration = Duration::from_secs(60);

#[cfg(unix)]
#[test]
fn a_fail_fast_report_to_a_fifo_no_one_reads_does_not_block_the_exit() {
    let dir = std::env::temp_dir().join(format!("warden-ff-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("report");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let (rt, rec) = common::runtime();
    rt.set_fail_fast_report(&fifo);
    let (tx, rx) = mpsc::channel();
    let failing = rt.clone();
    std::thread::spawn(move || {
        failing.fail_fast("a test's broken invariant");
        let _ = tx.send(());
    });
    rx.recv_timeout(ENDS_WITHIN)
        .expect("fail-fast returned (its exit fn records instead of exiting)");
    assert!(rt.is_exiting());
    assert!(
        rec.exits
            .lock()
            .unwrap()
            .iter()
            .all(|&c| c == exit_code::FATAL)
    );
    let _ = std::fs::remove_file(&fifo);
}
