"""The Python package against the CLI and open_clip: the same calls, same random weights, same threads, one run.

    scripts/parity/setup.sh                                   # once: the pinned open_clip venv
    scripts/parity/.venv/bin/pip install ./python             # the coca package into that venv (release build)
    cargo build --release -p coca-cli                         # the CLI's in-process figures
    scripts/parity/.venv/bin/python scripts/bench/bench_python.py --model coca_ViT-B-32 --threads 2

Each side runs in its own process with the same thread count (RAYON_NUM_THREADS / torch.set_num_threads). Timed,
median of --iters after --warmup: encode_image of a preprocessed batch of 1 and of 8, encode_text of 8 texts, and
a caption of one image with open_clip's default call (6 beams in 3 groups) and greedy (open_clip: generation_type
"top_k", top_k=1), both with 20 new tokens; finally one caption per thread from 2 threads at once (coca releases
the GIL; open_clip runs torch ops, which release it too). The same calls are timed in the CLI's process by `coca
bench` (embeddings, on token ids and pixels as here) and `coca caption --bench` (captions, decoding the image file
inside the timed call as here), in the same run. Columns: python / CLI (1.00: the binding costs nothing; the goal
is within 5%) and open_clip / python (> 1: coca is faster). `--markdown` also prints a table for
docs/benchmarks.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "parity"))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

IMAGE = ROOT / "fixtures" / "images" / "sources" / "chelsea.png"
TEXTS = [f"a photo of a {w}" for w in ("cat", "dog", "rocket", "tree", "car", "house", "bird", "boat")]
# seq_len counts the start token: 21 tokens = 20 new ones, and min_seq_len=20 keeps the end token away until then.
CAPTION = {"seq_len": 21, "min_seq_len": 20}


def timed(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def two_threads(fn) -> None:
    threads = [threading.Thread(target=fn) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def coca_worker(args) -> dict:
    import numpy as np

    import coca

    model = coca.load(args.model, pretrained=args.checkpoint)
    one = model.preprocess([IMAGE])
    eight = np.repeat(one, 8, axis=0)
    # Token ids, as open_clip's encode_text and `coca bench` take them.
    ids = coca.tokenize(TEXTS, model=args.model)
    greedy = dict(CAPTION, generation_type="greedy")
    return {
        "embed_image_b1": timed(lambda: model.encode_image(one), args.iters, args.warmup),
        "embed_image_b8": timed(lambda: model.encode_image(eight), args.iters, args.warmup),
        "embed_text_b8": timed(lambda: model.encode_text(ids), args.iters, args.warmup),
        "caption_default": timed(lambda: model.generate([IMAGE], **CAPTION), args.iters, args.warmup),
        "caption_greedy": timed(lambda: model.generate([IMAGE], **greedy), args.iters, args.warmup),
        "caption_greedy_2_threads": timed(
            lambda: two_threads(lambda: model.generate([IMAGE], **greedy)), args.iters, args.warmup
        ),
    }


def open_clip_worker(args) -> dict:
    import open_clip
    import torch
    from PIL import Image

    torch.set_num_threads(args.threads)
    model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=args.checkpoint)
    model.eval()
    tokenizer = open_clip.get_tokenizer(args.model)
    one = preprocess(Image.open(IMAGE)).unsqueeze(0)
    eight = one.repeat(8, 1, 1, 1)
    ids = tokenizer(TEXTS)
    greedy = dict(CAPTION, generation_type="top_k", top_k=1)

    def run(fn):
        def call():
            with torch.no_grad():
                fn()

        return call

    def caption(**kw):
        return run(lambda: model.generate(preprocess(Image.open(IMAGE)).unsqueeze(0), **kw))

    return {
        "embed_image_b1": timed(run(lambda: model.encode_image(one, normalize=True)), args.iters, args.warmup),
        "embed_image_b8": timed(run(lambda: model.encode_image(eight, normalize=True)), args.iters, args.warmup),
        "embed_text_b8": timed(run(lambda: model.encode_text(ids, normalize=True)), args.iters, args.warmup),
        "caption_default": timed(caption(**CAPTION), args.iters, args.warmup),
        "caption_greedy": timed(caption(**greedy), args.iters, args.warmup),
        "caption_greedy_2_threads": timed(lambda: two_threads(caption(**greedy)), args.iters, args.warmup),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="coca_ViT-B-32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--coca-bin", default=str(ROOT / "target" / "release" / "coca"))
    p.add_argument("--markdown", action="store_true", help="also print a markdown table")
    p.add_argument("--worker", choices=["coca", "open_clip"], help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        result = (coca_worker if args.worker == "coca" else open_clip_worker)(args)
        print(json.dumps(result))
        return

    from bench_embed import write_checkpoint

    if not Path(args.coca_bin).exists():
        sys.exit(f"error: {args.coca_bin} not found; run `cargo build --release -p coca-cli` first")

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), RAYON_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_checkpoint(args.model, Path(tmp))
        results = {}
        for side in ("coca", "open_clip"):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", side, "--checkpoint", str(checkpoint), "--model", args.model,
                 "--threads", str(args.threads), "--iters", str(args.iters), "--warmup", str(args.warmup)],
                env=env, check=True, capture_output=True, text=True,
            )
            results[side] = json.loads(out.stdout.strip().splitlines()[-1])
        results["cli"] = cli_figures(args, checkpoint, env)
    rows = []
    for call, py_s in results["coca"].items():
        cli_s, oc = results["cli"].get(call), results["open_clip"][call]
        rows.append((call, py_s, cli_s, oc, None if cli_s is None else py_s / cli_s, oc / py_s))
    show = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    print(f"{args.model}, fp32, {args.threads} threads; median seconds per call")
    print(f"{'call':<26} {'python':>9} {'CLI':>9} {'open_clip':>10} {'python/CLI':>11} {'open_clip/python':>17}")
    for call, py_s, cli_s, oc, vs_cli, vs_oc in rows:
        print(f"{call:<26} {py_s:>9.4f} {show(cli_s, '9.4f'):>9} {oc:>10.4f} {show(vs_cli, '.3f'):>11} "
              f"{vs_oc:>16.2f}x")
    if args.markdown:
        print("\n| call | python s | CLI s | open_clip s | python / CLI | open_clip / python |")
        print("|---|---:|---:|---:|---:|---:|")
        for call, py_s, cli_s, oc, vs_cli, vs_oc in rows:
            print(f"| {call} | {py_s:.4f} | {show(cli_s, '.4f')} | {oc:.4f} | {show(vs_cli, '.3f')} | {vs_oc:.2f}× |")


def cli_figures(args, checkpoint: Path, env: dict) -> dict:
    """The same calls timed inside the CLI's process: `coca bench` and `coca caption --bench`."""
    model = ["--model", args.model, "--pretrained", str(checkpoint)]
    common = ["--iters", str(args.iters), "--warmup", str(args.warmup)]
    bench = json.loads(subprocess.run(
        [args.coca_bin, "--threads", str(args.threads), "bench", *model, "--batch-size", "1", "--batch-size", "8",
         *common, "--json"],
        env=env, check=True, capture_output=True, text=True).stdout)
    out = {
        "embed_image_b1": bench["encode_image"]["1"]["seconds"],
        "embed_image_b8": bench["encode_image"]["8"]["seconds"],
        "embed_text_b8": bench["encode_text"]["8"]["seconds"],
    }
    for call, flags in (("caption_default", ["--preset", "open_clip"]), ("caption_greedy", ["--strategy", "greedy"])):
        run = subprocess.run(
            [args.coca_bin, "--threads", str(args.threads), "caption", *model, *flags,
             "--max-length", str(CAPTION["seq_len"]), "--min-length", str(CAPTION["min_seq_len"]), "--bench",
             "--bench-iters", str(args.iters), str(IMAGE)],
            env=env, check=True, capture_output=True, text=True)
        out[call] = json.loads(run.stdout)["median_run_s"]
    return out


if __name__ == "__main__":
    main()
