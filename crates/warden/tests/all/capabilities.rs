//! Capabilities (DESIGN §1, §4): a domain's grant is checked against its module's imports at
//! load, before any guest code runs; the refusal names every forbidden import and its
//! category. Core modules and components alike, embedder functions by what they declare.

use crate::common::{self, components};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use warden::capability::ImportCapability;
use warden::host::HostFunctions;
use warden::{Capability, DomainConfig, Error, Grant, Preopen, RuntimeConfig};

/// A start function that calls the embedder's `probe.record` first, then would take a lock
/// and write to stdout: if any guest code ran, the counter says so.
const RECORDING_START: &str = r#"
(module
  (import "probe" "record" (func $record))
  (import "warden" "lock_acquire" (func $acquire (param i32 i32 i64) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "warden" "log" (func $log (param i32 i32 i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $now (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func $start (call $record))
  (start $start)
  (func (export "answer") (result i32) i32.const 42))
"#;

fn recording_host(starts: &Arc<AtomicU32>) -> HostFunctions {
    let mut host = HostFunctions::new();
    let starts = starts.clone();
    host.func("probe", "record", move |_cx, (): ()| {
        starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    })
    // Plumbing of the test's own: allowed under every grant, so only the others decide.
    .requires(Capability::Compute);
    host
}

fn forbidden(e: &Error) -> Vec<(String, String, Capability)> {
    match e {
        Error::NotPermitted { imports, .. } => imports
            .iter()
            .map(|i| (i.module.clone(), i.name.clone(), i.capability))
            .collect(),
        other => panic!("expected NotPermitted, got {other}"),
    }
}

fn entry(module: &str, name: &str, cap: Capability) -> (String, String, Capability) {
    (module.to_string(), name.to_string(), cap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_import_is_refused_before_any_guest_code_runs() {
    let starts = Arc::new(AtomicU32::new(0));
    let (rt, rec) = common::runtime_with(RuntimeConfig {
        host_functions: recording_host(&starts),
        ..RuntimeConfig::default()
    });
    let module = rt.load_module(RECORDING_START.as_bytes()).unwrap();
    let config = |grant| DomainConfig {
        grant,
        ..DomainConfig::default()
    };
    let e = rt
        .create_domain(&module, config(Grant::SAFE))
        .await
        .expect_err("refused under safe");
    // Every forbidden import, in import order, each with its category; `log` and the clock
    // are safe.
    assert_eq!(
        forbidden(&e),
        vec![
            entry("warden", "lock_acquire", Capability::Synchronization),
            entry("wasi_snapshot_preview1", "fd_write", Capability::Stdio),
        ]
    );
    let msg = e.to_string();
    assert!(
        msg.contains("`warden`.`lock_acquire` (synchronization)")
            && msg.contains("`wasi_snapshot_preview1`.`fd_write` (stdio)")
            && msg.contains("grant `safe`")
            && msg.contains("`safe,stdio,synchronization`"),
        "{msg}"
    );
    assert_eq!(warden::exit_code::for_error(&e), 120);
    // Nothing ran and nothing of a domain was made or announced.
    assert_eq!(starts.load(Ordering::SeqCst), 0, "the start function ran");
    assert_eq!(rt.domain_count(), 0);
    for name in ["domain_loaded", "call_started", "call_finished"] {
        assert!(
            rec.named(name).is_empty(),
            "a `{name}` event: {:?}",
            rec.json()
        );
    }
    // The grant it asks for admits it, and then the start function does run: the probe can
    // see guest code.
    let enough: Grant = "safe,stdio,synchronization".parse().unwrap();
    let domain = rt.create_domain(&module, config(enough)).await.unwrap();
    assert_eq!(starts.load(Ordering::SeqCst), 1);
    domain.unload().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pure_check_agrees_with_creation() {
    let starts = Arc::new(AtomicU32::new(0));
    let (rt, _rec) = common::runtime_with(RuntimeConfig {
        host_functions: recording_host(&starts),
        ..RuntimeConfig::default()
    });
    let module = rt.load_module(RECORDING_START.as_bytes()).unwrap();
    let required = rt.required_capabilities(&module);
    let want = [
        ("probe", "record", Capability::Compute),
        ("warden", "lock_acquire", Capability::Synchronization),
        ("wasi_snapshot_preview1", "fd_write", Capability::Stdio),
        ("warden", "log", Capability::Log),
        (
            "wasi_snapshot_preview1",
            "clock_time_get",
            Capability::Clock,
        ),
    ];
    assert_eq!(
        required,
        want.map(|(m, n, c)| ImportCapability {
            module: m.into(),
            name: n.into(),
            capability: c
        })
    );
    let pure = rt.check_grant(&module, Grant::EXTERNAL).unwrap_err();
    assert_eq!(
        forbidden(&pure),
        vec![entry("warden", "lock_acquire", Capability::Synchronization)]
    );
    assert!(Grant::EXTERNAL.check(&required).is_err());
    rt.check_grant(&module, Grant::UNSAFE).unwrap();
    Grant::EXTERNAL
        .with(Capability::Synchronization)
        .check(&required)
        .unwrap();
    assert_eq!(
        starts.load(Ordering::SeqCst),
        0,
        "a check runs no guest code"
    );
    assert_eq!(rt.domain_count(), 0);
}

/// One import of each category a preset decides, each in a module of its own: a preset
/// admits exactly the modules whose category it holds, and each preset admits all its
/// predecessor does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_nest_and_each_admits_exactly_its_categories() {
    let (rt, _rec) = common::runtime();
    let imports = [
        (
            "warden",
            "abort_requested",
            "(result i32)",
            Capability::Regions,
        ),
        (
            "warden",
            "gate_release",
            "(param i32) (result i32)",
            Capability::Gate,
        ),
        (
            "wasi_snapshot_preview1",
            "sched_yield",
            "(result i32)",
            Capability::Compute,
        ),
        (
            "wasi_snapshot_preview1",
            "clock_res_get",
            "(param i32 i32) (result i32)",
            Capability::Clock,
        ),
        (
            "wasi_snapshot_preview1",
            "random_get",
            "(param i32 i32) (result i32)",
            Capability::Random,
        ),
        (
            "wasi_snapshot_preview1",
            "fd_read",
            "(param i32 i32 i32 i32) (result i32)",
            Capability::Stdio,
        ),
        (
            "wasi_snapshot_preview1",
            "path_open",
            "(param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)",
            Capability::Filesystem,
        ),
        (
            "wasi_snapshot_preview1",
            "sock_shutdown",
            "(param i32 i32) (result i32)",
            Capability::Network,
        ),
        (
            "wasi_snapshot_preview1",
            "environ_sizes_get",
            "(param i32 i32) (result i32)",
            Capability::Environment,
        ),
        (
            "warden",
            "lock_release",
            "(param i32 i32) (result i32)",
            Capability::Synchronization,
        ),
        (
            "wasi_snapshot_preview1",
            "poll_oneoff",
            "(param i32 i32 i32 i32) (result i32)",
            Capability::Blocking,
        ),
        (
            "warden",
            "sleep_ms",
            "(param i64) (result i32)",
            Capability::Blocking,
        ),
        (
            "warden",
            "handle_close",
            "(param i32) (result i32)",
            Capability::HostState,
        ),
    ];
    let mut admitted_before = 0;
    for (_, preset) in Grant::PRESETS {
        let mut admitted = 0;
        for (module, name, sig, cap) in imports {
            let wat = format!(
                r#"(module (import "{module}" "{name}" (func {sig})) (memory (export "memory") 1))"#
            );
            let m = rt.load_module(wat.as_bytes()).unwrap();
            let config = DomainConfig {
                grant: preset,
                ..DomainConfig::default()
            };
            match rt.create_domain(&m, config).await {
                Ok(d) => {
                    assert!(
                        preset.allows(cap),
                        "{preset} admitted {module}.{name} ({cap})"
                    );
                    admitted += 1;
                    d.unload().await;
                }
                Err(e) => {
                    assert!(!preset.allows(cap), "{preset} refused {module}.{name}: {e}");
                    assert_eq!(forbidden(&e), vec![entry(module, name, cap)]);
                }
            }
        }
        assert!(
            admitted > admitted_before,
            "{preset} admits no more than the one before"
        );
        admitted_before = admitted;
    }
    assert_eq!(admitted_before, imports.len(), "unsafe admits everything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_is_checked_by_interface() {
    let (rt, rec) = common::runtime();
    let files = rt.load_module(&components::files_command()).unwrap();
    let safe = DomainConfig {
        grant: Grant::SAFE,
        ..DomainConfig::default()
    };
    let e = rt
        .create_domain(&files, safe.clone())
        .await
        .expect_err("refused");
    let got = forbidden(&e);
    let has = |iface: &str, cap| {
        got.iter()
            .any(|(m, n, c)| m.starts_with(iface) && n.is_empty() && *c == cap)
    };
    assert!(
        has("wasi:filesystem/preopens", Capability::Filesystem),
        "{got:?}"
    );
    assert!(
        has("wasi:filesystem/types", Capability::Filesystem),
        "{got:?}"
    );
    assert!(has("wasi:cli/stdout", Capability::Stdio), "{got:?}");
    assert!(has("wasi:cli/stdin", Capability::Stdio), "{got:?}");
    assert!(
        has("wasi:cli/environment", Capability::Environment),
        "{got:?}"
    );
    // wasi:io and wasi:cli/exit are plumbing: never listed.
    assert!(
        got.iter()
            .all(|(m, _, _)| !m.starts_with("wasi:io/") && !m.starts_with("wasi:cli/exit")),
        "{got:?}"
    );
    assert!(
        e.to_string()
            .contains("`wasi:filesystem/preopens@0.2.0` (filesystem)"),
        "{e}"
    );
    assert!(rec.named("domain_loaded").is_empty());
    let external = DomainConfig {
        grant: Grant::EXTERNAL,
        ..DomainConfig::default()
    };
    rt.create_domain(&files, external)
        .await
        .unwrap()
        .unload()
        .await;

    // warden:host: regions, the gate and log are safe; locks, handles and sleep are not, and
    // `host`'s functions are told apart.
    let guest = rt.load_module(&components::host_guest()).unwrap();
    let e = rt.create_domain(&guest, safe).await.expect_err("refused");
    let got = forbidden(&e);
    assert!(
        got.iter()
            .any(|(m, n, c)| m.starts_with("warden:host/locks")
                && n.is_empty()
                && *c == Capability::Synchronization),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|(m, _, c)| m.starts_with("warden:host/handles") && *c == Capability::HostState),
        "{got:?}"
    );
    assert!(
        got.contains(&entry(
            "warden:host/host@0.1.0",
            "sleep",
            Capability::Blocking
        )),
        "{got:?}"
    );
    assert!(
        got.iter()
            .all(|(m, n, _)| !m.starts_with("warden:host/regions")
                && !m.starts_with("warden:host/memory-gate")
                && n != "log"),
        "{got:?}"
    );
    let enough: Grant = "safe,synchronization,host-state,blocking".parse().unwrap();
    let config = DomainConfig {
        grant: enough,
        ..DomainConfig::default()
    };
    rt.create_domain(&guest, config)
        .await
        .unwrap()
        .unload()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedder_functions_need_what_they_declare() {
    let mut host = HostFunctions::new();
    host.func("kv", "get", |_cx, (k,): (i32,)| Ok(k));
    host.func("kv", "put", |_cx, (k,): (i32,)| Ok(k))
        .requires(Capability::MayLeakOnAbort);
    host.func("kv", "now", |_cx, (): ()| Ok(0i64))
        .requires(Capability::Clock);
    let (rt, _rec) = common::runtime_with(RuntimeConfig {
        host_functions: host,
        ..RuntimeConfig::default()
    });
    let module = rt
        .load_module(
            br#"(module
              (import "kv" "get" (func (param i32) (result i32)))
              (import "kv" "put" (func (param i32) (result i32)))
              (import "kv" "now" (func (result i64))))"#,
        )
        .unwrap();
    let e = rt.check_grant(&module, Grant::EXTERNAL).unwrap_err();
    assert_eq!(
        forbidden(&e),
        vec![
            entry("kv", "get", Capability::HostState),
            entry("kv", "put", Capability::MayLeakOnAbort),
        ]
    );
    let e = rt
        .check_grant(&module, Grant::SAFE.with(Capability::HostState))
        .unwrap_err();
    assert_eq!(
        forbidden(&e),
        vec![entry("kv", "put", Capability::MayLeakOnAbort)]
    );
    let all = DomainConfig::default();
    assert_eq!(
        all.grant,
        Grant::UNSAFE,
        "the library's default keeps everything"
    );
    rt.create_domain(&module, all).await.unwrap().unload().await;
}

/// A component importing an embedder interface needs what the interface declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedder_interfaces_need_what_they_declare() {
    const WIT: &str = r#"
package test:probe;

world guest {
  import my:probe/p@0.1.0;
  export run: func() -> u32;
}

package my:probe@0.1.0 {
  interface p {
    ping: func() -> u32;
  }
}
"#;
    const WAT: &str = r#"
(module
  (import "my:probe/p@0.1.0" "ping" (func $ping (result i32)))
  (memory (export "memory") 1)
  (func (export "run") (result i32) (call $ping)))
"#;
    let mut host = HostFunctions::new();
    host.component(
        "my:probe/p",
        |_| (),
        |linker, _get| {
            linker
                .instance("my:probe/p@0.1.0")?
                .func_wrap("ping", |_store, (): ()| Ok((7u32,)))?;
            Ok(())
        },
    )
    .requires(Capability::Network);
    assert_eq!(
        host.component_capability("my:probe/p@0.1.0"),
        Capability::Network
    );
    assert_eq!(
        host.component_capability("other:x/y"),
        warden::host::DEFAULT_CAPABILITY
    );
    let (rt, _rec) = common::runtime_with(RuntimeConfig {
        host_functions: host,
        ..RuntimeConfig::default()
    });
    let module = rt
        .load_module(&components::build(WIT, "guest", WAT))
        .unwrap();
    let e = rt.check_grant(&module, Grant::SAFE).unwrap_err();
    assert_eq!(
        forbidden(&e),
        vec![entry("my:probe/p@0.1.0", "", Capability::Network)]
    );
    let config = DomainConfig {
        grant: Grant::EXTERNAL,
        ..DomainConfig::default()
    };
    let domain = rt.create_domain(&module, config).await.unwrap();
    let out = domain
        .invoke_component("run", &[], warden::CallOptions::default())
        .await
        .unwrap();
    assert_eq!(
        out.component_values,
        vec![warden::wasmtime::component::Val::U32(7)]
    );
    domain.unload().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preopens_need_filesystem_and_unknown_imports_keep_their_error() {
    let (rt, _rec) = common::runtime();
    let module = rt
        .load_module(br#"(module (memory (export "memory") 1))"#)
        .unwrap();
    let mut config = DomainConfig {
        grant: Grant::SAFE,
        ..DomainConfig::default()
    };
    config.wasi.preopens.push(Preopen::new(".", "/data"));
    let e = rt
        .create_domain(&module, config)
        .await
        .expect_err("refused");
    assert!(
        matches!(&e, Error::Config(m) if m.contains("filesystem") && m.contains("preopens")),
        "{e}"
    );
    // An import nobody provides is the link error it always was, whatever the grant.
    let unknown = rt
        .load_module(br#"(module (import "nowhere" "f" (func)) (import "warden" "sleep_ms" (func (param i64) (result i32))))"#)
        .unwrap();
    let config = DomainConfig {
        grant: Grant::SAFE,
        ..DomainConfig::default()
    };
    let e = rt
        .create_domain(&unknown, config)
        .await
        .expect_err("refused");
    assert!(
        matches!(&e, Error::UnknownImport { module, .. } if module == "nowhere"),
        "{e}"
    );
}
