;; Two exports that take host locks "A" and "B" in opposite orders: run both at once and one
;; is chosen as the deadlock victim; it backs out and the other completes.
;;   warden run guests/deadlock.wat --invoke ab --invoke ba --events json
(module
  (import "warden" "lock_acquire" (func $acq (param i32 i32 i64) (result i32)))
  (import "warden" "lock_release" (func $rel (param i32 i32) (result i32)))
  (import "warden" "sleep_ms" (func $sleep (param i64) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "AB")
  (func $cross (param $first i32) (param $second i32) (result i32)
    (local $r i32)
    (drop (call $acq (local.get $first) (i32.const 1) (i64.const -1)))
    (drop (call $sleep (i64.const 100)))
    (local.set $r (call $acq (local.get $second) (i32.const 1) (i64.const -1)))
    ;; A victim (-2) backs out: releasing what it holds lets the other call finish.
    (if (i32.eq (local.get $r) (i32.const -2))
      (then (drop (call $rel (local.get $first) (i32.const 1))) (return (i32.const -2))))
    (drop (call $rel (local.get $second) (i32.const 1)))
    (drop (call $rel (local.get $first) (i32.const 1)))
    (local.get $r))
  (func (export "ab") (result i32) (call $cross (i32.const 0) (i32.const 1)))
  (func (export "ba") (result i32) (call $cross (i32.const 1) (i32.const 0))))
