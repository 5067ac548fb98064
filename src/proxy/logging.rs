//! Log lines that a client cannot inflate.
//!
//! A log line about a refusal is written because of what a client sent, so
//! a client must not be able to choose how much is logged: every string it
//! supplied is cut to [`MAX_LOGGED_BYTES`] (its full length is kept), and
//! refusal lines are rate-limited per outcome, each line that gets through
//! saying how many were left out before it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

/// How much of a client-supplied string a log line shows.
pub const MAX_LOGGED_BYTES: usize = 64;

/// A string a client supplied (a server name, a database name, an option),
/// displayed escaped, cut to [`MAX_LOGGED_BYTES`] and followed by its length
/// when cut: `"aaaa…"(15000 bytes)`.
#[derive(Clone, Copy)]
pub struct Untrusted<'a>(pub &'a [u8]);

impl<'a> Untrusted<'a> {
    /// Wraps a string.
    pub fn str(text: &'a str) -> Self {
        Self(text.as_bytes())
    }
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.0.get(..MAX_LOGGED_BYTES).unwrap_or(self.0);
        write!(f, "{}", shown.escape_ascii())?;
        if shown.len() < self.0.len() {
            write!(f, "…({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Lines per second each outcome may write; beyond, lines are counted and
/// the count is written with the next line let through.
pub const LINES_PER_SECOND: u64 = 10;

/// A per-second budget of log lines, shared without a lock: one atomic for
/// the current second and its count, one for the lines left out.
#[derive(Debug, Default)]
pub struct LineBudget {
    /// The second (since the process's epoch) in the high 32 bits, lines
    /// written in it in the low 32.
    window: AtomicU64,
    /// Lines left out since the last line written.
    suppressed: AtomicU64,
}

/// Whether to write a line, and how many were left out before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it, saying that this many lines were left out before.
    Write {
        /// Lines left out since the last one written.
        suppressed: u64,
    },
    /// Leave it out (it is counted).
    Suppress,
}

impl LineBudget {
    /// An empty budget.
    pub const fn new() -> Self {
        Self {
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now: `Some` with the number left out
    /// before it, or `None` (counted).
    pub fn allow(&self) -> Option<u64> {
        match self.take(seconds_now()) {
            Verdict::Write { suppressed } => Some(suppressed),
            Verdict::Suppress => None,
        }
    }

    /// Decides about one line, `now` being seconds since a fixed epoch.
    pub fn take(&self, now: u64) -> Verdict {
        let second = now & u64::from(u32::MAX);
        let taken = self
            .window
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |window| {
                let (current, count) = (window >> 32, window & u64::from(u32::MAX));
                if current != second {
                    Some(second << 32 | 1)
                } else if count < LINES_PER_SECOND {
                    Some(window + 1)
                } else {
                    None
                }
            });
        match taken {
            Ok(_) => Verdict::Write {
                suppressed: self.suppressed.swap(0, Ordering::Relaxed),
            },
            Err(_) => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                Verdict::Suppress
            }
        }
    }
}

/// Seconds since the first call, on tokio's clock (so that paused-clock
/// tests can drive it).
pub fn seconds_now() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    Instant::now().saturating_duration_since(epoch).as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_are_cut_and_measured() {
        let name = "a".repeat(15_000);
        let shown = Untrusted::str(&name).to_string();
        assert_eq!(shown, format!("{}…(15000 bytes)", "a".repeat(64)));
        assert_eq!(Untrusted::str("alpha").to_string(), "alpha");
        assert_eq!(Untrusted(b"a\nb\x00").to_string(), "a\\nb\\x00");
        let exactly = "b".repeat(MAX_LOGGED_BYTES);
        assert_eq!(Untrusted::str(&exactly).to_string(), exactly);
    }

    #[test]
    fn lines_beyond_the_budget_are_counted_and_reported() {
        let budget = LineBudget::new();
        for _ in 0..LINES_PER_SECOND {
            assert_eq!(budget.take(7), Verdict::Write { suppressed: 0 });
        }
        for _ in 0..25 {
            assert_eq!(budget.take(7), Verdict::Suppress);
        }
        assert_eq!(budget.take(8), Verdict::Write { suppressed: 25 });
        assert_eq!(budget.take(8), Verdict::Write { suppressed: 0 });
    }
}
