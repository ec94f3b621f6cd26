#!/usr/bin/env python3
"""Check that weights trained by `coca train` load in open_clip and compute what coca computes.

Takes a run directory of `coca train` (its `model_config.json` and `model.safetensors`, or a checkpoint's
`model.safetensors` with --weights), loads them into open_clip 3.3.0 with `load_state_dict(strict=True)`, and
compares, on fixture photos and captions:
* image and text embeddings: open_clip's own preprocessing and tokenizer against `coca embed --json`;
* greedy captions: open_clip's `generate` (top-k 1, which is greedy) against `coca caption --strategy greedy`.

Exit status 0 when the embeddings agree within --tol and the captions are identical.

    scripts/parity/.venv/bin/python scripts/parity/check_export.py runs/demo --coca-bin target/release/coca
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import open_clip  # noqa: E402
import oracle  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
IMAGES = ["fixtures/images/sources/chelsea.png", "fixtures/images/sources/rocket.jpg", "fixtures/images/sources/coffee.webp"]
TEXTS = ["a small red circle left of a large blue square", "a large green triangle", "a photo of a cat"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="run directory of coca train")
    ap.add_argument("--weights", type=Path, help="weights file (default: RUN/model.safetensors)")
    ap.add_argument("--coca-bin", default=str(REPO / "target/release/coca"))
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    config_path = args.run / "model_config.json"
    weights = args.weights or args.run / "model.safetensors"
    cfg = json.loads(config_path.read_text())

    model = oracle.build_model(cfg)
    missing, unexpected = model.load_state_dict(load_file(weights), strict=True)
    model.eval()
    size = cfg["vision_cfg"]["image_size"]
    context = cfg["text_cfg"]["context_length"]
    preprocess = open_clip.image_transform(size, is_train=False)
    images = torch.stack([preprocess(Image.open(REPO / p)) for p in IMAGES])
    text = open_clip.tokenize(TEXTS, context_length=context)
    with torch.no_grad():
        img = model.encode_image(images, normalize=True)
        txt = model.encode_text(text, normalize=True)
        generated = model.generate(
            images, generation_type="top_k", top_k=1, seq_len=context, min_seq_len=0,
            sot_token_id=49406, eos_token_id=49407, pad_token_id=0,
        )
    oc_captions = [open_clip.decode(row).split("<end_of_text>")[0].replace("<start_of_text>", "").strip()
                   for row in generated]

    cmd = [args.coca_bin, "embed", "--model", str(config_path), "--pretrained", str(weights), "--json"]
    for p in IMAGES:
        cmd += ["--image", str(REPO / p)]
    for t in TEXTS:
        cmd += ["--text", t]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    d_img = (torch.tensor(out["image_embeddings"]) - img).abs().max().item()
    d_txt = (torch.tensor(out["text_embeddings"]) - txt).abs().max().item()

    cmd = [args.coca_bin, "caption", "--model", str(config_path), "--pretrained", str(weights), "--strategy",
           "greedy", "--min-length", "0", "--max-length", str(context), "--json"] + [str(REPO / p) for p in IMAGES]
    caps = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    coca_captions = [c["caption"] for c in caps["captions"]]

    print(f"loaded {weights} into open_clip {open_clip.__version__} (strict): ok")
    print(f"image embeddings max |diff| {d_img:.2e}, text embeddings max |diff| {d_txt:.2e} (tol {args.tol})")
    same = [a.strip() == b.strip() for a, b in zip(oc_captions, coca_captions)]
    for a, b, s in zip(oc_captions, coca_captions, same):
        print(f"  {'same' if s else 'DIFF'}: open_clip {a!r} | coca {b!r}")
    ok = d_img <= args.tol and d_txt <= args.tol and all(same)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
