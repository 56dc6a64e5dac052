;; `warden stress`'s component guest (the core module of `component.wit`'s world, encoded as a
;; component at run time with wit-component): a typed answer and the hostile kinds.
(module
  (memory (export "memory") 1)
  (func (export "answer") (result i32) (i32.const 42))
  (func (export "spin") (loop $l (br $l)))
  (func (export "trap") unreachable)
  (func (export "hog")
    (loop $l
      (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable))
