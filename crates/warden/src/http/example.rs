//! The bundled example: a `wasi:http/proxy` component with one friendly route and one route
//! per hostility, built at run time from core WAT ([`WAT`]) and WIT ([`WIT`], over the
//! `wasi:http@0.2.12` package that wasmtime-wasi-http 48 ships, vendored in
//! `crates/warden/wit/http/`) with `wit-component`, so no wasm toolchain is needed.
//!
//! | path | what the handler does |
//! |---|---|
//! | `/`, `/hello` | 200 `hello from warden\n` |
//! | `/echo` | 200, streams the request body back as it reads it |
//! | `/fetch/HOST:PORT` | GET `http://HOST:PORT/`; answers with its status and `fetched\n`, or 502 `denied\n` (the domain may not reach that host) or 502 `error\n` |
//! | `/loop` | loops for ever |
//! | `/hog` | grows its memory until refused, then traps |
//! | `/recurse` | recurses without bound (stack overflow) |
//! | `/trap` | `unreachable` |
//! | `/sleep` | blocks in a host call: a one-hour monotonic-clock pollable, `pollable.block` |
//! | anything else | 404 `not found\n` |
//!
//! A query string is ignored. The guest's allocator starts afresh at each request, so a
//! domain that serves many requests does not grow.

/// The example's world: the interfaces its core module imports, and the handler it exports.
pub const WIT: &str = r#"
package warden:example;

world proxy {
  import wasi:http/types@0.2.12;
  import wasi:http/outgoing-handler@0.2.12;
  import wasi:io/streams@0.2.12;
  import wasi:io/poll@0.2.12;
  import wasi:clocks/monotonic-clock@0.2.12;
  export wasi:http/incoming-handler@0.2.12;
}
"#;

/// The example's core module, written against the canonical ABI: results of more than one
/// flat value come back through a return area (at 1024 here), strings and lists are
/// (pointer, length) in the exported memory, allocated by `cabi_realloc`.
pub const WAT: &str = r#"
(module
  (import "wasi:http/types@0.2.12" "[constructor]fields" (func $fields (result i32)))
  (import "wasi:http/types@0.2.12" "[constructor]outgoing-response"
    (func $response (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-response.set-status-code"
    (func $set_status (param i32 i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-response.body"
    (func $response_body (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-body.write"
    (func $body_write (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[static]outgoing-body.finish"
    (func $body_finish (param i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[static]response-outparam.set"
    (func $outparam_set (param i32 i32 i32 i32 i64 i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[method]incoming-request.path-with-query"
    (func $path (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[method]incoming-request.consume"
    (func $consume (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[method]incoming-body.stream"
    (func $body_stream (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[resource-drop]incoming-request"
    (func $drop_request (param i32)))
  (import "wasi:http/types@0.2.12" "[resource-drop]incoming-body"
    (func $drop_incoming_body (param i32)))
  (import "wasi:http/types@0.2.12" "[constructor]outgoing-request"
    (func $request (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-request.set-scheme"
    (func $set_scheme (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-request.set-authority"
    (func $set_authority (param i32 i32 i32 i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-request.set-path-with-query"
    (func $set_path (param i32 i32 i32 i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]future-incoming-response.subscribe"
    (func $future_subscribe (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]future-incoming-response.get"
    (func $future_get (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[method]incoming-response.status"
    (func $status (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[resource-drop]incoming-response"
    (func $drop_incoming_response (param i32)))
  (import "wasi:http/types@0.2.12" "[resource-drop]future-incoming-response"
    (func $drop_future (param i32)))
  (import "wasi:http/outgoing-handler@0.2.12" "handle"
    (func $send (param i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.12" "[method]output-stream.blocking-write-and-flush"
    (func $write (param i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.12" "[method]input-stream.blocking-read"
    (func $read (param i32 i64 i32)))
  (import "wasi:io/streams@0.2.12" "[resource-drop]output-stream"
    (func $drop_output (param i32)))
  (import "wasi:io/streams@0.2.12" "[resource-drop]input-stream"
    (func $drop_input (param i32)))
  (import "wasi:io/poll@0.2.12" "[method]pollable.block" (func $block (param i32)))
  (import "wasi:io/poll@0.2.12" "[resource-drop]pollable" (func $drop_pollable (param i32)))
  (import "wasi:clocks/monotonic-clock@0.2.12" "subscribe-duration"
    (func $subscribe_duration (param i64) (result i32)))

  (memory (export "memory") 2)
  ;; The bump allocator's next free byte; reset at every request.
  (global $heap (mut i32) (i32.const 4096))
  ;; The response being written: its outgoing-body and output-stream.
  (global $body (mut i32) (i32.const 0))
  (global $out (mut i32) (i32.const 0))

  (data (i32.const 100) "/")
  (data (i32.const 110) "/hello")
  (data (i32.const 120) "/loop")
  (data (i32.const 130) "/hog")
  (data (i32.const 140) "/recurse")
  (data (i32.const 150) "/trap")
  (data (i32.const 160) "/sleep")
  (data (i32.const 170) "/echo")
  (data (i32.const 180) "/fetch/")
  (data (i32.const 200) "hello from warden\n")
  (data (i32.const 230) "not found\n")
  (data (i32.const 250) "denied\n")
  (data (i32.const 260) "error\n")
  (data (i32.const 270) "fetched\n")

  (func (export "cabi_realloc") (param i32 i32) (param $align i32) (param $size i32)
        (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (i32.and
      (i32.sub (i32.add (global.get $heap) (local.get $align)) (i32.const 1))
      (i32.sub (i32.const 0) (local.get $align))))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (i32.const -1) (memory.grow
              (i32.add (i32.const 1) (i32.shr_u
                (i32.sub (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
                (i32.const 16)))))
          (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $p))

  ;; Whether the bytes at $p (length $n) equal those at $q (length $m).
  (func $eq (param $p i32) (param $n i32) (param $q i32) (param $m i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $n) (local.get $m)) (then (return (i32.const 0))))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (if (i32.ne (i32.load8_u (i32.add (local.get $p) (local.get $i)))
                  (i32.load8_u (i32.add (local.get $q) (local.get $i))))
        (then (return (i32.const 0))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (i32.const 1))

  ;; The length of the path without its query.
  (func $path_len (param $p i32) (param $n i32) (result i32)
    (local $i i32)
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (br_if $done (i32.eq (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 63)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (local.get $i))

  ;; Sets the response (status, no headers) and opens its body for writing.
  (func $begin (param $outparam i32) (param $status i32)
    (local $resp i32)
    (local.set $resp (call $response (call $fields)))
    (if (i32.ne (local.get $status) (i32.const 200))
      (then (drop (call $set_status (local.get $resp) (local.get $status)))))
    (call $response_body (local.get $resp) (i32.const 1024))
    (global.set $body (i32.load (i32.const 1028)))
    (call $body_write (global.get $body) (i32.const 1024))
    (global.set $out (i32.load (i32.const 1028)))
    (call $outparam_set (local.get $outparam) (i32.const 0) (local.get $resp)
      (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))

  ;; Writes to the body (a closed client is not an error of the handler's).
  (func $send_bytes (param $p i32) (param $n i32)
    (call $write (global.get $out) (local.get $p) (local.get $n) (i32.const 1056)))

  (func $end
    (call $drop_output (global.get $out))
    (call $body_finish (global.get $body) (i32.const 0) (i32.const 0) (i32.const 1056)))

  (func $respond (param $outparam i32) (param $status i32) (param $p i32) (param $n i32)
    (call $begin (local.get $outparam) (local.get $status))
    (call $send_bytes (local.get $p) (local.get $n))
    (call $end))

  ;; Streams the request body back, as it arrives.
  (func $echo (param $req i32) (param $outparam i32)
    (local $body i32) (local $in i32) (local $heap i32)
    (call $consume (local.get $req) (i32.const 1024))
    (local.set $body (i32.load (i32.const 1028)))
    (call $body_stream (local.get $body) (i32.const 1024))
    (local.set $in (i32.load (i32.const 1028)))
    (call $begin (local.get $outparam) (i32.const 200))
    (local.set $heap (global.get $heap))
    (block $closed (loop $l
      (call $read (local.get $in) (i64.const 4096) (i32.const 1024))
      (br_if $closed (i32.load8_u (i32.const 1024)))
      (call $send_bytes (i32.load (i32.const 1028)) (i32.load (i32.const 1032)))
      ;; The chunk is written: its bytes may be reused.
      (global.set $heap (local.get $heap))
      (br $l)))
    (call $end)
    (call $drop_input (local.get $in))
    (call $drop_incoming_body (local.get $body)))

  ;; GET http://$authority/, answered with its status.
  (func $fetch (param $outparam i32) (param $ap i32) (param $an i32)
    (local $r i32) (local $f i32) (local $poll i32) (local $resp i32) (local $status i32)
    (local.set $r (call $request (call $fields)))
    (drop (call $set_scheme (local.get $r) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0)))
    (drop (call $set_authority (local.get $r) (i32.const 1) (local.get $ap) (local.get $an)))
    (drop (call $set_path (local.get $r) (i32.const 1) (i32.const 100) (i32.const 1)))
    (call $send (local.get $r) (i32.const 0) (i32.const 0) (i32.const 1024))
    (if (i32.load8_u (i32.const 1024))
      (then
        (if (i32.eq (i32.load8_u (i32.const 1032)) (i32.const 15))
          (then (call $respond (local.get $outparam) (i32.const 502) (i32.const 250) (i32.const 7)))
          (else (call $respond (local.get $outparam) (i32.const 502) (i32.const 260) (i32.const 6))))
        (return)))
    (local.set $f (i32.load (i32.const 1032)))
    (local.set $poll (call $future_subscribe (local.get $f)))
    (call $block (local.get $poll))
    (call $drop_pollable (local.get $poll))
    ;; option<result<result<incoming-response, error-code>>>: tags at 0, 8, 16; payload at 24.
    (call $future_get (local.get $f) (i32.const 1024))
    (if (i32.or (i32.eqz (i32.load8_u (i32.const 1024)))
                (i32.load8_u (i32.const 1032)))
      (then
        (call $respond (local.get $outparam) (i32.const 502) (i32.const 260) (i32.const 6))
        (return)))
    (if (i32.load8_u (i32.const 1040))
      (then
        (if (i32.eq (i32.load8_u (i32.const 1048)) (i32.const 15))
          (then (call $respond (local.get $outparam) (i32.const 502) (i32.const 250) (i32.const 7)))
          (else (call $respond (local.get $outparam) (i32.const 502) (i32.const 260) (i32.const 6))))
        (call $drop_future (local.get $f))
        (return)))
    (local.set $resp (i32.load (i32.const 1048)))
    (local.set $status (call $status (local.get $resp)))
    (call $drop_incoming_response (local.get $resp))
    (call $drop_future (local.get $f))
    (call $respond (local.get $outparam) (local.get $status) (i32.const 270) (i32.const 8)))

  (func $recurse (call $recurse))

  (func (export "wasi:http/incoming-handler@0.2.12#handle") (param $req i32) (param $outparam i32)
    (local $p i32) (local $n i32)
    (global.set $heap (i32.const 4096))
    (call $path (local.get $req) (i32.const 1024))
    (if (i32.load8_u (i32.const 1024))
      (then
        (local.set $p (i32.load (i32.const 1028)))
        (local.set $n (call $path_len (local.get $p) (i32.load (i32.const 1032)))))
      (else (local.set $p (i32.const 100)) (local.set $n (i32.const 1))))
    (if (i32.or (call $eq (local.get $p) (local.get $n) (i32.const 100) (i32.const 1))
                (call $eq (local.get $p) (local.get $n) (i32.const 110) (i32.const 6)))
      (then
        (call $respond (local.get $outparam) (i32.const 200) (i32.const 200) (i32.const 18))
        (call $drop_request (local.get $req))
        (return)))
    (if (call $eq (local.get $p) (local.get $n) (i32.const 120) (i32.const 5))
      (then (loop $spin (br $spin))))
    (if (call $eq (local.get $p) (local.get $n) (i32.const 130) (i32.const 4))
      (then
        (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
        unreachable))
    (if (call $eq (local.get $p) (local.get $n) (i32.const 140) (i32.const 8))
      (then (call $recurse)))
    (if (call $eq (local.get $p) (local.get $n) (i32.const 150) (i32.const 5))
      (then unreachable))
    (if (call $eq (local.get $p) (local.get $n) (i32.const 160) (i32.const 6))
      (then
        (call $block (call $subscribe_duration (i64.const 3600000000000)))
        (call $respond (local.get $outparam) (i32.const 200) (i32.const 200) (i32.const 18))
        (call $drop_request (local.get $req))
        (return)))
    (if (call $eq (local.get $p) (local.get $n) (i32.const 170) (i32.const 5))
      (then
        (call $echo (local.get $req) (local.get $outparam))
        (call $drop_request (local.get $req))
        (return)))
    (if (i32.and (i32.gt_u (local.get $n) (i32.const 7))
                 (call $eq (local.get $p) (i32.const 7) (i32.const 180) (i32.const 7)))
      (then
        (call $fetch (local.get $outparam)
          (i32.add (local.get $p) (i32.const 7)) (i32.sub (local.get $n) (i32.const 7)))
        (call $drop_request (local.get $req))
        (return)))
    (call $respond (local.get $outparam) (i32.const 404) (i32.const 230) (i32.const 10))
    (call $drop_request (local.get $req)))
)
"#;

/// The `wasi` packages the example's world uses, in dependency order (each is pushed after
/// the packages it names).
const DEPS: [(&str, &str); 7] = [
    ("io.wit", include_str!("../../wit/http/deps/io.wit")),
    ("clocks.wit", include_str!("../../wit/http/deps/clocks.wit")),
    ("random.wit", include_str!("../../wit/http/deps/random.wit")),
    (
        "filesystem.wit",
        include_str!("../../wit/http/deps/filesystem.wit"),
    ),
    (
        "sockets.wit",
        include_str!("../../wit/http/deps/sockets.wit"),
    ),
    ("cli.wit", include_str!("../../wit/http/deps/cli.wit")),
    ("http.wit", include_str!("../../wit/http/deps/http.wit")),
];

/// Encodes `core_wat` as a component of `world` in `wit`, a package that may use the
/// vendored `wasi:http@0.2.12` and the packages it depends on (io, clocks, random,
/// filesystem, sockets, cli). Errors name the step that failed.
pub fn build(wit: &str, world: &str, core_wat: &str) -> Result<Vec<u8>, String> {
    build_with_deps(&[], wit, world, core_wat)
}

/// [`build`], with more WIT packages `wit` may use: `(file name, text)` pairs, each one
/// package (an embedder's interfaces, say), read after the vendored ones and in this order.
pub fn build_with_deps(
    deps: &[(&str, &str)],
    wit: &str,
    world: &str,
    core_wat: &str,
) -> Result<Vec<u8>, String> {
    let mut resolve = wit_parser::Resolve::default();
    for (name, text) in DEPS {
        resolve
            .push_str(name, text)
            .map_err(|e| format!("vendored WIT {name}: {e:#}"))?;
    }
    for (name, text) in deps {
        resolve
            .push_str(name, text)
            .map_err(|e| format!("WIT {name}: {e:#}"))?;
    }
    let pkg = resolve
        .push_str("world.wit", wit)
        .map_err(|e| format!("WIT: {e:#}"))?;
    let world = resolve
        .select_world(&[pkg], Some(world))
        .map_err(|e| format!("world `{world}`: {e:#}"))?;
    let mut module = wat::parse_str(core_wat).map_err(|e| format!("core WAT: {e}"))?;
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .map_err(|e| format!("embedding the world: {e:#}"))?;
    wit_component::ComponentEncoder::default()
        .module(&module)
        .map_err(|e| format!("component encoder: {e:#}"))?
        .validate(true)
        .encode()
        .map_err(|e| format!("encoding the component: {e:#}"))
}

/// The example component's bytes (a binary component, ready for
/// [`Runtime::load_module`](crate::Runtime::load_module)).
pub fn component_bytes() -> Vec<u8> {
    match build(WIT, "proxy", WAT) {
        Ok(bytes) => bytes,
        // The inputs are constants, checked by the tests: failing here is a bug in Warden.
        Err(e) => unreachable!("the bundled example component does not build: {e}"),
    }
}
