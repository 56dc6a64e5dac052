;; Warden's bundled example: a WASI command that greets from inside its domain and then
;; shows it can see its arguments. `warden run guests/hello.wat -- a b` prints both.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello from a Warden domain\n")
  (data (i32.const 128) "arguments: ")
  (data (i32.const 160) "0123456789")
  (data (i32.const 176) "\n")
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (local $argc i32)
    (call $print (i32.const 64) (i32.const 27))
    (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
    ;; argc counts the program name; print the count of the rest (0-9).
    (local.set $argc (i32.sub (i32.load (i32.const 16)) (i32.const 1)))
    (if (i32.gt_u (local.get $argc) (i32.const 9)) (then (local.set $argc (i32.const 9))))
    (call $print (i32.const 128) (i32.const 11))
    (call $print (i32.add (i32.const 160) (local.get $argc)) (i32.const 1))
    (call $print (i32.const 176) (i32.const 1))))
