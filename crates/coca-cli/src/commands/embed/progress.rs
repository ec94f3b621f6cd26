//! Progress of a collection run on stderr, and the record of skipped samples.

use crate::progress::Progress as Counter;

/// Most skipped samples listed in a JSON summary (all of them are logged as they happen).
const MAX_LISTED: usize = 1000;

/// The samples a collection run could not use: each logged once (at warn level, naming the input and the
/// reason) and counted; the first [`MAX_LISTED`] messages are kept for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    count: usize,
    listed: Vec<String>,
}

impl Skipped {
    /// A record of `count` skips whose first messages are `listed` (as [`Skipped::listed`] returned them).
    pub fn from_parts(count: usize, mut listed: Vec<String>) -> Self {
        listed.truncate(MAX_LISTED.min(count));
        Self { count, listed }
    }

    /// Log `why` (without garbling `bar`) and count it.
    pub fn skip(&mut self, bar: &Counter, why: String) {
        bar.suspend(|| tracing::warn!("skipped {why}"));
        self.count += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(why);
        }
    }

    /// Add the skips of another record (e.g. another split of the same run).
    pub fn extend(&mut self, other: &Skipped) {
        self.count += other.count;
        let room = MAX_LISTED.saturating_sub(self.listed.len());
        self.listed.extend(other.listed.iter().take(room).cloned());
    }

    /// How many samples were skipped.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The first skipped samples' messages, and whether the list was cut.
    pub fn listed(&self) -> (&[String], bool) {
        (&self.listed, self.count > self.listed.len())
    }

    /// Add `"skipped_images": N` and the first messages as `"skipped_items"` to a JSON object (the results
    /// of `coca eval` and `coca probe`).
    pub fn add_to(&self, value: &mut serde_json::Value) {
        value["skipped_images"] = self.count.into();
        value["skipped_items"] = self.listed.clone().into();
    }

    /// The error of a run whose every one of `what` (e.g. "images") was skipped: it has nothing to report.
    pub fn nothing_usable(&self, what: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "none of the {} {what} could be used (each is named in a warning above; the first: {})",
            self.count,
            self.listed.first().map_or("", String::as_str)
        )
    }
}

/// A sample counter on stderr (see [`crate::progress`]) plus the skipped samples.
pub struct Progress {
    bar: Counter,
    skipped: Skipped,
}

impl Progress {
    /// A running count and rate: streaming sources do not know their length.
    pub fn new() -> Self {
        Self {
            bar: Counter::new("embedding", None, "samples read"),
            skipped: Skipped::default(),
        }
    }

    /// `n` more input items were dealt with.
    pub fn advance(&self, n: usize) {
        self.bar.inc(n as u64);
    }

    /// Record and log (once, at warn level, naming the input) a sample that could not be used.
    pub fn skip(&mut self, why: String) {
        self.skipped.skip(&self.bar, why);
        self.bar
            .set_message(format!("({} skipped)", self.skipped.count()));
    }

    /// Run `f` (which may log) without garbling the bar.
    pub fn suspend<T>(&self, f: impl FnOnce() -> T) -> T {
        self.bar.suspend(f)
    }

    /// How many samples were skipped.
    pub fn skipped(&self) -> usize {
        self.skipped.count()
    }

    /// The first skipped samples' messages, and whether the list was cut.
    pub fn listed(&self) -> (&[String], bool) {
        self.skipped.listed()
    }

    /// Remove the bar.
    pub fn finish(&self) {
        self.bar.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_are_counted_listed_up_to_the_cap_and_merged() {
        let bar = Counter::new("test", None, "items");
        let mut a = Skipped::default();
        a.skip(&bar, "a.png: truncated".into());
        assert_eq!(a.count(), 1);
        assert_eq!(a.listed(), (&["a.png: truncated".to_string()][..], false));
        let mut b = Skipped::default();
        for i in 0..MAX_LISTED + 5 {
            b.skip(&bar, format!("{i}.png"));
        }
        assert_eq!(b.listed().0.len(), MAX_LISTED);
        assert!(b.listed().1, "the list says it was cut");
        a.extend(&b);
        assert_eq!(a.count(), MAX_LISTED + 6);
        assert_eq!(a.listed().0.len(), MAX_LISTED);
        assert_eq!(a.listed().0[0], "a.png: truncated");
        let again = Skipped::from_parts(a.count(), a.listed().0.to_vec());
        assert_eq!(
            again, a,
            "a record rebuilt from its parts is the same record"
        );
    }
}
