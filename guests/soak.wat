;; A soak guest: each call takes a host lock and a memory-gate reservation, grows and touches
;; memory, then releases the lock (the reservation goes back at call end). Its finalizer runs
;; at every unload.
;;   warden run guests/soak.wat --invoke cycle --repeat 200000 --handles 8
(module
  (import "warden" "lock_acquire" (func $acq (param i32 i32 i64) (result i32)))
  (import "warden" "lock_release" (func $rel (param i32 i32) (result i32)))
  (import "warden" "gate_reserve" (func $reserve (param i64) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "soak")
  (func (export "cycle") (result i32)
    (local $i i32)
    (if (call $acq (i32.const 0) (i32.const 4) (i64.const 1000)) (then unreachable))
    (if (i32.le_s (call $reserve (i64.const 131072)) (i32.const 0)) (then unreachable))
    (drop (memory.grow (i32.const 2)))
    (local.set $i (i32.const 65536))
    (loop $l
      (i32.store (local.get $i) (local.get $i))
      (local.set $i (i32.add (local.get $i) (i32.const 4096)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 196608))))
    (call $rel (i32.const 0) (i32.const 4)))
  (func (export "warden_on_unload")))
