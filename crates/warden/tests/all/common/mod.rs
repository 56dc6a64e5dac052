//! Shared helpers for the runtime's integration tests.
#![allow(dead_code)]

pub mod components;

use std::sync::{Arc, Mutex};
use warden::{Event, Runtime, RuntimeConfig};

/// A runtime with the default (`server`) policy, events recorded.
pub fn runtime() -> (Runtime, Recorder) {
    runtime_with(RuntimeConfig::default())
}

/// A runtime with `config`, events recorded. Exit actions are recorded instead of exiting.
pub fn runtime_with(mut config: RuntimeConfig) -> (Runtime, Recorder) {
    let rec = Recorder::default();
    let exits = rec.exits.clone();
    config.exit = Arc::new(move |code| exits.lock().unwrap().push(code));
    let rt = Runtime::new(config).expect("runtime");
    let sink = rec.events.clone();
    rt.subscribe(move |e| sink.lock().unwrap().push(e.clone()));
    (rt, rec)
}

/// Collects events and exit requests.
#[derive(Clone, Default)]
pub struct Recorder {
    pub events: Arc<Mutex<Vec<Event>>>,
    pub exits: Arc<Mutex<Vec<i32>>>,
}

impl Recorder {
    /// The JSON of every event so far.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| serde_json::from_str(&e.to_json()).unwrap())
            .collect()
    }

    /// Events named `name`.
    pub fn named(&self, name: &str) -> Vec<serde_json::Value> {
        self.json()
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    }
}

/// The exit fn's calls once an exit has ended: exits run on the shutdown coordinator's
/// thread, and the exit fn is the sequence's last act.
pub async fn exited(rt: &Runtime, rec: &Recorder) -> Vec<i32> {
    let bound = std::time::Duration::from_secs(30);
    tokio::time::timeout(bound, rt.wait_exit())
        .await
        .expect("the exit ends");
    let until = std::time::Instant::now() + bound;
    while rec.exits.lock().unwrap().is_empty() && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    rec.exits.lock().unwrap().clone()
}

/// A guest with one friendly export and one of each kind of hostility.
pub const HOSTILE: &str = r#"
(module
  (memory (export "memory") 1)
  (global $n (mut i32) (i32.const 0))
  (func (export "answer") (result i32) (i32.const 42))
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func (export "count") (result i32)
    (global.set $n (i32.add (global.get $n) (i32.const 1))) (global.get $n))
  (func (export "spin") (loop $l (br $l)))
  (func $recurse (export "recurse") (result i32) (i32.add (call $recurse) (i32.const 1)))
  (func (export "hog")
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable)
  (func (export "hog_then_ok") (result i32)
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    (i32.const 7))
  (func (export "trap") (result i32) (i32.div_u (i32.const 1) (i32.const 0))))
"#;

/// Far beyond any bound a test sets: the limit of "it happens" waits on a loaded 2-core box.
pub const ENDS_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits until `cond` holds (polled), failing the test with `what` after [`ENDS_WITHIN`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let polled = async {
        while !cond() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    };
    if tokio::time::timeout(ENDS_WITHIN, polled).await.is_err() {
        panic!("timed out waiting until {what}");
    }
}
