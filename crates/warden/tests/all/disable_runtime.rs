//! Review of issue #16: `disable-runtime` is the most severe action; when it answers a
//! failure of a running call (a passed deadline), that call must not go on running. It
//! spun for ever, so `warden run --deadline` never ended.

use crate::common;
use std::time::Duration;
use warden::{
    Action, CallError, CallOptions, DomainConfig, Error, Failure, Policy, Preset, RuntimeConfig,
    exit_code,
};

/// A bound on "it ends", never a speed claim.
const ENDS_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_answered_by_disable_runtime_ends_the_call() {
    let mut policy = Policy::preset(Preset::Server);
    policy
        .set_failure(Failure::Deadline, Action::DisableRuntime)
        .unwrap();
    let (rt, rec) = common::runtime_with(RuntimeConfig {
        policy,
        ..RuntimeConfig::default()
    });
    let m = rt
        .load_module(br#"(module (func (export "spin") (loop $l (br $l))))"#)
        .unwrap();
    let d = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
    let call = d.invoke(
        "spin",
        &[],
        CallOptions {
            deadline: Some(Duration::from_millis(50)),
            ..CallOptions::default()
        },
    );
    let e = tokio::time::timeout(ENDS_WITHIN, call)
        .await
        .expect("the call ends")
        .unwrap_err();
    assert!(matches!(e, Error::Call(CallError::Timeout)), "{e}");
    assert_eq!(exit_code::for_error(&e), exit_code::TIMEOUT);
    assert_eq!(rec.named("runtime_disabled").len(), 1);
    // Disabled: no more guest work is admitted.
    let again = d.invoke("spin", &[], CallOptions::default()).await;
    assert!(again.is_err());
}
