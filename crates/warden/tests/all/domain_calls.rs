//! Calls between domains (`domain_call`, `Domain::call_bytes`, `Domain::link`): values copied,
//! hostile callees contained, the caller left with a clean code and still running.

use crate::common::{self, runtime, wait_until};
use std::time::Duration;
use warden::domain_call::{CALLEE_FAILED, DOMAIN_UNLOADED};
use warden::host::{BAD_ARGUMENT, DEADLOCK_VICTIM};
use warden::{CallError, CallOptions, Domain, DomainConfig, Runtime, Val};

/// The callee: byte exports of each kind. `inc` adds 1 to every byte of its argument.
const CALLEE: &str = r#"
(module
  (import "warden" "sleep_ms" (func $sleep (param i64) (result i32)))
  (memory (export "memory") 1)
  (func (export "warden_alloc") (param $len i32) (result i32) (i32.const 1024))
  (func $pack (param $p i32) (param $l i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32))
            (i64.extend_i32_u (local.get $l))))
  (func (export "inc") (param $p i32) (param $l i32) (result i64) (local $i i32)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $l)))
      (i32.store8 (i32.add (local.get $p) (local.get $i))
        (i32.add (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 1)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (call $pack (local.get $p) (local.get $l)))
  (func (export "spin") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0))
  (func (export "trap") (param i32 i32) (result i64) unreachable)
  (func (export "nap") (param i32 i32) (result i64)
    (drop (call $sleep (i64.const 60000))) (i64.const 0))
  (func (export "outside") (param i32 i32) (result i64) (call $pack (i32.const 65000) (i32.const 4096)))
  (func (export "not_bytes") (result i32) (i32.const 0)))
"#;

/// The caller: `go(export_ptr, export_len, timeout_ms)` calls export (a name in its data) of
/// link "peer" with the argument "abc", the result at 200 (capacity 64); `out(i)` reads it.
const CALLER: &str = r#"
(module
  (import "warden" "domain_call" (func $call
    (param i32 i32 i32 i32 i32 i32 i32 i32 i64) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "peer")
  (data (i32.const 32) "inc")
  (data (i32.const 40) "spin")
  (data (i32.const 48) "trap")
  (data (i32.const 56) "nap")
  (data (i32.const 64) "nope")
  (data (i32.const 72) "not_bytes")
  (data (i32.const 88) "outside")
  (data (i32.const 100) "abc")
  ;; For the component callee: its exports and WAVE arguments.
  (data (i32.const 120) "add")
  (data (i32.const 128) "boom")
  (data (i32.const 136) "(40, 2)")
  (data (i32.const 152) "(x)")
  (func (export "go") (param $e i32) (param $el i32) (param $ms i64) (result i32)
    (call $call (i32.const 0) (i32.const 4) (local.get $e) (local.get $el)
      (i32.const 100) (i32.const 3) (i32.const 200) (i32.const 64) (local.get $ms)))
  (func (export "go_bad_buffer") (result i32)
    (call $call (i32.const 0) (i32.const 4) (i32.const 32) (i32.const 3)
      (i32.const 100) (i32.const 3) (i32.const 65530) (i32.const 64) (i64.const -1)))
  (func (export "raw") (param i32 i32 i32 i32 i32 i32 i32 i32 i64) (result i32)
    (call $call (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)
      (local.get 5) (local.get 6) (local.get 7) (local.get 8)))
  (func (export "out") (param $i i32) (result i32)
    (i32.load8_u (i32.add (i32.const 200) (local.get $i)))))
"#;

/// Where each export's name is in `CALLER`'s data.
fn name(export: &str) -> (i32, i32) {
    let at = match export {
        "inc" => 32,
        "spin" => 40,
        "trap" => 48,
        "nap" => 56,
        "nope" => 64,
        "not_bytes" => 72,
        "outside" => 88,
        _ => panic!("no such name in CALLER: {export}"),
    };
    (at, export.len() as i32)
}

fn go_args(export: &str, timeout_ms: i64) -> Vec<Val> {
    let (at, len) = name(export);
    vec![Val::I32(at), Val::I32(len), Val::I64(timeout_ms)]
}

async fn go(caller: &Domain, export: &str, timeout_ms: i64) -> i32 {
    caller
        .invoke("go", &go_args(export, timeout_ms), CallOptions::default())
        .await
        .expect("the caller's call succeeds whatever the callee does")
        .values[0]
        .unwrap_i32()
}

async fn pair(rt: &Runtime) -> (Domain, Domain) {
    let callee = rt.load_module(CALLEE.as_bytes()).unwrap();
    let caller = rt.load_module(CALLER.as_bytes()).unwrap();
    let callee = rt
        .create_domain(&callee, DomainConfig::default())
        .await
        .unwrap();
    let caller = rt
        .create_domain(&caller, DomainConfig::default())
        .await
        .unwrap();
    caller.link("peer", &callee).unwrap();
    (caller, callee)
}

async fn out(caller: &Domain, n: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for i in 0..n {
        let v = caller
            .invoke("out", &[Val::I32(i as i32)], CallOptions::default())
            .await
            .unwrap();
        bytes.push(v.values[0].unwrap_i32() as u8);
    }
    bytes
}

/// Outcomes of the calls of `domain`, in order.
fn outcomes(rec: &common::Recorder, domain: &Domain) -> Vec<String> {
    rec.named("call_finished")
        .into_iter()
        .filter(|e| e["domain"] == domain.id().0)
        .map(|e| e["outcome"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_argument_and_result_are_copied_between_memories() {
    let (rt, rec) = runtime();
    let (caller, callee) = pair(&rt).await;
    assert_eq!(go(&caller, "inc", -1).await, 3);
    assert_eq!(out(&caller, 3).await, b"bcd");
    // One hop each way in the caller's events; the callee ran a call of its own.
    let call = &rec.named("domain_call")[0];
    assert_eq!(call["callee_domain"], callee.id().0);
    assert_eq!(call["export"], "inc");
    let back = &rec.named("domain_call_returned")[0];
    assert_eq!(back["callee_call"], call["callee_call"]);
    assert_eq!(back["code"], 0);
    assert_eq!(outcomes(&rec, &callee), ["ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedder_makes_the_same_call_with_call_bytes() {
    let (rt, _rec) = runtime();
    let (_caller, callee) = pair(&rt).await;
    let output = callee
        .call_bytes("inc", b"hello", CallOptions::default())
        .unwrap()
        .join()
        .await
        .unwrap();
    assert_eq!(output.bytes, b"ifmmp");
    // A function that is not a byte export is refused before it runs, naming it.
    let err = callee
        .call_bytes("not_bytes", b"", CallOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("not_bytes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_past_its_timeout_is_minus_1_and_both_domains_go_on() {
    let (rt, rec) = runtime();
    let (caller, callee) = pair(&rt).await;
    assert_eq!(go(&caller, "spin", 100).await, warden::host::TIMEOUT);
    assert_eq!(outcomes(&rec, &callee), ["timeout"]);
    assert_eq!(go(&caller, "inc", -1).await, 3);
    assert!(callee.is_loaded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_callee_is_minus_10_to_its_caller() {
    let (rt, rec) = runtime();
    let (caller, callee) = pair(&rt).await;
    assert_eq!(go(&caller, "trap", -1).await, CALLEE_FAILED);
    assert_eq!(outcomes(&rec, &callee), ["trap"]);
    // A callee that breaks the ABI (a result outside its memory) fails its own call too.
    assert_eq!(go(&caller, "outside", -1).await, CALLEE_FAILED);
    assert_eq!(outcomes(&rec, &caller), ["ok", "ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_and_missing_links_cost_the_callee_nothing() {
    let (rt, rec) = runtime();
    let (caller, callee) = pair(&rt).await;
    assert_eq!(go(&caller, "nope", -1).await, BAD_ARGUMENT);
    assert_eq!(go(&caller, "not_bytes", -1).await, BAD_ARGUMENT);
    let bad = caller
        .invoke("go_bad_buffer", &[], CallOptions::default())
        .await
        .unwrap();
    assert_eq!(bad.values[0].unwrap_i32(), BAD_ARGUMENT);
    assert!(outcomes(&rec, &callee).is_empty(), "the callee ran no call");
    // Not linked: not permitted.
    assert!(caller.unlink("peer"));
    assert_eq!(go(&caller, "inc", -1).await, warden::host::NOT_PERMITTED);
    assert!(caller.link("", &callee).is_err());
}

/// Absurd sizes and offsets in every buffer of `domain_call`: each is `-8` at once, the
/// callee never runs and the caller goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_sizes_in_domain_call_are_bad_arguments() {
    let (rt, rec) = runtime();
    let (caller, callee) = pair(&rt).await;
    let good = [0, 4, 32, 3, 100, 3, 200, 64];
    let max = i32::MAX;
    let absurd: &[(usize, i32)] = &[
        (1, max),     // link length
        (1, 0),       // empty link name
        (0, -1),      // link pointer
        (3, 1 << 20), // export name past the 256-byte bound
        (5, max),     // argument length
        (4, -4096),   // argument pointer
        (5, -1),      // argument length
        (7, max),     // result capacity
        (6, 65535),   // result buffer past the end of memory
        (7, -1),      // result capacity
    ];
    for &(i, v) in absurd {
        let mut p = good;
        p[i] = v;
        let mut args: Vec<Val> = p.iter().map(|&x| Val::I32(x)).collect();
        args.push(Val::I64(-1));
        let r = caller.invoke("raw", &args, CallOptions::default()).await;
        assert_eq!(
            r.unwrap().values[0].unwrap_i32(),
            BAD_ARGUMENT,
            "param {i} = {v}"
        );
    }
    assert!(outcomes(&rec, &callee).is_empty(), "the callee ran no call");
    assert_eq!(go(&caller, "inc", -1).await, 3);
    let mut args: Vec<Val> = good.iter().map(|&x| Val::I32(x)).collect();
    args.push(Val::I64(-1));
    assert_eq!(
        caller
            .invoke("raw", &args, CallOptions::default())
            .await
            .unwrap()
            .values[0]
            .unwrap_i32(),
        3,
        "the same call with sane sizes works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloading_the_callee_mid_call_is_minus_9_and_the_caller_keeps_running() {
    let (rt, rec) = runtime();
    let (caller, callee) = pair(&rt).await;
    let call = caller
        .call("go", &go_args("nap", -1), CallOptions::default())
        .unwrap();
    wait_until("the callee runs the nap", || callee.is_busy()).await;
    callee.unload().await;
    let r = call.join().await.unwrap().values[0].unwrap_i32();
    assert_eq!(r, DOMAIN_UNLOADED);
    // Later calls through the link are refused the same way; the caller is fine.
    assert_eq!(go(&caller, "inc", -1).await, DOMAIN_UNLOADED);
    drop(callee);
    assert_eq!(go(&caller, "inc", -1).await, DOMAIN_UNLOADED);
    assert_eq!(outcomes(&rec, &caller), ["ok", "ok", "ok"]);
    assert!(caller.is_loaded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_a_waiting_caller_aborts_its_callee_call_too() {
    let (rt, rec) = runtime();
    let (caller, callee) = pair(&rt).await;
    let call = caller
        .call("go", &go_args("nap", -1), CallOptions::default())
        .unwrap();
    wait_until("the callee runs the nap", || callee.is_busy()).await;
    call.abort();
    assert_eq!(call.join().await.unwrap_err(), CallError::Aborted);
    wait_until("the callee's call ends", || !callee.is_busy()).await;
    wait_until("the callee's call is reported", || {
        outcomes(&rec, &callee) == ["aborted"]
    })
    .await;
    // Both domains serve their next call.
    assert_eq!(go(&caller, "inc", -1).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_past_its_deadline_ends_timeout_and_ends_the_runaway_callee_call() {
    let (rt, rec) = runtime();
    let (caller, callee) = pair(&rt).await;
    let options = CallOptions {
        deadline: Some(Duration::from_millis(200)),
        ..Default::default()
    };
    let r = caller.invoke("go", &go_args("spin", -1), options).await;
    assert!(
        matches!(r, Err(warden::Error::Call(CallError::Timeout))),
        "{r:?}"
    );
    wait_until("the callee's call is reported", || {
        outcomes(&rec, &callee) == ["aborted"]
    })
    .await;
    assert_eq!(go(&caller, "inc", -1).await, 3);
}

/// A relay with a hop count: the first argument byte is how many more hops to make.
const HOPS: &str = r#"
(module
  (import "warden" "domain_call" (func $call
    (param i32 i32 i32 i32 i32 i32 i32 i32 i64) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "next")
  (data (i32.const 16) "relay")
  (func (export "warden_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "relay") (param $p i32) (param $l i32) (result i64) (local $r i32)
    (if (i32.eqz (i32.load8_u (local.get $p)))
      (then (return (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32))
                            (i64.const 1)))))
    (i32.store8 (local.get $p) (i32.sub (i32.load8_u (local.get $p)) (i32.const 1)))
    (local.set $r (call $call (i32.const 0) (i32.const 4) (i32.const 16) (i32.const 5)
      (local.get $p) (i32.const 1) (i32.const 200) (i32.const 64) (i64.const -1)))
    (if (i32.lt_s (local.get $r) (i32.const 0))
      (then (i32.store (i32.const 200) (local.get $r)) (local.set $r (i32.const 4))))
    (i64.or (i64.shl (i64.const 200) (i64.const 32)) (i64.extend_i32_u (local.get $r)))))
"#;

/// Three domains in a ring, each relaying to the next (9 hops asked): the third call would
/// wait for the first, which waits for it. One call is the victim (-2); the others complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_of_three_domains_is_a_deadlock_with_one_victim() {
    let (rt, rec) = runtime();
    let m = rt.load_module(HOPS.as_bytes()).unwrap();
    let mut ring = Vec::new();
    for _ in 0..3 {
        ring.push(rt.create_domain(&m, DomainConfig::default()).await.unwrap());
    }
    for i in 0..3 {
        ring[i].link("next", &ring[(i + 1) % 3]).unwrap();
    }
    let output = ring[0]
        .call_bytes("relay", &[9], CallOptions::default())
        .unwrap()
        .join()
        .await
        .expect("the ring's first call completes");
    // The victim's code, relayed back through the ring. Which call closes the ring depends
    // on when each began its wait (normally the third); there is exactly one.
    assert_eq!(output.bytes, DEADLOCK_VICTIM.to_le_bytes());
    assert_eq!(rec.named("deadlock_detected").len(), 1);
    let victims = rec
        .named("domain_call_returned")
        .into_iter()
        .filter(|e| e["code"] == DEADLOCK_VICTIM)
        .count();
    assert_eq!(victims, 1);
    for d in &ring {
        wait_until("the ring's domains are idle", || !d.is_busy()).await;
        assert!(d.is_loaded());
    }
    // The abort of the abandoned request went down the chain at once: the request queued
    // behind the ring's first call was aborted before it could run (no second lap).
    wait_until("every request is reported", || {
        rec.named("call_finished").len() == 4
    })
    .await;
    assert_eq!(rec.named("call_started").len(), 3);
    // No wait-for edge is left: the ring runs again the same way.
    let again = ring[1]
        .call_bytes("relay", &[9], CallOptions::default())
        .unwrap()
        .join()
        .await
        .unwrap();
    assert_eq!(again.bytes, DEADLOCK_VICTIM.to_le_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_calling_itself_is_its_own_deadlock_victim() {
    let (rt, rec) = runtime();
    let m = rt.load_module(HOPS.as_bytes()).unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    d.link("next", &d).unwrap();
    let output = d
        .call_bytes("relay", &[9], CallOptions::default())
        .unwrap()
        .join()
        .await
        .unwrap();
    assert_eq!(output.bytes, DEADLOCK_VICTIM.to_le_bytes());
    // The victim's request, queued behind its own caller, was aborted and never ran.
    wait_until("the queued request is reported", || {
        outcomes(&rec, &d).len() == 2
    })
    .await;
    assert_eq!(outcomes(&rec, &d), ["ok", "aborted"]);
    assert_eq!(rec.named("call_started").len(), 1);
    // The link is weak: dropping the domain's last handle still unloads it.
    drop(d);
    wait_until("the domain is gone", || rt.domain_count() == 0).await;
}

/// A component caller: `go` calls byte export `inc` of link "peer" with "abc" through
/// `warden:host/domains.call`; it returns `1000 * len + first byte`, or `-10 - error-code`
/// (the enum's index: `not-permitted` is 3).
const COMPONENT_CALLER_WIT: &str = r#"
package warden:xguest;

world caller {
  import warden:host/domains@0.1.0;
  export go: func() -> s32;
}
"#;

const COMPONENT_CALLER_WAT: &str = r#"
(module
  (import "warden:host/domains@0.1.0" "call"
    (func $call (param i32 i32 i32 i32 i32 i32 i32 i64 i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.add (local.get 3) (i32.const 8))))
    (local.get $p))
  (data (i32.const 0) "peer")
  (data (i32.const 16) "inc")
  (data (i32.const 32) "abc")
  (func (export "go") (result i32)
    (call $call (i32.const 0) (i32.const 4) (i32.const 16) (i32.const 3)
      (i32.const 32) (i32.const 3) (i32.const 0) (i64.const 0) (i32.const 64))
    (if (result i32) (i32.load8_u (i32.const 64))
      (then (i32.sub (i32.const -10) (i32.load8_u (i32.const 68))))
      (else (i32.add (i32.mul (i32.load (i32.const 72)) (i32.const 1000))
                     (i32.load8_u (i32.load (i32.const 68))))))))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_calls_a_linked_domain_through_warden_host() {
    use warden::wasmtime::component::Val as CVal;
    let (rt, rec) = runtime();
    let bytes =
        common::components::build_with_host(COMPONENT_CALLER_WIT, "caller", COMPONENT_CALLER_WAT);
    let caller = rt.load_module(&bytes).unwrap();
    let caller = rt
        .create_domain(&caller, DomainConfig::default())
        .await
        .unwrap();
    let callee = rt.load_module(CALLEE.as_bytes()).unwrap();
    let callee = rt
        .create_domain(&callee, DomainConfig::default())
        .await
        .unwrap();
    let go = || caller.invoke_component("go", &[], CallOptions::default());
    // Not linked yet: not-permitted (index 3).
    assert_eq!(go().await.unwrap().component_values, [CVal::S32(-13)]);
    caller.link("peer", &callee).unwrap();
    assert_eq!(
        go().await.unwrap().component_values,
        [CVal::S32(3000 + i32::from(b'b'))]
    );
    assert_eq!(outcomes(&rec, &callee), ["ok"]);
}

/// A component callee: typed exports, called with WIT values as WAVE text.
const COMPONENT_CALLEE: &str = r#"
(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
    (func (export "boom") (result i32) unreachable))
  (core instance $i (instantiate $m))
  (func (export "add") (param "a" s32) (param "b" s32) (result s32)
    (canon lift (core func $i "add")))
  (func (export "boom") (result s32) (canon lift (core func $i "boom"))))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_callee_takes_and_returns_wit_values_as_wave() {
    let (rt, rec) = runtime();
    let callee = rt.load_module(COMPONENT_CALLEE.as_bytes()).unwrap();
    let callee = rt
        .create_domain(&callee, DomainConfig::default())
        .await
        .unwrap();
    let caller = rt.load_module(CALLER.as_bytes()).unwrap();
    let caller = rt
        .create_domain(&caller, DomainConfig::default())
        .await
        .unwrap();
    caller.link("peer", &callee).unwrap();
    // `raw` with export and argument (pointer, length) pairs in CALLER's data.
    let go = |e: (i32, i32), i: (i32, i32)| {
        let mut args: Vec<Val> = [0, 4, e.0, e.1, i.0, i.1, 200, 64]
            .into_iter()
            .map(Val::I32)
            .collect();
        args.push(Val::I64(-1));
        let caller = caller.clone();
        async move {
            caller
                .invoke("raw", &args, CallOptions::default())
                .await
                .unwrap()
                .values[0]
                .unwrap_i32()
        }
    };
    assert_eq!(go((120, 3), (136, 7)).await, 2);
    assert_eq!(out(&caller, 2).await, b"42");
    // Arguments that are not WAVE of the export's types cost the callee nothing.
    assert_eq!(go((120, 3), (152, 3)).await, BAD_ARGUMENT);
    assert_eq!(outcomes(&rec, &callee), ["ok"]);
    // A trap ends a component's domain (the component model's rule); the caller goes on.
    assert_eq!(go((128, 4), (136, 0)).await, CALLEE_FAILED);
    assert_eq!(go((120, 3), (136, 7)).await, DOMAIN_UNLOADED);
    assert!(caller.is_loaded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloading_a_waiting_caller_aborts_its_callee_call_and_leaves_the_callee_serving() {
    let (rt, rec) = runtime();
    let (caller, callee) = pair(&rt).await;
    let call = caller
        .call("go", &go_args("nap", -1), CallOptions::default())
        .unwrap();
    wait_until("the callee runs the nap", || callee.is_busy()).await;
    let report = tokio::time::timeout(common::ENDS_WITHIN, caller.unload())
        .await
        .expect("the unload ends");
    assert!(!caller.is_loaded(), "{report:?}");
    assert_eq!(call.join().await.unwrap_err(), CallError::DomainUnloaded);
    wait_until("the callee's call is reported", || {
        outcomes(&rec, &callee) == ["aborted"]
    })
    .await;
    let again = callee
        .call_bytes("inc", b"a", CallOptions::default())
        .unwrap()
        .join()
        .await
        .unwrap();
    assert_eq!(again.bytes, b"b");
}

/// Many concurrent relays of random lengths around a ring of four domains, some aborted:
/// rings close and open all the time. Every call ends, no wait-for edge or lock is left, and
/// every domain serves a call afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_relays_around_a_ring_all_end() {
    let (rt, rec) = runtime();
    let m = rt.load_module(HOPS.as_bytes()).unwrap();
    let mut ring = Vec::new();
    for _ in 0..4 {
        ring.push(rt.create_domain(&m, DomainConfig::default()).await.unwrap());
    }
    for i in 0..4 {
        ring[i].link("next", &ring[(i + 1) % 4]).unwrap();
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut calls = Vec::new();
    for i in 0..200 {
        let hops = (next() % 7) as u8;
        let d = &ring[(next() % 4) as usize];
        let call = d
            .call_bytes("relay", &[hops], CallOptions::default())
            .unwrap();
        if i % 7 == 3 {
            call.abort();
        }
        calls.push(call);
    }
    let mut ok = 0;
    for call in calls {
        let r = tokio::time::timeout(common::ENDS_WITHIN, call.join())
            .await
            .expect("every relay ends");
        ok += usize::from(r.is_ok());
    }
    assert!(ok > 0, "some relays complete");
    for d in &ring {
        wait_until("the ring is idle", || !d.is_busy()).await;
        let out = d
            .call_bytes("relay", &[0], CallOptions::default())
            .unwrap()
            .join()
            .await
            .unwrap();
        assert_eq!(out.bytes, [0]);
    }
    assert_eq!(rt.locks().lock_count(), 0);
    // One outcome per call started by the test or by a relay.
    let started = rec.named("domain_call").len() + 200 + 4;
    wait_until("every call is reported", || {
        rec.named("call_finished").len() == started
    })
    .await;
}
