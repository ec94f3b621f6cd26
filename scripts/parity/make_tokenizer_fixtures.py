#!/usr/bin/env python3
"""Write the tokenizer parity fixtures used by `crates/coca-text/tests/`.

The oracle is open_clip 3.3.0's `SimpleTokenizer` as returned by
`open_clip.get_tokenizer("coca_ViT-B-32")` (context length 76, clean="lower").

Outputs (all under fixtures/tokenizer/ unless --out says otherwise):

* meta.json                 versions, context length, vocabulary checksum, counts
* zero_shot.json            the 1000 ImageNet class names and the 80 OpenAI
                            templates as "{}"-format strings; the Rust test
                            builds the 80k prompts itself
* zero_shot_ids.safetensors `ids` (U16, the non-pad prefix of every tokenized
                            prompt, concatenated, class-major then template order,
                            like open_clip's zero-shot classifier builder) and
                            `offsets` (U32, n_prompts + 1 row boundaries)
* tricky.json               hand-picked hard strings with their exact ids, the
                            cleaned text, ftfy.fix_text output, raw decode of the
                            padded row and the README-style caption
* decode.json               random id sequences and open_clip's decode of them
                            (exercises lossy UTF-8 byte decoding)

* ftfy_cases.json           generated mojibake / badness probes with ftfy's verdicts

With --rust-tables it also regenerates the data tables that coca-text's ftfy and
html modules are built on (crates/coca-text/src/ftfy/tables.rs and
crates/coca-text/src/html/entities.rs), straight from ftfy 6.3.1 and the Python
standard library, so that nothing is transcribed by hand.

Run from the repository root with the parity venv:
    python scripts/parity/make_tokenizer_fixtures.py [--rust-tables]
"""

from __future__ import annotations

import argparse
import hashlib
import gzip
import json
import os
import random
from pathlib import Path

import ftfy
import numpy as np
import open_clip
import torch
from open_clip import tokenizer as oc_tok
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES
from safetensors.numpy import save_file

CONTEXT_LENGTH = 76
MODEL_NAME = "coca_ViT-B-32"

# Strings chosen to poke at every stage of the pipeline: ftfy, html unescaping,
# whitespace collapsing, lower-casing, the pre-tokenizer regex, BPE, truncation.
LONG_TEXT = (
    "A very long caption that keeps going and going, describing a sunny beach with "
    "palm trees, children building sandcastles, a dog chasing a frisbee, surfers "
    "riding enormous waves in the distance, seagulls circling overhead, colourful "
    "umbrellas planted in the sand, an ice-cream vendor pushing a cart, and an old "
    "lighthouse standing on the rocky cliff at the far end of the bay at sunset."
)
TRICKY = [
    # plain / empty / whitespace
    "",
    " ",
    "   \t\n  ",
    "a photo of a cat.",
    "A Photo Of A CAT",
    "  leading and trailing spaces  ",
    "multiple     inner\t\tspaces\nand\r\nnewlines",
    "tabs\tand\u000bvertical\u000cfeeds",
    "unicode spaces:\u00a0nbsp\u2002en\u2003em\u3000ideo\u202fnarrow",
    # contractions and apostrophes
    "should've could've would've",
    "it's they're we've I'm you'll he'd don't",
    "IT'S LOUD",
    "rock 'n' roll",
    "''quoted''",
    # numbers
    "1234567890",
    "3.14159 and 2,718 and 1e-10",
    "the year 2024 had 366 days",
    "\u00bd \u00b2 \u2167 \u0663\u0664 \uff11\uff12",
    # URLs / punctuation / symbols
    "https://example.com/path?query=1&x=2#frag",
    "email me at someone@example.org!",
    "wow!!! really??? ...",
    "(parentheses) [brackets] {braces} <angles>",
    "--- *** ### $$$ %%% ^^^",
    "snake_case_name and kebab-case-name",
    "C++ and C# and F#",
    # special tokens appearing literally
    "<start_of_text>",
    "<end_of_text>",
    "hello <start_of_text> world <end_of_text> again",
    "<START_OF_TEXT>upper case special",
    "x<start_of_text>y",
    "!<end_of_text>",
    # html entities
    "fish &amp; chips",
    "&lt;b&gt;bold&lt;/b&gt;",
    "it&#39;s &quot;quoted&quot;",
    "double &amp;amp; escaped &amp;lt;",
    "triple &amp;amp;amp; escaped",
    "&copy; 2024 &mdash; all rights &reg;",
    "&eacute;l&egrave;ve &EACUTE;COLE &nTILDE;",
    "&#x1F600; &#128512; &#0; &#x110000; &#128;",
    "AT&T and R&D",
    "&amp with no semicolon &copy",
    "literal < disables ftfy unescape &amp; here",
    "line one &amp;\nline two <tag> &amp;",
    "&notin; &not &notit;",
    # curly quotes / dashes / ligatures
    "\u201cSmart quotes\u201d and \u2018single\u2019 ones",
    "it\u2019s a dog\u2019s life",
    "\u02bcokina and \u201b\u201f reversed",
    "\ufb01ne \ufb02ower \ufb00 \ufb03 \ufb04 \ufb05 \ufb06",
    "\u0133 \u0132sselmeer \u01c4 \u01c5 \u01c6 \u01c7 \u01c9 \u01ca \u01cb \u01cc \u0149",
    "em\u2014dash and en\u2013dash and ellipsis\u2026",
    # full-width / half-width
    "\uff21\uff22\uff23\uff44\uff45\uff46\uff01\uff1f",
    "\uff2c\uff2f\uff35\uff24\u3000\uff2e\uff2f\uff29\uff33\uff25\uff33",
    "\uff35\uff80\uff70\uff9d",
    "\uffe0\uffe1\uffe5\uffe6",
    # mojibake
    "caf\u00c3\u00a9",
    "Sch\u00c3\u00b6ne Gr\u00c3\u00bc\u00c3\u009fe",
    "\u00e2\u0080\u009chello\u00e2\u0080\u009d",
    "\u00e2\u20ac\u0153curly\u00e2\u20ac\u009d quotes",
    "voil\u00c3 le travail",
    "\u00c3 la mode",
    "The Mona Lisa doesn\u00e2\u20ac\u2122t have eyebrows.",
    "\u00c3\u00a9t\u00c3\u00a9 et caf\u00c3\u00a9 na\u00c3\u00afve",
    "\u00d0\u009f\u00d1\u0080\u00d0\u00b8\u00d0\u00b2\u00d0\u00b5\u00d1\u0082",
    "\u00f0\u0178\u02dc\u20ac emoji mojibake",
    "\u00e2\u0153\u201d No problems",
    "mixed caf\u00e9 and caf\u00c3\u00a9",
    "C1 controls \u0080 \u0093quoted\u0094 \u0085",
    "\u00c3\u00a0 bient\u00c3\u00b4t",
    "\u00c2\u00a3100 \u00c2\u00a9",
    # unicode text
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9",
    "cafe\u0301 nai\u0308ve (NFD)",
    "\u4e00\u5339\u732b\u5728\u684c\u5b50\u4e0a",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\U0001f600\U0001f431\U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\U0001f3f4\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f flag",
    "\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3 \u03a3",
    "\u0130stanbul \u0049\u0307 K\u212a \u00c5\u212b",
    "\u00df STRASSE \u1e9e",
    "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u05e9\u05dc\u05d5\u05dd",
    "\u0928\u092e\u0938\u094d\u0924\u0947",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    "\u00e0\u00b2\u00b8 south asian mojibake?",
    "zero\u200bwidth\u200cjoiners\u200d\u2060",
    "\u00ad soft hyphen",
    # control characters / terminal escapes / BOM
    "bell\u0007 null\u0000 esc\u001b del\u007f",
    "\u001b[36;44mcoloured\u001b[0m text",
    "\ufeffbom at start",
    "annot\ufff9ation\ufffa\ufffb obj\ufffc",
    "arabic \u206a\u206f controls",
    "line\u2028sep\u2029para\u0085nel",
    "info sep \u001c\u001d\u001e\u001f end",
    "replacement \ufffd char",
    # regex case-folding corner cases (documented divergences in the Rust tests)
    "it'\u017f a long s",
    "<\u017ftart_of_text> long s special",
    "a\u0345b ypogegrammeni",
    # truncation
    LONG_TEXT,
    LONG_TEXT + " " + LONG_TEXT,
    "word " * 74,
    "word " * 73,
    "word " * 75,
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "donaudampfschifffahrtsgesellschaftskapit\u00e4nsm\u00fctze",
]


def vocab_md5() -> str:
    with gzip.open(oc_tok.default_bpe()) as f:
        return hashlib.md5(f.read()).hexdigest()


def template_strings() -> list[str]:
    """Turn the template lambdas into "{}" format strings, checking the round trip."""
    marker = "\x00MARK\x00"
    out = []
    for fn in OPENAI_IMAGENET_TEMPLATES:
        s = fn(marker)
        assert s.count(marker) == 1 and "{" not in s and "}" not in s, s
        fmt = s.replace(marker, "{}")
        assert fmt.format("x y") == fn("x y")
        out.append(fmt)
    return out


def non_pad_prefix(row: torch.Tensor) -> list[int]:
    """The row up to and including its final eot, i.e. without trailing padding.

    (A literal "<end_of_text>" in the text puts an eot id mid-row, so the first
    eot is not necessarily the end.)
    """
    ids = row.tolist()
    last_eot = len(ids) - 1 - ids[::-1].index(49407)
    assert all(i == 0 for i in ids[last_eot + 1 :])
    return ids[: last_eot + 1]


def readme_caption(row: torch.Tensor) -> str:
    return open_clip.decode(row).split("<end_of_text>")[0].replace("<start_of_text>", "").strip()


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=True, indent=1) + "\n", encoding="utf-8")



# ---------------------------------------------------------------------------
# Rust table generation (--rust-tables)
# ---------------------------------------------------------------------------

RUST_HEADER = """// @generated by scripts/parity/make_tokenizer_fixtures.py --rust-tables; do not edit.
//
// {what}
"""


def rust_str(s: str) -> str:
    """A Rust string literal for `s`, escaping everything outside printable ASCII."""
    out = []
    for ch in s:
        o = ord(ch)
        if ch in "\"\\":
            out.append("\\" + ch)
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\u{{{o:x}}}")
    return '"' + "".join(out) + '"'


def rust_char(ch: str) -> str:
    assert len(ch) == 1
    o = ord(ch)
    if ch in "'\\":
        return "'\\" + ch + "'"
    if 0x20 <= o < 0x7F:
        return f"'{ch}'"
    return f"'\\u{{{o:x}}}'"


def to_ranges(cps) -> list[tuple[int, int]]:
    cps = sorted(set(cps))
    ranges: list[tuple[int, int]] = []
    for cp in cps:
        if ranges and ranges[-1][1] + 1 == cp:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return ranges


def rust_ranges(name: str, ranges, doc: str) -> str:
    body = ", ".join(f"({rust_char(chr(a))}, {rust_char(chr(b))})" for a, b in ranges)
    return f"/// {doc}\npub(crate) const {name}: &[(char, char)] = &[{body}];\n"


def parse_py_class(body: str) -> tuple[bool, list[tuple[int, int]]]:
    """Parse the inside of a Python `[...]` class (actual chars, `\\xNN`, `\\c`)."""
    negated = body.startswith("^")
    if negated:
        body = body[1:]
    items: list[int] = []
    i = 0

    def one(i: int) -> tuple[int, int]:
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1]
            if nxt == "x":
                return int(body[i + 2 : i + 4], 16), i + 4
            assert nxt not in "swdSWD", f"class escape \\{nxt} not supported"
            return ord(nxt), i + 2
        return ord(ch), i + 1

    ranges = []
    while i < len(body):
        lo, i = one(i)
        if i + 1 < len(body) and body[i] == "-":
            hi, i = one(i + 1)
            assert lo <= hi
            ranges.append((lo, hi))
        else:
            ranges.append((lo, lo))
    del items
    return negated, ranges


def rust_class(negated: bool, ranges) -> str:
    parts = []
    for a, b in ranges:
        parts.append(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}")
    return "[" + ("^" if negated else "") + "".join(parts) + "]"


def python_space_ranges() -> list[tuple[int, int]]:
    return to_ranges(cp for cp in range(0x110000) if chr(cp).isspace())


def py_regex_to_rust(pattern: str, verbose: bool) -> str:
    """Translate a Python `re` str pattern (as used by ftfy) into Rust `regex` syntax.

    Classes become explicit code-point ranges, non-ASCII literals become `\\x{..}`,
    and `\\s`/`\\w` get Python's meaning (str.isspace / str.isalnum or `_`).
    """
    space_class = rust_class(False, python_space_ranges())
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] == "^":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            while pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            negated, ranges = parse_py_class(pattern[i + 1 : j])
            out.append(rust_class(negated, ranges))
            i = j + 1
        elif ch == "\\":
            nxt = pattern[i + 1]
            if nxt == "s":
                out.append(space_class)
            elif nxt == "w":
                out.append(r"[\p{L}\p{N}_]")
            elif nxt == "x":
                out.append(f"\\x{{{int(pattern[i + 2 : i + 4], 16):X}}}")
                i += 2
            else:
                raise AssertionError(f"escape \\{nxt} not handled")
            i += 2
        elif verbose and ch.isspace():
            i += 1
        elif verbose and ch == "#":
            while i < len(pattern) and pattern[i] != "\n":
                i += 1
        else:
            out.append(ch if 0x20 < ord(ch) < 0x7F else f"\\x{{{ord(ch):X}}}")
            i += 1
    return "".join(out)


def bytes_regex_to_rust(pattern: bytes) -> str:
    out = ["(?-u)"]
    for b in pattern:
        out.append(chr(b) if 0x20 < b < 0x7F else f"\\x{b:02X}")
    return "".join(out)


def emit_rust_tables(repo: Path) -> None:
    import html
    import html.entities
    import re

    from ftfy import badness, chardata, fixes

    crate = repo / "crates" / "coca-text" / "src"

    # ---- html entities -----------------------------------------------------
    html5 = sorted(html.entities.html5.items())
    extras = sorted(
        (k[1:], v) for k, v in chardata.HTML_ENTITIES.items() if k[1:] not in html.entities.html5
    )
    for k, v in chardata.HTML_ENTITIES.items():
        if k[1:] in html.entities.html5:
            assert html.entities.html5[k[1:]] == v
    charrefs = sorted(html._invalid_charrefs.items())  # type: ignore[attr-defined]
    bad_cps = to_ranges(html._invalid_codepoints)  # type: ignore[attr-defined]
    lines = [RUST_HEADER.format(what="HTML5 named character references (Python's html.entities.html5) and the\n// extra upper-case names that ftfy 6.3.1 decodes.")]
    lines.append("/// `(name, value)` for every HTML5 named reference, sorted by name; names\n/// include the trailing `;` where the standard has one.")
    lines.append("pub(crate) const HTML5: &[(&str, &str)] = &[")
    lines += [f"    ({rust_str(k)}, {rust_str(v)})," for k, v in html5]
    lines.append("];\n")
    lines.append("/// Upper-cased entity names (with `;`) that ftfy decodes in addition to `HTML5`.")
    lines.append("pub(crate) const FTFY_UPPERCASE: &[(&str, &str)] = &[")
    lines += [f"    ({rust_str(k)}, {rust_str(v)})," for k, v in extras]
    lines.append("];\n")
    lines.append("/// Numeric references that HTML5 remaps (Windows-1252 C1 range, NUL, CR).")
    lines.append("pub(crate) const REMAPPED_CHARREFS: &[(u32, char)] = &[")
    lines += [f"    (0x{k:X}, {rust_char(v)})," for k, v in charrefs]
    lines.append("];\n")
    lines.append(rust_ranges("DROPPED_CHARREFS", bad_cps, "Numeric references that decode to nothing (controls and non-characters)."))
    (crate / "html" / "entities.rs").write_text("\n".join(lines), encoding="utf-8")

    # ---- ftfy tables ---------------------------------------------------------
    lines = [RUST_HEADER.format(what="Character data of ftfy 6.3.1 (Apache-2.0, by Robyn Speer) and of the\n// Python codecs it relies on.")]

    # single-byte charmaps, in ftfy's trial order
    lines.append("/// A single-byte encoding as ftfy uses it: bytes 0x00-0x7F are ASCII except\n/// 0x1A, which decodes to `sub`.")
    lines.append("pub(crate) struct Charmap {\n    /// Python codec name.\n    pub name: &'static str,\n    /// What byte 0x1A decodes to.\n    pub sub: char,\n    /// What bytes 0x80..=0xFF decode to.\n    pub high: [char; 128],\n}\n")
    lines.append("/// The encodings ftfy tries, in order (`chardata.CHARMAP_ENCODINGS`).")
    lines.append("pub(crate) const CHARMAPS: &[Charmap] = &[")
    for enc in chardata.CHARMAP_ENCODINGS:
        table = bytes(range(256)).decode(enc)
        assert len(table) == 256 and len(set(table)) == 256, enc
        for b in range(0x80):
            if b != 0x1A:
                assert table[b] == chr(b), (enc, b)
        assert table.encode(enc) == bytes(range(256)), enc
        high = ", ".join(rust_char(c) for c in table[0x80:])
        lines.append(f"    Charmap {{\n        name: {rust_str(enc)},\n        sub: {rust_char(table[0x1A])},\n        high: [{high}],\n    }},")
    lines.append("];\n")

    # strict windows-1252 (used for the latin-1 -> windows-1252 step)
    cp1252 = []
    for b in range(0x80, 0xA0):
        try:
            cp1252.append(rust_char(bytes([b]).decode("windows-1252")))
        except UnicodeDecodeError:
            cp1252.append("'\\0'")
    lines.append("/// Strict Windows-1252 for bytes 0x80..=0x9F; `'\\0'` marks the five undefined bytes.")
    lines.append(f"pub(crate) const WINDOWS_1252_C1: [char; 32] = [{', '.join(cp1252)}];\n")

    lines.append(rust_ranges("PYTHON_WHITESPACE", python_space_ranges(), "Code points for which Python's `str.isspace()` is true."))
    lines.append(rust_ranges("CONTROL_CHARS", to_ranges(chardata.CONTROL_CHARS), "Control characters that `remove_control_chars` deletes."))
    for name, rx in [("SINGLE_QUOTES", chardata.SINGLE_QUOTE_RE), ("DOUBLE_QUOTES", chardata.DOUBLE_QUOTE_RE)]:
        neg, ranges = parse_py_class(rx.pattern[1:-1])
        assert not neg
        lines.append(rust_ranges(name, ranges, f"Curly quotes that `uncurl_quotes` straightens ({name.lower().replace('_', ' ')})."))

    lig = sorted(chardata.LIGATURES.items())
    lines.append("/// Latin ligatures and digraphs split by `fix_latin_ligatures`.")
    lines.append("pub(crate) const LIGATURES: &[(char, &str)] = &[" + ", ".join(f"({rust_char(chr(k))}, {rust_str(v)})" for k, v in lig) + "];\n")
    width = sorted(chardata.WIDTH_MAP.items())
    lines.append("/// Full-width / half-width forms replaced by `fix_character_width`.")
    lines.append("pub(crate) const WIDTH_MAP: &[(char, &str)] = &[" + ", ".join(f"({rust_char(chr(k))}, {rust_str(v)})" for k, v in width) + "];\n")

    # regexes
    bad_rx = py_regex_to_rust(badness.BADNESS_RE.pattern, verbose=True)
    lines.append("/// ftfy's `BADNESS_RE` (mojibake heuristic) in Rust regex syntax.")
    lines.append(f'pub(crate) const BADNESS_RE: &str = r#"{bad_rx}"#;\n')
    clues = chardata.UTF8_CLUES
    for key in ["utf8_first_of_2", "utf8_first_of_3", "utf8_first_of_4", "utf8_continuation", "utf8_continuation_strict"]:
        neg, ranges = parse_py_class(clues[key])
        assert not neg
        lines.append(rust_ranges(key.upper(), ranges, f"`UTF8_CLUES[\"{key}\"]`."))
    lines.append("/// ftfy's `ALTERED_UTF8_RE` (UTF-8 with byte A0 replaced by a space), bytes regex.")
    lines.append(f'pub(crate) const ALTERED_UTF8_RE: &str = r#"{bytes_regex_to_rust(chardata.ALTERED_UTF8_RE.pattern)}"#;\n')
    lines.append("/// ftfy's `LOSSY_UTF8_RE` (UTF-8 with bytes lost to 0x1A or `?`), bytes regex.")
    lines.append(f'pub(crate) const LOSSY_UTF8_RE: &str = r#"{bytes_regex_to_rust(chardata.LOSSY_UTF8_RE.pattern)}"#;\n')
    assert fixes.ANSI_RE.pattern == "\033\\[((?:\\d|;)*)([a-zA-Z])"
    assert chardata.HTML_ENTITY_RE.pattern == r"&#?[0-9A-Za-z]{1,24};"
    assert chardata.C1_CONTROL_RE.pattern == r"[\x80-\x9f]"
    assert fixes.A_GRAVE_WORD_RE.pattern == b"\xc3 (?! |quele|quela|quilo|s )"
    (crate / "ftfy" / "tables.rs").write_text("\n".join(lines), encoding="utf-8")
    print("wrote", crate / "ftfy" / "tables.rs", "and", crate / "html" / "entities.rs")



# Words in several scripts that get turned into mojibake for the ftfy probes.
MOJIBAKE_WORDS = [
    "café", "naïve", "résumé", "Schön", "Größe", "señor", "jalapeño", "façade", "crème brûlée",
    "à la carte", "Ångström", "smörgåsbord", "Dvořák", "Łódź", "Kraków", "Zürich", "São Paulo",
    "Привет", "Москва", "Ελληνικά", "αβγ", "Ωmega", "Türkçe", "İstanbul", "ağaç", "Ąžuolas",
    "€100", "£5", "¥20", "©2024", "™", "—", "–", "…", "“quoted”", "‘single’", "it’s", "•",
    "日本語", "中文", "한국어", "😀", "👍🏽", "✔", "★", "½", "°C", "µm", "±3", "×2", "÷", "¿Qué?", "¡Hola!",
]
MOJIBAKE_ENCODINGS = [
    "latin-1", "sloppy-windows-1252", "sloppy-windows-1251", "sloppy-windows-1250",
    "sloppy-windows-1253", "sloppy-windows-1254", "sloppy-windows-1257", "iso-8859-2",
    "macroman", "cp437",
]


def ftfy_cases() -> dict:
    """Randomised probes for the ported parts of ftfy (fixed seed)."""
    import html

    import ftfy.bad_codecs  # noqa: F401  (registers the sloppy codecs)
    from ftfy import badness, fixes

    rng = random.Random(20240607)

    # 1. badness: short strings over the characters the heuristic cares about
    pool = set("abcxyzABCXYZ019 .,!?'\"-#")
    for chars in badness.MOJIBAKE_CATEGORIES.values():
        i = 0
        while i < len(chars):
            if i + 2 < len(chars) and chars[i + 1] == "-":
                pool.update(chr(c) for c in range(ord(chars[i]), ord(chars[i + 2]) + 1))
                i += 3
            else:
                pool.add(chars[i])
                i += 1
    pool.update("ÂÃÎÐØÙà√≈‚ÄâóвЂВГРСГўβ€ΒΓΞΟā×²³Œœ°\xa0\xad")
    pool = sorted(pool)
    badness_cases = []
    seen = set()
    while len(badness_cases) < 4000:
        n = rng.randint(1, 5)
        text = "".join(rng.choice(pool) for _ in range(n))
        if text in seen:
            continue
        seen.add(text)
        badness_cases.append([text, badness.is_bad(text)])

    # 2. mojibake: real words encoded as UTF-8 and decoded with a wrong codec
    fix_cases = []
    for _ in range(700):
        words = rng.sample(MOJIBAKE_WORDS, rng.randint(1, 3))
        clean = " ".join(words)
        if rng.random() < 0.3:
            clean = "The " + clean + " is here."
        enc = rng.choice(MOJIBAKE_ENCODINGS)
        try:
            broken = clean.encode("utf-8").decode(enc)
        except UnicodeDecodeError:
            continue
        r = rng.random()
        if r < 0.15:
            broken = broken.replace("\xa0", " ")
        elif r < 0.25:
            broken = clean + " / " + broken  # inconsistent: part broken, part fine
        elif r < 0.3 and enc != "latin-1":
            try:  # double mojibake
                broken = broken.encode("utf-8").decode("sloppy-windows-1252")
            except UnicodeDecodeError:
                pass
        fix_cases.append([broken, ftfy.fix_text(broken)])
    for word in MOJIBAKE_WORDS:  # correct text must survive untouched
        fix_cases.append([word, ftfy.fix_text(word)])

    # 3. html: entity-ish fragments through Python's html.unescape and ftfy's variant
    frags = ["&amp;", "&amp", "&AMP;", "&lt;", "&LT", "&gt", "&quot;", "&#39;", "&#x27;", "&#X41;",
             "&#65", "&#x1f600;", "&#0;", "&#13;", "&#128;", "&#129;", "&#159;", "&#1;", "&#11;",
             "&#xD800;", "&#x110000;", "&#99999999999;", "&#xFDD0;", "&#x1FFFE;", "&notin;", "&notit;",
             "&not", "&noti", "&copy", "&copy;", "&COPY;", "&eacute;", "&EACUTE;", "&Eacute;", "&SZLIG;",
             "&NTILDE;", "&nTILDE;", "&ETH;", "&eth", "&Jscr;", "&HilbertSpace;", "&checkmark;",
             "&bogus;", "&#;", "&#x;", "&", "&&", "& ", ";", "#", "x", "a", "é", " ", "\n", "<",
             "&amp;amp;", "&aacute", "&aacutex", "&ampx;", "&lt=", "&frac12;", "&frac12",
             "&NotNestedGreaterGreater;", "&nGt;", "&fjlig;", "&ThickSpace;"]
    html_cases = []
    for _ in range(1500):
        text = "".join(rng.choice(frags) for _ in range(rng.randint(1, 4)))
        html_cases.append([text, html.unescape(text), fixes.unescape_html(text)])

    return {"badness": badness_cases, "fix_text": fix_cases, "html": html_cases}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="fixtures/tokenizer", help="output folder")
    ap.add_argument("--rust-tables", action="store_true", help="also regenerate the Rust data tables")
    args = ap.parse_args()
    if args.rust_tables:
        emit_rust_tables(Path(__file__).resolve().parents[2])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    tok = open_clip.get_tokenizer(MODEL_NAME)
    assert isinstance(tok, oc_tok.SimpleTokenizer), type(tok)
    assert tok.context_length == CONTEXT_LENGTH, tok.context_length
    assert tok.vocab_size == 49408

    # --- zero-shot corpus -------------------------------------------------
    templates = template_strings()
    classnames = list(IMAGENET_CLASSNAMES)
    prompts = [fn(c) for c in classnames for fn in OPENAI_IMAGENET_TEMPLATES]
    assert prompts == [t.format(c) for c in classnames for t in templates]
    rows = tok(prompts, context_length=CONTEXT_LENGTH)
    flat: list[int] = []
    offsets = [0]
    for row in rows:
        prefix = non_pad_prefix(row)
        flat.extend(prefix)
        offsets.append(len(flat))
    save_file(
        {
            "ids": np.asarray(flat, dtype=np.uint16),
            "offsets": np.asarray(offsets, dtype=np.uint32),
        },
        str(out / "zero_shot_ids.safetensors"),
    )
    write_json(out / "zero_shot.json", {"classnames": classnames, "templates": templates})

    # --- tricky strings ---------------------------------------------------
    tricky = []
    for text in TRICKY:
        row = tok([text], context_length=CONTEXT_LENGTH)[0]
        n_tokens = len(tok.encode(text)) + 2
        tricky.append(
            {
                "text": text,
                "ids": non_pad_prefix(row),
                "n_tokens": n_tokens,
                "clean": oc_tok._clean_lower(text),
                "ftfy": ftfy.fix_text(text),
                "decoded": open_clip.decode(row),
                "caption": readme_caption(row),
            }
        )
    write_json(out / "tricky.json", tricky)

    # --- raw decode of random ids ------------------------------------------
    rng = random.Random(1234)
    decode_cases = []
    for i in range(40):
        n = rng.randint(1, 24)
        if i % 2 == 0:
            # bias towards the byte-level ids (0..511) so that multi-byte UTF-8
            # sequences get split and re-joined in odd ways
            ids = [rng.randrange(512) for _ in range(n)]
        else:
            ids = [rng.randrange(49408) for _ in range(n)]
        decode_cases.append({"ids": ids, "decoded": open_clip.decode(torch.tensor(ids))})
    write_json(out / "decode.json", decode_cases)

    write_json(out / "ftfy_cases.json", ftfy_cases())

    meta = {
        "open_clip": open_clip.__version__,
        "ftfy": ftfy.__version__,
        "torch": torch.__version__,
        "model_name": MODEL_NAME,
        "context_length": CONTEXT_LENGTH,
        "vocab_size": tok.vocab_size,
        "bpe_vocab_file": os.path.basename(oc_tok.default_bpe()),
        "bpe_vocab_md5_uncompressed": vocab_md5(),
        "n_classnames": len(classnames),
        "n_templates": len(templates),
        "n_zero_shot_prompts": len(prompts),
        "n_tricky": len(tricky),
        "n_decode_cases": len(decode_cases),
    }
    write_json(out / "meta.json", meta)
    for path in out.iterdir():
        path.chmod(0o644)
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {len(prompts)} prompts, {len(tricky)} tricky strings to {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
