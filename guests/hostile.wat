;; A guest with one friendly export and one of each kind of hostility, for trying Warden's
;; containment from the command line:
;;   warden run guests/hostile.wat --invoke answer --invoke spin --invoke recurse \
;;       --invoke hog --invoke trap --deadline 1s --max-memory 8MiB
(module
  (memory (export "memory") 1)
  (func (export "answer") (result i32) (i32.const 42))
  (func (export "spin") (loop $l (br $l)))
  (func $recurse (export "recurse") (result i32) (i32.add (call $recurse) (i32.const 1)))
  (func (export "hog")
    (loop $l
      (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable)
  (func (export "trap") (result i32) (i32.div_u (i32.const 1) (i32.const 0))))
