"""What bf16 and int8 cost in accuracy: coca's low-precision CPU inference against its own f32, and open_clip with
torch's `quantize_dynamic` int8 against open_clip f32, on the same inputs, in one run.

    scripts/parity/setup.sh                     # once: the pinned open_clip venv
    cargo build --release -p coca-cli -p coca-data --example export_scenes
    coca train --demo --output runs/demo        # a model that learned something (the README's first command)
    scripts/realdata/run.sh                     # optional: the digits model (runs/realdata)
    scripts/parity/.venv/bin/python scripts/bench/lowp_accuracy.py --demo-run runs/demo \\
        --digits runs/realdata --random coca_ViT-B-32 coca_ViT-L-14

Parts (each optional):
* `--random M ...`: the full model M with random weights written by open_clip; image and text embeddings of real
  photos (fixtures/images/sources) and of the tokenizer's tricky texts (fixtures/tokenizer/tricky.json) at each
  precision, cosine to f32 (worst and mean);
* `--demo-run RUN`: the trained demo on its 500 held-out test scenes: zero-shot top-1 and greedy caption exact
  match, and how many captions equal the f32 ones;
* `--digits WORK`: the digits model of scripts/realdata on its test split: zero-shot top-1, linear-probe top-1
  (coca only: the probe is coca's) and greedy caption exact match.

open_clip's rows run the same images through open_clip's own preprocessing, tokenizer and `generate`; its int8 is
`torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)`, the best CPU int8 its users have.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "parity"))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from bench_embed import quantize_dynamic, write_checkpoint  # noqa: E402  (the same int8 and weights as the speed runs)

PHOTOS = ["astronaut_420.jpg", "astronaut_cmyk.jpg", "camera_grey.jpg", "chelsea.png", "chelsea_422.jpg",
          "chelsea_exif_rot6.jpg", "china.jpg", "coffee.webp", "coffee_progressive.jpg", "coins.png",
          "flower.jpg", "horse.png", "rocket.jpg"]
SOT, EOT = 49406, 49407


def normalise(caption: str) -> str:
    """coca train's exact-match normalisation: lower case, single spaces, no trailing period."""
    return " ".join(caption.lower().split()).rstrip(".").strip()


def run_json(cmd: list[str], threads: int) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout)


def cosines(a, b):
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    num = (a * b).sum(1)
    return num / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --- open_clip ----------------------------------------------------------------------------------------------

def open_clip_models(model):
    """(name, model) for open_clip f32 and its quantize_dynamic int8 (a deep copy)."""
    import copy

    model.eval()
    return [("fp32", model), ("int8 (quantize_dynamic)", quantize_dynamic(copy.deepcopy(model)))]


def open_clip_zeroshot(model, image_paths, labels, classnames, templates, size, context):
    import open_clip
    import torch
    from PIL import Image

    pre = open_clip.image_transform(size, is_train=False)
    with torch.no_grad():
        weights = []
        for c in classnames:
            t = open_clip.tokenize([tpl.replace("{c}", c) for tpl in templates], context_length=context)
            e = model.encode_text(t, normalize=True).mean(0)
            weights.append(e / e.norm())
        weights = torch.stack(weights, 1)
        hits = 0
        for start in range(0, len(image_paths), 64):
            batch = torch.stack([pre(Image.open(p)) for p in image_paths[start:start + 64]])
            pred = (model.encode_image(batch, normalize=True) @ weights).argmax(1).tolist()
            hits += sum(int(p == labels[start + i]) for i, p in enumerate(pred))
    return hits / len(image_paths)


def open_clip_captions(model, image_paths, size, context):
    import open_clip
    import torch
    from PIL import Image

    pre = open_clip.image_transform(size, is_train=False)
    out = []
    with torch.no_grad():
        for start in range(0, len(image_paths), 64):
            batch = torch.stack([pre(Image.open(p)) for p in image_paths[start:start + 64]])
            rows = model.generate(batch, generation_type="top_k", top_k=1, seq_len=context, min_seq_len=0,
                                  sot_token_id=SOT, eos_token_id=EOT, pad_token_id=0)
            for row in rows:
                text = open_clip.decode(row).split("<end_of_text>")[0].replace("<start_of_text>", "")
                out.append(text.strip())
    return out


# --- coca ---------------------------------------------------------------------------------------------------

def coca_zeroshot(args, model_args, precision, root, classnames, templates):
    r = run_json([args.coca_bin, "eval", "zeroshot-classification", *model_args, "--precision", precision, "-q",
                  "--dataset-root", str(root), "--classnames", str(classnames), "--templates", str(templates),
                  "--no-cache", "--json"], args.threads)
    return r["metrics"]["acc1"]


def coca_captions(args, model_args, precision, csv_path, context, tmp):
    saved = Path(tmp) / f"captions-{precision}.json"
    run_json([args.coca_bin, "eval", "captioning", *model_args, "--precision", precision, "-q", "--csv",
              str(csv_path), "--csv-separator", ",", "--strategy", "greedy", "--min-length", "0",
              "--max-length", str(context), "--save-captions", str(saved), "--json"], args.threads)
    return {Path(e["image"]).resolve(): e["caption"] for e in json.loads(saved.read_text())}


def caption_rows(captions_by_precision, references):
    """(exact match, share equal to the f32 captions) per precision."""
    base = captions_by_precision["fp32"]
    rows = {}
    for p, caps in captions_by_precision.items():
        exact = sum(normalise(caps[k]) == normalise(references[k]) for k in references) / len(references)
        same = sum(normalise(caps[k]) == normalise(base[k]) for k in references) / len(references)
        rows[p] = (exact, same)
    return rows


def read_csv(path):
    with open(path, newline="") as f:
        return {Path(r["filepath"]).resolve(): r["title"] for r in csv.DictReader(f)}


def labelled_folder(root):
    """(paths, labels) of an image folder whose sorted subfolders are the classes."""
    paths, labels = [], []
    for label, d in enumerate(sorted(p for p in Path(root).iterdir() if p.is_dir())):
        for f in sorted(d.rglob("*.png")):
            paths.append(f)
            labels.append(label)
    return paths, labels


def trained_model_rows(args, name, config, weights, zs_root, classnames, templates, captions_csv, tmp,
                       probe_dirs=None):
    """Accuracy rows of a trained model: coca at each precision, open_clip f32 and quantize_dynamic."""
    import oracle
    import torch
    from safetensors.torch import load_file

    cfg = json.loads(Path(config).read_text())
    size, context = cfg["vision_cfg"]["image_size"], cfg["text_cfg"]["context_length"]
    model_args = ["--model", str(config), "--pretrained", str(weights)]
    names = Path(classnames).read_text().splitlines()
    tpls = [t for t in Path(templates).read_text().splitlines() if t.strip()]
    references = read_csv(captions_csv)
    rows = []

    coca_caps = {p: coca_captions(args, model_args, p, captions_csv, context, tmp) for p in args.precisions}
    cap = caption_rows(coca_caps, references)
    for p in args.precisions:
        zs = coca_zeroshot(args, model_args, p, zs_root, classnames, templates)
        probe = None
        if probe_dirs:
            r = run_json([args.coca_bin, "probe", *model_args, "--precision", p, "-q", "--train-dir",
                          str(probe_dirs[0]), "--val-dir", str(probe_dirs[1]), "--linear", "--no-cache",
                          "--json"], args.threads)
            probe = r["metrics"]["acc1"]
        rows.append((name, f"coca {p}", zs, probe, cap[p][0], cap[p][1]))

    torch.set_num_threads(args.threads)
    net = oracle.build_model(cfg)
    net.load_state_dict(load_file(str(weights)), strict=True)
    paths, labels = labelled_folder(zs_root)
    keys = list(references)
    oc_caps = {}
    for label, m in open_clip_models(net):
        zs = open_clip_zeroshot(m, paths, labels, names, tpls, size, context)
        oc_caps[label] = dict(zip(keys, open_clip_captions(m, keys, size, context)))
        rows.append((name, f"open_clip {label}", zs, None, None, None))
    base = oc_caps["fp32"]
    for i, (label, caps) in enumerate(oc_caps.items()):
        exact = sum(normalise(caps[k]) == normalise(references[k]) for k in keys) / len(keys)
        same = sum(normalise(caps[k]) == normalise(base[k]) for k in keys) / len(keys)
        n, impl, zs, probe, _, _ = rows[len(args.precisions) + i]
        rows[len(args.precisions) + i] = (n, impl, zs, probe, exact, same)
    return rows


def random_model_rows(args, model_name, tmp):
    """Embedding cosine to f32 of the full model with open_clip-written random weights."""
    import torch
    import open_clip
    from PIL import Image

    # Left out: texts that clean to nothing (coca refuses to embed an empty text) and texts with a NUL character
    # (a command line cannot carry one).
    texts = [c["text"] for c in json.loads((ROOT / "fixtures/tokenizer/tricky.json").read_text())
             if c["clean"].strip() and "\x00" not in c["text"]]
    photos = [ROOT / "fixtures/images/sources" / p for p in PHOTOS]
    folder = Path(tmp) / model_name
    folder.mkdir()
    ckpt = write_checkpoint(model_name, folder)
    net = open_clip.create_model(model_name, pretrained=str(ckpt), precision="fp32")
    emb = {}
    for p in args.precisions:
        cmd = [args.coca_bin, "embed", "--model", model_name, "--pretrained", str(ckpt), "--precision", p, "--json"]
        for photo in photos:
            cmd.append(f"--image={photo}")
        for t in texts:
            cmd.append(f"--text={t}")  # one argument, so a text that starts with "-" is not read as a flag
        emb[p] = run_json(cmd, args.threads)
    rows = []
    for p in args.precisions[1:]:
        ci = cosines(emb[p]["image_embeddings"], emb["fp32"]["image_embeddings"])
        ct = cosines(emb[p]["text_embeddings"], emb["fp32"]["text_embeddings"])
        rows.append((model_name, f"coca {p}", ci.min(), ci.mean(), ct.min(), ct.mean()))

    torch.set_num_threads(args.threads)
    size = net.visual.image_size
    pre = open_clip.image_transform(size, is_train=False)
    pixels = torch.stack([pre(Image.open(p)) for p in photos])
    tokens = open_clip.get_tokenizer(model_name)(texts)
    out = {}
    with torch.no_grad():
        for label, m in open_clip_models(net):
            out[label] = (m.encode_image(pixels, normalize=True).numpy(), m.encode_text(tokens, normalize=True).numpy())
    ci = cosines(out["int8 (quantize_dynamic)"][0], out["fp32"][0])
    ct = cosines(out["int8 (quantize_dynamic)"][1], out["fp32"][1])
    rows.append((model_name, "open_clip int8 (quantize_dynamic)", ci.min(), ci.mean(), ct.min(), ct.mean()))
    return rows


def pct(v):
    return "—" if v is None else f"{100 * v:.1f}%"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coca-bin", default=str(ROOT / "target" / "release" / "coca"))
    p.add_argument("--export-scenes", default=str(ROOT / "target" / "release" / "examples" / "export_scenes"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "int8"], choices=["fp32", "bf16", "int8"],
                   help="coca's precisions (fp32 first: the others are compared with it)")
    p.add_argument("--random", nargs="*", default=[], metavar="MODEL")
    p.add_argument("--demo-run", type=Path, help="run directory of `coca train --demo`")
    p.add_argument("--digits", type=Path, help="WORK_DIR of scripts/realdata/run.sh")
    args = p.parse_args()
    if not Path(args.coca_bin).exists():
        sys.exit(f"error: {args.coca_bin} not found; run `cargo build --release -p coca-cli` first")

    trained, random_rows = [], []

    def report():
        """Print the tables so far (after each part, so a long run shows its results as they come)."""
        if trained:
            print("| model | implementation | zero-shot top-1 | linear probe top-1 | caption exact match | "
                  "captions equal to f32 |")
            print("|---|---|---:|---:|---:|---:|")
            for name, impl, zs, probe, exact, same in trained:
                print(f"| {name} | {impl} | {pct(zs)} | {pct(probe)} | {pct(exact)} | {pct(same)} |")
        if random_rows:
            print("\n| model (random weights) | implementation | image cosine to f32, worst | mean | "
                  "text cosine to f32, worst | mean |")
            print("|---|---|---:|---:|---:|---:|")
            for name, impl, imin, imean, tmin, tmean in random_rows:
                print(f"| {name} | {impl} | {imin:.6f} | {imean:.6f} | {tmin:.6f} | {tmean:.6f} |")
        print(flush=True)

    with tempfile.TemporaryDirectory(prefix="coca-lowp-") as tmp:
        if args.demo_run:
            scenes = Path(tmp) / "scenes"
            subprocess.run([args.export_scenes, str(scenes), "500", "test"], check=True, capture_output=True)
            trained += trained_model_rows(
                args, "demo (500 test scenes)", args.demo_run / "model_config.json",
                args.demo_run / "model.safetensors", scenes / "labelled", scenes / "classnames.txt",
                scenes / "templates.txt", scenes / "captions.csv", tmp)
            report()
        if args.digits:
            d = args.digits / "digits"
            trained += trained_model_rows(
                args, "digits (360 test digits)", ROOT / "scripts/realdata/coca_digits-tiny.json",
                args.digits / "runs/digits/model.safetensors", d / "test", d / "classnames.txt",
                d / "templates.txt", d / "test.csv", tmp, probe_dirs=(d / "train", d / "test"))
            report()
        for m in args.random:
            random_rows += random_model_rows(args, m, tmp)
            report()



if __name__ == "__main__":
    main()
