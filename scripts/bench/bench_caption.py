"""Caption generation speed of coca and open_clip side by side, in one run, on the same random weights.

    scripts/parity/setup.sh                                   # once: the pinned open_clip venv
    cargo build --release -p coca-cli
    scripts/parity/.venv/bin/python scripts/bench/bench_caption.py --model coca_ViT-B-32 --threads 2
    # low precision: coca bf16 and int8 (files written by `coca quantize`), open_clip with quantize_dynamic int8
    scripts/parity/.venv/bin/python scripts/bench/bench_caption.py --precisions fp32 bf16 int8 --open-clip-int8

Like bench_embed.py: a checkpoint with perturbed random weights is written once by open_clip; every
(implementation, strategy) pair runs in its own process with the same thread count, so peak RSS is its own.
Both caption the same photo, batch 1, with exactly 20 new tokens: seq_len=21 (open_clip's count includes the start
token), min_seq_len=20 so that the end token cannot come early. Strategies: greedy (open_clip: generation_type
"top_k", top_k=1) and open_clip's default 6-beam search (3 groups). The timed function includes decoding and
preprocessing the image on both sides. Reported: median seconds per caption, the speed ratio (open_clip / coca,
> 1 means coca is faster), time to first caption from process start (open_clip's includes importing torch and
open_clip; coca's is the whole binary), checkpoint load, peak RSS, and whether the tokens are identical.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROCESS_START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "parity"))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from bench_embed import coca_weights, quantize_dynamic, write_checkpoint  # noqa: E402  (the same weights everywhere)

IMAGE = ROOT / "fixtures" / "images" / "sources" / "chelsea.png"
NEW_TOKENS = 20
STRATEGIES = ("greedy", "beam6")


def open_clip_worker(args) -> None:
    """Runs in a child process: load the checkpoint with open_clip and time its generate."""
    import torch
    import open_clip
    from PIL import Image

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = open_clip.create_model(args.model, pretrained=args.checkpoint, precision="fp32")
    model.eval()
    if args.quantize_dynamic:
        model = quantize_dynamic(model)
    load_seconds = time.perf_counter() - started
    preprocess = open_clip.image_transform(model.visual.image_size, is_train=False)
    lengths = dict(seq_len=NEW_TOKENS + 1, min_seq_len=NEW_TOKENS)
    if args.strategy == "greedy":
        kwargs = dict(generation_type="top_k", top_k=1, **lengths)
    else:
        kwargs = dict(generation_type="beam_search", num_beams=6, num_beam_groups=3, **lengths)

    def caption():
        with torch.no_grad():
            pixels = preprocess(Image.open(args.image)).unsqueeze(0)
            return model.generate(pixels, **kwargs)

    tokens = caption()
    first = time.perf_counter() - PROCESS_START
    times = []
    for _ in range(args.iters):
        t = time.perf_counter()
        caption()
        times.append(time.perf_counter() - t)
    print(json.dumps({
        "load_s": load_seconds,
        "time_to_first_caption_s": first,
        "median_run_s": statistics.median(times),
        "tokens": [[t for t in row if t != 0] for row in tokens.tolist()],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def coca_run(args, weights: Path, precision: str, strategy: str, env) -> dict:
    flags = ["--strategy", "greedy"] if strategy == "greedy" else ["--preset", "open_clip"]
    started = time.perf_counter()
    out = subprocess.run(
        [args.coca_bin, "--threads", str(args.threads), "caption", "--model", args.model, "--pretrained",
         str(weights), "--precision", precision, *flags, "--max-length", str(NEW_TOKENS + 1), "--min-length", str(NEW_TOKENS), "--bench",
         "--bench-iters", str(args.iters), str(IMAGE)],
        env=env, check=True, capture_output=True, text=True)
    res = json.loads(out.stdout)
    # The binary measures from its own start; add the (tiny) process start-up seen from here.
    res["wall_s"] = time.perf_counter() - started
    res["tokens"] = res["tokens_first_run"]
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="coca_ViT-B-32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--image", default=str(IMAGE), help=argparse.SUPPRESS)
    p.add_argument("--coca-bin", default=str(ROOT / "target" / "release" / "coca"))
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16", "int8"],
                   help="coca precisions to run (bf16 and int8 from a file written by `coca quantize`)")
    p.add_argument("--open-clip-int8", action="store_true", help="also run open_clip with quantize_dynamic int8")
    p.add_argument("--markdown", action="store_true", help="also print a markdown table")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--quantize-dynamic", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--strategy", choices=STRATEGIES, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        open_clip_worker(args)
        return
    if not Path(args.coca_bin).exists():
        sys.exit(f"error: {args.coca_bin} not found; run `cargo build --release -p coca-cli` first")

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), RAYON_NUM_THREADS=str(args.threads))
    results = {}  # (strategy, column) -> result
    oc_columns = [("open_clip fp32", [])] + ([("open_clip int8", ["--quantize-dynamic"])] if args.open_clip_int8
                                            else [])
    with tempfile.TemporaryDirectory(prefix="coca-bench-") as tmp:
        ckpt = write_checkpoint(args.model, Path(tmp))
        weights = {p: coca_weights(args, ckpt, p, Path(tmp), env) for p in args.precisions}
        for strategy in STRATEGIES:
            for label, extra in oc_columns:
                oc = subprocess.run(
                    [sys.executable, __file__, "--worker", "--model", args.model, "--checkpoint", str(ckpt),
                     "--threads", str(args.threads), "--iters", str(args.iters), "--strategy", strategy, *extra],
                    env=env, check=True, capture_output=True, text=True)
                results[strategy, label] = json.loads(oc.stdout.strip().splitlines()[-1])
            for precision in args.precisions:
                results[strategy, f"coca {precision}"] = coca_run(args, weights[precision], precision, strategy, env)

    columns = [label for label, _ in oc_columns] + [f"coca {p}" for p in args.precisions]
    print(f"{args.model}, random weights, {args.threads} threads, batch 1, {NEW_TOKENS} new tokens, "
          f"{platform.processor() or platform.machine()}")
    print("seconds per caption (speed vs open_clip fp32); tokens equal to open_clip fp32's / to coca fp32's")
    rows = []
    for strategy in STRATEGIES:
        base = results[strategy, "open_clip fp32"]
        coca_base = results.get((strategy, "coca fp32"))
        cells = []
        for c in columns:
            r = results[strategy, c]
            same_oc = r["tokens"] == base["tokens"]
            same_coca = coca_base is not None and r["tokens"] == coca_base["tokens"]
            cells.append((c, r, base["median_run_s"] / r["median_run_s"], same_oc, same_coca))
        rows.append((strategy, cells))
        for c, r, ratio, same_oc, same_coca in cells:
            print(f"{strategy:<7} {c:<15} {r['median_run_s']:>8.3f} s {ratio:>6.1f}x  TTFC "
                  f"{r['time_to_first_caption_s']:.2f} s  RSS {r['peak_rss_mib']:.0f} MiB  same tokens "
                  f"{same_oc}/{same_coca}")
    if args.markdown:
        print("\n| strategy | implementation | s/caption | speed vs open_clip fp32 | time to first caption | "
              "peak RSS MiB | tokens = open_clip fp32 / coca fp32 |")
        print("|---|---|---:|---:|---:|---:|---|")
        for strategy, cells in rows:
            for c, r, ratio, same_oc, same_coca in cells:
                print(f"| {strategy} | {c} | {r['median_run_s']:.3f} | {ratio:.1f}× | "
                      f"{r['time_to_first_caption_s']:.2f} s | {r['peak_rss_mib']:.0f} | "
                      f"{'yes' if same_oc else 'no'} / {'yes' if same_coca else 'no'} |")


if __name__ == "__main__":
    main()
