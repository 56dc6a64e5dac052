//! A domain's start: instantiation runs the module's start function, which is guest code
//! like any call. Its failures get a call's outcome, exit code and `call_finished` event; a
//! refusal before any guest code ran (the initial memory, a full instance pool) is soft.

use std::time::Instant;

use crate::call::{CallCtl, CallError, CallOutput, CallResult};
use crate::domain::{DomainShared, classify};
use crate::error::Error;

/// The outcome of a failed instantiation, and the error `create_domain` returns for it.
///
/// `refused` is the initial memory the budget refused (requested, available), if it did.
pub(crate) fn failed(
    ctl: &CallCtl,
    e: wasmtime::Error,
    refused: Option<(u64, u64)>,
) -> (CallResult, Error) {
    if let Some((requested, available)) = refused {
        let err = CallError::InsufficientMemory {
            requested,
            available,
        };
        return (Err(err.clone()), Error::Call(err));
    }
    if let Some(pool) = e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        let err = CallError::InsufficientMemory {
            requested: 0,
            available: 0,
        };
        return (Err(err), Error::AtCapacity(pool.to_string()));
    }
    // Guest code ran if the error comes from it: a trap, an abort, an exit, or a host
    // function's error with the guest's frames. Anything else is instantiation itself.
    let from_guest = e.downcast_ref::<wasmtime::Trap>().is_some()
        || e.downcast_ref::<wasmtime::WasmBacktrace>().is_some()
        || e.downcast_ref::<crate::domain::AbortSignal>().is_some()
        || e.downcast_ref::<wasmtime_wasi::I32Exit>().is_some()
        || ctl.abort.delivered().is_some();
    if !from_guest {
        let message = format!("{e:#}");
        let err = CallError::Trap {
            message: message.clone(),
            backtrace: String::new(),
        };
        return (Err(err), Error::Instantiate(crate::error::cause(e)));
    }
    match classify(ctl, e) {
        Ok(CallOutput {
            exit_code: Some(code),
            ..
        }) => (
            Ok(CallOutput {
                exit_code: Some(code),
                ..CallOutput::core(Vec::new())
            }),
            Error::StartExited(code),
        ),
        Ok(_) => {
            let message = "start function ended without an instance".to_string();
            let err = CallError::Trap {
                message: message.clone(),
                backtrace: String::new(),
            };
            (Err(err), Error::Instantiate(message.into()))
        }
        Err(err) => (Err(err.clone()), Error::Call(err)),
    }
}

impl DomainShared {
    /// The `call_finished` of a start that did not give the domain.
    pub(crate) fn report_start(&self, ctl: &CallCtl, result: &CallResult, started: Instant) {
        self.emit_call_finished(ctl, result, Some(started), || match result {
            Ok(out) => out
                .exit_code
                .map(|c| format!("start function exited with {c}")),
            Err(e) => e.detail().or_else(|| Some("start function".into())),
        });
    }
}
