#!/usr/bin/env python3
"""Write open_clip 3.3.0 caption-generation references under fixtures/generation/.

For each committed tiny model (fixtures/parity/tiny_*), this runs `CoCa.generate` on the images stored in that
fixture's io.safetensors and records the token sequences open_clip returns:

* greedy - generation_type "top_k" with top_k=1. open_clip samples with `torch.multinomial` from the softmax of
  the top-k-filtered logits; with k=1 that distribution is one-hot, so the draw is the argmax whatever the RNG
  state. The script checks this against an independent greedy loop over open_clip's own forward (argmax of the
  last position's processed logits) before writing anything.
* beam   - generation_type "beam_search" with open_clip's defaults (6 beams in 3 groups) and with one group.

Cases vary seq_len / min_seq_len, the repetition penalty, a text prompt (sampling path only: open_clip's beam
search ignores `text`), a prompt containing the pad id 0 (exercises the text tower's legacy key mask), and the
end-of-text id: besides the model's own eot (vocab-1, which a random model rarely emits), some cases name a
token the model emits often as `eos_token_id`, so that stopping, min-length masking and finished rows leaving
the batch are all exercised. sot/eos/pad ids are always passed explicitly; fixed_output_length=False.

Output: one JSON file per model, `fixtures/generation/<model>.json`, with every case's parameters and
open_clip's output rows (batch, len) exactly as returned (padding included). Run from the repository root:

    scripts/parity/.venv/bin/python scripts/parity/make_generation_fixtures.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oracle  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PARITY = REPO / "fixtures" / "parity"
DEFAULT_OUT = REPO / "fixtures" / "generation"
MODELS = ("tiny_legacy", "tiny_parallel", "tiny_cascade", "tiny_clspool")


def load_tiny(name: str):
    cfg = json.loads((PARITY / name / "config.json").read_text())
    model = oracle.build_model(cfg)
    state = load_file(str(PARITY / name / oracle.WEIGHTS_SAFETENSORS))
    model.load_state_dict(state, strict=True)
    model.eval()
    images = load_file(str(PARITY / name / "io.safetensors"))["image"].float()
    meta = json.loads((PARITY / name / "meta.json").read_text())["tokens"]
    return model, images, meta


def greedy_reference(model, images, text, seq_len, min_seq_len, eos, pad, rep):
    """An independent greedy loop over open_clip's forward, with open_clip's sampling-path rules."""
    out = text.clone()
    with torch.no_grad():
        _, image_embs = model._encode_image(images)
        while True:
            logits = model(images, out, image_latent=torch.zeros(1), image_embs=image_embs, output_labels=False)[
                "logits"
            ][:, -1].double()
            finished = (out[:, -1] == eos) | (out[:, -1] == pad)
            if finished.all():
                break
            if rep != 1.0:
                picked = torch.gather(logits, 1, out)
                picked = torch.where(picked < 0, picked * rep, picked / rep)
                logits = logits.scatter(1, out, picked)
            if out.shape[1] < min_seq_len:
                logits[:, eos] = -float("inf")
            nxt = logits.argmax(-1)
            if out.shape[1] + 1 == seq_len:
                nxt[:] = eos
            nxt[finished] = pad
            out = torch.cat([out, nxt[:, None]], dim=1)
            if out.shape[1] >= seq_len:
                break
    return out


def frequent_token(rows, sot, exclude):
    """The token the model emits most often in `rows` (excluding special ids): a useful stand-in eos."""
    counts = {}
    for row in rows:
        for t in row[1:]:
            if t not in exclude and t != sot:
                counts[t] = counts.get(t, 0) + 1
    return max(sorted(counts), key=lambda t: counts[t])


def run_case(model, images, case, sot, pad):
    kw = dict(
        seq_len=case["seq_len"],
        min_seq_len=case["min_seq_len"],
        sot_token_id=sot,
        eos_token_id=case["eos"],
        pad_token_id=pad,
        repetition_penalty=case["repetition_penalty"],
        fixed_output_length=False,
    )
    imgs = images[: case["n_images"]]
    if case["strategy"] == "greedy":
        text = None
        if case["prompt"]:
            text = torch.tensor([case["prompt"]] * imgs.shape[0], dtype=torch.long)
        torch.manual_seed(0)
        out = model.generate(imgs, text=text, generation_type="top_k", top_k=1, **kw)
        start = text if text is not None else torch.full((imgs.shape[0], 1), sot, dtype=torch.long)
        ref = greedy_reference(
            model, imgs, start, case["seq_len"], case["min_seq_len"], case["eos"], pad, case["repetition_penalty"]
        )
        if not torch.equal(out, ref):
            raise oracle.OracleError(f"top_k=1 is not greedy for {case['name']}: {out.tolist()} vs {ref.tolist()}")
    else:
        out = model.generate(
            imgs,
            generation_type="beam_search",
            num_beams=case["num_beams"],
            num_beam_groups=case["num_beam_groups"],
            **kw,
        )
    return out.tolist()


def cases_for(vocab: int, sot: int, eot: int, frequent: int):
    base = dict(eos=eot, repetition_penalty=1.0, prompt=None, n_images=4, num_beams=6, num_beam_groups=3)

    def case(name, strategy, seq_len, min_seq_len, **over):
        c = dict(base, name=name, strategy=strategy, seq_len=seq_len, min_seq_len=min_seq_len)
        c.update(over)
        return c

    return [
        case("greedy_default", "greedy", 30, 5),
        case("greedy_short", "greedy", 12, 8),
        case("greedy_eos_frequent", "greedy", 20, 5, eos=frequent),
        case("greedy_eos_frequent_min10", "greedy", 24, 10, eos=frequent),
        case("greedy_repetition", "greedy", 16, 5, eos=frequent, repetition_penalty=1.5),
        case("greedy_prompt", "greedy", 20, 5, prompt=[sot, 3, 7, 11], eos=frequent),
        case("greedy_prompt_with_pad_id", "greedy", 20, 5, prompt=[sot, 5, 0, 9]),
        case("beam_open_clip_default", "beam", 30, 5),
        case("beam_one_group", "beam", 20, 5, num_beam_groups=1),
        case("beam_eos_frequent", "beam", 16, 3, eos=frequent),
        case("beam_eos_frequent_one_group", "beam", 16, 3, eos=frequent, num_beam_groups=1),
        case("beam_4x2_repetition", "beam", 14, 6, eos=frequent, num_beams=4, num_beam_groups=2,
             repetition_penalty=1.3),
        case("beam_3x1_single_image", "beam", 12, 4, eos=frequent, num_beams=3, num_beam_groups=1, n_images=1),
    ]


def write_demo_end_to_end(out: Path) -> None:
    """open_clip's captions for the demo checkpoint on two real photos (its PIL preprocessing, the real CLIP
    vocabulary and special ids), for the end-to-end test of `coca caption`."""
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import make_demo_model  # noqa: E402

    model = oracle.build_model(make_demo_model.CONFIG)
    state = {k: v.float() for k, v in load_file(str(REPO / "assets/demo/coca_demo-tiny.safetensors")).items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    preprocess = oracle.open_clip.image_transform(make_demo_model.CONFIG["vision_cfg"]["image_size"], is_train=False)
    names = ["fixtures/images/sources/chelsea.png", "fixtures/images/sources/rocket.jpg"]
    pixels = torch.stack([preprocess(Image.open(REPO / n)) for n in names])
    tokenizer = oracle.open_clip.get_tokenizer("coca_ViT-B-32")
    with torch.no_grad():
        default = model.generate(pixels)  # open_clip's default call
        torch.manual_seed(0)
        greedy = model.generate(pixels, generation_type="top_k", top_k=1, seq_len=12, min_seq_len=4)
    prompt_ids = tokenizer(["a photo of"])[0]
    prompt_ids = prompt_ids[: int((prompt_ids != 0).sum()) - 1]  # drop eot and padding
    with torch.no_grad():
        torch.manual_seed(0)
        prompted = model.generate(pixels, text=prompt_ids.repeat(2, 1), generation_type="top_k", top_k=1,
                                  seq_len=12, min_seq_len=4)
    doc = {
        "model": "assets/demo/coca_demo-tiny.json",
        "weights": "assets/demo/coca_demo-tiny.safetensors (f16, run in f32)",
        "images": names,
        "open_clip_version": oracle.open_clip.__version__,
        "default_call": default.tolist(),
        "greedy_seq_len_12_min_4": greedy.tolist(),
        "greedy_prompt_a_photo_of_seq_len_12_min_4": prompted.tolist(),
    }
    (out / "demo_end_to_end.json").write_text(json.dumps(doc, indent=1) + "\n")
    print("demo end to end:", doc["default_call"], doc["greedy_seq_len_12_min_4"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    for name in MODELS:
        model, images, meta = load_tiny(name)
        sot, eot, pad, vocab = meta["sot_id"], meta["eot_id"], meta["pad_id"], meta["vocab_size"]
        probe = run_case(
            model, images, dict(strategy="greedy", seq_len=20, min_seq_len=5, eos=eot, repetition_penalty=1.0,
                                prompt=None, n_images=4, name="probe"), sot, pad)
        frequent = frequent_token(probe, sot, {eot, pad})
        cases = cases_for(vocab, sot, eot, frequent)
        for case in cases:
            case["output"] = run_case(model, images, case, sot, pad)
        doc = {
            "model": name,
            "weights": f"fixtures/parity/{name}/{oracle.WEIGHTS_SAFETENSORS}",
            "images": f"fixtures/parity/{name}/io.safetensors (tensor 'image', first n_images rows)",
            "open_clip_version": oracle.open_clip.__version__,
            "torch_version": torch.__version__,
            "sot": sot,
            "pad": pad,
            "vocab_size": vocab,
            "notes": "output = CoCa.generate(...) rows as returned (fixed_output_length=False); greedy = "
            "generation_type top_k with top_k=1, verified equal to an argmax loop; beam search ignores prompts",
            "cases": cases,
        }
        path = args.out / f"{name}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        lens = [len(c["output"][0]) for c in cases]
        print(f"{name}: {len(cases)} cases, frequent token {frequent}, output lengths {lens}")
    write_demo_end_to_end(args.out)


if __name__ == "__main__":
    main()
