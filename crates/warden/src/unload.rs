//! Unload's bounds: the policy's `unload-domain` and `rude-unload-domain` timeouts, watched
//! while an unload runs (DESIGN §2 "Domains and unload").
//!
//! The unload itself is a sequence of lifecycle steps owned by the domain (`begin`: block
//! entry, abort the call in flight, fail the queue) and its worker (`finish_unload`: the
//! finalizer, the critical release, the store dropped). [`watch`] only bounds it: when a bound
//! passes, [`Escalation::unload_timed_out`](crate::escalation::Escalation::unload_timed_out)
//! decides, and the unload turns rude, the domain is killed, or a process action is taken.

use std::sync::Arc;
use warden_policy::Operation;

use crate::call::AbortReason;
use crate::domain::DomainShared;
use crate::escalation::Effect;

/// Bounds an unload that has begun; returns when it is done (or unbounded).
pub(crate) async fn watch(dom: Arc<DomainShared>) {
    let policy = &dom.rt.policy;
    for op in [Operation::UnloadDomain, Operation::RudeUnloadDomain] {
        if op == Operation::UnloadDomain && dom.life.is_rude() {
            continue;
        }
        let Some(bound) = policy.operation(op).timeout else {
            dom.wait_unloaded().await;
            return;
        };
        if tokio::time::timeout(bound, dom.wait_unloaded())
            .await
            .is_ok()
        {
            return;
        }
        let current = dom.current();
        match dom.escalation().unload_timed_out(current.as_deref(), op) {
            Effect::Unload { kill, .. } => {
                dom.carry_out(
                    current.as_ref(),
                    Effect::Unload { rude: true, kill },
                    AbortReason::Unload,
                );
            }
            other => {
                dom.kill();
                dom.carry_out(current.as_ref(), other, AbortReason::Unload);
            }
        }
    }
}
