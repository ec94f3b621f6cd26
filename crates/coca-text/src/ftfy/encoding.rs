//! Mojibake repair: ftfy's `fix_encoding`.
//!
//! Mojibake is UTF-8 that some program decoded with a single-byte code page,
//! e.g. `café` → `cafÃ©`. When the badness heuristic fires, each candidate
//! code page (in ftfy's order) is tried: if the text can be encoded in it and
//! the resulting bytes are valid UTF-8, that decoding is the fix.

use std::sync::OnceLock;

use regex::bytes::Regex as BytesRegex;
use regex::{Match, Regex};

use super::badness::is_bad;
use super::fixes::fix_c1_controls;
use super::tables::{
    Charmap, ALTERED_UTF8_RE, CHARMAPS, LOSSY_UTF8_RE, UTF8_CONTINUATION, UTF8_CONTINUATION_STRICT,
    UTF8_FIRST_OF_2, UTF8_FIRST_OF_3, UTF8_FIRST_OF_4, WINDOWS_1252_C1,
};

/// Repairs mojibake in `text` like ftfy's `fix_encoding`, repeating single
/// repair steps until the text stops changing.
///
/// ```
/// use coca_text::ftfy::fix_encoding;
/// assert_eq!(fix_encoding("Sch\u{c3}\u{b6}ne Gr\u{c3}\u{bc}\u{c3}\u{9f}e"), "Sch\u{f6}ne Gr\u{fc}\u{df}e");
/// assert_eq!(fix_encoding("\u{f0}\u{178}\u{2dc}\u{20ac}"), "\u{1F600}");
/// assert_eq!(fix_encoding("na\u{ef}ve caf\u{e9}"), "na\u{ef}ve caf\u{e9}");
/// ```
pub fn fix_encoding(text: &str) -> String {
    let mut text = text.to_owned();
    loop {
        match fix_one_step(&text) {
            Some(fixed) if fixed != text => text = fixed,
            _ => return text,
        }
    }
}

/// One repair step; `None` means "leave the text as it is".
fn fix_one_step(text: &str) -> Option<String> {
    if text.is_ascii() || !is_bad(text) {
        return None;
    }

    // Most likely: UTF-8 that was decoded with a single-byte encoding.
    let mut latin1_possible = false;
    for charmap in CHARMAPS {
        let Some(mut bytes) = encode(charmap, text) else {
            continue;
        };
        latin1_possible |= charmap.name == "latin-1";
        // MacRoman is excluded because there a space after an en dash would
        // look like an altered A0 byte.
        if charmap.name != "macroman" && altered_utf8_regex().is_match(&bytes) {
            bytes = restore_byte_a0(&bytes);
        }
        if charmap.name.starts_with("sloppy") {
            bytes = lossy_utf8_regex()
                .replace_all(&bytes, "\u{FFFD}".as_bytes())
                .into_owned();
        }
        if let Some(decoded) = decode_utf8_variants(&bytes) {
            return Some(decoded);
        }
    }

    // Mojibake embedded in otherwise fine text: fix the suspicious runs alone.
    if find_utf8_lookalike(text, 0).is_some() {
        let fixed = decode_inconsistent_utf8(text);
        if fixed != text {
            return Some(fixed);
        }
    }

    // Latin-1 text containing C1 controls was most likely meant as
    // Windows-1252. (ftfy also has a branch for text that is possible in both
    // encodings, but it compares against a name that is never in its list, so
    // that branch is dead and not reproduced.)
    if latin1_possible {
        if let Some(fixed) = latin1_to_windows_1252(text) {
            if fixed != text {
                return Some(fixed);
            }
        }
    }

    if text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)) {
        return Some(fix_c1_controls(text));
    }
    None
}

/// Encodes `text` in a single-byte charmap, or `None` if some character has no
/// byte there.
fn encode(charmap: &Charmap, text: &str) -> Option<Vec<u8>> {
    text.chars()
        .map(|c| {
            if c == charmap.sub {
                Some(0x1A)
            } else if c.is_ascii() && c != '\u{1a}' {
                Some(c as u8)
            } else {
                let pos = charmap.high.iter().position(|&h| h == c)?;
                Some(0x80 + pos as u8)
            }
        })
        .collect()
}

/// Decodes UTF-8 as ftfy's `utf-8-variants` codec when bytes 0xED or 0xC0 are
/// present (CESU-8 surrogate pairs and Java's `C0 80` NUL are accepted), and
/// as strict UTF-8 otherwise. `None` on any invalid sequence.
fn decode_utf8_variants(bytes: &[u8]) -> Option<String> {
    if !bytes.iter().any(|&b| b == 0xED || b == 0xC0) {
        return String::from_utf8(bytes.to_vec()).ok();
    }
    let mut out = String::with_capacity(bytes.len());
    let mut start = 0; // start of the pending run of standard UTF-8
    let mut i = 0;
    while i < bytes.len() {
        let special = match &bytes[i..] {
            [0xC0, 0x80, ..] => Some(('\0', 2)),
            [0xED, b1 @ 0xA0..=0xAF, b2 @ 0x80..=0xBF, 0xED, b4 @ 0xB0..=0xBF, b5 @ 0x80..=0xBF, ..] =>
            {
                let code = 0x10000
                    + ((u32::from(*b1) & 0x0F) << 16)
                    + ((u32::from(*b2) & 0x3F) << 10)
                    + ((u32::from(*b4) & 0x0F) << 6)
                    + (u32::from(*b5) & 0x3F);
                Some((char::from_u32(code)?, 6))
            }
            _ => None,
        };
        match special {
            Some((c, len)) => {
                out.push_str(std::str::from_utf8(&bytes[start..i]).ok()?);
                out.push(c);
                i += len;
                start = i;
            }
            None => i += 1,
        }
    }
    out.push_str(std::str::from_utf8(&bytes[start..]).ok()?);
    Some(out)
}

/// ftfy's `restore_byte_a0`: puts back A0 bytes that were turned into spaces
/// inside would-be UTF-8 sequences.
fn restore_byte_a0(bytes: &[u8]) -> Vec<u8> {
    // "Ã " standing alone is almost always "à " whose A0 became a space; keep
    // the space and insert the A0, except before Portuguese "às", "àquele"…
    let mut with_a_grave = Vec::with_capacity(bytes.len() + 4);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0xC3 && bytes.get(i + 1) == Some(&b' ') {
            let rest = &bytes[i + 2..];
            let excluded = [&b" "[..], b"quele", b"quela", b"quilo", b"s "]
                .iter()
                .any(|p| rest.starts_with(p));
            if !excluded {
                with_a_grave.extend_from_slice(&[0xC3, 0xA0, b' ']);
                i += 2;
                continue;
            }
        }
        with_a_grave.push(bytes[i]);
        i += 1;
    }
    altered_utf8_regex()
        .replace_all(&with_a_grave, |caps: &regex::bytes::Captures<'_>| {
            caps[0]
                .iter()
                .map(|&b| if b == b' ' { 0xA0 } else { b })
                .collect::<Vec<u8>>()
        })
        .into_owned()
}

/// Latin-1 encode + strict Windows-1252 decode; `None` if a C1 control has no
/// Windows-1252 meaning or a character is outside Latin-1.
fn latin1_to_windows_1252(text: &str) -> Option<String> {
    text.chars()
        .map(|c| match c as u32 {
            0x80..=0x9F => {
                let mapped = WINDOWS_1252_C1[c as usize - 0x80];
                (mapped != '\0').then_some(mapped)
            }
            0..=0xFF => Some(c),
            _ => None,
        })
        .collect()
}

/// ftfy's `decode_inconsistent_utf8`: fixes each UTF-8-looking run separately
/// when the run itself looks bad.
fn decode_inconsistent_utf8(text: &str) -> String {
    let total_chars = text.chars().count();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut pos = 0;
    while let Some(m) = find_utf8_lookalike(text, pos) {
        out.push_str(&text[copied..m.start()]);
        let run = m.as_str();
        if run.chars().count() < total_chars && is_bad(run) {
            out.push_str(&fix_encoding(run));
        } else {
            out.push_str(run);
        }
        copied = m.end();
        pos = m.end();
    }
    out.push_str(&text[copied..]);
    out
}

/// Next match of ftfy's `UTF8_DETECTOR_RE` at or after byte `pos`. The Python
/// pattern has a negative look-behind (no strict continuation character right
/// before the run), which the `regex` crate lacks, so it is checked here.
fn find_utf8_lookalike(text: &str, mut pos: usize) -> Option<Match<'_>> {
    let re = utf8_detector_regex();
    while let Some(m) = re.find_at(text, pos) {
        let before = text[..m.start()].chars().next_back();
        let blocked = before.is_some_and(|c| {
            UTF8_CONTINUATION_STRICT
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&c))
        });
        if !blocked {
            return Some(m);
        }
        // Python would retry one character further on.
        pos = m.start() + text[m.start()..].chars().next().map_or(1, char::len_utf8);
    }
    None
}

fn class(ranges: &[(char, char)]) -> String {
    let mut s = String::from("[");
    for &(lo, hi) in ranges {
        s.push_str(&format!("\\x{{{:X}}}-\\x{{{:X}}}", lo as u32, hi as u32));
    }
    s.push(']');
    s
}

fn utf8_detector_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        let cont = class(UTF8_CONTINUATION);
        let pattern = format!(
            "(?:{f2}{cont}|{f3}{cont}{{2}}|{f4}{cont}{{3}})+",
            f2 = class(UTF8_FIRST_OF_2),
            f3 = class(UTF8_FIRST_OF_3),
            f4 = class(UTF8_FIRST_OF_4),
        );
        Regex::new(&pattern).expect("generated UTF-8 detector pattern compiles")
    })
}

fn altered_utf8_regex() -> &'static BytesRegex {
    static RE: OnceLock<BytesRegex> = OnceLock::new();
    RE.get_or_init(|| BytesRegex::new(ALTERED_UTF8_RE).expect("generated pattern compiles"))
}

fn lossy_utf8_regex() -> &'static BytesRegex {
    static RE: OnceLock<BytesRegex> = OnceLock::new();
    RE.get_or_init(|| BytesRegex::new(LOSSY_UTF8_RE).expect("generated pattern compiles"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_variants_accept_cesu8_and_java_nul() {
        // U+1F600 as a CESU-8 surrogate pair, then Java's two-byte NUL.
        let bytes = [b'a', 0xED, 0xA0, 0xBD, 0xED, 0xB8, 0x80, 0xC0, 0x80, b'z'];
        assert_eq!(
            decode_utf8_variants(&bytes).as_deref(),
            Some("a\u{1F600}\0z")
        );
        // A lone surrogate stays invalid.
        assert_eq!(decode_utf8_variants(&[0xED, 0xA0, 0x80]), None);
        // Hangul using lead byte ED is ordinary UTF-8.
        assert_eq!(
            decode_utf8_variants("\u{d55c}".as_bytes()).as_deref(),
            Some("\u{d55c}")
        );
    }

    #[test]
    fn byte_a0_restoration_keeps_the_word_break() {
        assert_eq!(restore_byte_a0(b"voil\xc3 le"), b"voil\xc3\xa0 le");
        // Before "s " the space itself is taken to be the lost A0.
        assert_eq!(restore_byte_a0(b"\xc3 s x"), b"\xc3\xa0s x");
        assert_eq!(restore_byte_a0(b"\xc3 quelex"), b"\xc3\xa0quelex");
    }

    #[test]
    fn encode_uses_the_substitute_byte() {
        let sloppy_1252 = &CHARMAPS[1];
        assert_eq!(
            encode(sloppy_1252, "\u{fffd}\u{20ac}a"),
            Some(vec![0x1A, 0x80, b'a'])
        );
        assert_eq!(encode(sloppy_1252, "\u{1a}"), None);
        assert_eq!(encode(&CHARMAPS[0], "\u{100}"), None);
    }

    #[test]
    fn embedded_mojibake_is_fixed_in_place() {
        assert_eq!(
            fix_encoding("mixed caf\u{e9} and caf\u{c3}\u{a9}"),
            "mixed caf\u{e9} and caf\u{e9}"
        );
    }
}
