;; The Extism side's guest (`bench/extism/run`): guests/bench.wat's loop, returning 0 instead of
;; the count. Extism reads an export's i32 as its return code and fails `Plugin::call` on any
;; non-zero one ("Returned non-zero exit code: 1000"), so the same file cannot serve both sides.
(module
  (func (export "run") (result i32)
    (local $i i32)
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))
    (i32.const 0)))
