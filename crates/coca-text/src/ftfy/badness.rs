//! ftfy's mojibake detector.

use std::sync::OnceLock;

use regex::Regex;

use super::tables::BADNESS_RE;

/// Whether `text` contains a character sequence that is far more likely to be
/// mojibake than intended text (ftfy's `is_bad`), e.g. `Ã©` or `â€™`.
///
/// ftfy only tries to re-decode text for which this holds, which is what keeps
/// ordinary accented text such as `café` or `Größe` untouched.
///
/// ```
/// use coca_text::ftfy::is_bad;
/// assert!(is_bad("caf\u{c3}\u{a9}"));
/// assert!(!is_bad("caf\u{e9}"));
/// ```
pub fn is_bad(text: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(BADNESS_RE).expect("generated badness pattern compiles"))
        .is_match(text)
}
