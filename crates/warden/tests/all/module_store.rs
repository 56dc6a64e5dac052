//! The module store (DESIGN §1, the loader hook): `DirStore` lookups and every refusal, and
//! the precompiled cache's integrity check — a reused artifact, and a stale, truncated or
//! tampered one detected, counted, reported and recompiled, for core modules and components.

use crate::common::{self, components};
use std::path::{Path, PathBuf};
use warden::wasmtime::component::Val;
use warden::{
    CacheStats, CallOptions, DirStore, DomainConfig, EngineConfig, Error, ModuleRef, ModuleStore,
    Runtime, RuntimeConfig, StoreError,
};

/// A fresh directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("warden-module-store-{}", std::process::id()))
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn answer(n: i32) -> String {
    format!(r#"(module (func (export "answer") (result i32) i32.const {n}))"#)
}

fn put(store: &Path, name: &str, version: &str, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(store.join(name)).unwrap();
    std::fs::write(store.join(name).join(format!("{version}.wasm")), bytes).unwrap();
}

async fn run_answer(rt: &Runtime, module: &warden::Module) -> i32 {
    let d = rt
        .create_domain(module, DomainConfig::default())
        .await
        .expect("domain");
    let out = d
        .invoke("answer", &[], CallOptions::default())
        .await
        .expect("answer runs");
    d.unload().await;
    out.values[0].unwrap_i32()
}

#[tokio::test(flavor = "multi_thread")]
async fn dir_store_lists_versions_and_loads_the_latest_or_the_one_named() {
    let dir = scratch("lookups");
    put(&dir, "calc", "1.0", answer(1));
    put(&dir, "calc", "1.9", answer(9));
    put(&dir, "calc", "1.10", answer(10));
    // Not versions: another extension, a hidden file, an invalid stem.
    std::fs::write(dir.join("calc/README.txt"), "hi").unwrap();
    std::fs::write(dir.join("calc/.2.0.wasm"), answer(99)).unwrap();
    std::fs::write(dir.join("calc/v@3.wasm"), answer(99)).unwrap();
    let store = DirStore::new(&dir).unwrap();
    assert_eq!(store.versions("calc").unwrap(), ["1.0", "1.9", "1.10"]);
    assert_eq!(store.latest("calc").unwrap(), "1.10");

    let (rt, _rec) = common::runtime();
    let latest = rt
        .load_from_store(&store, &ModuleRef::parse("calc").unwrap())
        .unwrap();
    assert_eq!(
        (latest.name.as_str(), latest.version.as_str()),
        ("calc", "1.10")
    );
    assert_eq!(run_answer(&rt, &latest.module).await, 10);
    let named = rt
        .load_from_store(&store, &ModuleRef::parse("calc@1.9").unwrap())
        .unwrap();
    assert_eq!(named.version, "1.9");
    assert_eq!(run_answer(&rt, &named.module).await, 9);
    // Identified by digest: the stored bytes', the same as loading those bytes directly.
    let stored = store.fetch("calc", "1.9").unwrap();
    assert_eq!(named.module.digest(), stored.digest);
    assert_eq!(
        rt.load_module(answer(9).as_bytes()).unwrap().digest(),
        stored.digest
    );
    assert_ne!(latest.module.digest(), named.module.digest());
}

#[tokio::test(flavor = "multi_thread")]
async fn dir_store_refusals_name_what_was_wrong_and_never_escape_the_directory() {
    let root = scratch("refusals");
    let dir = root.join("store");
    put(&dir, "calc", "1.0", answer(1));
    put(&dir, "broken", "1.0", "this is not wasm");
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::create_dir_all(dir.join("odd/2.0.wasm")).unwrap(); // a directory, not a file
    std::fs::write(dir.join("plainfile"), "x").unwrap();
    // A real module outside the store: no name may reach it.
    put(&root, "outside", "1.0", answer(666));
    let store = DirStore::new(&dir).unwrap();
    let (rt, _rec) = common::runtime();
    let load = |r: &str| rt.load_from_store(&store, &ModuleRef::parse(r).unwrap());

    match load("nope") {
        Err(Error::Store(StoreError::UnknownName { name, .. })) => assert_eq!(name, "nope"),
        other => panic!("unknown name: {other:?}"),
    }
    match load("plainfile") {
        Err(Error::Store(StoreError::UnknownName { name, .. })) => assert_eq!(name, "plainfile"),
        other => panic!("a file is no module directory: {other:?}"),
    }
    match load("calc@2.0") {
        Err(Error::Store(e @ StoreError::UnknownVersion { .. })) => {
            let msg = e.to_string();
            assert!(msg.contains("`calc`") && msg.contains("`2.0`"), "{msg}");
            assert!(msg.contains("it has: 1.0"), "the versions it has: {msg}");
        }
        other => panic!("unknown version: {other:?}"),
    }
    match load("empty") {
        Err(Error::Store(StoreError::NoVersions { name })) => assert_eq!(name, "empty"),
        other => panic!("no versions: {other:?}"),
    }
    match load("odd@2.0") {
        Err(Error::Store(e @ StoreError::Unreadable { .. })) => {
            assert!(e.to_string().contains("2.0.wasm"), "names the path: {e}")
        }
        other => panic!("unreadable: {other:?}"),
    }
    match load("broken@1.0") {
        Err(Error::InvalidModule(_)) => {}
        other => panic!("malformed: {other:?}"),
    }

    // Path escapes: refused by the name and version checks, naming the value, before any
    // path is built — through the trait directly, as an embedder's caller could.
    for name in [
        "../outside",
        "..",
        ".",
        "a/b",
        "/etc",
        "calc\0",
        "a\\b",
        ".hidden",
        "",
    ] {
        for e in [
            store.versions(name).unwrap_err(),
            store.fetch(name, "1.0").unwrap_err(),
        ] {
            match &e {
                StoreError::InvalidName { name: n, .. } => assert_eq!(n, name),
                other => panic!("{name:?} was not refused: {other:?}"),
            }
            assert!(e.to_string().contains(&format!("{name:?}")), "{e}");
        }
    }
    for version in ["../../outside/1.0", "..", "1.0/..", "1\u{0}", "/abs"] {
        match store.fetch("calc", version).unwrap_err() {
            StoreError::InvalidVersion { version: v, .. } => assert_eq!(v, version),
            other => panic!("{version:?} was not refused: {other:?}"),
        }
    }
    assert!(matches!(
        ModuleRef::parse("../outside@1.0"),
        Err(StoreError::InvalidName { .. })
    ));
    // The store itself must exist and be a directory.
    for missing in [root.join("missing"), dir.join("plainfile")] {
        match DirStore::new(&missing) {
            Err(e @ StoreError::Unreadable { .. }) => {
                assert!(
                    e.to_string().contains(&missing.display().to_string()),
                    "{e}"
                )
            }
            other => panic!("{}: {other:?}", missing.display()),
        }
    }
    // And a file above the store's bound is refused before it is read.
    let small = DirStore::new(&dir).unwrap().with_max_bytes(8);
    assert!(matches!(
        small.fetch("calc", "1.0"),
        Err(StoreError::TooLarge { limit: 8, .. })
    ));
}

fn cached(dir: &Path, stack: usize) -> (Runtime, common::Recorder) {
    common::runtime_with(RuntimeConfig {
        engine: EngineConfig {
            pooling: false,
            max_wasm_stack: stack,
            cache_dir: Some(dir.to_path_buf()),
            ..EngineConfig::default()
        },
        ..RuntimeConfig::default()
    })
}

const STACK: usize = 512 << 10;

fn stats(rt: &Runtime) -> CacheStats {
    rt.artifact_cache().expect("the cache is configured")
}

/// The one artifact in the cache directory.
fn artifact(dir: &Path) -> PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cached_artifact_is_reused_by_another_runtime_without_compiling() {
    let dir = scratch("reuse");
    let src = answer(42);
    let (first, _) = cached(&dir, STACK);
    assert!(common::runtime().0.artifact_cache().is_none());
    let m = first.load_module(src.as_bytes()).unwrap();
    assert_eq!(
        stats(&first),
        CacheStats {
            misses: 1,
            written: 1,
            ..CacheStats::default()
        }
    );
    assert_eq!(artifact(&dir), dir.join(format!("{}.cwasm", m.digest())));
    // The in-memory cache answers first within one runtime.
    first.load_module(src.as_bytes()).unwrap();
    assert_eq!(stats(&first).hits + stats(&first).misses, 1);

    let (second, rec) = cached(&dir, STACK);
    let m2 = second.load_module(src.as_bytes()).unwrap();
    assert_eq!(
        stats(&second),
        CacheStats {
            hits: 1,
            ..CacheStats::default()
        }
    );
    assert_eq!(m2.digest(), m.digest());
    assert_eq!(run_answer(&second, &m2).await, 42);
    assert!(rec.named("artifact_rejected").is_empty());
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Loads `src` in a fresh runtime after `damage` was done to its artifact: the damage is
/// detected as `reason`, reported, the module recompiled and rewritten, and a runtime after
/// that loads the repaired artifact.
async fn detected_and_recompiled(
    test: &str,
    src: &[u8],
    damage: impl FnOnce(&Path),
    stack: usize,
    reason: &str,
) -> (Runtime, warden::Module) {
    let dir = scratch(test);
    let (first, _) = cached(&dir, STACK);
    first.load_module(src).unwrap();
    let file = artifact(&dir);
    damage(&file);

    let (rt, rec) = cached(&dir, stack);
    let m = rt.load_module(src).expect("recompiled from source");
    let s = stats(&rt);
    let expected = CacheStats {
        stale: u64::from(reason == "stale"),
        corrupt: u64::from(reason == "corrupt"),
        written: 1,
        ..CacheStats::default()
    };
    assert_eq!(s, expected, "{test}");
    let events = rec.named("artifact_rejected");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["reason"], reason);
    assert_eq!(events[0]["module"], m.digest());
    // Rewritten: the next runtime of the same configuration trusts it.
    let (next, _) = cached(&dir, stack);
    next.load_module(src).unwrap();
    assert_eq!(
        stats(&next),
        CacheStats {
            hits: 1,
            ..CacheStats::default()
        },
        "{test}: the artifact was rewritten"
    );
    (rt, m)
}

fn truncate(file: &Path) {
    let len = std::fs::metadata(file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.set_len(len / 2).unwrap();
}

fn flip_one_byte(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let i = bytes.len() / 2 + 7; // inside the compiled code, past the header
    bytes[i] ^= 0x01;
    std::fs::write(file, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_artifact_from_another_engine_configuration_is_recompiled() {
    let src = answer(7);
    let (rt, m) =
        detected_and_recompiled("stale", src.as_bytes(), |_| {}, STACK * 2, "stale").await;
    assert_eq!(run_answer(&rt, &m).await, 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_artifact_is_detected_and_recompiled() {
    let src = answer(8);
    let (rt, m) =
        detected_and_recompiled("truncated", src.as_bytes(), truncate, STACK, "corrupt").await;
    assert_eq!(run_answer(&rt, &m).await, 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_artifact_one_byte_flipped_is_detected_and_recompiled() {
    let src = answer(9);
    let (rt, m) =
        detected_and_recompiled("tampered", src.as_bytes(), flip_one_byte, STACK, "corrupt").await;
    assert_eq!(run_answer(&rt, &m).await, 9);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_artifact_under_another_digest_is_not_trusted() {
    // A valid artifact copied under another module's name would run the wrong code.
    let dir = scratch("renamed");
    let (first, _) = cached(&dir, STACK);
    let a = first.load_module(answer(1).as_bytes()).unwrap();
    let b_digest = warden::StoredModule::new("b", "1", answer(2).into_bytes()).digest;
    std::fs::copy(
        dir.join(format!("{}.cwasm", a.digest())),
        dir.join(format!("{b_digest}.cwasm")),
    )
    .unwrap();
    let (rt, rec) = cached(&dir, STACK);
    let b = rt.load_module(answer(2).as_bytes()).unwrap();
    assert_eq!(stats(&rt).corrupt, 1);
    assert_eq!(rec.named("artifact_rejected")[0]["reason"], "corrupt");
    assert_eq!(run_answer(&rt, &b).await, 2, "b's own code, not a's");
}

async fn run_component(rt: &Runtime, module: &warden::Module) -> Val {
    assert!(module.is_component());
    let d = rt
        .create_domain(module, DomainConfig::default())
        .await
        .expect("component domain");
    let out = d
        .invoke_component("api#get", &[], CallOptions::default())
        .await
        .expect("get runs");
    d.unload().await;
    out.component_values.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn components_are_cached_and_checked_too() {
    let src = components::typed();
    let dir = scratch("component-reuse");
    let (first, _) = cached(&dir, STACK);
    first.load_module(&src).unwrap();
    let (second, _) = cached(&dir, STACK);
    let m = second.load_module(&src).unwrap();
    assert_eq!(stats(&second).hits, 1);
    assert_eq!(run_component(&second, &m).await, Val::U32(7));

    for (test, damage, stack, reason) in [
        (
            "component-stale",
            (|_: &Path| {}) as fn(&Path),
            STACK * 2,
            "stale",
        ),
        ("component-truncated", truncate, STACK, "corrupt"),
        ("component-tampered", flip_one_byte, STACK, "corrupt"),
    ] {
        let (rt, m) = detected_and_recompiled(test, &src, damage, stack, reason).await;
        assert_eq!(run_component(&rt, &m).await, Val::U32(7), "{test}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cache_directory_that_cannot_be_made_is_a_config_error() {
    let dir = scratch("bad-cache");
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let result = Runtime::new(RuntimeConfig {
        engine: EngineConfig {
            pooling: false,
            cache_dir: Some(file.join("sub")),
            ..EngineConfig::default()
        },
        ..RuntimeConfig::default()
    });
    match result {
        Err(Error::Config(msg)) => assert!(msg.contains("a-file"), "{msg}"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a cache under a file was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_written_temporary_file_is_never_read_and_old_ones_are_swept() {
    // What a writer that crashed mid-write leaves: its temporary file, never the artifact.
    let dir = scratch("crashed-writer");
    let src = answer(5);
    let digest = warden::StoredModule::new("x", "1", src.clone().into_bytes()).digest;
    let fresh = dir.join(format!(".{digest}.cwasm.1.0.tmp"));
    let old = dir.join(format!(".{digest}.cwasm.1.1.tmp"));
    for f in [&fresh, &old] {
        std::fs::write(f, b"WARDNC01 half an artifact").unwrap();
    }
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let (rt, rec) = cached(&dir, STACK);
    assert!(
        !old.exists(),
        "an abandoned temporary file is removed when the cache opens"
    );
    assert!(
        fresh.exists(),
        "a recent one may be another writer's, still writing"
    );
    let m = rt.load_module(src.as_bytes()).unwrap();
    assert_eq!(
        stats(&rt),
        CacheStats {
            misses: 1,
            written: 1,
            ..CacheStats::default()
        },
        "a temporary file is no artifact"
    );
    assert!(rec.named("artifact_rejected").is_empty());
    assert_eq!(run_answer(&rt, &m).await, 5);
}
