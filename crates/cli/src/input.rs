//! Files named on the command line: read once, bounded while reading, regular files only
//! unless `--allow-non-regular` is given.
//!
//! A module or policy named by path is checked before it is opened: a directory, device,
//! FIFO or socket is refused (opening a FIFO would wait for a writer; `/dev/zero` never
//! ends). With `--allow-non-regular`, a pipe such as `--policy <(cat policy.toml)` is read,
//! once, and no further than the bound, like a file.

use std::io::Read;
use std::path::Path;

/// Why a file named on the command line cannot be used; each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// It cannot be looked at or read.
    #[error("cannot read {name}: {source}")]
    Io {
        /// The path, as shown.
        name: String,
        /// The OS's reason.
        #[source]
        source: std::io::Error,
    },
    /// It is a directory.
    #[error("cannot read {name}: is a directory")]
    Directory {
        /// The path, as shown.
        name: String,
    },
    /// It is a pipe, FIFO or device and `--allow-non-regular` was not given.
    #[error(
        "cannot read {name}: not a regular file (a pipe, FIFO or device); pass \
         --allow-non-regular to read it once, up to {limit} bytes"
    )]
    NotRegular {
        /// The path, as shown.
        name: String,
        /// The bound it would be read to.
        limit: u64,
    },
    /// A regular file larger than the bound.
    #[error("cannot read {name}: it is {len} bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// The path, as shown.
        name: String,
        /// Its size.
        len: u64,
        /// The bound.
        limit: u64,
    },
    /// A stream that went on past the bound.
    #[error("cannot read {name}: longer than the {limit}-byte limit")]
    TooLong {
        /// The path, as shown.
        name: String,
        /// The bound.
        limit: u64,
    },
}

/// Reads `path` whole, refusing more than `limit` bytes (checked while reading, so a sparse
/// or endless file costs no more than the bound) and non-regular files unless allowed.
pub fn read_bounded(
    path: &Path,
    limit: u64,
    allow_non_regular: bool,
) -> Result<Vec<u8>, InputError> {
    let name = path.display().to_string();
    let io = |source| InputError::Io {
        name: name.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return Err(InputError::Directory { name });
    }
    if !meta.is_file() && !allow_non_regular {
        return Err(InputError::NotRegular { name, limit });
    }
    if meta.is_file() && meta.len() > limit {
        return Err(InputError::TooLarge {
            name,
            len: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit.saturating_add(1)).read_to_end(&mut bytes))
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(InputError::TooLong { name, limit });
    }
    Ok(bytes)
}
