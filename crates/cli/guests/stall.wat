;; A guest stalled on I/O: it reads a stdin nobody ever writes to (an abortable host wait).
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; iovec at 0: buffer 16, length 64; nread at 8.
  (data (i32.const 0) "\10\00\00\00\40\00\00\00")
  (func (export "read") (result i32)
    (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))))
