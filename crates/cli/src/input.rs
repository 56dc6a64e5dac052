//! Files named on the command line: read once, bounded while reading, regular files only
//! unless `--allow-non-regular` is given.
//!
//! A module or policy named by path is checked before it is opened: a directory, device,
//! FIFO or socket is refused (opening a FIFO would wait for a writer; `/dev/zero` never
//! ends). With `--allow-non-regular`, a pipe such as `--policy <(cat policy.toml)` is read,
//! once, and no further than the bound, like a file.

use std::io::Read;
use std::path::Path;

/// Reads `path` whole, refusing more than `limit` bytes (checked while reading, so a sparse
/// or endless file costs no more than the bound) and non-regular files unless allowed.
pub fn read_bounded(path: &Path, limit: u64, allow_non_regular: bool) -> Result<Vec<u8>, String> {
    let name = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {name}: {e}"))?;
    if meta.is_dir() {
        return Err(format!("cannot read {name}: is a directory"));
    }
    if !meta.is_file() && !allow_non_regular {
        return Err(format!(
            "cannot read {name}: not a regular file (a pipe, FIFO or device); pass \
             --allow-non-regular to read it once, up to {limit} bytes"
        ));
    }
    if meta.is_file() && meta.len() > limit {
        return Err(format!(
            "cannot read {name}: it is {} bytes, more than the {limit}-byte limit",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit.saturating_add(1)).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {name}: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "cannot read {name}: longer than the {limit}-byte limit"
        ));
    }
    Ok(bytes)
}

/// A policy error as the command line shows it: a refused non-regular file names the flag
/// that allows it.
pub fn policy_error(e: &warden_policy::PolicyError, allowed: bool) -> String {
    match e {
        warden_policy::PolicyError::Io { source, .. }
            if !allowed && source.kind() == std::io::ErrorKind::InvalidInput =>
        {
            format!("{e}; pass --allow-non-regular to read it once, bounded")
        }
        _ => e.to_string(),
    }
}
