//! Component guests built inside the tests: core WAT plus WIT, encoded as a component with
//! `wit-component` (`embed_component_metadata` + `ComponentEncoder`), so `cargo test` needs
//! no wasm toolchain. Shared by the runtime's and the binary's tests.
#![allow(dead_code)]

/// Encodes `core_wat` as a component of `world` in `wit`.
pub fn build(wit: &str, world: &str, core_wat: &str) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve.push_str("test.wit", wit).expect("the WIT parses");
    let world = resolve.select_world(&[pkg], Some(world)).expect("world");
    let mut module = wat::parse_str(core_wat).expect("the core WAT parses");
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("metadata embeds");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("module")
        .validate(true)
        .encode()
        .expect("the component encodes")
}

/// Typed exports (records, lists, strings, options, results, a nested interface) and the
/// hostile ones (spin, recurse, hog, trap), with a finalizer.
pub const TYPED_WIT: &str = r#"
package warden:test;

world typed {
  record point { x: s32, y: s32 }
  export add: func(a: s32, b: s32) -> s32;
  export echo: func(s: string) -> string;
  export sum: func(xs: list<u32>) -> u64;
  export swap: func(p: point) -> point;
  export half: func(x: option<u32>) -> result<u32, string>;
  export rev: func(xs: list<string>) -> list<string>;
  export maybe: func(x: option<string>) -> option<string>;
  export check: func(r: result<u32, string>) -> result<u32, string>;
  export spin: func();
  export recurse: func();
  export hog: func();
  export trap: func();
  export grow: func(pages: u32) -> s32;
  export warden-on-unload: func();
  export api: interface {
    get: func() -> u32;
  }
}
"#;

/// The core module of [`TYPED_WIT`]'s world. Results that do not fit one core value go
/// through a return area in linear memory (the canonical ABI).
pub const TYPED_WAT: &str = r#"
(module
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
  (func (export "add") (param i32 i32) (result i32)
    (i32.add (local.get 0) (local.get 1)))
  (func (export "echo") (param i32 i32) (result i32)
    (i32.store (i32.const 1024) (local.get 0))
    (i32.store (i32.const 1028) (local.get 1))
    (i32.const 1024))
  (func (export "sum") (param $p i32) (param $n i32) (result i64)
    (local $acc i64)
    (block (loop
      (br_if 1 (i32.eqz (local.get $n)))
      (local.set $acc (i64.add (local.get $acc) (i64.load32_u (local.get $p))))
      (local.set $p (i32.add (local.get $p) (i32.const 4)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br 0)))
    (local.get $acc))
  (func (export "swap") (param i32 i32) (result i32)
    (i32.store (i32.const 1040) (local.get 1))
    (i32.store (i32.const 1044) (local.get 0))
    (i32.const 1040))
  (func (export "half") (param $some i32) (param $v i32) (result i32)
    (if (local.get $some)
      (then
        (i32.store8 (i32.const 1056) (i32.const 0))
        (i32.store (i32.const 1060) (i32.shr_u (local.get $v) (i32.const 1))))
      (else
        (i32.store8 (i32.const 1056) (i32.const 1))
        (i32.store (i32.const 1060) (i32.const 2048))
        (i32.store (i32.const 1064) (i32.const 4))))
    (i32.const 1056))
  (data (i32.const 2048) "none")
  ;; Reverses the list of (ptr, len) pairs in place.
  (func (export "rev") (param $p i32) (param $n i32) (result i32)
    (local $i i32) (local $j i32) (local $a i64)
    (local.set $j (i32.sub (local.get $n) (i32.const 1)))
    (block (loop
      (br_if 1 (i32.ge_s (local.get $i) (local.get $j)))
      (local.set $a (i64.load (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 3)))))
      (i64.store (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 3)))
        (i64.load (i32.add (local.get $p) (i32.shl (local.get $j) (i32.const 3)))))
      (i64.store (i32.add (local.get $p) (i32.shl (local.get $j) (i32.const 3))) (local.get $a))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (local.set $j (i32.sub (local.get $j) (i32.const 1)))
      (br 0)))
    (i32.store (i32.const 1100) (local.get $p))
    (i32.store (i32.const 1104) (local.get $n))
    (i32.const 1100))
  ;; option<string> and result<u32, string> back as they came.
  (func (export "maybe") (param i32 i32 i32) (result i32)
    (i32.store8 (i32.const 1120) (local.get 0))
    (i32.store (i32.const 1124) (local.get 1))
    (i32.store (i32.const 1128) (local.get 2))
    (i32.const 1120))
  (func (export "check") (param i32 i32 i32) (result i32)
    (i32.store8 (i32.const 1140) (local.get 0))
    (i32.store (i32.const 1144) (local.get 1))
    (i32.store (i32.const 1148) (local.get 2))
    (i32.const 1140))
  (func (export "spin") (loop (br 0)))
  (func $recurse (export "recurse") (call $recurse))
  (func (export "hog")
    (loop (br_if 0 (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable)
  (func (export "trap") unreachable)
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "warden-on-unload"))
  (func (export "api#get") (result i32) (i32.const 7))
)
"#;

/// The typed component.
pub fn typed() -> Vec<u8> {
    build(TYPED_WIT, "typed", TYPED_WAT)
}

/// A preview2 command: the subset of `wasi:io` and `wasi:cli` 0.2.0 it uses (a component
/// imports only what it names; wasmtime's linker provides all of it).
pub const COMMAND_WIT: &str = r#"
package warden:cmd;

world command {
  import wasi:cli/stdout@0.2.0;
  import wasi:cli/environment@0.2.0;
  import wasi:cli/exit@0.2.0;
  export wasi:cli/run@0.2.0;
}

package wasi:io@0.2.0 {
  interface error {
    resource error;
  }
  interface streams {
    use error.{error};
    variant stream-error {
      last-operation-failed(error),
      closed,
    }
    resource output-stream {
      blocking-write-and-flush: func(contents: list<u8>) -> result<_, stream-error>;
    }
  }
}

package wasi:cli@0.2.0 {
  interface stdout {
    use wasi:io/streams@0.2.0.{output-stream};
    get-stdout: func() -> output-stream;
  }
  interface environment {
    get-arguments: func() -> list<string>;
  }
  interface exit {
    exit: func(status: result);
  }
  interface run {
    run: func() -> result;
  }
}
"#;

/// Writes each of its arguments after the program name to stdout, one a line; if the last
/// one is `fail`, exits with an error status (`wasi:cli/exit`, code 1).
pub const COMMAND_WAT: &str = r#"
(module
  (import "wasi:cli/stdout@0.2.0" "get-stdout" (func $stdout (result i32)))
  (import "wasi:io/streams@0.2.0" "[method]output-stream.blocking-write-and-flush"
    (func $write (param i32 i32 i32 i32)))
  (import "wasi:cli/environment@0.2.0" "get-arguments" (func $args (param i32)))
  (import "wasi:cli/exit@0.2.0" "exit" (func $exit (param i32)))
  (memory (export "memory") 10)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 700) "\n")
  (func (export "cabi_realloc") (param i32 i32) (param $align i32) (param $size i32)
        (result i32)
    (local $p i32)
    (local.set $p (i32.and
      (i32.sub (i32.add (global.get $heap) (local.get $align)) (i32.const 1))
      (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))
  (func (export "wasi:cli/run@0.2.0#run") (result i32)
    (local $out i32) (local $list i32) (local $n i32) (local $i i32) (local $s i32)
    (local.set $out (call $stdout))
    (call $args (i32.const 512))
    (local.set $list (i32.load (i32.const 512)))
    (local.set $n (i32.load (i32.const 516)))
    (local.set $i (i32.const 1))
    (block (loop
      (br_if 1 (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $s (i32.add (local.get $list) (i32.mul (local.get $i) (i32.const 8))))
      (call $write (local.get $out) (i32.load (local.get $s))
        (i32.load offset=4 (local.get $s)) (i32.const 600))
      (call $write (local.get $out) (i32.const 700) (i32.const 1) (i32.const 600))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br 0)))
    (if (i32.gt_u (local.get $n) (i32.const 1))
      (then
        (local.set $s (i32.add (local.get $list)
          (i32.mul (i32.sub (local.get $n) (i32.const 1)) (i32.const 8))))
        (if (i32.and
              (i32.eq (i32.load offset=4 (local.get $s)) (i32.const 4))
              (i32.eq (i32.load (i32.load (local.get $s))) (i32.const 0x6c696166)))
          (then (call $exit (i32.const 1))))))
    (i32.const 0))
)
"#;

/// The preview2 command.
pub fn command() -> Vec<u8> {
    build(COMMAND_WIT, "command", COMMAND_WAT)
}

/// Warden's `warden:host@0.1.0` package, as the SDK ships it.
pub const WARDEN_HOST_WIT: &str = include_str!("../../../../../sdk/wit/warden-host.wit");

/// Encodes `core_wat` as a component of `world` in `wit`, which may use `warden:host`.
pub fn build_with_host(wit: &str, world: &str, core_wat: &str) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    resolve
        .push_str("warden-host.wit", WARDEN_HOST_WIT)
        .expect("warden:host parses");
    let pkg = resolve.push_str("test.wit", wit).expect("the WIT parses");
    let world = resolve.select_world(&[pkg], Some(world)).expect("world");
    let mut module = wat::parse_str(core_wat).expect("the core WAT parses");
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("metadata embeds");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("module")
        .validate(true)
        .encode()
        .expect("the component encodes")
}

/// A guest of `warden:host`: regions, locks, the gate, sleep, log and a finalizer. Results are
/// `s32`: `0` ok (or `acquired.clean`), `1` `acquired.poisoned`, `10 + error-code` (in WIT
/// order: `10` timeout, `11` deadlock-victim, ..., `16` insufficient-memory, `17`
/// bad-argument); `reserve` returns the token, or minus that code.
pub const HOST_WIT: &str = r#"
package warden:guest;

world host-guest {
  include warden:host/imports@0.1.0;
  export critical: func();
  export critical-spin: func();
  export constrained: func();
  export constrained-wait: func(name: string);
  export acquire: func(name: string, timeout-ms: s64) -> s32;
  export acquire-release: func(name: string) -> s32;
  export release: func(name: string) -> s32;
  export hold: func(name: string) -> s32;
  export cross: func(first: string, second: string, probe: bool) -> s32;
  export sleep: func(ms: u64) -> s32;
  export reserve: func(bytes: u64) -> s32;
  export unreserve: func(token: u32) -> s32;
  export hoard: func() -> s32;
  export close: func(handle: u32) -> s32;
  export arm-finalizer: func();
  export hoard-locks: func() -> s32;
  export log-big: func(bytes: u32);
  export log-many: func(lines: u32);
  export warden-on-unload: func();
}
"#;

/// The core module of [`HOST_WIT`]. Logs `in` when a region is entered, `saw` once it saw
/// the abort requested, `after` after the region's exit; `has` when the first lock is held.
pub const HOST_WAT: &str = r#"
(module
  (import "warden:host/regions@0.1.0" "critical-enter" (func $cin))
  (import "warden:host/regions@0.1.0" "critical-exit" (func $cout))
  (import "warden:host/regions@0.1.0" "constrained-enter" (func $kin))
  (import "warden:host/regions@0.1.0" "constrained-exit" (func $kout))
  (import "warden:host/regions@0.1.0" "abort-requested" (func $requested (result i32)))
  (import "warden:host/locks@0.1.0" "acquire" (func $acq (param i32 i32 i32 i64 i32)))
  (import "warden:host/locks@0.1.0" "release" (func $rel (param i32 i32 i32)))
  (import "warden:host/memory-gate@0.1.0" "reserve" (func $reserve (param i64 i32)))
  (import "warden:host/memory-gate@0.1.0" "release" (func $unreserve (param i32 i32)))
  (import "warden:host/host@0.1.0" "sleep" (func $sleep (param i64 i32)))
  (import "warden:host/host@0.1.0" "log" (func $log (param i32 i32 i32)))
  (import "warden:host/handles@0.1.0" "close" (func $close (param i32 i32)))
  ;; Pages 1 and 2 are log-big's buffer.
  (memory (export "memory") 3)
  (global $heap (mut i32) (i32.const 4096))
  (global $hang (mut i32) (i32.const 0))
  (data (i32.const 200) "in")
  (data (i32.const 210) "saw")
  (data (i32.const 220) "after")
  (data (i32.const 230) "has")
  (func (export "cabi_realloc") (param i32 i32) (param $align i32) (param $size i32)
        (result i32)
    (local $p i32)
    (local.set $p (i32.and
      (i32.sub (i32.add (global.get $heap) (local.get $align)) (i32.const 1))
      (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))
  (func $say (param $p i32) (param $n i32) (call $log (i32.const 0) (local.get $p) (local.get $n)))
  (func $wait_requested (loop $l (br_if $l (i32.eqz (call $requested)))))
  ;; result<acquired, error-code> at 64: the enum, or 10 + the error code.
  (func $acquired (result i32)
    (if (result i32) (i32.load8_u (i32.const 64))
      (then (i32.add (i32.const 10) (i32.load8_u (i32.const 65))))
      (else (i32.load8_u (i32.const 65)))))
  ;; result<_, error-code> at 64: 0, or 10 + the error code.
  (func $unit (result i32)
    (if (result i32) (i32.load8_u (i32.const 64))
      (then (i32.add (i32.const 10) (i32.load8_u (i32.const 65))))
      (else (i32.const 0))))
  (func $take (param $p i32) (param $n i32) (param $t i64) (result i32)
    (call $acq (local.get $p) (local.get $n) (i64.ge_s (local.get $t) (i64.const 0))
      (local.get $t) (i32.const 64))
    (call $acquired))
  (func $drop_lock (param $p i32) (param $n i32) (result i32)
    (call $rel (local.get $p) (local.get $n) (i32.const 64))
    (call $unit))
  (func (export "critical")
    (call $cin) (call $say (i32.const 200) (i32.const 2))
    (call $wait_requested) (call $say (i32.const 210) (i32.const 3))
    (call $cout) (call $say (i32.const 220) (i32.const 5)))
  (func (export "critical-spin")
    (call $cin) (call $say (i32.const 200) (i32.const 2))
    (loop $l (br $l)))
  (func (export "constrained")
    (call $kin) (call $say (i32.const 200) (i32.const 2))
    (call $wait_requested) (call $say (i32.const 210) (i32.const 3))
    (call $kout) (call $say (i32.const 220) (i32.const 5)))
  ;; A constrained region that waits for a lock without bound.
  (func (export "constrained-wait") (param i32 i32)
    (call $kin) (call $say (i32.const 200) (i32.const 2))
    (drop (call $take (local.get 0) (local.get 1) (i64.const -1)))
    (call $kout))
  (func (export "acquire") (param i32 i32 i64) (result i32)
    (call $take (local.get 0) (local.get 1) (local.get 2)))
  (func (export "acquire-release") (param i32 i32) (result i32)
    (local $r i32)
    (local.set $r (call $take (local.get 0) (local.get 1) (i64.const -1)))
    (drop (call $drop_lock (local.get 0) (local.get 1)))
    (local.get $r))
  (func (export "release") (param i32 i32) (result i32)
    (call $drop_lock (local.get 0) (local.get 1)))
  ;; Hold the lock until an abort is requested, then release it (where the abort lands).
  (func (export "hold") (param i32 i32) (result i32)
    (drop (call $take (local.get 0) (local.get 1) (i64.const -1)))
    (call $say (i32.const 230) (i32.const 3))
    (call $wait_requested)
    (call $drop_lock (local.get 0) (local.get 1)))
  ;; Take $first, then $second. With $probe, first try $second without waiting until
  ;; someone else holds it. A deadlock victim releases $first and returns 11.
  (func (export "cross") (param $fp i32) (param $fn i32) (param $sp i32) (param $sn i32)
        (param $probe i32) (result i32)
    (local $r i32)
    (drop (call $take (local.get $fp) (local.get $fn) (i64.const -1)))
    (call $say (i32.const 230) (i32.const 3))
    (if (local.get $probe)
      (then (loop $l
        (local.set $r (call $take (local.get $sp) (local.get $sn) (i64.const 0)))
        (if (i32.le_u (local.get $r) (i32.const 1))
          (then (drop (call $drop_lock (local.get $sp) (local.get $sn))) (br $l))))))
    (if (i32.ne (local.get $r) (i32.const 11))
      (then (local.set $r (call $take (local.get $sp) (local.get $sn) (i64.const -1)))))
    (if (i32.eq (local.get $r) (i32.const 11))
      (then
        (drop (call $drop_lock (local.get $fp) (local.get $fn)))
        (return (i32.const 11))))
    (drop (call $drop_lock (local.get $sp) (local.get $sn)))
    (drop (call $drop_lock (local.get $fp) (local.get $fn)))
    (local.get $r))
  (func (export "sleep") (param i64) (result i32)
    (call $sleep (local.get 0) (i32.const 64))
    (call $unit))
  ;; result<token, error-code> at 64: the payload is at 68.
  (func $reserve_one (param i64) (result i32)
    (call $reserve (local.get 0) (i32.const 64))
    (if (result i32) (i32.load8_u (i32.const 64))
      (then (i32.sub (i32.const -10) (i32.load8_u (i32.const 68))))
      (else (i32.load (i32.const 68)))))
  (func (export "reserve") (param i64) (result i32) (call $reserve_one (local.get 0)))
  (func (export "unreserve") (param i32) (result i32)
    (call $unreserve (local.get 0) (i32.const 64))
    (call $unit))
  ;; Reserve 0 bytes until refused: (how many << 8) | (10 + the code).
  (func (export "hoard") (result i32)
    (local $n i32) (local $r i32)
    (loop $l
      (local.set $r (call $reserve_one (i64.const 0)))
      (if (i32.gt_s (local.get $r) (i32.const 0))
        (then (local.set $n (i32.add (local.get $n) (i32.const 1))) (br $l))))
    (i32.or (i32.shl (local.get $n) (i32.const 8)) (i32.sub (i32.const 0) (local.get $r))))
  (func (export "close") (param i32) (result i32)
    (call $close (local.get 0) (i32.const 64))
    (call $unit))
  (func (export "arm-finalizer") (global.set $hang (i32.const 1)))
  ;; Take locks named by two ASCII bytes at 300 until refused, release them all:
  ;; (how many << 8) | (10 + the code).
  (func $lock_name (param $i i32)
    (i32.store8 (i32.const 300) (i32.add (i32.const 48) (i32.div_u (local.get $i) (i32.const 64))))
    (i32.store8 (i32.const 301) (i32.add (i32.const 48) (i32.rem_u (local.get $i) (i32.const 64)))))
  (func (export "hoard-locks") (result i32)
    (local $n i32) (local $r i32) (local $i i32)
    (block $done (loop $l
      (call $lock_name (local.get $n))
      (local.set $r (call $take (i32.const 300) (i32.const 2) (i64.const 0)))
      (br_if $done (i32.ne (local.get $r) (i32.const 0)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $l)))
    (block $out (loop $l
      (br_if $out (i32.ge_u (local.get $i) (local.get $n)))
      (call $lock_name (local.get $i))
      (drop (call $drop_lock (i32.const 300) (i32.const 2)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (i32.or (i32.shl (local.get $n) (i32.const 8)) (local.get $r)))
  ;; One line of `bytes` x's.
  (func (export "log-big") (param $n i32)
    (memory.fill (i32.const 65536) (i32.const 120) (local.get $n))
    (call $log (i32.const 0) (i32.const 65536) (local.get $n)))
  ;; `lines` lines of 1000 x's each.
  (func (export "log-many") (param $n i32)
    (memory.fill (i32.const 65536) (i32.const 120) (i32.const 1000))
    (block $out (loop $l
      (br_if $out (i32.eqz (local.get $n)))
      (call $log (i32.const 0) (i32.const 65536) (i32.const 1000))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $l))))
  (func (export "warden-on-unload")
    (if (global.get $hang)
      (then (call $sleep (i64.const -1) (i32.const 64)))))
)
"#;

/// The `warden:host` guest.
pub fn host_guest() -> Vec<u8> {
    build_with_host(HOST_WIT, "host-guest", HOST_WAT)
}

/// A guest of the SDK's `world guest`: its finalizer is `warden:host/finalizer#on-unload`, and
/// with `both`, a top-level `warden-on-unload` too; each logs its name when run.
pub fn finalizer_guest(both: bool) -> Vec<u8> {
    let wit = format!(
        r#"
package warden:fin;

world fin {{
  include warden:host/guest@0.1.0;
  export ping: func();
  {}
}}
"#,
        if both {
            "export warden-on-unload: func();"
        } else {
            ""
        }
    );
    let top = if both {
        r#"(func (export "warden-on-unload") (call $log (i32.const 0) (i32.const 110) (i32.const 3)))"#
    } else {
        ""
    };
    let wat = format!(
        r#"
(module
  (import "warden:host/host@0.1.0" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "interface")
  (data (i32.const 110) "top")
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 4096))
  (func (export "ping"))
  (func (export "warden:host/finalizer@0.1.0#on-unload")
    (call $log (i32.const 0) (i32.const 100) (i32.const 9)))
  {top}
)
"#
    );
    build_with_host(&wit, "fin", &wat)
}

/// A preview2 command over `wasi:filesystem` 0.2.0 (the subset it uses): `read PATH` prints
/// the file at PATH in the first preopen; `write PATH TEXT` creates (or truncates) it with
/// TEXT and prints `wrote`. A refused step prints `error N` (N: the `error-code` case, e.g.
/// 20 no-entry, 31 not-permitted, 33 read-only) and exits 1; no preopen prints `no preopen`.
pub const FILES_WIT: &str = r#"
package warden:files;

world files {
  import wasi:cli/stdout@0.2.0;
  import wasi:cli/environment@0.2.0;
  import wasi:cli/exit@0.2.0;
  import wasi:filesystem/preopens@0.2.0;
  import wasi:cli/stdin@0.2.0;
  export wasi:cli/run@0.2.0;
  export read-stdin: func() -> string;
}

package wasi:io@0.2.0 {
  interface error {
    resource error;
  }
  interface streams {
    use error.{error};
    variant stream-error {
      last-operation-failed(error),
      closed,
    }
    resource output-stream {
      blocking-write-and-flush: func(contents: list<u8>) -> result<_, stream-error>;
    }
    resource input-stream {
      blocking-read: func(len: u64) -> result<list<u8>, stream-error>;
    }
  }
}

package wasi:cli@0.2.0 {
  interface stdout {
    use wasi:io/streams@0.2.0.{output-stream};
    get-stdout: func() -> output-stream;
  }
  interface stdin {
    use wasi:io/streams@0.2.0.{input-stream};
    get-stdin: func() -> input-stream;
  }
  interface environment {
    get-arguments: func() -> list<string>;
  }
  interface exit {
    exit: func(status: result);
  }
  interface run {
    run: func() -> result;
  }
}

package wasi:filesystem@0.2.0 {
  interface types {
    type filesize = u64;
    flags descriptor-flags {
      read, write, file-integrity-sync, data-integrity-sync, requested-write-sync,
      mutate-directory,
    }
    flags path-flags { symlink-follow }
    flags open-flags { create, directory, exclusive, truncate }
    enum error-code {
      access, would-block, already, bad-descriptor, busy, deadlock, quota, exist,
      file-too-large, illegal-byte-sequence, in-progress, interrupted, invalid, io,
      is-directory, loop, too-many-links, message-size, name-too-long, no-device, no-entry,
      no-lock, insufficient-memory, insufficient-space, not-directory, not-empty,
      not-recoverable, unsupported, no-tty, no-such-device, overflow, not-permitted, pipe,
      read-only, invalid-seek, text-file-busy, cross-device,
    }
    resource descriptor {
      read: func(length: filesize, offset: filesize) -> result<tuple<list<u8>, bool>, error-code>;
      write: func(buffer: list<u8>, offset: filesize) -> result<filesize, error-code>;
      open-at: func(path-flags: path-flags, path: string, open-flags: open-flags, %flags: descriptor-flags) -> result<descriptor, error-code>;
    }
  }
  interface preopens {
    use types.{descriptor};
    get-directories: func() -> list<tuple<descriptor, string>>;
  }
}
"#;

/// The core module of [`FILES_WIT`].
pub const FILES_WAT: &str = r#"
(module
  (import "wasi:cli/stdout@0.2.0" "get-stdout" (func $stdout (result i32)))
  (import "wasi:io/streams@0.2.0" "[method]output-stream.blocking-write-and-flush"
    (func $write_out (param i32 i32 i32 i32)))
  (import "wasi:cli/environment@0.2.0" "get-arguments" (func $args (param i32)))
  (import "wasi:cli/exit@0.2.0" "exit" (func $exit (param i32)))
  (import "wasi:filesystem/preopens@0.2.0" "get-directories" (func $dirs (param i32)))
  (import "wasi:filesystem/types@0.2.0" "[method]descriptor.open-at"
    (func $open_at (param i32 i32 i32 i32 i32 i32 i32)))
  (import "wasi:filesystem/types@0.2.0" "[method]descriptor.read"
    (func $read (param i32 i64 i64 i32)))
  (import "wasi:filesystem/types@0.2.0" "[method]descriptor.write"
    (func $write (param i32 i32 i32 i64 i32)))
  (import "wasi:cli/stdin@0.2.0" "get-stdin" (func $stdin (result i32)))
  (import "wasi:io/streams@0.2.0" "[method]input-stream.blocking-read"
    (func $blocking_read (param i32 i64 i32)))
  (memory (export "memory") 10)
  (global $heap (mut i32) (i32.const 8192))
  (global $out (mut i32) (i32.const 0))
  ;; One read of stdin, as a string (empty at end of file).
  (func (export "read-stdin") (result i32)
    (call $blocking_read (call $stdin) (i64.const 4096) (i32.const 96))
    (if (i32.load8_u (i32.const 96))
      (then (i32.store (i32.const 100) (i32.const 0)) (i32.store (i32.const 104) (i32.const 0))))
    (i32.const 100))
  (data (i32.const 700) "\n")
  (data (i32.const 710) "no preopen")
  (data (i32.const 730) "wrote")
  (data (i32.const 800) "error ")
  (func (export "cabi_realloc") (param i32 i32) (param $align i32) (param $size i32)
        (result i32)
    (local $p i32)
    (local.set $p (i32.and
      (i32.sub (i32.add (global.get $heap) (local.get $align)) (i32.const 1))
      (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))
  (func $print (param $p i32) (param $n i32)
    (call $write_out (global.get $out) (local.get $p) (local.get $n) (i32.const 600)))
  ;; Prints `error N` (N < 100) and exits 1.
  (func $fail (param $code i32)
    (i32.store8 (i32.const 806) (i32.add (i32.const 48) (i32.div_u (local.get $code) (i32.const 10))))
    (i32.store8 (i32.const 807) (i32.add (i32.const 48) (i32.rem_u (local.get $code) (i32.const 10))))
    (call $print (i32.const 800) (i32.const 8))
    (call $print (i32.const 700) (i32.const 1))
    (call $exit (i32.const 1))
    unreachable)
  ;; The descriptor of open-at's result at 64, or fail with its error.
  (func $opened (result i32)
    (if (i32.load8_u (i32.const 64)) (then (call $fail (i32.load8_u (i32.const 68)))))
    (i32.load (i32.const 68)))
  (func (export "wasi:cli/run@0.2.0#run") (result i32)
    (local $argv i32) (local $argc i32) (local $dir i32) (local $fd i32)
    (global.set $out (call $stdout))
    (call $args (i32.const 512))
    (local.set $argv (i32.load (i32.const 512)))
    (local.set $argc (i32.load (i32.const 516)))
    (call $dirs (i32.const 520))
    (if (i32.eqz (i32.load (i32.const 524)))
      (then
        (call $print (i32.const 710) (i32.const 10))
        (call $print (i32.const 700) (i32.const 1))
        (call $exit (i32.const 1))))
    ;; list<tuple<descriptor, string>>: the first element's descriptor.
    (local.set $dir (i32.load (i32.load (i32.const 520))))
    (if (i32.lt_u (local.get $argc) (i32.const 3)) (then (call $exit (i32.const 1))))
    ;; argv[1][0] is `r` or `w`; argv[2] is the path.
    (if (i32.eq (i32.load8_u (i32.load offset=8 (local.get $argv))) (i32.const 114))
      (then
        ;; open-at(dir, no path flags, path, no open flags, read)
        (call $open_at (local.get $dir) (i32.const 0)
          (i32.load offset=16 (local.get $argv)) (i32.load offset=20 (local.get $argv))
          (i32.const 0) (i32.const 1) (i32.const 64))
        (local.set $fd (call $opened))
        (call $read (local.get $fd) (i64.const 65536) (i64.const 0) (i32.const 64))
        (if (i32.load8_u (i32.const 64)) (then (call $fail (i32.load8_u (i32.const 68)))))
        (call $print (i32.load (i32.const 68)) (i32.load (i32.const 72)))
        (return (i32.const 0))))
    (if (i32.lt_u (local.get $argc) (i32.const 4)) (then (call $exit (i32.const 1))))
    ;; open-at(dir, no path flags, path, create | truncate, write)
    (call $open_at (local.get $dir) (i32.const 0)
      (i32.load offset=16 (local.get $argv)) (i32.load offset=20 (local.get $argv))
      (i32.const 9) (i32.const 2) (i32.const 64))
    (local.set $fd (call $opened))
    (call $write (local.get $fd)
      (i32.load offset=24 (local.get $argv)) (i32.load offset=28 (local.get $argv))
      (i64.const 0) (i32.const 64))
    (if (i32.load8_u (i32.const 64)) (then (call $fail (i32.load8_u (i32.const 72)))))
    (call $print (i32.const 730) (i32.const 5))
    (call $print (i32.const 700) (i32.const 1))
    (i32.const 0))
)
"#;

/// The `wasi:filesystem` command.
pub fn files_command() -> Vec<u8> {
    build(FILES_WIT, "files", FILES_WAT)
}
