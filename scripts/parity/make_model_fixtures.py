#!/usr/bin/env python3
"""Write the CoCa model parity fixtures under fixtures/parity/.

Four tiny configs cover the pooling variants open_clip 3.3.0 supports:

* tiny_legacy   - attentional_pool: true (the layout of every pretrained CoCa,
                  e.g. coca_ViT-B-32): one 256-query pooler, token 0 is the
                  contrastive embedding, tokens 1..255 the caption context.
* tiny_parallel - attentional_pool: "parallel" (paper style, two poolers on
                  the same ln_post'ed tokens).
* tiny_cascade  - attentional_pool: "cascade" (the contrastive pooler reads
                  the caption pooler's output).
* tiny_clspool  - no attentional pooler (like coca_base): CLS-token pooling,
                  caption context = the patch tokens after ln_post.

Legal combinations, verified against open_clip 3.3.0 (anything else fails in
a LayerNorm shape check inside forward):
* every mode: text width == multimodal width (the decoder reads the text
  tower's tokens directly);
* attentional_pool true: multimodal width == embed_dim (the caption context
  comes out of the pooler with embed_dim channels); vision width is free;
* "parallel"/"cascade": additionally vision width == embed_dim (ln_post is
  built with embed_dim channels but applied to the vision tokens);
* no pooler: multimodal width == vision width; embed_dim is free.
`multimodal_cfg.mlp_ratio`, `dim_head`, `n_queries` and `attn_pooler_heads`
are ignored by open_clip (the decoder always uses mlp_ratio 4), and the
decoder's vocab is `text_cfg.vocab_size`.

Deterministic: fixed seeds; rerunning rewrites byte-identical files (with the
same torch/open_clip versions). Run from the repository root:

    scripts/parity/.venv/bin/python scripts/parity/make_model_fixtures.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oracle  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "fixtures" / "parity"


def _text(width, heads, layers, vocab, mlp_ratio=None):
    cfg = {
        "context_length": 76,
        "vocab_size": vocab,
        "width": width,
        "heads": heads,
        "layers": layers,
        "embed_cls": True,
        "output_tokens": True,
    }
    if mlp_ratio is not None:
        cfg["mlp_ratio"] = mlp_ratio
    return cfg


def _multimodal(width, heads, layers, vocab):
    return {"context_length": 76, "vocab_size": vocab, "width": width, "heads": heads, "layers": layers}


# Sizes are small on purpose (the whole folder stays a few MB) but every
# dimension that the Rust side could confuse differs from its neighbours.
CONFIGS = {
    # Same structure as coca_ViT-B-32: bool pooler with 256 queries, vision
    # width != embed_dim, so the pooler's nn.MultiheadAttention has separate
    # q/k/v projection weights (kdim != embed_dim).
    "tiny_legacy": {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 48,
            "layers": 2,
            "width": 48,
            "head_width": 16,
            "patch_size": 16,
            "attentional_pool": True,
            "attn_pooler_heads": 4,
            "output_tokens": True,
        },
        "text_cfg": _text(32, 4, 2, 256),
        "multimodal_cfg": _multimodal(32, 4, 2, 256),
        "custom_text": True,
    },
    # Paper "parallel" pooling: vision width must equal embed_dim, so the
    # pooler attention uses a packed in_proj_weight. mlp_ratio != 4 in the
    # vision and text towers, 3 vision layers, 32 caption queries.
    "tiny_parallel": {
        "embed_dim": 24,
        "vision_cfg": {
            "image_size": 32,
            "layers": 3,
            "width": 24,
            "head_width": 12,
            "mlp_ratio": 2.0,
            "patch_size": 8,
            "attentional_pool": "parallel",
            "attn_pooler_queries": 32,
            "attn_pooler_heads": 3,
            "output_tokens": True,
        },
        "text_cfg": _text(24, 2, 2, 200, mlp_ratio=3.0),
        "multimodal_cfg": _multimodal(24, 3, 2, 200),
        "custom_text": True,
    },
    # Paper "cascade" pooling with a single text layer and 3 decoder layers.
    "tiny_cascade": {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 40,
            "layers": 2,
            "width": 16,
            "head_width": 8,
            "patch_size": 10,
            "attentional_pool": "cascade",
            "attn_pooler_queries": 12,
            "attn_pooler_heads": 2,
            "output_tokens": True,
        },
        "text_cfg": _text(16, 4, 1, 160),
        "multimodal_cfg": _multimodal(16, 2, 3, 160),
        "custom_text": True,
    },
    # coca_base style: no attentional pooler, CLS pooling ('tok'), caption
    # context = ln_post'ed patch tokens (vision width == multimodal width),
    # embed_dim smaller than every width.
    "tiny_clspool": {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 36,
            "layers": 2,
            "width": 32,
            "head_width": 8,
            "patch_size": 12,
            "output_tokens": True,
        },
        "text_cfg": _text(32, 4, 2, 128),
        "multimodal_cfg": _multimodal(32, 2, 2, 128),
        "custom_text": True,
    },
}

SEEDS = {"tiny_legacy": 1001, "tiny_parallel": 2002, "tiny_cascade": 3003, "tiny_clspool": 4004}

NOTES = {
    "tiny_legacy": [
        "attentional_pool=true (legacy open_clip CoCa): pooled = ln_post(attn_pool(x))[:, 0] @ proj, "
        "image_embs = ln_post(attn_pool(x))[:, 1:] (n_queries-1 tokens, no proj).",
    ],
    "tiny_parallel": [
        "attentional_pool='parallel': x = ln_post(tokens incl. CLS); image_embs = attn_pool(x) (no LN after); "
        "pooled = attn_pool_contrastive(x) @ proj. open_clip marks this mode 'untested, WIP'.",
    ],
    "tiny_cascade": [
        "attentional_pool='cascade': x = ln_post(tokens incl. CLS); image_embs = attn_pool(x); "
        "pooled = attn_pool_contrastive(image_embs) @ proj. open_clip marks this mode 'untested, WIP'.",
    ],
    "tiny_clspool": [
        "no attentional pooler: x = ln_post(tokens); pooled = x[:, 0] @ proj; image_embs = x[:, 1:] "
        "(vision width channels).",
    ],
}

COMMON_NOTES = [
    "Text tower uses open_clip's legacy CLS mask (correct_cls_mask=False): key 0 always visible, key k>=1 "
    "visible iff text[k-1] != pad, plus the causal mask.",
    "multimodal_cfg.mlp_ratio/dim_head/n_queries/attn_pooler_heads are ignored by open_clip; decoder mlp_ratio "
    "is always 4 and its vocab is text_cfg.vocab_size.",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="fixture root (default: fixtures/parity)")
    parser.add_argument("--only", nargs="*", help="names of the fixtures to write (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    names = args.only or list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown fixture names {unknown}; known: {list(CONFIGS)}")

    total = 0
    for name in names:
        t = time.perf_counter()
        spec = oracle.FixtureSpec(
            name=name,
            model=CONFIGS[name],
            out_dir=args.out / name,
            seed=SEEDS[name],
            notes=NOTES[name] + COMMON_NOTES,
        )
        meta = oracle.make_fixture(spec)
        size = oracle.dir_size(spec.out_dir)
        total += size
        sat = meta["saturation_checks"]
        print(
            f"[{name}] {meta['n_params']:,} params, {size / 1e6:.2f} MB, "
            f"loss {meta['scalars']['loss']:.4f}, lm max prob {sat['lm_softmax_max_prob']:.3f}, "
            f"clip max prob {sat['contrastive_softmax_max_prob']:.3f}, {time.perf_counter() - t:.1f}s"
        )
        for f in sorted(spec.out_dir.iterdir()):
            print(f"    {f.name:32s} {f.stat().st_size:>10,d} B")
    print(f"total {total / 1e6:.2f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
