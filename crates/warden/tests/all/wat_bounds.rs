//! Review of issue #16: a module given as WAT text is bounded like a binary one. Parsing
//! text costs tens of bytes of memory per byte of input (a 21 MB file of `(func)` took
//! 1.3 GB and seconds before its functions were counted), so the function-count limit is
//! checked on the text before it is parsed, and the compile-time bound covers the parse.

use crate::common::runtime_with;
use std::time::Duration;
use warden::{EngineConfig, Error, RuntimeConfig, exit_code};

fn runtime(engine: EngineConfig) -> warden::Runtime {
    runtime_with(RuntimeConfig {
        engine,
        ..RuntimeConfig::default()
    })
    .0
}

/// Text with more functions than the limit is refused before it is parsed: a parse error
/// after the functions is never reached.
#[test]
fn too_many_functions_in_text_are_refused_before_parsing() {
    let rt = runtime(EngineConfig {
        max_functions: 3,
        ..EngineConfig::default()
    });
    let e = rt
        .load_module(b"(module (func) (func (export \"f\")) (func) (func) this is not wat")
        .unwrap_err();
    assert!(matches!(e, Error::TooManyFunctions { limit: 3, .. }), "{e}");
    assert_eq!(exit_code::for_error(&e), exit_code::BAD_INPUT);
}

/// Only functions count: exports, types and references that name `func` do not, and
/// imported functions do, as in a binary.
#[test]
fn the_text_count_counts_functions_only() {
    let rt = runtime(EngineConfig {
        max_functions: 3,
        ..EngineConfig::default()
    });
    rt.load_module(
        br#"(module
              (type (func)) (type (func (param (ref null func))))
              (import "warden" "critical_enter" (func))
              (func $a (export "a")) (func $b)
              (export "b" (func $b)) (export "c" (func $a))
              (table 2 funcref) (elem (i32.const 0) func $a $b))"#,
    )
    .unwrap();
    let e = rt
        .load_module(
            br#"(module (import "warden" "critical_enter" (func))
                 (import "warden" "critical_exit" (func)) (func) (func))"#,
        )
        .unwrap_err();
    assert!(
        matches!(e, Error::TooManyFunctions { count: 4, limit: 3 }),
        "{e}"
    );
}

/// The compile-time bound covers turning text into a binary: a bound of zero refuses a
/// large text (whose parse cannot be instant) as too long to compile, instead of parsing
/// it unbounded first (here, to a parse error at its end).
#[test]
fn the_compile_bound_covers_parsing_text() {
    let rt = runtime(EngineConfig {
        compile_timeout: Some(Duration::ZERO),
        ..EngineConfig::default()
    });
    let wat = format!("(module (func {}) oops)", "(nop)".repeat(2_000_000));
    let e = rt.load_module(wat.as_bytes()).unwrap_err();
    assert!(matches!(e, Error::CompileTimeout { .. }), "{e}");
    assert_eq!(exit_code::for_error(&e), exit_code::BAD_INPUT);
}
