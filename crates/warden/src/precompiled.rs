//! The precompiled cache: compiled code kept on disk, so a restarted host (or another runtime
//! with the same engine settings) loads a module without compiling it again, and loads it
//! **only after an integrity check**.
//!
//! Turned on by [`EngineConfig::cache_dir`](crate::EngineConfig::cache_dir); then every
//! [`Runtime::load_module`](crate::Runtime::load_module) (and
//! [`Runtime::load_from_store`](crate::Runtime::load_from_store)) that misses the in-memory
//! digest cache looks for `CACHE_DIR/SOURCE_DIGEST.cwasm` first.
//!
//! # The artifact
//!
//! One file per source digest: a fixed header, then wasmtime's serialized code
//! (`Module::serialize` / `Component::serialize`, what `Engine::precompile_*` produce).
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `WARDNC01` (the format's version) |
//! | 32 | SHA-256 of the source bytes (must equal the file's name) |
//! | 32 | the engine fingerprint: SHA-256 of wasmtime's `precompile_compatibility_hash` (wasmtime's version, target, compiler and code-changing settings) and Warden's own settings that change code or what was checked before compiling (epoch interruption, wasm stack and fiber stack size, allocator and its largest memory, the function-count bound, Warden's version) |
//! | 32 | SHA-256 of the kind, the length and the artifact bytes that follow |
//! | 1 | kind: 0 core module, 1 component |
//! | 8 | artifact length, little endian |
//! | n | the artifact |
//!
//! A file whose magic or fingerprint differs is **stale** (written by another Warden, wasmtime
//! or engine configuration); one that is shorter or longer than its header says, whose
//! source digest is not its name, or whose artifact digest does not match is **corrupt**
//! (truncated, tampered, bit rot). Either is counted ([`CacheStats`]), reported (an
//! [`EventKind::ArtifactRejected`](crate::EventKind::ArtifactRejected) event and a tracing
//! warning), and the module is compiled from source and the artifact rewritten — never
//! deserialized. Writes go to a temporary file in the same directory, are synced, then
//! renamed over the artifact: a crash mid-write leaves an unused `.tmp` file (removed when a
//! later cache opens and finds it over an hour old), never a half artifact.
//!
//! # Where it ends
//!
//! The check proves that the artifact is the one *some writer of the cache directory* stored
//! for these source bytes under this engine configuration, whole and unchanged since. It is
//! **not a signature**: anyone who can write the directory can write a consistent header
//! around code of their choosing, and deserialized code runs as the host. The cache
//! directory must be writable only by the host. Two runtimes with different engine settings
//! sharing one directory each rewrite the other's artifacts (counted as stale), correct but
//! slow: give each configuration its own directory.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::engine::{Code, EngineConfig};
use crate::error::Error;

const MAGIC: &[u8; 8] = b"WARDNC01";
const HEADER: usize = 8 + 32 + 32 + 32 + 1 + 8;
/// Artifacts larger than this are neither written nor read.
const MAX_ARTIFACT: u64 = 1 << 30;
/// A temporary file older than this was left by a writer that crashed.
const STALE_TMP: Duration = Duration::from_secs(3600);
/// The artifact file's extension.
pub const EXTENSION: &str = "cwasm";

/// What the precompiled cache did, since the runtime was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Modules loaded from a checked artifact, without compiling.
    pub hits: u64,
    /// Modules compiled because no artifact was there.
    pub misses: u64,
    /// Artifacts rejected as stale (another engine or configuration), then recompiled.
    pub stale: u64,
    /// Artifacts rejected as corrupt (truncated, tampered, or unreadable), then recompiled.
    pub corrupt: u64,
    /// Artifacts written.
    pub written: u64,
    /// Artifacts that could not be written (the load itself still succeeded).
    pub write_failures: u64,
}

/// Why an artifact was not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// `stale` or `corrupt`.
    pub(crate) reason: &'static str,
    pub(crate) detail: String,
}

fn stale(detail: impl Into<String>) -> Rejection {
    Rejection {
        reason: "stale",
        detail: detail.into(),
    }
}

fn corrupt(detail: impl Into<String>) -> Rejection {
    Rejection {
        reason: "corrupt",
        detail: detail.into(),
    }
}

/// What a lookup found.
pub(crate) enum Lookup {
    Hit(Code),
    Miss,
    Rejected(Rejection),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Core = 0,
    Component = 1,
}

/// The cache directory, the engine's fingerprint, and the counters.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    fingerprint: [u8; 32],
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    corrupt: AtomicU64,
    written: AtomicU64,
    write_failures: AtomicU64,
}

/// Feeds `Hash` output into SHA-256, so the fingerprint is the same in every process.
struct ShaHasher(Sha256);

impl std::hash::Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0 // unused: the digest is taken from the inner state
    }
}

/// The engine fingerprint (see the module docs for what it covers).
pub(crate) fn fingerprint(
    engine: &wasmtime::Engine,
    config: &EngineConfig,
    pooling: bool,
) -> [u8; 32] {
    use std::hash::Hash;
    let mut h = ShaHasher(Sha256::new());
    b"warden".hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    engine.precompile_compatibility_hash().hash(&mut h);
    // Warden's own settings (engine.rs sets them on every engine).
    true.hash(&mut h); // epoch interruption
    config.max_wasm_stack.hash(&mut h);
    (config.max_wasm_stack + config.host_stack_headroom).hash(&mut h);
    pooling.hash(&mut h);
    if pooling {
        config.pool_max_memory.hash(&mut h);
    }
    // Checked before compiling: an artifact compiled under a looser bound must be rechecked.
    config.max_functions.hash(&mut h);
    h.0.finalize().into()
}

impl ArtifactCache {
    /// Opens (creating it if needed) the cache in `dir`.
    pub(crate) fn open(dir: &Path, fingerprint: [u8; 32]) -> Result<ArtifactCache, Error> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Config(format!(
                "cache directory {} cannot be created: {e}",
                dir.display()
            ))
        })?;
        let meta = std::fs::metadata(dir)
            .map_err(|e| Error::Config(format!("cache directory {}: {e}", dir.display())))?;
        if !meta.is_dir() {
            return Err(Error::Config(format!(
                "cache directory {} is not a directory",
                dir.display()
            )));
        }
        remove_abandoned(dir);
        Ok(ArtifactCache {
            dir: dir.to_path_buf(),
            fingerprint,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            written: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
        })
    }

    /// The artifact file of a source digest.
    pub(crate) fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.{EXTENSION}"))
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            hits: get(&self.hits),
            misses: get(&self.misses),
            stale: get(&self.stale),
            corrupt: get(&self.corrupt),
            written: get(&self.written),
            write_failures: get(&self.write_failures),
        }
    }

    /// Looks up the artifact of `digest` (hex) and, when it passes the check, deserializes
    /// it. Counts what it found.
    pub(crate) fn get(&self, engine: &wasmtime::Engine, digest: &str, source: &[u8; 32]) -> Lookup {
        let path = self.path(digest);
        let found = match read_bounded(&path) {
            Ok(Some(bytes)) => check(&bytes, source, &self.fingerprint).and_then(|(kind, art)| {
                deserialize(engine, kind, art)
                    .map_err(|e| corrupt(format!("wasmtime refused the checked artifact: {e:#}")))
            }),
            Ok(None) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                return Lookup::Miss;
            }
            Err(e) => Err(corrupt(format!("unreadable: {e}"))),
        };
        match found {
            Ok(code) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Lookup::Hit(code)
            }
            Err(r) => {
                let counter = if r.reason == "stale" {
                    &self.stale
                } else {
                    &self.corrupt
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    artifact = %path.display(),
                    reason = r.reason,
                    "precompiled artifact rejected ({}); recompiling from source",
                    r.detail
                );
                Lookup::Rejected(r)
            }
        }
    }

    /// Writes the artifact of freshly compiled `code` (atomically). A failure is counted and
    /// warned about; the caller's load does not depend on it.
    pub(crate) fn put(&self, digest: &str, source: &[u8; 32], code: &Code) {
        let result = (|| -> Result<(), String> {
            let (kind, art) = match code {
                Code::Core(m) => (Kind::Core, m.serialize()),
                Code::Component(c) => (Kind::Component, c.component.serialize()),
            };
            let art = art.map_err(|e| format!("cannot serialize: {e:#}"))?;
            if art.len() as u64 > MAX_ARTIFACT {
                return Err(format!("{} bytes is more than the cache keeps", art.len()));
            }
            let bytes = encode(kind, source, &self.fingerprint, &art);
            write_atomically(&self.dir, &self.path(digest), &bytes).map_err(|e| e.to_string())
        })();
        match result {
            Ok(()) => {
                self.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.write_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    artifact = %self.path(digest).display(),
                    "precompiled artifact not written: {e}"
                );
            }
        }
    }
}

/// Reads a file whole, `None` when it does not exist; bounded by [`MAX_ARTIFACT`].
fn read_bounded(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(HEADER as u64 + MAX_ARTIFACT + 1)
        .read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

fn encode(kind: Kind, source: &[u8; 32], fingerprint: &[u8; 32], art: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + art.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(source);
    out.extend_from_slice(fingerprint);
    let tail = [&[kind as u8][..], &(art.len() as u64).to_le_bytes()].concat();
    out.extend_from_slice(&artifact_digest(&tail, art));
    out.extend_from_slice(&tail);
    out.extend_from_slice(art);
    out
}

/// The digest the header records: of the kind and length fields and the artifact bytes.
fn artifact_digest(kind_and_len: &[u8], art: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(kind_and_len);
    h.update(art);
    h.finalize().into()
}

/// The integrity check: the artifact's kind and bytes, or why they are not to be trusted.
fn check<'a>(
    bytes: &'a [u8],
    source: &[u8; 32],
    fingerprint: &[u8; 32],
) -> Result<(Kind, &'a [u8]), Rejection> {
    if bytes.len() < HEADER {
        return Err(corrupt(format!(
            "truncated: {} bytes, shorter than the {HEADER}-byte header",
            bytes.len()
        )));
    }
    let (head, art) = bytes.split_at(HEADER);
    if &head[..8] != MAGIC {
        // Another format (or garbage): not ours to read.
        return Err(stale(
            "not a Warden artifact of this format (magic differs)",
        ));
    }
    if &head[8..40] != source {
        return Err(corrupt(
            "its source digest is not the one it is stored under",
        ));
    }
    if &head[40..72] != fingerprint {
        return Err(stale(
            "compiled by another engine or configuration (fingerprint differs)",
        ));
    }
    let len = u64::from_le_bytes(head[105..113].try_into().unwrap_or([0xff; 8]));
    if art.len() as u64 != len {
        return Err(corrupt(format!(
            "truncated or extended: {} artifact bytes, the header says {len}",
            art.len()
        )));
    }
    if artifact_digest(&head[104..], art)[..] != head[72..104] {
        return Err(corrupt(
            "the artifact's digest does not match (tampered or damaged)",
        ));
    }
    let kind = match head[104] {
        0 => Kind::Core,
        1 => Kind::Component,
        k => return Err(corrupt(format!("unknown kind {k}"))),
    };
    Ok((kind, art))
}

/// Turns checked artifact bytes back into code. The one function in Warden that uses
/// `unsafe`.
#[allow(unsafe_code)]
fn deserialize(engine: &wasmtime::Engine, kind: Kind, art: &[u8]) -> wasmtime::Result<Code> {
    // SAFETY: wasmtime requires that the bytes were produced by `serialize` /
    // `precompile_*` of a compatible wasmtime and engine, and not modified since, because
    // deserialized machine code is run without validation. `check` has established, just
    // before this call and on these very bytes held in memory (no file is re-read, so no
    // race with a writer), that: the artifact is exactly as long as its header says; its
    // SHA-256 is the one the header records; the header's engine fingerprint (wasmtime's
    // `precompile_compatibility_hash` plus Warden's code-changing settings) is this engine's;
    // and it is stored for these source bytes. That excludes truncation, accidental damage,
    // a half write and a stale engine. It does NOT authenticate the writer: the digest is not
    // a signature, so soundness rests on the cache directory being writable only by the host
    // (see the module docs). wasmtime additionally checks its own header for compatibility.
    match kind {
        Kind::Core => unsafe { wasmtime::Module::deserialize(engine, art) }.map(Code::Core),
        Kind::Component => unsafe { wasmtime::component::Component::deserialize(engine, art) }
            .map(|c| Code::Component(crate::component::CompiledComponent::new(engine, c))),
    }
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` by way of a synced temporary file in `dir`, renamed over it.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = std::fs::File::create_new(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Removes temporary files that writers which crashed left behind.
fn remove_abandoned(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.ends_with(".tmp")) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TMP);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_accepts_only_the_exact_artifact() {
        let (src, fp) = ([1u8; 32], [2u8; 32]);
        let good = encode(Kind::Core, &src, &fp, b"artifact bytes");
        assert_eq!(
            check(&good, &src, &fp).unwrap(),
            (Kind::Core, &b"artifact bytes"[..])
        );
        assert_eq!(check(&good, &src, &[3u8; 32]).unwrap_err().reason, "stale");
        assert_eq!(check(&good, &[9u8; 32], &fp).unwrap_err().reason, "corrupt");
        for cut in [0, 10, HEADER, good.len() - 1] {
            assert_eq!(
                check(&good[..cut], &src, &fp).unwrap_err().reason,
                "corrupt"
            );
        }
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(check(&longer, &src, &fp).unwrap_err().reason, "corrupt");
        for i in [HEADER, good.len() - 1, 72, 104] {
            let mut flipped = good.clone();
            flipped[i] ^= 1;
            assert!(
                check(&flipped, &src, &fp).is_err(),
                "byte {i} flipped was accepted"
            );
        }
    }
}
