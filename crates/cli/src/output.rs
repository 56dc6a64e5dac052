//! What the binary prints, written so that output can never fail the host: a full disk or a
//! closed pipe (`warden policy explain | true`) loses the text, never the exit code, and
//! never panics (`println!` does). Text that comes from a guest is escaped first.

use std::io::Write;

/// Writes `text` and a newline to stdout; a failed write is ignored.
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

/// Writes `text` and a newline to stderr; a failed write is ignored. It goes through the
/// guest stderr buffer ([`warden::stdio::host_stderr`]), so a stalled reader never blocks the
/// caller (a signal handler, an event, the exit path); the text is dropped rather than wait.
pub fn err(text: &str) {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    let _ = warden::stdio::host_stderr(line.as_bytes());
}

/// The writer of `tracing`'s messages (warnings such as `orphaned_locks`): each formatted
/// message goes through warden's stderr buffer whole, as [`err`] does, so it never lands in
/// the middle of an `--events json` line (std's stderr is a second writer on the same pipe,
/// whose partial writes interleave) and a stalled reader never blocks the thread that logs.
/// A message is dropped rather than wait, as [`err`]'s are.
pub struct TracingStderr;

impl Write for TracingStderr {
    /// `tracing_subscriber::fmt` writes a message with one `write_all`: taking it all here
    /// keeps the message one piece.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let _ = warden::stdio::host_stderr(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Flushes stdout, ignoring failure.
pub fn flush() {
    let _ = std::io::stdout().flush();
}

/// `s` with every control character but the newline (and every newline too, unless
/// `keep_newlines`) written as an escape (`\n`, `\u{1b}`), so a guest's export name, trap
/// message or log line cannot forge output lines or send terminal sequences.
pub fn escape(s: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' if keep_newlines => out.push('\n'),
            c if c.is_control() => out.extend(c.escape_default()),
            // Bidirectional overrides reorder what a terminal shows.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("a\nb", false), "a\\nb");
        assert_eq!(escape("a\nb", true), "a\nb");
        assert_eq!(escape("\u{1b}[2J", true), "\\u{1b}[2J");
        assert_eq!(escape("\r\t", true), "\\r\\t");
        assert_eq!(escape("\u{202e}x", false), "\\u{202e}x");
        assert_eq!(escape("plain ünïcode", false), "plain ünïcode");
    }
}
