//! The embedder's host functions for component guests, typed from its own WIT by `bindgen!`
//! and registered with `HostFunctions::component`: values and WIT `result`s, per-domain
//! state, async functions ended by a deadline and by `abort()`, an uninterruptible part, a
//! panic contained as a trap of its call, and a missing import named.

use crate::common::{self, components};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use warden::host::{ComponentHost, Embedded, HostFunctions};
use warden::wasmtime::component::Val;
use warden::{CallError, CallOptions, DomainConfig, Error, RuntimeConfig};

mod bindings {
    wasmtime::component::bindgen!({
        path: "tests/all/fixtures/my-kv.wit",
        world: "plugin",
        imports: {
            "my:kv/store.wait": async,
            "my:kv/store.slow": async | trappable,
            default: trappable,
        },
    });
}
use bindings::my::kv::store;

/// One domain's state: its calls of `count`, and a signal that a wait began.
struct Kv {
    counted: u32,
    entered: Arc<Notify>,
}

impl store::Host for ComponentHost<'_, Kv> {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<String, String>> {
        Ok(match key.as_str() {
            "a" => Ok("1".into()),
            _ => Err(format!("no key `{key}`")),
        })
    }

    fn count(&mut self) -> wasmtime::Result<u32> {
        self.counted += 1;
        Ok(self.counted)
    }

    async fn wait(&mut self, ms: u64) {
        self.entered.notify_one();
        tokio::time::sleep(Duration::from_millis(ms)).await
    }

    async fn slow(&mut self, ms: u64) -> wasmtime::Result<u32> {
        let cx = self.call();
        let entered = self.entered.clone();
        // Told from inside the uninterruptible part, so an abort sent then is deferred by it.
        cx.uninterruptible(async move {
            entered.notify_one();
            tokio::time::sleep(Duration::from_millis(ms)).await
        })
        .await?;
        Ok(7)
    }

    fn boom(&mut self) -> wasmtime::Result<()> {
        panic!("the host function broke");
    }
}

const GUEST_WIT: &str = r#"
package test:plugin;

world guest {
  import my:kv/store@0.1.0;
  export lookup: func(key: string) -> result<string, string>;
  export count: func() -> u32;
  export wait: func(ms: u64);
  export slow: func(ms: u64) -> u32;
  export boom: func();
}

package my:kv@0.1.0 {
  interface store {
    get: func(key: string) -> result<string, string>;
    count: func() -> u32;
    wait: func(ms: u64);
    slow: func(ms: u64) -> u32;
    boom: func();
  }
}
"#;

const GUEST_WAT: &str = r#"
(module
  (import "my:kv/store@0.1.0" "get" (func $get (param i32 i32 i32)))
  (import "my:kv/store@0.1.0" "count" (func $count (result i32)))
  (import "my:kv/store@0.1.0" "wait" (func $wait (param i64)))
  (import "my:kv/store@0.1.0" "slow" (func $slow (param i64) (result i32)))
  (import "my:kv/store@0.1.0" "boom" (func $boom))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (func (export "cabi_realloc") (param i32 i32) (param $align i32) (param $size i32)
        (result i32)
    (local $p i32)
    (local.set $p (i32.and
      (i32.sub (i32.add (global.get $heap) (local.get $align)) (i32.const 1))
      (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))
  ;; The host writes result<string, string> at 64; the export returns it as it came.
  (func (export "lookup") (param i32 i32) (result i32)
    (call $get (local.get 0) (local.get 1) (i32.const 64))
    (i32.const 64))
  (func (export "count") (result i32) (call $count))
  (func (export "wait") (param i64) (call $wait (local.get 0)))
  (func (export "slow") (param i64) (result i32) (call $slow (local.get 0)))
  (func (export "boom") (call $boom))
)
"#;

fn guest() -> Vec<u8> {
    components::build(GUEST_WIT, "guest", GUEST_WAT)
}

/// A runtime with `my:kv/store`; `entered` is told when a wait begins.
fn runtime() -> (warden::Runtime, common::Recorder, Arc<Notify>) {
    let entered = Arc::new(Notify::new());
    let e = entered.clone();
    let mut host = HostFunctions::new();
    host.component(
        "my:kv/store",
        move |_domain| Kv {
            counted: 0,
            entered: e.clone(),
        },
        |linker, get| store::add_to_linker::<_, Embedded<Kv>>(linker, get),
    );
    let (rt, rec) = common::runtime_with(RuntimeConfig {
        host_functions: host,
        ..RuntimeConfig::default()
    });
    (rt, rec, entered)
}

async fn domain(rt: &warden::Runtime) -> warden::Domain {
    let m = rt.load_module(&guest()).expect("the guest loads");
    rt.create_domain(&m, DomainConfig::default())
        .await
        .expect("the domain is created with the embedder's interface linked")
}

fn one(out: Result<warden::CallOutput, Error>) -> Val {
    let out = out.expect("the call succeeds");
    assert_eq!(out.component_values.len(), 1);
    out.component_values.into_iter().next().unwrap()
}

fn s(x: &str) -> Val {
    Val::String(x.into())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_embedder_interface_returns_values_and_wit_errors() {
    let (rt, _rec, _) = runtime();
    let d = domain(&rt).await;
    let opts = CallOptions::default;
    assert_eq!(
        one(d.invoke_component("lookup", &[s("a")], opts()).await),
        Val::Result(Ok(Some(Box::new(s("1")))))
    );
    assert_eq!(
        one(d.invoke_component("lookup", &[s("zz")], opts()).await),
        Val::Result(Err(Some(Box::new(s("no key `zz`"))))),
        "a WIT error is a value, not a failure"
    );
    // The domain serves on after an error the guest was told.
    assert_eq!(
        one(d.invoke_component("lookup", &[s("a")], opts()).await),
        Val::Result(Ok(Some(Box::new(s("1")))))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_component_domain_has_its_own_embedder_state() {
    let (rt, _rec, _) = runtime();
    let a = domain(&rt).await;
    let b = domain(&rt).await;
    let count = |d: &warden::Domain| {
        let d = d.clone();
        async move {
            one(d
                .invoke_component("count", &[], CallOptions::default())
                .await)
        }
    };
    assert_eq!(count(&a).await, Val::U32(1));
    assert_eq!(count(&a).await, Val::U32(2));
    assert_eq!(count(&b).await, Val::U32(1), "b's state is not a's");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_async_embedder_function_is_ended_by_the_deadline() {
    let (rt, rec, _) = runtime();
    let d = domain(&rt).await;
    let started = Instant::now();
    let r = d
        .invoke_component(
            "wait",
            &[Val::U64(3_600_000)],
            CallOptions {
                deadline: Some(Duration::from_millis(100)),
                ..CallOptions::default()
            },
        )
        .await;
    assert!(
        matches!(r, Err(Error::Call(CallError::Timeout))),
        "{r:?} after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < common::ENDS_WITHIN);
    assert!(
        rec.named("call_finished")
            .iter()
            .any(|e| e["outcome"] == "timeout")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_async_embedder_function_is_ended_by_abort() {
    let (rt, _rec, entered) = runtime();
    let d = domain(&rt).await;
    let waiting = entered.notified();
    let call = d
        .call_component("wait", &[Val::U64(3_600_000)], CallOptions::default())
        .unwrap();
    tokio::time::timeout(common::ENDS_WITHIN, waiting)
        .await
        .expect("the host function was entered");
    call.abort();
    let r = tokio::time::timeout(common::ENDS_WITHIN, call.join())
        .await
        .expect("the abort ended the wait");
    assert_eq!(r.unwrap_err(), CallError::Aborted);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uninterruptible_part_defers_a_polite_abort_until_it_ends() {
    let (rt, rec, entered) = runtime();
    let d = domain(&rt).await;
    let waiting = entered.notified();
    let started = Instant::now();
    let call = d
        .call_component("slow", &[Val::U64(300)], CallOptions::default())
        .unwrap();
    tokio::time::timeout(common::ENDS_WITHIN, waiting)
        .await
        .expect("the host function was entered");
    call.abort();
    let r = tokio::time::timeout(common::ENDS_WITHIN, call.join())
        .await
        .expect("the call ended");
    assert_eq!(
        r.unwrap_err(),
        CallError::Aborted,
        "delivered when it ended"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the sleep ran to its end: {:?}",
        started.elapsed()
    );
    assert!(
        rec.named("abort_deferred")
            .iter()
            .any(|e| e["why"] == "host_call"),
        "{:?}",
        rec.named("abort_deferred")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_embedder_function_is_a_trap_of_that_call_only() {
    let (rt, _rec, _) = runtime();
    let d = domain(&rt).await;
    let other = domain(&rt).await;
    let r = d
        .invoke_component("boom", &[], CallOptions::default())
        .await;
    match r {
        Err(Error::Call(CallError::Trap { message, .. })) => {
            assert!(
                message.contains("panicked") && message.contains("the host function broke"),
                "{message}"
            )
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // A trapped component cannot be entered again: its domain ends, as after any trap.
    let report = tokio::time::timeout(common::ENDS_WITHIN, d.unloaded())
        .await
        .unwrap();
    assert!(!report.rude, "{report:?}");
    // Another domain, and the runtime, carry on.
    assert_eq!(
        one(other
            .invoke_component("count", &[], CallOptions::default())
            .await),
        Val::U32(1)
    );
    let fresh = domain(&rt).await;
    assert_eq!(
        one(fresh
            .invoke_component("lookup", &[s("a")], CallOptions::default())
            .await),
        Val::Result(Ok(Some(Box::new(s("1")))))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_embedder_interface_fails_create_domain_naming_it() {
    let (rt, _rec) = common::runtime();
    let m = rt.load_module(&guest()).unwrap();
    let err = rt
        .create_domain(&m, DomainConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Instantiate(_)), "{err:?}");
    assert!(err.to_string().contains("my:kv/store"), "{err}");
    assert_eq!(rt.domain_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interface_linked_twice_fails_the_runtime_naming_it() {
    let twice = || {
        let mut host = HostFunctions::new();
        for _ in 0..2 {
            host.component(
                "my:kv/store",
                |_| Kv {
                    counted: 0,
                    entered: Arc::new(Notify::new()),
                },
                |linker, get| store::add_to_linker::<_, Embedded<Kv>>(linker, get),
            );
        }
        host
    };
    let Err(err) = warden::Runtime::new(RuntimeConfig {
        host_functions: twice(),
        ..RuntimeConfig::default()
    }) else {
        panic!("an interface linked twice was accepted");
    };
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("my:kv/store"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_state_factory_fails_create_domain_naming_the_interface() {
    let mut host = HostFunctions::new();
    host.component(
        "my:kv/store",
        |_| -> Kv { panic!("no state today") },
        |linker, get| store::add_to_linker::<_, Embedded<Kv>>(linker, get),
    );
    let (rt, _rec) = common::runtime_with(RuntimeConfig {
        host_functions: host,
        ..RuntimeConfig::default()
    });
    let m = rt.load_module(&guest()).unwrap();
    let err = rt
        .create_domain(&m, DomainConfig::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("my:kv/store") && err.to_string().contains("no state today"),
        "{err}"
    );
    assert_eq!(rt.domain_count(), 0);
}
