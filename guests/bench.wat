;; The binary benchmarks' guest (`.ci/bench-binary`): `run` counts to 1,000 and returns it.
(module
  (func (export "run") (result i32)
    (local $i i32)
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))
    (local.get $i)))
