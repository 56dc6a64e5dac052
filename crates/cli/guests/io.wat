;; `warden stress`'s guest for the host-call layers: a WASI write to stdout and calls to the
;; embedder's functions (`stress::add`, synchronous; `stress::pause`, asynchronous).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "stress" "add" (func $add (param i32 i32) (result i32)))
  (import "stress" "pause" (func $pause (param i64) (result i32)))
  (memory (export "memory") 1)
  ;; iovec at 0: buffer 16, length 12; bytes written at 8.
  (data (i32.const 0) "\10\00\00\00\0c\00\00\00")
  (data (i32.const 16) "stress line\n")
  ;; One line to stdout; the errno (0 when written).
  (func (export "write") (result i32)
    (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
  ;; Both embedder functions; 42 when both answered.
  (func (export "embedder") (result i32)
    (drop (call $pause (i64.const 1)))
    (call $add (i32.const 40) (i32.const 2))))
