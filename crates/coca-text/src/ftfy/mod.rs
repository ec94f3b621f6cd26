//! A port of the default behaviour of [ftfy](https://github.com/rspeer/python-ftfy)
//! 6.3.1's `fix_text`, the text repair step that open_clip runs before tokenizing.
//!
//! The heuristics and character tables here are derived from ftfy 6.3.1 by
//! Robyn Speer (Apache-2.0); the tables live in the generated `tables` module.
//!
//! # What is covered
//!
//! [`fix_text`] splits the input into lines and, for each line, repeats the
//! following steps in ftfy's order until nothing changes:
//!
//! 1. [`unescape_html`] — only while no line seen so far contained `<`;
//! 2. [`fix_encoding`] — mojibake repair: re-encoding in Latin-1, the
//!    "sloppy" Windows-125x code pages, ISO-8859-2, MacRoman or CP437 and
//!    decoding as UTF-8 (or CESU-8/Java UTF-8), guided by ftfy's badness
//!    heuristic ([`is_bad`]), including the byte-A0-as-space and lossy `�`
//!    repairs, embedded ("inconsistent") mojibake and C1-control fixes;
//! 3. [`fix_c1_controls`], [`fix_latin_ligatures`], [`fix_character_width`],
//!    [`uncurl_quotes`], [`fix_line_breaks`], [`remove_terminal_escapes`],
//!    [`remove_control_chars`];
//! 4. NFC normalisation.
//!
//! # Known differences from ftfy
//!
//! * Rust strings cannot hold lone UTF-16 surrogates, so `fix_surrogates` has
//!   nothing to do and is omitted.
//! * ftfy's explanations (`fix_and_explain`, `apply_plan`) and non-default
//!   options are not provided.
//! * Unicode data: NFC comes from the `unicode-normalization` crate and regex
//!   classes from the `regex` crate, both on a newer Unicode version than
//!   Python 3.11's 14.0. Only characters assigned after Unicode 14 can behave
//!   differently; the generated tables themselves are Python's.
//! * `max_decode_length` segmentation is honoured (1,000,000 code points).

mod badness;
mod encoding;
mod fixes;
#[rustfmt::skip]
pub(crate) mod tables;

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

pub use badness::is_bad;
pub use encoding::fix_encoding;
pub use fixes::{
    fix_c1_controls, fix_character_width, fix_latin_ligatures, fix_line_breaks,
    remove_control_chars, remove_terminal_escapes, uncurl_quotes, unescape_html,
};

/// ftfy's `max_decode_length`: lines longer than this many code points are
/// fixed in pieces, which bounds the cost of the encoding heuristics.
const MAX_SEGMENT_CHARS: usize = 1_000_000;

/// Repairs `text` like `ftfy.fix_text(text)` with ftfy's default configuration.
///
/// ```
/// use coca_text::ftfy::fix_text;
/// assert_eq!(fix_text("The Mona Lisa doesn\u{e2}\u{20ac}\u{2122}t have eyebrows."),
///            "The Mona Lisa doesn't have eyebrows.");
/// assert_eq!(fix_text("\u{ff2c}\u{ff2f}\u{ff35}\u{ff24} &amp; \u{fb02}uffy"), "LOUD & fluffy");
/// ```
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // ftfy's unescape_html="auto": a literal `<` means the text is real HTML,
    // and from that line on entities are left alone.
    let mut unescape = true;
    for segment in segments(text) {
        if unescape && segment.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
    }
    out
}

/// Splits after every `\n` (kept with its line), and additionally every
/// [`MAX_SEGMENT_CHARS`] code points.
fn segments(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len();
        for (n, (i, c)) in rest.char_indices().enumerate() {
            if n == MAX_SEGMENT_CHARS {
                end = i;
                break;
            }
            if c == '\n' {
                end = i + 1;
                break;
            }
        }
        let (segment, tail) = rest.split_at(end);
        rest = tail;
        Some(segment)
    })
}

/// One line through ftfy's fixer sequence, repeated until it is stable.
fn fix_segment(segment: &str, unescape: bool) -> String {
    if is_trivially_clean(segment) {
        return segment.to_owned();
    }
    let mut text = segment.to_owned();
    loop {
        let original = text.clone();
        if unescape {
            text = unescape_html(&text);
        }
        text = fix_encoding(&text);
        text = fix_c1_controls(&text);
        text = fix_latin_ligatures(&text);
        text = fix_character_width(&text);
        text = uncurl_quotes(&text);
        text = fix_line_breaks(&text);
        text = remove_terminal_escapes(&text);
        text = remove_control_chars(&text);
        text = nfc(text);
        if text == original {
            return text;
        }
    }
}

/// Printable ASCII plus `\t`, `\n` and form feed, without `&`: no fixer can
/// change such text (all of them act on non-ASCII characters, control
/// characters, `\r`, escape sequences or entities), so the loop is skipped.
/// This is the common case for captions and prompts.
fn is_trivially_clean(text: &str) -> bool {
    text.bytes()
        .all(|b| matches!(b, b' '..=b'~' | b'\t' | b'\n' | 0x0C) && b != b'&')
}

fn nfc(text: String) -> String {
    if is_nfc_quick(text.chars()) == IsNormalized::Yes {
        text
    } else {
        text.nfc().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_their_newlines() {
        let parts: Vec<&str> = segments("a\nb\r\n\nc").collect();
        assert_eq!(parts, ["a\n", "b\r\n", "\n", "c"]);
        assert_eq!(segments("").count(), 0);
    }

    #[test]
    fn angle_bracket_disables_unescaping_from_that_line_on() {
        assert_eq!(
            fix_text("a &amp;\n<b> &amp;\n&amp;"),
            "a &\n<b> &amp;\n&amp;"
        );
    }

    #[test]
    fn fixes_are_repeated_until_stable() {
        // ŉ splits into U+02BC + n, which the next round uncurls to '.
        assert_eq!(fix_text("\u{149}"), "'n");
        // &amp;lt; needs two rounds of entity decoding.
        assert_eq!(fix_text("&amp;lt;"), "<");
    }

    #[test]
    fn trivially_clean_text_is_recognised() {
        assert!(is_trivially_clean("a photo of a cat.\tok\n"));
        for dirty in [
            "a &amp; b",
            "a\rb",
            "a\u{1b}[0mb",
            "a\u{7f}",
            "caf\u{e9}",
            "a\u{0}",
        ] {
            assert!(!is_trivially_clean(dirty), "{dirty:?}");
        }
    }

    #[test]
    fn nfc_composes() {
        assert_eq!(fix_text("cafe\u{301}"), "caf\u{e9}");
    }
}
