//! `warden:host@0.1.0` (sdk/wit/warden-host.wit) for component guests: the component-model
//! face of Warden's own imports. Every function here converts its values and calls the same
//! function in [`super::imports::op`] the core import calls, so the two faces are one
//! implementation: the same deferrals (critical and constrained regions, held locks), the
//! same lock table, wait-for graph and poisoning, the same memory gate and quotas, and the
//! same abortable waits (an abort that lands while a component is parked in `acquire` or
//! `sleep` drops the call future as it does for a core guest).
//!
//! Where a core import returns a negative code, these return the WIT `error-code`; where a
//! core import traps (an unbalanced region exit), these trap too.

use super::imports::op;
use super::imports::{BAD_ARGUMENT, DEADLOCK_VICTIM, INSUFFICIENT_MEMORY, TIMEOUT};
use crate::domain::DomainState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../sdk/wit/warden-host.wit",
        world: "imports",
        imports: {
            "warden:host/locks.acquire": async | trappable,
            "warden:host/host.sleep": async | trappable,
            "warden:host/domains.call": async | trappable,
            default: trappable,
        },
    });
}

use bindings::warden::host::{domains, handles, host, locks, memory_gate, regions, types};
use types::ErrorCode;

/// Links `warden:host` into a component linker.
pub(crate) fn link(linker: &mut wasmtime::component::Linker<DomainState>) -> wasmtime::Result<()> {
    bindings::Imports::add_to_linker::<DomainState, wasmtime::component::HasSelf<DomainState>>(
        linker,
        |s| s,
    )
}

/// The WIT error for a core code; `held` is what `-6` means for this function.
fn error(code: i32, held: ErrorCode) -> ErrorCode {
    match code {
        TIMEOUT => ErrorCode::Timeout,
        DEADLOCK_VICTIM => ErrorCode::DeadlockVictim,
        super::imports::ABORTED => ErrorCode::Aborted,
        super::imports::NOT_PERMITTED => ErrorCode::NotPermitted,
        super::imports::HELD => held,
        INSUFFICIENT_MEMORY => ErrorCode::InsufficientMemory,
        crate::domain_call::DOMAIN_UNLOADED => ErrorCode::DomainUnloaded,
        crate::domain_call::CALLEE_FAILED => ErrorCode::CalleeFailed,
        _ => ErrorCode::BadArgument,
    }
}

impl types::Host for DomainState {}

impl regions::Host for DomainState {
    fn critical_enter(&mut self) -> wasmtime::Result<()> {
        op::critical_enter(self)
    }

    fn critical_exit(&mut self) -> wasmtime::Result<()> {
        op::critical_exit(self)
    }

    fn constrained_enter(&mut self) -> wasmtime::Result<()> {
        op::constrained_enter(self)
    }

    fn constrained_exit(&mut self) -> wasmtime::Result<()> {
        op::constrained_exit(self)
    }

    fn abort_requested(&mut self) -> wasmtime::Result<bool> {
        Ok(op::abort_requested(self))
    }
}

impl locks::Host for DomainState {
    async fn acquire(
        &mut self,
        name: String,
        timeout_ms: Option<u64>,
    ) -> wasmtime::Result<Result<locks::Acquired, ErrorCode>> {
        Ok(
            match op::lock_acquire(op::At::of(self), &name, timeout_ms).await? {
                Ok(warden_core::locks::Acquired::Clean) => Ok(locks::Acquired::Clean),
                Ok(warden_core::locks::Acquired::Poisoned) => Ok(locks::Acquired::Poisoned),
                Err(code) => Err(error(code, ErrorCode::AlreadyHeld)),
            },
        )
    }

    fn release(&mut self, name: String) -> wasmtime::Result<Result<(), ErrorCode>> {
        Ok(op::lock_release(self, &name)?.map_err(|code| error(code, ErrorCode::NotHeld)))
    }
}

impl memory_gate::Host for DomainState {
    fn reserve(&mut self, bytes: u64) -> wasmtime::Result<Result<memory_gate::Token, ErrorCode>> {
        Ok(op::gate_reserve(self, bytes)
            .and_then(|token| u32::try_from(token).map_err(|_| BAD_ARGUMENT))
            .map_err(|code| error(code, ErrorCode::BadArgument)))
    }

    fn release(&mut self, token: memory_gate::Token) -> wasmtime::Result<Result<(), ErrorCode>> {
        // A token the host never gave (core tokens are positive i32s) is a bad argument.
        let Ok(token) = i32::try_from(token) else {
            return Ok(Err(ErrorCode::BadArgument));
        };
        Ok(op::gate_release(self, token).map_err(|code| error(code, ErrorCode::BadArgument)))
    }
}

impl host::Host for DomainState {
    async fn sleep(&mut self, ms: u64) -> wasmtime::Result<Result<(), ErrorCode>> {
        op::sleep(op::At::of(self), ms).await?;
        Ok(Ok(()))
    }

    fn log(&mut self, level: i32, message: String) -> wasmtime::Result<()> {
        op::log(self, level, message.as_bytes());
        Ok(())
    }
}

impl domains::Host for DomainState {
    async fn call(
        &mut self,
        link: String,
        export: String,
        input: Vec<u8>,
        timeout_ms: Option<u64>,
    ) -> wasmtime::Result<Result<Vec<u8>, ErrorCode>> {
        if input.len() > crate::domain_call::MAX_ARGUMENT
            || !crate::domain_call::valid_link_name(&link)
            || !crate::domain_call::valid_link_name(&export)
        {
            return Ok(Err(ErrorCode::BadArgument));
        }
        let timeout = timeout_ms.map(std::time::Duration::from_millis);
        let at = op::At::of(self);
        Ok(op::domain_call(at, &link, &export, input, timeout)
            .await?
            .map_err(|code| error(code, ErrorCode::BadArgument)))
    }
}

impl handles::Host for DomainState {
    fn close(&mut self, handle: handles::Handle) -> wasmtime::Result<Result<(), ErrorCode>> {
        Ok(op::handle_close(self, handle).map_err(|code| error(code, ErrorCode::BadArgument)))
    }
}
