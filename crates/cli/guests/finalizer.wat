;; A guest whose finalizer never returns: unload bounds it by the `finalizer-run` timeout.
(module
  (func (export "answer") (result i32) (i32.const 42))
  (func (export "warden_on_unload") (loop $l (br $l))))
