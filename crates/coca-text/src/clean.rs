//! open_clip's `clean="lower"` text normalisation.

use crate::ftfy;
use crate::ftfy::tables::PYTHON_WHITESPACE;
use crate::html;

/// Cleans `text` the way open_clip's `SimpleTokenizer(clean="lower")` does before
/// tokenizing: [`ftfy::fix_text`], [`html::unescape`] applied twice (so that
/// double-escaped `&amp;amp;` becomes `&`), whitespace runs collapsed to one
/// space and trimmed, then lower-cased.
///
/// "Whitespace" means Python's `str.isspace()` ([`is_python_whitespace`]), which
/// differs slightly from Rust's (it includes U+001C..U+001F).
/// Lower-casing uses Rust's full Unicode mapping, which agrees with Python's
/// `str.lower()` (including the final-sigma rule) for every code point assigned
/// in Unicode 14, the version Python 3.11 ships.
pub fn clean_text(text: &str) -> String {
    let fixed = ftfy::fix_text(text);
    let unescaped = html::unescape(&html::unescape(&fixed)).into_owned();
    collapse_whitespace(&unescaped).to_lowercase()
}

/// Whether Python's `str.isspace()` holds for `c` (Unicode 14 data).
pub fn is_python_whitespace(c: char) -> bool {
    in_ranges(PYTHON_WHITESPACE, c)
}

/// `" ".join(text.split())`: drops leading/trailing whitespace and joins the
/// remaining words with single spaces.
pub(crate) fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(is_python_whitespace).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Strips Python whitespace from both ends (`str.strip()`).
pub(crate) fn trim_python_whitespace(text: &str) -> &str {
    text.trim_matches(is_python_whitespace)
}

/// Membership in a sorted, non-overlapping list of inclusive ranges.
pub(crate) fn in_ranges(ranges: &[(char, char)], c: char) -> bool {
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace_includes_information_separators() {
        assert!(is_python_whitespace('\u{1c}'));
        assert!(is_python_whitespace('\u{3000}'));
        assert!(!is_python_whitespace('\u{200b}'));
        assert!(
            !'\u{1c}'.is_whitespace(),
            "Rust disagrees, hence our own table"
        );
    }

    #[test]
    fn collapse_joins_words_with_single_spaces() {
        assert_eq!(collapse_whitespace("  a \t\n b\u{a0}\u{1f}c  "), "a b c");
        assert_eq!(collapse_whitespace(" \n "), "");
    }

    #[test]
    fn clean_text_runs_the_whole_pipeline() {
        assert_eq!(
            clean_text("  Fish &amp;amp; CHIPS\u{2019}s  "),
            "fish & chips's"
        );
        assert_eq!(clean_text("caf\u{c3}\u{a9}  \u{fb01}ne"), "caf\u{e9} fine");
    }
}
