//! Progress of a collection run on stderr, and the record of skipped samples.

use crate::progress::Progress as Counter;

/// Most skipped samples listed in the JSON summary (all of them are logged as they happen).
const MAX_LISTED: usize = 1000;

/// A sample counter on stderr (see [`crate::progress`]) plus the skipped samples.
pub struct Progress {
    bar: Counter,
    skipped: usize,
    listed: Vec<String>,
}

impl Progress {
    /// A running count and rate: streaming sources do not know their length.
    pub fn new() -> Self {
        Self {
            bar: Counter::new("embedding", None, "samples read"),
            skipped: 0,
            listed: Vec::new(),
        }
    }

    /// `n` more input items were dealt with.
    pub fn advance(&self, n: usize) {
        self.bar.inc(n as u64);
    }

    /// Record and log (once, at warn level, naming the input) a sample that could not be used.
    pub fn skip(&mut self, why: String) {
        self.skipped += 1;
        self.bar.suspend(|| tracing::warn!("skipped {why}"));
        self.bar.set_message(format!("({} skipped)", self.skipped));
        if self.listed.len() < MAX_LISTED {
            self.listed.push(why);
        }
    }

    /// Run `f` (which may log) without garbling the bar.
    pub fn suspend<T>(&self, f: impl FnOnce() -> T) -> T {
        self.bar.suspend(f)
    }

    /// How many samples were skipped.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The first skipped samples' messages, and whether the list was cut.
    pub fn listed(&self) -> (&[String], bool) {
        (&self.listed, self.skipped > self.listed.len())
    }

    /// Remove the bar.
    pub fn finish(&self) {
        self.bar.finish();
    }
}
