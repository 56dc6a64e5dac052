//! The module store: the host decides where guest code comes from (the CLR's Fusion loader
//! hook). A [`ModuleStore`] answers "module NAME at VERSION" (or "the latest NAME") with the
//! module's bytes and their digest; [`Runtime::load_from_store`](crate::Runtime::load_from_store)
//! compiles them (through the digest cache and, when configured, the precompiled cache of
//! [`precompiled`](crate::precompiled)). [`DirStore`] is the directory-backed store.
//!
//! # `DirStore`'s layout
//!
//! ```text
//! DIR/
//!   hello/            one directory per module name
//!     1.0.0.wasm      one file per version: VERSION.wasm (wasm binary or WAT text)
//!     1.2.0.wasm
//!   billing/
//!     2024-06-01.wasm
//! ```
//!
//! Names and versions are checked before any path is built ([`check_name`],
//! [`check_version`]): letters, digits, `.`, `-` and `_`, not starting with `.`, at most 128
//! (names) or 64 (versions) characters. So `..`, `/`, `\`, NUL, or an absolute path is an
//! error naming the value, never a path outside `DIR`. Files in a name's directory that do
//! not end in `.wasm` or whose stem is not a valid version are not versions (they are
//! ignored, so an editor's backup file is harmless).
//!
//! # Versions and "latest"
//!
//! Versions are ordered by [`compare_versions`]: split at `.`; segments that are both
//! numbers compare as numbers (`1.10` after `1.9`), others as text, and a number sorts before
//! text; when one version is a prefix of the other, the shorter sorts first. "Latest" is the
//! greatest. Semver pre-release rules are not applied (`1.0.0-rc1` sorts after `1.0.0`):
//! a host that publishes pre-releases should name them explicitly.
//!
//! # Where it ends
//!
//! - A store says where bytes come from; it does not vouch for them. The digest identifies the
//!   bytes (two stores holding the same bytes give the same [`Module::digest`](crate::Module::digest)),
//!   it is not a signature. The store's directory must be writable only by the host.
//! - `DirStore` follows symbolic links inside `DIR` (an operator's `latest -> 1.2.0` or a
//!   shared file is theirs to make); the name and version checks stop a *caller* from
//!   naming a path outside it, not an operator who links outside on purpose.
//! - A file is read whole (bounded by [`DirStore::with_max_bytes`], default 256 MiB) each time
//!   it is fetched; a file replaced while it is read may give a mix. Publish a version by
//!   writing a temporary file and renaming it to `VERSION.wasm`.

use sha2::{Digest, Sha256};
use std::cmp::Ordering;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The longest module name accepted.
pub const MAX_NAME_LEN: usize = 128;
/// The longest version accepted.
pub const MAX_VERSION_LEN: usize = 64;
/// The file extension of a version in a [`DirStore`].
pub const EXTENSION: &str = "wasm";

/// Where guest code comes from: modules by name and version.
///
/// Implementations must be cheap to call concurrently (`warden serve` fetches on its admin
/// task); they may do blocking I/O.
pub trait ModuleStore: Send + Sync {
    /// The versions of `name`, ascending by [`compare_versions`]. An unknown name is
    /// [`StoreError::UnknownName`]; a known name without versions is an empty list.
    fn versions(&self, name: &str) -> Result<Vec<String>, StoreError>;

    /// The bytes of `name` at `version`.
    fn fetch(&self, name: &str, version: &str) -> Result<StoredModule, StoreError>;

    /// The greatest version of `name` ([`StoreError::NoVersions`] when it has none).
    fn latest(&self, name: &str) -> Result<String, StoreError> {
        self.versions(name)?
            .into_iter()
            .max_by(|a, b| compare_versions(a, b))
            .ok_or_else(|| StoreError::NoVersions { name: name.into() })
    }

    /// The module `reference` names: the version given, or the latest.
    fn resolve(&self, reference: &ModuleRef) -> Result<StoredModule, StoreError> {
        let version = match &reference.version {
            Some(v) => v.clone(),
            None => self.latest(&reference.name)?,
        };
        self.fetch(&reference.name, &version)
    }
}

/// A module's bytes as a store holds them.
#[derive(Clone)]
pub struct StoredModule {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its bytes (wasm binary or WAT text).
    pub bytes: Vec<u8>,
    /// Hex SHA-256 of `bytes`: what [`Module::digest`](crate::Module::digest) of the loaded
    /// module will be.
    pub digest: String,
}

impl StoredModule {
    /// A stored module, its digest computed from `bytes`.
    pub fn new(name: impl Into<String>, version: impl Into<String>, bytes: Vec<u8>) -> Self {
        StoredModule {
            name: name.into(),
            version: version.into(),
            digest: crate::engine::hex(&Sha256::digest(&bytes)),
            bytes,
        }
    }
}

impl std::fmt::Debug for StoredModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredModule")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("len", &self.bytes.len())
            .field("digest", &self.digest)
            .finish()
    }
}

/// A module loaded from a store
/// ([`Runtime::load_from_store`](crate::Runtime::load_from_store)): which version was
/// resolved, and the compiled module.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The module's name.
    pub name: String,
    /// The version loaded (the latest, when none was asked for).
    pub version: String,
    /// The compiled module; its digest is the stored bytes'.
    pub module: crate::Module,
}

/// A module named by `NAME@VERSION`, or `NAME` for its latest version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleRef {
    /// The module's name.
    pub name: String,
    /// The version; `None` for the latest.
    pub version: Option<String>,
}

impl ModuleRef {
    /// `name` at `version`, both checked.
    pub fn new(name: &str, version: Option<&str>) -> Result<ModuleRef, StoreError> {
        check_name(name)?;
        if let Some(v) = version {
            check_version(v)?;
        }
        Ok(ModuleRef {
            name: name.into(),
            version: version.map(Into::into),
        })
    }

    /// Parses `NAME@VERSION` or `NAME`.
    pub fn parse(text: &str) -> Result<ModuleRef, StoreError> {
        match text.split_once('@') {
            Some((name, version)) => ModuleRef::new(name, Some(version)),
            None => ModuleRef::new(text, None),
        }
    }
}

impl std::fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}@{v}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// Why a store could not give a module. Every message names the module, version or path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The name is not a valid module name (see [`check_name`]).
    #[error("invalid module name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The version is not a valid version (see [`check_version`]).
    #[error("invalid version {version:?}: {reason}")]
    InvalidVersion {
        /// The version given.
        version: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The store holds no module of this name.
    #[error("no module named `{name}` in the store ({looked_in})")]
    UnknownName {
        /// The name asked for.
        name: String,
        /// Where the store looked.
        looked_in: String,
    },
    /// The module exists but not at this version.
    #[error("module `{name}` has no version `{version}` (it has: {})", list(.available))]
    UnknownVersion {
        /// The module.
        name: String,
        /// The version asked for.
        version: String,
        /// The versions it has, ascending.
        available: Vec<String>,
    },
    /// The module exists but has no version at all (so there is no latest).
    #[error("module `{name}` has no versions")]
    NoVersions {
        /// The module.
        name: String,
    },
    /// A file or directory of the store could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// The OS's error.
        #[source]
        source: std::io::Error,
    },
    /// A version's file is larger than the store reads.
    #[error("{} is {size} bytes, more than the store's {limit}-byte limit", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

fn list(versions: &[String]) -> String {
    if versions.is_empty() {
        "none".into()
    } else {
        versions.join(", ")
    }
}

/// Checks a module name: 1 to [`MAX_NAME_LEN`] letters, digits, `.`, `-` or `_`, not starting
/// with `.` (so never `.`, `..`, a hidden file, a path separator or NUL).
pub fn check_name(name: &str) -> Result<(), StoreError> {
    check_segment(name, MAX_NAME_LEN).map_err(|reason| StoreError::InvalidName {
        name: name.into(),
        reason,
    })
}

/// Checks a version: as [`check_name`], at most [`MAX_VERSION_LEN`] characters.
pub fn check_version(version: &str) -> Result<(), StoreError> {
    check_segment(version, MAX_VERSION_LEN).map_err(|reason| StoreError::InvalidVersion {
        version: version.into(),
        reason,
    })
}

fn check_segment(s: &str, max: usize) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("it is empty");
    }
    if s.len() > max {
        return Err("it is too long");
    }
    if s.starts_with('.') {
        return Err("it starts with `.` (no `.`, `..` or hidden files)");
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(
            "only letters, digits, `.`, `-` and `_` are allowed (no `/`, `\\`, `@` or NUL)",
        );
    }
    Ok(())
}

/// The order of versions (see the [module docs](self)): numeric segments as numbers.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => {
                let order = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => p.cmp(q),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// A store in a directory: `DIR/NAME/VERSION.wasm` (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct DirStore {
    dir: PathBuf,
    max_bytes: u64,
}

impl DirStore {
    /// The store in `dir`, which must be a readable directory.
    pub fn new(dir: impl Into<PathBuf>) -> Result<DirStore, StoreError> {
        let dir = dir.into();
        let meta = std::fs::metadata(&dir).map_err(|source| StoreError::Unreadable {
            path: dir.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(StoreError::Unreadable {
                path: dir,
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        Ok(DirStore {
            dir,
            max_bytes: 256 << 20,
        })
    }

    /// Reads no file larger than `max_bytes` ([`StoreError::TooLarge`]).
    pub fn with_max_bytes(mut self, max_bytes: u64) -> DirStore {
        self.max_bytes = max_bytes;
        self
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `name` at `version` (both checked first).
    pub fn path(&self, name: &str, version: &str) -> Result<PathBuf, StoreError> {
        check_name(name)?;
        check_version(version)?;
        Ok(self.dir.join(name).join(format!("{version}.{EXTENSION}")))
    }

    fn name_dir(&self, name: &str) -> Result<PathBuf, StoreError> {
        check_name(name)?;
        let path = self.dir.join(name);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Ok(path),
            Ok(_) => Err(self.unknown(name)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(self.unknown(name)),
            Err(source) => Err(StoreError::Unreadable { path, source }),
        }
    }

    fn unknown(&self, name: &str) -> StoreError {
        StoreError::UnknownName {
            name: name.into(),
            looked_in: format!("no directory {}", self.dir.join(name).display()),
        }
    }
}

impl ModuleStore for DirStore {
    fn versions(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.name_dir(name)?;
        let unreadable = |source| StoreError::Unreadable {
            path: dir.clone(),
            source,
        };
        let mut versions = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let file = entry.file_name();
            let Some(file) = file.to_str() else { continue };
            let Some(version) = file.strip_suffix(&format!(".{EXTENSION}")) else {
                continue;
            };
            if check_version(version).is_ok() {
                versions.push(version.to_string());
            }
        }
        versions.sort_by(|a, b| compare_versions(a, b));
        Ok(versions)
    }

    fn fetch(&self, name: &str, version: &str) -> Result<StoredModule, StoreError> {
        let path = self.path(name, version)?;
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Say which: the name, or only this version, is missing.
                let available = self.versions(name)?;
                return Err(StoreError::UnknownVersion {
                    name: name.into(),
                    version: version.into(),
                    available,
                });
            }
            Err(source) => return Err(StoreError::Unreadable { path, source }),
        };
        let unreadable = |source| StoreError::Unreadable {
            path: path.clone(),
            source,
        };
        let size = file.metadata().map_err(unreadable)?.len();
        if size > self.max_bytes {
            return Err(StoreError::TooLarge {
                path,
                size,
                limit: self.max_bytes,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        // `take`: a file that grows while it is read stays within the bound.
        file.take(self.max_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(StoreError::TooLarge {
                path,
                size: bytes.len() as u64,
                limit: self.max_bytes,
            });
        }
        Ok(StoredModule::new(name, version, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numbers_as_numbers() {
        let mut v = vec!["1.10", "1.9", "1.9.1", "2", "1.a", "0.1"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(v, ["0.1", "1.9", "1.9.1", "1.10", "1.a", "2"]);
    }

    #[test]
    fn refs_parse_and_escapes_are_refused() {
        assert_eq!(
            ModuleRef::parse("hello@1.2").unwrap(),
            ModuleRef {
                name: "hello".into(),
                version: Some("1.2".into())
            }
        );
        assert_eq!(ModuleRef::parse("hello").unwrap().version, None);
        for bad in [
            "", "..", ".", "a/b", "a\\b", "a\0b", "/etc", ".hidden", "a@b@c",
        ] {
            assert!(ModuleRef::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ModuleRef::parse("a@../x").is_err());
        assert!(ModuleRef::parse("a@").is_err());
    }
}
