#!/usr/bin/env python3
"""Writes fixtures/adversarial/texts/: texts that are slow to clean or tokenize when an algorithm is
super-linear in their length, and the manifest that crates/coca-cli/tests/hostile_texts.rs reads. Each is
under 128 KiB, the largest single argument Linux passes to a program. Standard library only.

    python3 scripts/adversarial/make_texts.py
"""
import json
import pathlib
import random

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "adversarial" / "texts"
SIZE = 100_000  # bytes of UTF-8 per file


def fill(unit: str) -> str:
    """`unit` repeated up to SIZE bytes."""
    return unit * (SIZE // len(unit.encode()))


def main():
    rng = random.Random(13)
    cases = [
        ("letters.txt", "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(SIZE)),
         "one word of random letters: BPE merges over 100k symbols"),
        ("punctuation.txt", fill("!?.,;:-+*/#%"),
         "one run of punctuation, which the pre-tokenizer keeps as a single word"),
        ("accented.txt", "".join(rng.choice("éèêëàâäîïôöùûüç") for _ in range(SIZE // 2)),
         "one word of two-byte letters that ftfy must look at"),
        ("mojibake.txt", fill("Ã©"), "UTF-8 read as Latin-1, repeated: ftfy's encoding repair on every line"),
        ("entities.txt", fill("&amp;amp;"), "nested HTML entities: ftfy and html.unescape rounds"),
        ("cjk.txt", "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(SIZE // 3)),
         "one word of three-byte letters, most of them unknown to the vocabulary"),
        ("digits.txt", fill("0123456789"),
         "100k digits: every digit is its own word"),
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = {
        "description": "Texts slow to tokenize if any step is super-linear. Each must tokenize (and embed) in "
                       "bounded time and memory to a full, truncated row.",
        "generator": "scripts/adversarial/make_texts.py",
        "files": [],
    }
    for name, text, what in cases:
        data = text.encode()
        assert len(data) <= SIZE and b"\0" not in data, name
        (OUT / name).write_bytes(data)
        manifest["files"].append({"file": name, "bytes": len(data), "what": what})
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
