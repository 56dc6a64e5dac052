//! Issue #10: the host-call boundary. Every import — WASI, Warden's, the embedder's — runs
//! through one layer: a host wait is woken by a deliverable abort, uninterruptible host code
//! defers a polite abort, errors and panics fail the call naming the import, host time is
//! counted, and the domain survives to serve its next call.

use crate::common::{Recorder, exited, runtime, runtime_with};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use warden::host::{ERROR_CODES, IMPORTS, WasmType};
use warden::{
    CallError, CallHandle, CallOptions, Domain, DomainConfig, Error, HostFunctions, Policy, Preset,
    Runtime, RuntimeConfig,
};

/// How long a woken wait may take to end: far below the 30 s the guests wait for.
const BOUND: Duration = Duration::from_secs(10);

/// A WASI guest: `sleep30` sleeps 30 s in `poll_oneoff`; `answer` returns 42.
const WASI_SLEEPER: &str = r#"
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "sleep30") (result i32)
    ;; one clock subscription at 0: tag 0 (clock), monotonic, relative 30 s
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 30000000000))
    (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
  (func (export "answer") (result i32) (i32.const 42)))
"#;

fn deadline(ms: u64) -> CallOptions {
    CallOptions {
        deadline: Some(Duration::from_millis(ms)),
        ..CallOptions::default()
    }
}

async fn domain(rt: &Runtime, wat: &str) -> Domain {
    let m = rt.load_module(wat.as_bytes()).expect("module");
    rt.create_domain(&m, DomainConfig::default())
        .await
        .expect("domain")
}

async fn join(call: CallHandle) -> Result<warden::CallOutput, CallError> {
    tokio::time::timeout(BOUND, call.join())
        .await
        .expect("the host wait was woken")
}

/// Waits until the call is parked in a host wait (its `call_started` event is out and the
/// domain is busy); the guests below park at once.
async fn started(rec: &Recorder, call: &CallHandle) {
    let until = std::time::Instant::now() + BOUND;
    while !rec
        .named("call_started")
        .iter()
        .any(|e| e["call"] == call.id().0)
    {
        assert!(std::time::Instant::now() < until, "call never started");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn later_call_works(d: &Domain) {
    let out = d
        .invoke("answer", &[], CallOptions::default())
        .await
        .expect("the domain serves its next call");
    assert_eq!(out.values[0].unwrap_i32(), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_oneoff_sleep_ends_at_the_deadline_and_the_domain_survives() {
    let (rt, rec) = runtime();
    let d = domain(&rt, WASI_SLEEPER).await;
    let call = d.call("sleep30", &[], deadline(200)).unwrap();
    assert_eq!(join(call).await.unwrap_err(), CallError::Timeout);
    assert!(rec.named("abort_delivered").len() == 1);
    later_call_works(&d).await;
    let finished = rec.named("call_finished");
    assert!(
        finished[0]["host_ms"].as_f64().unwrap() > 0.0,
        "the wait counts as host time: {finished:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_oneoff_sleep_ends_at_the_deadline_under_the_clr_preset() {
    // CLR: infinite abort timeouts, so nothing but the delivery itself can end the wait.
    let (rt, _) = runtime_with(RuntimeConfig {
        policy: Policy::preset(Preset::Clr),
        ..RuntimeConfig::default()
    });
    let d = domain(&rt, WASI_SLEEPER).await;
    let call = d.call("sleep30", &[], deadline(200)).unwrap();
    assert_eq!(join(call).await.unwrap_err(), CallError::Timeout);
    later_call_works(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_oneoff_sleep_is_woken_by_an_explicit_abort() {
    let (rt, rec) = runtime();
    let d = domain(&rt, WASI_SLEEPER).await;
    let call = d.call("sleep30", &[], CallOptions::default()).unwrap();
    started(&rec, &call).await;
    call.abort();
    assert_eq!(join(call).await.unwrap_err(), CallError::Aborted);
    later_call_works(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_oneoff_sleep_is_woken_by_unload() {
    let (rt, rec) = runtime();
    let d = domain(&rt, WASI_SLEEPER).await;
    let call = d.call("sleep30", &[], CallOptions::default()).unwrap();
    started(&rec, &call).await;
    let report = tokio::time::timeout(BOUND, d.unload())
        .await
        .expect("unload ends");
    assert!(!report.rude, "a polite unload was enough: {report:?}");
    assert_eq!(join(call).await.unwrap_err(), CallError::DomainUnloaded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_ends_while_a_call_sleeps_in_poll_oneoff() {
    let (rt, rec) = runtime();
    let d = domain(&rt, WASI_SLEEPER).await;
    let call = d.call("sleep30", &[], CallOptions::default()).unwrap();
    started(&rec, &call).await;
    rt.exit(7);
    assert_eq!(exited(&rt, &rec).await, vec![7]);
}

/// Embedder functions: `env::double` (sync), `env::fail`, `env::boom` (panics),
/// `env::wait` (async, 30 s), `env::shielded` (async, uninterruptible, until released).
struct Host {
    host: HostFunctions,
    release: Arc<tokio::sync::Notify>,
    entered: Arc<tokio::sync::Notify>,
    shielded_done: Arc<AtomicU32>,
}

fn host() -> Host {
    let release = Arc::new(tokio::sync::Notify::new());
    let entered = Arc::new(tokio::sync::Notify::new());
    let shielded_done = Arc::new(AtomicU32::new(0));
    let mut host = HostFunctions::new();
    host.func("env", "double", |cx, (x,): (i32,)| {
        assert!(cx.call_id().is_some());
        Ok(x * 2)
    });
    host.func("env", "fail", |_, ()| -> Result<(), _> {
        Err(warden::HostError::msg("the table is closed"))
    });
    host.func("env", "boom", |_, ()| -> Result<(), _> {
        panic!("a host bug");
    });
    let e = entered.clone();
    host.func_async("env", "wait", move |_, ()| {
        let e = e.clone();
        async move {
            e.notify_one();
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(1i32)
        }
    });
    let (e, r, done) = (entered.clone(), release.clone(), shielded_done.clone());
    host.func_async_uninterruptible("env", "shielded", move |_, ()| {
        let (e, r, done) = (e.clone(), r.clone(), done.clone());
        async move {
            e.notify_one();
            r.notified().await;
            done.fetch_add(1, Ordering::SeqCst);
            Ok(5i32)
        }
    });
    Host {
        host,
        release,
        entered,
        shielded_done,
    }
}

const EMBEDDED: &str = r#"
(module
  (import "env" "double" (func $double (param i32) (result i32)))
  (import "env" "fail" (func $fail))
  (import "env" "boom" (func $boom))
  (import "env" "wait" (func $wait (result i32)))
  (import "env" "shielded" (func $shielded (result i32)))
  (memory (export "memory") 1)
  (func (export "answer") (result i32) (call $double (i32.const 21)))
  (func (export "fail") (call $fail))
  (func (export "boom") (call $boom))
  (func (export "wait") (result i32) (call $wait))
  (func (export "shielded") (result i32) (call $shielded)))
"#;

async fn embedded() -> (Runtime, Recorder, Domain, Host) {
    let h = host();
    let (rt, rec) = runtime_with(RuntimeConfig {
        host_functions: h.host.clone(),
        ..RuntimeConfig::default()
    });
    let d = domain(&rt, EMBEDDED).await;
    (rt, rec, d, h)
}

fn trap_message(e: CallError) -> String {
    match e {
        CallError::Trap { message, .. } => message,
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedder_function_returns_to_the_guest() {
    let (_rt, _, d, _) = embedded().await;
    later_call_works(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedder_error_fails_the_call_naming_the_import() {
    let (_rt, rec, d, _) = embedded().await;
    let e = d
        .invoke("fail", &[], CallOptions::default())
        .await
        .unwrap_err();
    let Error::Call(e) = e else {
        panic!("a call error: {e:?}")
    };
    let message = trap_message(e);
    assert!(
        message.contains("env::fail") && message.contains("the table is closed"),
        "{message}"
    );
    assert_eq!(rec.named("call_finished")[0]["outcome"], "trap");
    later_call_works(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedder_panic_is_caught_and_fails_the_call_naming_the_import() {
    let (rt, _, d, _) = embedded().await;
    let e = d
        .invoke("boom", &[], CallOptions::default())
        .await
        .unwrap_err();
    let Error::Call(e) = e else {
        panic!("a call error: {e:?}")
    };
    let message = trap_message(e);
    assert!(
        message.contains("env::boom")
            && message.contains("panicked")
            && message.contains("a host bug"),
        "{message}"
    );
    // The worker, the domain and the runtime are all still up.
    later_call_works(&d).await;
    assert!(!rt.is_exiting());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_async_embedder_function_ends_at_the_deadline() {
    let (_rt, _, d, _) = embedded().await;
    let call = d.call("wait", &[], deadline(100)).unwrap();
    assert_eq!(join(call).await.unwrap_err(), CallError::Timeout);
    later_call_works(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_async_embedder_function_is_aborted_and_unloaded() {
    let (_rt, _, d, h) = embedded().await;
    let entered = h.entered.notified();
    let call = d.call("wait", &[], CallOptions::default()).unwrap();
    entered.await;
    call.abort();
    assert_eq!(join(call).await.unwrap_err(), CallError::Aborted);

    let entered = h.entered.notified();
    let call = d.call("wait", &[], CallOptions::default()).unwrap();
    entered.await;
    let report = tokio::time::timeout(BOUND, d.unload()).await.unwrap();
    assert!(!report.rude);
    assert_eq!(join(call).await.unwrap_err(), CallError::DomainUnloaded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uninterruptible_host_call_defers_a_polite_abort_until_it_returns() {
    let (_rt, rec, d, h) = embedded().await;
    let entered = h.entered.notified();
    let call = d.call("shielded", &[], CallOptions::default()).unwrap();
    entered.await;
    call.abort();
    let deferred = rec.named("abort_deferred");
    assert_eq!(deferred.len(), 1, "{deferred:?}");
    assert_eq!(deferred[0]["why"], "host_call");
    assert_eq!(rec.named("abort_delivered").len(), 0, "not while it runs");
    h.release.notify_one();
    assert_eq!(join(call).await.unwrap_err(), CallError::Aborted);
    assert_eq!(
        h.shielded_done.load(Ordering::SeqCst),
        1,
        "the host code ran to its end"
    );
    later_call_works(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rude_abort_does_not_wait_for_an_uninterruptible_host_call() {
    let (_rt, _, d, h) = embedded().await;
    let entered = h.entered.notified();
    let call = d.call("shielded", &[], CallOptions::default()).unwrap();
    entered.await;
    call.rude_abort();
    assert_eq!(join(call).await.unwrap_err(), CallError::RudeAborted);
    assert_eq!(h.shielded_done.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedder_functions_may_not_take_wardens_modules() {
    let mut host = HostFunctions::new();
    host.func("warden", "log", |_, ()| Ok(()));
    let e = Runtime::new(RuntimeConfig {
        host_functions: host,
        ..RuntimeConfig::default()
    })
    .err()
    .expect("refused");
    assert!(e.to_string().contains("warden::log"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_nobody_provides_is_named() {
    let (rt, _) = runtime();
    let m = rt
        .load_module(br#"(module (import "env" "missing" (func)))"#)
        .unwrap();
    let e = rt
        .create_domain(&m, DomainConfig::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

/// The table is the truth: a guest importing every `"warden"` function with the table's
/// signatures instantiates, and one with a wrong signature does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_import_table_matches_the_linked_functions() {
    let (rt, _) = runtime();
    let imports: String = IMPORTS
        .iter()
        .map(|i| {
            format!(
                "(import \"warden\" \"{}\" (func {}))\n",
                i.name,
                i.signature()
            )
        })
        .collect();
    let wat = format!("(module {imports} (memory (export \"memory\") 1))");
    let m = rt.load_module(wat.as_bytes()).unwrap();
    rt.create_domain(&m, DomainConfig::default())
        .await
        .expect("every signature in the table is the linked one");
    for i in IMPORTS {
        assert!(!i.doc.is_empty());
        for code in i.codes {
            assert!(ERROR_CODES.iter().any(|(c, _)| c == code), "{i:?}");
        }
        let wrong = format!(
            "(module (import \"warden\" \"{}\" (func (param f64))))",
            i.name
        );
        let m = rt.load_module(wrong.as_bytes()).unwrap();
        assert!(rt.create_domain(&m, DomainConfig::default()).await.is_err());
    }
    assert!(
        IMPORTS.iter().any(|i| i.name == "lock_acquire"
            && i.params == [WasmType::I32, WasmType::I32, WasmType::I64])
    );
}

/// Which abort ends the wait.
#[derive(Copy, Clone, Debug)]
enum Kind {
    Deadline,
    Abort,
    Unload,
    Exit,
}

const KINDS: [Kind; 4] = [Kind::Deadline, Kind::Abort, Kind::Unload, Kind::Exit];

/// Runs `export` (which blocks in a host wait) in a fresh domain of `wat`, ends it with
/// `kind`, and checks the outcome, and for a deadline or an abort that the domain survives.
async fn woken_by(kind: Kind, wat: &str, export: &str, config: DomainConfig) {
    let (rt, rec) = runtime();
    let m = rt.load_module(wat.as_bytes()).unwrap();
    let d = rt.create_domain(&m, config).await.unwrap();
    let opts = match kind {
        Kind::Deadline => deadline(200),
        _ => CallOptions::default(),
    };
    let call = d.call(export, &[], opts).unwrap();
    started(&rec, &call).await;
    match kind {
        Kind::Deadline => {
            assert_eq!(
                join(call).await.unwrap_err(),
                CallError::Timeout,
                "{kind:?}"
            );
            later_call_works(&d).await;
        }
        Kind::Abort => {
            call.abort();
            assert_eq!(
                join(call).await.unwrap_err(),
                CallError::Aborted,
                "{kind:?}"
            );
            later_call_works(&d).await;
        }
        Kind::Unload => {
            let report = tokio::time::timeout(BOUND, d.unload()).await.unwrap();
            assert!(!report.rude, "{kind:?}: {report:?}");
            assert_eq!(
                join(call).await.unwrap_err(),
                CallError::DomainUnloaded,
                "{kind:?}"
            );
        }
        Kind::Exit => {
            rt.exit(9);
            assert_eq!(exited(&rt, &rec).await, vec![9], "{kind:?}");
        }
    }
}

/// `read` reads stdin once; `flood` writes 64 KiB blocks to stdout forever.
const WASI_IO: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "read") (result i32)
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 100))
    (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
  (func (export "flood")
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $l
      (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
      (br $l)))
  (func (export "answer") (result i32) (i32.const 42)))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fd_read_of_a_silent_stdin_is_woken_by_every_kind_of_abort() {
    for kind in KINDS {
        // The writing end is kept (never written, never closed) until the case is done.
        let (_writer, reader) = tokio::io::duplex(64);
        let mut config = DomainConfig::default();
        config.wasi.stdin = Some(warden::stdio::GuestInput::new(reader));
        woken_by(kind, WASI_IO, "read", config).await;
    }
}

/// A writer that blocks until the test lets it go (then fails, as a closed pipe would).
struct Stalled(std::sync::mpsc::Receiver<()>);

impl std::io::Write for Stalled {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.recv();
        Err(std::io::ErrorKind::BrokenPipe.into())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fd_write_to_a_stalled_stdout_is_woken_by_every_kind_of_abort() {
    for kind in KINDS {
        let (release, stalled) = std::sync::mpsc::channel();
        let mut config = DomainConfig::default();
        config.wasi.stdout = Some(warden::stdio::GuestOutput::to_writer(Stalled(stalled)));
        woken_by(kind, WASI_IO, "flood", config).await;
        drop(release);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_still_works_after_a_read_was_aborted() {
    use tokio::io::AsyncWriteExt;
    let (rt, _) = runtime();
    let (mut writer, reader) = tokio::io::duplex(64);
    let mut config = DomainConfig::default();
    config.wasi.stdin = Some(warden::stdio::GuestInput::new(reader));
    let m = rt.load_module(WASI_IO.as_bytes()).unwrap();
    let d = rt.create_domain(&m, config).await.unwrap();
    let call = d.call("read", &[], deadline(100)).unwrap();
    assert_eq!(join(call).await.unwrap_err(), CallError::Timeout);
    // WASI's state survived the dropped read: the next read gets the bytes.
    writer.write_all(b"hello").await.unwrap();
    let out = d.invoke("read", &[], CallOptions::default()).await.unwrap();
    assert_eq!(out.values[0].unwrap_i32(), 0, "errno success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_ends_while_a_call_waits_in_an_embedder_function() {
    let (rt, rec, d, h) = embedded().await;
    let entered = h.entered.notified();
    let _call = d.call("wait", &[], CallOptions::default()).unwrap();
    entered.await;
    rt.exit(3);
    assert_eq!(exited(&rt, &rec).await, vec![3]);
}
