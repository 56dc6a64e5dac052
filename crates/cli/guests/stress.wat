;; `warden stress`'s hostile guest: one export per kind of hostility (one at a time per domain).
(module
  (import "warden" "critical_enter" (func $critical_enter))
  (import "warden" "constrained_enter" (func $constrained_enter))
  (import "warden" "lock_acquire" (func $acq (param i32 i32 i64) (result i32)))
  (import "warden" "lock_release" (func $rel (param i32 i32) (result i32)))
  (import "warden" "sleep_ms" (func $sleep (param i64) (result i32)))
  (memory (export "memory") 1)
  ;; "A", "B" for the deadlock pair; "leak" for the orphaned lock; "twice" for misuse.
  (data (i32.const 0) "ABleaktwice")
  (func (export "answer") (result i32) (i32.const 42))
  (func (export "spin") (loop $l (br $l)))
  (func $recurse (export "recurse") (result i32) (i32.add (call $recurse) (i32.const 1)))
  (func (export "hog")
    (loop $l
      (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable)
  ;; One page of growth: -1 only when the growth was denied.
  (func (export "grow") (result i32) (memory.grow (i32.const 1)))
  (func (export "trap") (result i32) (i32.div_u (i32.const 1) (i32.const 0)))
  ;; A critical region that never ends: a polite abort is deferred until its timeout.
  (func (export "critical_forever") (call $critical_enter) (loop $l (br $l)))
  ;; A constrained region that never ends: even a rude abort waits for it.
  (func (export "constrained_forever") (call $constrained_enter) (loop $l (br $l)))
  ;; Ends holding a lock: orphaned, poisoned for the next acquirer.
  (func (export "lock_leak") (result i32)
    (call $acq (i32.const 2) (i32.const 4) (i64.const -1)))
  ;; Acquires twice (-6), releases twice (0 then -6); returns the sum of the codes seen.
  (func (export "lock_twice") (result i32)
    (local $r i32)
    (local.set $r (call $acq (i32.const 6) (i32.const 5) (i64.const -1)))
    (local.set $r (i32.add (local.get $r) (call $acq (i32.const 6) (i32.const 5) (i64.const -1))))
    (local.set $r (i32.add (local.get $r) (call $rel (i32.const 6) (i32.const 5))))
    (i32.add (local.get $r) (call $rel (i32.const 6) (i32.const 5))))
  ;; A long host wait.
  (func (export "sleep_long") (result i32) (call $sleep (i64.const 60000)))
  (func $cross (param $first i32) (param $second i32) (result i32)
    (local $r i32)
    (drop (call $acq (local.get $first) (i32.const 1) (i64.const -1)))
    (drop (call $sleep (i64.const 20)))
    (local.set $r (call $acq (local.get $second) (i32.const 1) (i64.const -1)))
    (if (i32.eq (local.get $r) (i32.const -2))
      (then (drop (call $rel (local.get $first) (i32.const 1))) (return (i32.const -2))))
    (drop (call $rel (local.get $second) (i32.const 1)))
    (drop (call $rel (local.get $first) (i32.const 1)))
    (local.get $r))
  (func (export "ab") (result i32) (call $cross (i32.const 0) (i32.const 1)))
  (func (export "ba") (result i32) (call $cross (i32.const 1) (i32.const 0))))
