;; `warden stress`'s component guest (the core module of `component.wit`'s world, encoded as a
;; component at run time with wit-component): a typed answer, a preview2 write to stdout, and
;; the hostile kinds, and calls to the embedder's typed functions (`stress-host.wit`).
(module
  (import "wasi:cli/stdout@0.2.12" "get-stdout" (func $stdout (result i32)))
  (import "wasi:io/streams@0.2.12" "[method]output-stream.blocking-write-and-flush"
    (func $write (param i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.12" "[resource-drop]output-stream" (func $drop (param i32)))
  (import "warden:stress-host/host" "add" (func $add (param i32 i32) (result i32)))
  (import "warden:stress-host/host" "pause" (func $pause (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "stress line\n")
  (func (export "answer") (result i32) (i32.const 42))
  ;; One line to stdout: 0 when written, 1 when the stream said it failed.
  (func (export "write") (result i32)
    (local $out i32)
    (local.set $out (call $stdout))
    ;; result<_, stream-error> at 64: its discriminant first.
    (call $write (local.get $out) (i32.const 16) (i32.const 12) (i32.const 64))
    (call $drop (local.get $out))
    (i32.load8_u (i32.const 64)))
  (func (export "spin") (loop $l (br $l)))
  (func (export "trap") unreachable)
  (func (export "hog")
    (loop $l
      (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable)
  ;; Both embedder functions; 42 when both answered.
  (func (export "embedder") (result i32)
    (drop (call $pause (i32.const 1)))
    (call $add (i32.const 40) (i32.const 2))))
