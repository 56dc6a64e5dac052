//! The `kv_store` example, run as a test: CI builds the example and runs its logic.

#[path = "../../examples/kv_store.rs"]
mod kv_store;

use warden::CallError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_store_example_works_end_to_end() {
    let s = kv_store::demo().await.expect("the example runs");
    assert_eq!(s.loaded, "hello, kv");
    assert_eq!(s.missing, -1);
    assert_eq!(s.watch, CallError::Timeout);
    assert!(
        s.bug.contains("kv::get") && s.bug.contains("panicked"),
        "{}",
        s.bug
    );
    assert!(s.still_serving);
}
