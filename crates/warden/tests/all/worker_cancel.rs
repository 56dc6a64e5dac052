//! Review of issue #16: fail-fast is for Warden's own broken invariants. An embedder that
//! shuts its async runtime down while domains are loaded cancels their workers; that is
//! not a panic, so it is no fail-fast (which would end the process with 119).

use crate::common;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use warden::DomainConfig;

#[test]
fn shutting_the_async_runtime_down_with_live_domains_is_not_a_fail_fast() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (rt, rec, domain) = tokio.block_on(async {
        let (rt, rec) = common::runtime();
        let m = rt.load_module(br#"(module (func (export "f")))"#).unwrap();
        let domain = rt.create_domain(&m, DomainConfig::default()).await.unwrap();
        domain.invoke("f", &[], Default::default()).await.unwrap();
        (rt, rec, domain)
    });
    let reports = Arc::new(AtomicUsize::new(0));
    let seen = reports.clone();
    rt.on_fail_fast(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
    });
    drop(tokio);
    assert_eq!(reports.load(Ordering::SeqCst), 0, "a fail-fast report");
    assert!(!rt.is_exiting(), "the runtime started an exit");
    assert!(rec.exits.lock().unwrap().is_empty());
    assert!(
        rec.named("escalation")
            .iter()
            .all(|e| e["failure"] != "fatal-runtime"),
        "{:?}",
        rec.named("escalation")
    );
    drop(domain);
}
