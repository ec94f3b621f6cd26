"""Write open_clip's zero-shot classifier for the demo checkpoint: the reference of `coca-zeroshot`'s tests.

Uses the demo checkpoint (`assets/demo/coca_demo-tiny.{json,safetensors}`, full CLIP vocabulary, f16 weights
loaded as f32 as `make_demo_model.py` does) and open_clip 3.3.0's own `build_zero_shot_classifier` with its
tokenizer and four of its OpenAI template lambdas, over ten ImageNet class names in batches of four classes
(so open_clip's class batching is exercised). Then it classifies five fixture photos (open_clip's PIL eval
preprocessing) the way open_clip's zero-shot evaluation and CLIP_benchmark do: logits = 100 · image · classifier,
probabilities = softmax over the classes.

The reference is computed in float64 from the f32 weights (exact), so it is the answer the Rust f32 code is
measured against; an f32 open_clip run is compared too and its distance is recorded as the noise floor.

    scripts/parity/.venv/bin/python scripts/parity/make_zeroshot_fixtures.py

writes fixtures/zeroshot/demo_classifier.json:

    {"classnames": [..], "templates": ["a bad photo of a {c}.", ..], "classifier": [[embed_dim × classes]],
     "images": [..], "logits": [[images × classes]], "top5": [[index, ..]], "top5_probabilities": [[..]], ...}
"""

import json
from pathlib import Path

import open_clip
import torch
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES
from PIL import Image
from safetensors.torch import load_file

import oracle

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "assets" / "demo"
OUT = ROOT / "fixtures" / "zeroshot"

CLASSNAMES = [
    "tabby cat",
    "Egyptian Mau",
    "space shuttle",
    "missile",
    "espresso",
    "coffee mug",
    "kite (bird of prey)",
    "goldfish",
    "daisy",
    "Persian cat",
]
# Indices into open_clip's OPENAI_IMAGENET_TEMPLATES (lambdas).
TEMPLATE_INDICES = [0, 10, 32, 35]
IMAGES = ["chelsea.png", "rocket.jpg", "coffee.webp", "astronaut_420.jpg", "flower.jpg"]
CLASSES_PER_BATCH = 4
TOP_K = 5
# Neighbouring top-k logits closer than this could swap places under f32 rounding; the fixture refuses them.
MIN_LOGIT_GAP = 1e-3


def load_demo_model() -> torch.nn.Module:
    cfg = json.loads((DEMO / "coca_demo-tiny.json").read_text())
    model = oracle.build_model(cfg)
    state = {k: v.to(torch.float32) for k, v in load_file(str(DEMO / "coca_demo-tiny.safetensors")).items()}
    model.load_state_dict(state, strict=True)
    return model.eval(), cfg


def classify(model, tokenizer, templates, pixels):
    classifier = open_clip.build_zero_shot_classifier(
        model,
        tokenizer=tokenizer,
        classnames=CLASSNAMES,
        templates=templates,
        num_classes_per_batch=CLASSES_PER_BATCH,
    )
    with torch.no_grad():
        image_features = model.encode_image(pixels, normalize=True)
        logits = 100.0 * image_features @ classifier
    return classifier, logits


def main() -> None:
    torch.set_num_threads(1)
    model, cfg = load_demo_model()
    tokenizer = open_clip.get_tokenizer("coca_ViT-B-32")
    templates = [OPENAI_IMAGENET_TEMPLATES[i] for i in TEMPLATE_INDICES]
    for name in CLASSNAMES:
        assert name in IMAGENET_CLASSNAMES, name
    preprocess = open_clip.image_transform(cfg["vision_cfg"]["image_size"], is_train=False)
    sources = ROOT / "fixtures" / "images" / "sources"
    pixels = torch.stack([preprocess(Image.open(sources / name)) for name in IMAGES])

    classifier32, logits32 = classify(model, tokenizer, templates, pixels)
    model = model.double()
    classifier, logits = classify(model, tokenizer, templates, pixels.double())

    probabilities = logits.softmax(dim=-1)
    top_probs, top_idx = probabilities.topk(TOP_K, dim=-1)
    top_logits = logits.gather(1, top_idx)
    gaps = (top_logits[:, :-1] - top_logits[:, 1:]).min().item()
    if gaps < MIN_LOGIT_GAP:
        raise SystemExit(f"top-{TOP_K} logits too close to order reliably (gap {gaps:.2e}); pick other classes")

    fixture = {
        "open_clip_version": open_clip.__version__,
        "model": "assets/demo/coca_demo-tiny.json",
        "pretrained": "assets/demo/coca_demo-tiny.safetensors",
        "classnames": CLASSNAMES,
        "templates": [t("{c}") for t in templates],
        "classes_per_batch": CLASSES_PER_BATCH,
        "classifier": classifier.float().tolist(),
        "images": [f"fixtures/images/sources/{name}" for name in IMAGES],
        "logit_multiplier": 100.0,
        "logits": logits.float().tolist(),
        "top5": top_idx.tolist(),
        "top5_probabilities": top_probs.float().tolist(),
        "min_top5_logit_gap": gaps,
        "f32_noise_floor": {
            "classifier_max_abs": (classifier32.double() - classifier).abs().max().item(),
            "logits_max_abs": (logits32.double() - logits).abs().max().item(),
        },
    }
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "demo_classifier.json"
    path.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes); min top-5 logit gap {gaps:.3e}")
    print("f32 open_clip vs f64:", fixture["f32_noise_floor"])
    for name, idx, probs in zip(IMAGES, top_idx.tolist(), top_probs.tolist()):
        print(f"  {name}: " + ", ".join(f"{CLASSNAMES[i]} {p:.3f}" for i, p in zip(idx, probs)))


if __name__ == "__main__":
    main()
