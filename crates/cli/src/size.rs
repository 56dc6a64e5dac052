//! Byte sizes on the command line: `8MiB`, `64KiB`, `1GiB`, `512K`, `10MB`, `4096`.

/// Why a size does not parse; each message quotes the text given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// No digits first.
    #[error("`{0}` is not a size (expected e.g. 8MiB, 512KiB, 4096)")]
    NotASize(String),
    /// More bytes than a `u64` holds.
    #[error("`{0}` is too large a size")]
    TooLarge(String),
    /// A unit that is none of the known ones.
    #[error("`{text}` has an unknown unit `{unit}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")]
    UnknownUnit {
        /// The size as given.
        text: String,
        /// The unit part of it.
        unit: String,
    },
}

/// Parses a size; binary units (`KiB`, `K`) are powers of 1024, decimal ones (`KB`) of 1000.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(SizeError::NotASize(s.to_string()));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| SizeError::TooLarge(s.to_string()))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(SizeError::UnknownUnit {
                text: s.to_string(),
                unit: other.to_string(),
            });
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| SizeError::TooLarge(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(
            parse_size("8XB")
                .unwrap_err()
                .to_string()
                .contains("unknown unit")
        );
        assert!(parse_size("99999999999999999999").is_err());
        assert!(
            parse_size("99999999999TiB")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
    }
}
