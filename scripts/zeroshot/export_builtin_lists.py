"""Write the built-in zero-shot class names and prompt templates of `coca-zeroshot` from open_clip.

open_clip 3.3.0 ships them in `open_clip/zero_shot_metadata.py`: `IMAGENET_CLASSNAMES` (1000 strings),
`OPENAI_IMAGENET_TEMPLATES` (80) and `SIMPLE_IMAGENET_TEMPLATES` (7). The templates are Python lambdas
(`lambda c: f'a photo of a {c}.'`), so each is called with the placeholder `{c}` to recover its text; the
script then checks that the recovered text, filled by coca's rule (`{c}` replaced by the class name), gives
exactly what the lambda returns for every ImageNet class name.

Output (one entry per line, UTF-8, `\n` line ends: the same format `coca classify` reads from user files):

    crates/coca-zeroshot/data/imagenet_classnames.txt
    crates/coca-zeroshot/data/openai_templates.txt
    crates/coca-zeroshot/data/simple_templates.txt

    scripts/parity/.venv/bin/python scripts/zeroshot/export_builtin_lists.py [--check]

`--check` writes nothing and fails if the committed files differ from what open_clip gives.
"""

import sys
from pathlib import Path

import open_clip
from open_clip.zero_shot_metadata import (
    IMAGENET_CLASSNAMES,
    OPENAI_IMAGENET_TEMPLATES,
    SIMPLE_IMAGENET_TEMPLATES,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "crates" / "coca-zeroshot" / "data"
PLACEHOLDER = "{c}"


def check_line(text: str, what: str) -> None:
    """Entries are stored one per line and read back stripped, so they must survive that."""
    if not text or text != text.strip() or "\n" in text or "\r" in text:
        raise SystemExit(f"{what} {text!r} cannot be stored as one line")


def template_text(template) -> str:
    """The text of an open_clip template lambda, with `{c}` where the class name goes."""
    text = template(PLACEHOLDER)
    check_line(text, "template")
    # Only the placeholder may contain braces, or coca's reader would see other fields in it.
    if text.replace(PLACEHOLDER, "").count("{") or text.replace(PLACEHOLDER, "").count("}"):
        raise SystemExit(f"template {text!r} has braces besides the placeholder")
    if PLACEHOLDER not in text:
        raise SystemExit(f"template {text!r} does not use the class name")
    for name in IMAGENET_CLASSNAMES:
        if text.replace(PLACEHOLDER, name) != template(name):
            raise SystemExit(f"template {text!r} is not a plain substitution for {name!r}")
    return text


def render(lines) -> str:
    return "".join(line + "\n" for line in lines)


def main() -> None:
    for name in IMAGENET_CLASSNAMES:
        check_line(name, "class name")
    outputs = {
        "imagenet_classnames.txt": render(IMAGENET_CLASSNAMES),
        "openai_templates.txt": render(template_text(t) for t in OPENAI_IMAGENET_TEMPLATES),
        "simple_templates.txt": render(template_text(t) for t in SIMPLE_IMAGENET_TEMPLATES),
    }
    assert len(IMAGENET_CLASSNAMES) == 1000 and len(OPENAI_IMAGENET_TEMPLATES) == 80
    assert len(SIMPLE_IMAGENET_TEMPLATES) == 7
    check_only = "--check" in sys.argv
    stale = []
    for file_name, text in outputs.items():
        path = DATA / file_name
        if check_only:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        DATA.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        print(f"wrote {path} ({text.count(chr(10))} lines)")
    if stale:
        raise SystemExit("differs from open_clip " + open_clip.__version__ + ": " + ", ".join(stale))
    if check_only:
        print(f"built-in lists match open_clip {open_clip.__version__}")


if __name__ == "__main__":
    main()
