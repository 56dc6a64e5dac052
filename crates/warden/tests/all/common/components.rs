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
