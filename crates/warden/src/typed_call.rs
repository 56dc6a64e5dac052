//! Typed calls of core exports with common signatures.
//!
//! `wasmtime::Func::call_async` (untyped, with `Val`s) asks the engine's type registry for
//! the function's type on every call, to check the arguments against it: on a warm call that
//! is the largest part of wasmtime's own cost (a registry lock and reference counts, each an
//! atomic read-modify-write). Warden has checked a call's arguments against the export's
//! signature before admitting it, so for the signatures below the worker calls a
//! [`TypedFunc`], made once per domain and export, which checks nothing per call. Every other
//! signature takes the untyped call. The two behave alike in everything else (traps, epoch
//! checks and deadlines, aborts, the memory limiter), since both run the same function on the
//! same store.
//!
//! The set is small on purpose: each signature is one more instance of wasmtime's call path
//! in the binary. It covers exports without parameters or with one or two integers of one
//! type, returning nothing or one integer.

use wasmtime::{Func, Store, TypedFunc, Val, ValType};

use crate::domain::DomainState;

/// A call's parameters, read from the values a caller passed (checked beforehand).
trait Params: Sized {
    fn from_vals(args: &[Val]) -> Option<Self>;
}

/// `impl Params` for the tuple of the listed types, each read with `Val`'s accessor of its
/// name (`Val::i32`, `Val::i64`).
macro_rules! params {
    ($($($arg:ident: $ty:ident),*;)*) => {$(
        impl Params for ($($ty,)*) {
            fn from_vals(args: &[Val]) -> Option<Self> {
                match args {
                    [$($arg),*] => Some(($($arg.$ty()?,)*)),
                    _ => None,
                }
            }
        }
    )*};
}

params! {
    ;
    a: i32;
    a: i32, b: i32;
    a: i64;
    a: i64, b: i64;
}

/// A call's results, written where the untyped call would write them.
trait Results {
    fn write(self, out: &mut [Val]);
}

impl Results for () {
    fn write(self, _: &mut [Val]) {}
}

/// `impl Results` for one integer, written as the `Val` variant given.
macro_rules! results {
    ($($ty:ident => $variant:ident),*) => {$(
        impl Results for $ty {
            fn write(self, out: &mut [Val]) {
                if let Some(slot) = out.first_mut() {
                    *slot = Val::$variant(self);
                }
            }
        }
    )*};
}

results!(i32 => I32, i64 => I64);

macro_rules! typed_core {
    ($($variant:ident: [$($p:ident),*] -> [$($r:ident),*] = $params:ty => $results:ty;)*) => {
        /// Which of the set an export's signature is (looked up with its signature).
        #[derive(Copy, Clone, Debug, PartialEq, Eq)]
        pub(crate) enum Shape {
            $($variant,)*
        }

        impl Shape {
            /// The shape of a signature, when it is one of the set.
            pub(crate) fn of(params: &[ValType], results: &[ValType]) -> Option<Shape> {
                match (params, results) {
                    $(([$(ValType::$p),*], [$(ValType::$r),*]) => Some(Shape::$variant),)*
                    _ => None,
                }
            }
        }

        /// A core export's typed handle, for the signatures listed in the [module
        /// docs](self).
        pub(crate) enum TypedCore {
            $($variant(TypedFunc<$params, $results>),)*
        }

        impl TypedCore {
            /// The typed handle of `func`, whose signature has `shape` (wasmtime checks it
            /// once more, here).
            pub(crate) fn of(
                shape: Shape,
                func: Func,
                store: &Store<DomainState>,
            ) -> Option<TypedCore> {
                match shape {
                    $(Shape::$variant => {
                        func.typed::<$params, $results>(store).ok().map(TypedCore::$variant)
                    })*
                }
            }

            /// Calls the function with `args` (of its parameter types: checked at the call's
            /// request), writing its result into `results`.
            pub(crate) async fn call(
                &self,
                store: &mut Store<DomainState>,
                args: &[Val],
                results: &mut [Val],
            ) -> wasmtime::Result<()> {
                let mismatch =
                    || wasmtime::format_err!("argument type mismatch (checked at admission)");
                match self {
                    $(TypedCore::$variant(f) => {
                        let params = <$params as Params>::from_vals(args).ok_or_else(mismatch)?;
                        f.call_async(&mut *store, params).await?.write(results);
                    })*
                }
                Ok(())
            }
        }
    };
}

typed_core! {
    Unit: [] -> [] = () => ();
    UnitI32: [] -> [I32] = () => i32;
    UnitI64: [] -> [I64] = () => i64;
    I32: [I32] -> [] = (i32,) => ();
    I32I32: [I32] -> [I32] = (i32,) => i32;
    I32I64: [I32] -> [I64] = (i32,) => i64;
    I32x2: [I32, I32] -> [] = (i32, i32) => ();
    I32x2I32: [I32, I32] -> [I32] = (i32, i32) => i32;
    I32x2I64: [I32, I32] -> [I64] = (i32, i32) => i64;
    I64: [I64] -> [] = (i64,) => ();
    I64I32: [I64] -> [I32] = (i64,) => i32;
    I64I64: [I64] -> [I64] = (i64,) => i64;
    I64x2: [I64, I64] -> [] = (i64, i64) => ();
    I64x2I32: [I64, I64] -> [I32] = (i64, i64) => i32;
    I64x2I64: [I64, I64] -> [I64] = (i64, i64) => i64;
}
