//! N-gram counting shared by BLEU and CIDEr-D.

use std::collections::HashMap;

/// Counts of every n-gram of order 1..=`n` in a token sequence.
pub(crate) type NgramCounts<'a> = HashMap<&'a [&'a str], usize>;

/// Counts the 1..=`n`-grams of `words` (pycocoevalcap's `precook`).
pub(crate) fn count_ngrams<'a>(words: &'a [&'a str], n: usize) -> NgramCounts<'a> {
    let mut counts = HashMap::new();
    for k in 1..=n {
        for gram in words.windows(k) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// Splits a tokenised caption on any whitespace, as Python's `str.split()` does for BLEU and CIDEr.
pub(crate) fn python_split(s: &str) -> Vec<&str> {
    s.split(char::is_whitespace)
        .filter(|w| !w.is_empty())
        .collect()
}
