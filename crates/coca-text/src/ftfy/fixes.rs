//! ftfy's simple, character-level fixers.

use std::sync::OnceLock;

use regex::{Captures, Regex};

use super::tables::{CHARMAPS, CONTROL_CHARS, DOUBLE_QUOTES, LIGATURES, SINGLE_QUOTES, WIDTH_MAP};
use crate::clean::in_ranges;
use crate::html;

/// Decodes HTML entities the cautious way ftfy does: only references that end
/// in `;` (so "this&not that" survives), plus all-caps Latin names such as
/// `&EACUTE;`; numeric references go through [`html::unescape`].
///
/// ```
/// use coca_text::ftfy::unescape_html;
/// assert_eq!(unescape_html("P&EACUTE;REZ &amp; &lt;b&gt; this&not that"), "P\u{c9}REZ & <b> this&not that");
/// ```
pub fn unescape_html(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"&#?[0-9A-Za-z]{1,24};").expect("static entity pattern compiles")
    });
    re.replace_all(text, |caps: &Captures<'_>| {
        let whole = &caps[0];
        let name = &whole[1..];
        if let Some(value) = html::html5_entity(name).or_else(|| html::ftfy_uppercase_entity(name))
        {
            return value.to_owned();
        }
        if whole.starts_with("&#") {
            let decoded = html::unescape(whole);
            // A partial decode (e.g. "&#65a;" -> "Aa;") leaves the `;` behind;
            // ftfy only accepts references consumed whole.
            if !decoded.contains(';') {
                return decoded.into_owned();
            }
        }
        whole.to_owned()
    })
    .into_owned()
}

/// Replaces C1 control characters (U+0080..U+009F) with what their byte means
/// in Windows-1252, as web browsers do; the five bytes Windows-1252 leaves
/// undefined stay as they are.
pub fn fix_c1_controls(text: &str) -> String {
    let sloppy_1252 = &CHARMAPS[1];
    debug_assert_eq!(sloppy_1252.name, "sloppy-windows-1252");
    map_chars(text, |c| {
        if ('\u{80}'..='\u{9f}').contains(&c) {
            Some(Replacement::Char(sloppy_1252.high[c as usize - 0x80]))
        } else {
            None
        }
    })
}

/// Splits Latin ligatures and legacy digraphs (`ﬁ` → `fi`, `ĳ` → `ij`,
/// `ǆ` → `dž`); ligatures of other scripts and `æ`/`œ` are kept.
pub fn fix_latin_ligatures(text: &str) -> String {
    map_chars(text, |c| lookup_str(LIGATURES, c).map(Replacement::Str))
}

/// Replaces full-width ASCII, half-width katakana/hangul and the ideographic
/// space with their standard-width forms (`Ｌ` → `L`, `ﾀ` → `タ`, U+3000 → space).
pub fn fix_character_width(text: &str) -> String {
    map_chars(text, |c| lookup_str(WIDTH_MAP, c).map(Replacement::Str))
}

/// Straightens curly quotes: `‘ ’ ‚ ‛ ʼ` → `'` and `“ ” „ ‟` → `"`.
pub fn uncurl_quotes(text: &str) -> String {
    map_chars(text, |c| {
        if in_ranges(SINGLE_QUOTES, c) {
            Some(Replacement::Char('\''))
        } else if in_ranges(DOUBLE_QUOTES, c) {
            Some(Replacement::Char('"'))
        } else {
            None
        }
    })
}

/// Converts CRLF, CR, U+2028, U+2029 and NEL (U+0085) line breaks to `\n`.
pub fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// Removes ANSI terminal escape sequences such as `ESC[36;44m`.
pub fn remove_terminal_escapes(text: &str) -> String {
    if !text.contains('\u{1b}') {
        return text.to_owned();
    }
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"\x1b\[(?:\d|;)*[a-zA-Z]").expect("static ANSI pattern compiles")
    });
    re.replace_all(text, "").into_owned()
}

/// Deletes control characters that have no visible effect: ASCII controls
/// other than `\t \n \x0c \r`, U+206A..U+206F, U+FEFF (BOM) and
/// U+FFF9..U+FFFC. Joiners, bidi marks and C1 controls are kept.
pub fn remove_control_chars(text: &str) -> String {
    text.chars()
        .filter(|&c| !in_ranges(CONTROL_CHARS, c))
        .collect()
}

enum Replacement {
    Char(char),
    Str(&'static str),
}

/// Rebuilds `text`, replacing the characters for which `f` returns something.
fn map_chars(text: &str, f: impl Fn(char) -> Option<Replacement>) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match f(c) {
            Some(Replacement::Char(r)) => out.push(r),
            Some(Replacement::Str(s)) => out.push_str(s),
            None => out.push(c),
        }
    }
    out
}

fn lookup_str(table: &'static [(char, &'static str)], c: char) -> Option<&'static str> {
    table
        .binary_search_by(|&(k, _)| k.cmp(&c))
        .ok()
        .map(|i| table[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_html_rejects_partial_numeric_references() {
        assert_eq!(
            unescape_html("&#65a; &#65; &#x1F600; &#0;"),
            "&#65a; A \u{1F600} \u{FFFD}"
        );
        assert_eq!(
            unescape_html("&SZLIG; &nTILDE; &NTILDE;"),
            "SS &nTILDE; \u{d1}"
        );
    }

    #[test]
    fn c1_controls_become_windows_1252() {
        assert_eq!(
            fix_c1_controls("\u{80}\u{93}x\u{94}\u{81}"),
            "\u{20ac}\u{201c}x\u{201d}\u{81}"
        );
    }

    #[test]
    fn ligatures_and_width() {
        assert_eq!(
            fix_latin_ligatures("\u{fb02}u\u{fb03}e\u{fb06}"),
            "fluffiest"
        );
        assert_eq!(fix_latin_ligatures("\u{e6}\u{153}"), "\u{e6}\u{153}");
        assert_eq!(
            fix_character_width("\u{ff35}\u{ff80}\u{ff70}\u{ff9d}\u{3000}"),
            "U\u{30bf}\u{30fc}\u{30f3} "
        );
    }

    #[test]
    fn quotes_line_breaks_escapes_controls() {
        assert_eq!(
            uncurl_quotes("\u{201c}here\u{2019}s\u{201d} \u{2bc}"),
            "\"here's\" '"
        );
        assert_eq!(
            fix_line_breaks("a\r\nb\rc\u{2028}d\u{85}e"),
            "a\nb\nc\nd\ne"
        );
        assert_eq!(
            remove_terminal_escapes("\u{1b}[36;44mblue\u{1b}[0m"),
            "blue"
        );
        assert_eq!(
            remove_control_chars("a\u{0}b\u{7}\u{feff}c\td\u{200d}"),
            "abc\td\u{200d}"
        );
    }
}
