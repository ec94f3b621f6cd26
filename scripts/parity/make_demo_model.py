"""Write the small demo checkpoint the README's first command runs on.

A real open_clip 3.3.0 CoCa (built by open_clip itself, weights perturbed by the oracle's rule so nothing is
left at zero), with the full CLIP vocabulary so that any English text tokenizes, but tiny widths so the file
stays a few megabytes. Its weights are random: it demonstrates the pipeline, not accuracy.

    python scripts/parity/make_demo_model.py [--force]   # writes assets/demo/ (--force: new weights)

It also writes assets/demo/expected.json: open_clip's own end-to-end embeddings (PIL preprocessing, its
tokenizer) of a few fixture photos and texts, which the CLI tests compare `coca embed` against.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

import oracle

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "assets" / "demo"

CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {
        "image_size": 224,
        "layers": 2,
        "width": 64,
        "head_width": 32,
        "patch_size": 32,
        "attentional_pool": True,
        "attn_pooler_queries": 64,
        "attn_pooler_heads": 4,
        "output_tokens": True,
    },
    "text_cfg": {
        "context_length": 76,
        "vocab_size": 49408,
        "width": 16,
        "heads": 2,
        "layers": 2,
        "embed_cls": True,
        "output_tokens": True,
    },
    "multimodal_cfg": {
        "context_length": 76,
        "vocab_size": 49408,
        "width": 16,
        "heads": 2,
        "layers": 2,
    },
    "custom_text": True,
}


IMAGES = ["chelsea.png", "rocket.jpg", "coffee.webp"]
TEXTS = ["a photo of a cat", "a rocket on its launch pad", "a cup of coffee &amp; a “spoon”"]


def write_checkpoint() -> None:
    torch.manual_seed(0)
    model = oracle.build_model(CONFIG)
    oracle.perturb_(model, seed=2026)
    OUT.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(OUT / "coca_demo-tiny.safetensors"), metadata={"format": "pt"})
    (OUT / "coca_demo-tiny.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    n = sum(v.numel() for v in state.values())
    print(f"wrote {OUT} ({n} parameters, f16)")


def write_expected() -> None:
    """open_clip's end-to-end embeddings (its PIL preprocessing, its tokenizer, f64 math) for the CLI test."""
    import open_clip
    from PIL import Image
    from safetensors.torch import load_file

    model = oracle.build_model(CONFIG)
    state = {k: v.to(torch.float32) for k, v in load_file(str(OUT / "coca_demo-tiny.safetensors")).items()}
    model.load_state_dict(state, strict=True)
    model = model.double().eval()
    preprocess = open_clip.image_transform(CONFIG["vision_cfg"]["image_size"], is_train=False)
    tokenizer = open_clip.get_tokenizer("coca_ViT-B-32")
    images_dir = ROOT / "fixtures" / "images" / "sources"
    pixels = torch.stack([preprocess(Image.open(images_dir / name)) for name in IMAGES]).double()
    with torch.no_grad():
        image_emb = model.encode_image(pixels)
        text_emb = model.encode_text(tokenizer(TEXTS))
    expected = {
        "images": [f"fixtures/images/sources/{name}" for name in IMAGES],
        "texts": TEXTS,
        "image_embeddings": image_emb.float().tolist(),
        "text_embeddings": text_emb.float().tolist(),
        "open_clip_version": open_clip.__version__,
    }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {OUT / 'expected.json'}")


def main() -> None:
    import sys

    if "--force" in sys.argv or not (OUT / "coca_demo-tiny.safetensors").exists():
        write_checkpoint()
    write_expected()


if __name__ == "__main__":
    main()
