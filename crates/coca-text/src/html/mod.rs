//! HTML character references, decoded exactly like Python's `html.unescape`.
//!
//! open_clip calls `html.unescape` twice after ftfy, and ftfy's own
//! `unescape_html` falls back on it for numeric references, so both need its
//! precise rules: references without a trailing `;`, the longest-prefix match
//! for legacy names (`&notit;` → `¬it;`), the Windows-1252 remapping of
//! `&#128;`..`&#159;`, and the code points that decode to nothing.

#[rustfmt::skip]
mod entities;

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::{Captures, Regex};

use crate::clean::in_ranges;
use entities::{DROPPED_CHARREFS, FTFY_UPPERCASE, HTML5, REMAPPED_CHARREFS};

/// Replaces every HTML5 character reference in `text` (`&amp;`, `&#39;`,
/// `&#x1F600;`, legacy forms such as `&copy` without `;`) with the text it
/// stands for, following Python 3.11's `html.unescape` to the letter.
///
/// ```
/// use coca_text::html::unescape;
/// assert_eq!(unescape("fish &amp; chips &copy 2024 &#x2014;"), "fish & chips © 2024 —");
/// assert_eq!(unescape("&notit; &bogus;"), "¬it; &bogus;");
/// ```
pub fn unescape(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    charref_regex().replace_all(text, |caps: &Captures<'_>| decode_reference(&caps[1]))
}

/// The pattern Python uses to find candidate references; group 1 is the
/// reference without its `&`.
fn charref_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\x0C <&#;]{1,32};?)")
            .expect("static HTML reference pattern compiles")
    })
}

fn decode_reference(reference: &str) -> String {
    if let Some(number) = reference.strip_prefix('#') {
        return decode_numeric(number);
    }
    if let Some(value) = lookup(HTML5, reference) {
        return value.to_owned();
    }
    // Legacy references may lack their `;`: take the longest known prefix of at
    // least two characters and keep the rest verbatim.
    let char_starts: Vec<usize> = reference.char_indices().map(|(i, _)| i).collect();
    for &end in char_starts.iter().skip(2).rev() {
        if let Some(value) = lookup(HTML5, &reference[..end]) {
            return format!("{value}{}", &reference[end..]);
        }
    }
    format!("&{reference}")
}

/// `number` is what follows `&#`: decimal digits or `x`/`X` and hex digits,
/// optionally ending in `;`.
fn decode_numeric(number: &str) -> String {
    let digits = number.trim_end_matches(';');
    let (digits, radix) = match digits.strip_prefix(['x', 'X']) {
        Some(hex) => (hex, 16),
        None => (digits, 10),
    };
    // The regex guarantees valid digits; anything that overflows u32 is far
    // beyond U+10FFFF and is treated like any other out-of-range value.
    let code = u32::from_str_radix(digits, radix).unwrap_or(u32::MAX);
    if let Some(&(_, c)) = REMAPPED_CHARREFS.iter().find(|&&(n, _)| n == code) {
        return c.to_string();
    }
    match char::from_u32(code) {
        None => '\u{FFFD}'.to_string(), // surrogates and values above U+10FFFF
        Some(c) if in_ranges(DROPPED_CHARREFS, c) => String::new(),
        Some(c) => c.to_string(),
    }
}

/// Value of an HTML5 named reference; `name` excludes the `&` and includes
/// the `;` if the reference has one.
pub(crate) fn html5_entity(name: &str) -> Option<&'static str> {
    lookup(HTML5, name)
}

/// Value of an upper-cased reference such as `EACUTE;` that ftfy decodes on
/// top of the HTML5 list.
pub(crate) fn ftfy_uppercase_entity(name: &str) -> Option<&'static str> {
    lookup(FTFY_UPPERCASE, name)
}

fn lookup(table: &'static [(&'static str, &'static str)], name: &str) -> Option<&'static str> {
    table
        .binary_search_by(|&(key, _)| key.cmp(name))
        .ok()
        .map(|i| table[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_for_binary_search() {
        assert!(HTML5.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(FTFY_UPPERCASE.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn numeric_references_follow_html5() {
        assert_eq!(unescape("&#65;&#x42;&#X43"), "ABC");
        assert_eq!(
            unescape("&#0;|&#xD800;|&#x110000;|&#99999999999;"),
            "\u{FFFD}|\u{FFFD}|\u{FFFD}|\u{FFFD}"
        );
        assert_eq!(unescape("&#128;&#129;&#1;&#xFDD0;"), "\u{20AC}\u{81}");
        assert_eq!(unescape("&#13;"), "\r");
    }

    #[test]
    fn named_references_use_longest_prefix() {
        assert_eq!(unescape("&amp &ampx; &lt="), "& &x; <=");
        assert_eq!(unescape("&aacutex"), "\u{e1}x");
        assert_eq!(unescape("& &; &#; AT&T"), "& &; &#; AT&T");
    }

    #[test]
    fn text_without_ampersand_is_borrowed() {
        assert!(matches!(unescape("plain"), Cow::Borrowed("plain")));
    }
}
