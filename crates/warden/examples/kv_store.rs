//! A key-value store exposed to guests as the embedder's own imports.
//!
//! ```sh
//! cargo run -p warden --example kv_store
//! ```
//!
//! The host owns a store (`HashMap` behind a mutex) and gives guests three imports of
//! module `"kv"`: `put` and `get` (synchronous: short, bounded, with the guest's memory at
//! hand) and `wait_change` (asynchronous: waits until a key changes — a host wait that a
//! deadline, an abort or an unload ends like any other). A host bug (`get` of an oversized
//! key panics here on purpose) fails only that call, with a message naming the import.
//! `cargo test` runs [`demo`] (tests/example_kv_store.rs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use warden::{CallError, CallOptions, DomainConfig, Error, HostFunctions, Runtime, RuntimeConfig};

/// The guest: `store` puts `greeting = "hello, kv"`, `load` gets it into memory at 64 and
/// returns its length, `missing` looks up a key that is not there (-1), `watch` waits for a
/// change of `greeting`, `oversized` passes a 1 MiB key (the host's bug).
pub const GUEST: &str = r#"
(module
  (import "kv" "put" (func $put (param i32 i32 i32 i32) (result i32)))
  (import "kv" "get" (func $get (param i32 i32 i32 i32) (result i32)))
  (import "kv" "wait_change" (func $wait (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "greeting")
  (data (i32.const 16) "hello, kv")
  (data (i32.const 32) "nothing")
  (func (export "store") (result i32)
    (call $put (i32.const 0) (i32.const 8) (i32.const 16) (i32.const 9)))
  (func (export "load") (result i32)
    (call $get (i32.const 0) (i32.const 8) (i32.const 64) (i32.const 64)))
  (func (export "missing") (result i32)
    (call $get (i32.const 32) (i32.const 7) (i32.const 64) (i32.const 64)))
  (func (export "watch") (result i32)
    (call $wait (i32.const 0) (i32.const 8)))
  (func (export "oversized") (result i32)
    (call $get (i32.const 0) (i32.const 1048576) (i32.const 64) (i32.const 64))))
"#;

/// Longest key the store accepts; the `get` below "forgets" to check it and panics.
const MAX_KEY: usize = 1024;

/// The embedder's state: the store, and a notification per change.
#[derive(Default)]
pub struct Kv {
    map: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    changed: Notify,
}

/// The `"kv"` imports over `kv`.
pub fn kv_imports(kv: &Arc<Kv>) -> HostFunctions {
    let mut host = HostFunctions::new();
    let store = kv.clone();
    host.func(
        "kv",
        "put",
        move |cx, (kp, kl, vp, vl): (u32, u32, u32, u32)| {
            let key = cx.read_memory(kp, kl)?;
            let value = cx.read_memory(vp, vl)?;
            store.map.lock().unwrap().insert(key, value);
            store.changed.notify_waiters();
            Ok(0i32)
        },
    );
    let store = kv.clone();
    host.func(
        "kv",
        "get",
        move |cx, (kp, kl, out, cap): (u32, u32, u32, u32)| {
            // The host bug this example shows: a panic is caught and fails only this call.
            assert!(kl as usize <= MAX_KEY, "key of {kl} bytes");
            let key = cx.read_memory(kp, kl)?;
            let value = store.map.lock().unwrap().get(&key).cloned();
            match value {
                None => Ok(-1i32),
                Some(v) if v.len() > cap as usize => Ok(-8),
                Some(v) => {
                    cx.write_memory(out, &v)?;
                    Ok(v.len() as i32)
                }
            }
        },
    );
    let store = kv.clone();
    host.func_async("kv", "wait_change", move |_cx, (_kp, _kl): (u32, u32)| {
        let store = store.clone();
        async move {
            // A host wait: a deadline, abort() or unload drops this future here.
            store.changed.notified().await;
            Ok(0i32)
        }
    });
    host
}

/// What the demo saw.
#[derive(Debug)]
pub struct Summary {
    /// The value `load` read back.
    pub loaded: String,
    /// `missing`'s result (-1: not found).
    pub missing: i32,
    /// How `watch` ended under a 100 ms deadline.
    pub watch: CallError,
    /// The message of the call that hit the host's bug.
    pub bug: String,
    /// Whether the domain still served a call after all that.
    pub still_serving: bool,
}

/// Runs the guest against the store and reports what happened.
pub async fn demo() -> Result<Summary, Error> {
    let kv = Arc::new(Kv::default());
    let rt = Runtime::new(RuntimeConfig {
        host_functions: kv_imports(&kv),
        ..RuntimeConfig::default()
    })?;
    let module = rt.load_module(GUEST.as_bytes())?;
    let domain = rt.create_domain(&module, DomainConfig::default()).await?;
    let i32_of = |out: warden::CallOutput| out.values[0].unwrap_i32();

    assert_eq!(
        i32_of(domain.invoke("store", &[], CallOptions::default()).await?),
        0
    );
    let len = i32_of(domain.invoke("load", &[], CallOptions::default()).await?);
    let value = kv.map.lock().unwrap().get(&b"greeting"[..]).cloned();
    let loaded = String::from_utf8_lossy(&value.unwrap_or_default()[..len.max(0) as usize]).into();
    let missing = i32_of(
        domain
            .invoke("missing", &[], CallOptions::default())
            .await?,
    );

    let deadline = CallOptions {
        deadline: Some(Duration::from_millis(100)),
        ..CallOptions::default()
    };
    let watch = match domain.invoke("watch", &[], deadline).await {
        Err(Error::Call(e)) => e,
        other => panic!("watch should end at its deadline, got {other:?}"),
    };
    let bug = match domain
        .invoke("oversized", &[], CallOptions::default())
        .await
    {
        Err(Error::Call(CallError::Trap { message, .. })) => message,
        other => panic!("the host bug should fail the call, got {other:?}"),
    };
    let still_serving = domain
        .invoke("load", &[], CallOptions::default())
        .await
        .is_ok();
    domain.unload().await;
    Ok(Summary {
        loaded,
        missing,
        watch,
        bug,
        still_serving,
    })
}

#[allow(dead_code, reason = "the test includes this file for `demo` only")]
#[tokio::main]
async fn main() -> Result<(), Error> {
    let s = demo().await?;
    println!("load      -> {:?}", s.loaded);
    println!("missing   -> {}", s.missing);
    println!(
        "watch     -> {} (a host wait ended by the deadline)",
        s.watch
    );
    println!("oversized -> {}", s.bug);
    println!("the domain still serves calls: {}", s.still_serving);
    Ok(())
}
