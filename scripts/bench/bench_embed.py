"""Embedding throughput of coca and open_clip side by side, in one run, on the same random weights.

    scripts/parity/setup.sh                                   # once: the pinned open_clip venv
    cargo build --release -p coca-cli
    scripts/parity/.venv/bin/python scripts/bench/bench_embed.py --model coca_ViT-B-32 --threads 2
    # low precision: coca bf16 and int8 (from files written by `coca quantize`) beside open_clip f32 and
    # open_clip with torch's quantize_dynamic int8
    scripts/parity/.venv/bin/python scripts/bench/bench_embed.py --precisions fp32 bf16 int8 --open-clip-int8

Every configuration runs in its own process (so peak RSS is each one's own) with the same number of threads,
on a checkpoint written once by open_clip. Prints median seconds per batch, the speed ratio against open_clip
f32 (> 1 means faster; and against open_clip int8 with --open-clip-int8), load time and peak RSS; `--markdown`
prints a table for docs/benchmarks.md.
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "parity"))

CAPTIONS = [
    "a photo of a cat sitting on a wooden table next to a window",
    "two people riding bicycles down a busy city street at night",
    "a bowl of fresh fruit with apples, bananas and oranges",
    "an aerial view of a coastline with turquoise water and white sand",
    "a small red boat tied to a dock on a calm lake",
    "a black and white dog catching a frisbee in a park",
    "a plate of spaghetti with tomato sauce and basil leaves",
    "a snowy mountain peak under a clear blue sky",
]


def median_seconds(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def quantize_dynamic(model):
    """open_clip's model with torch's dynamic int8 for every nn.Linear, the best CPU int8 open_clip users have.
    After quantisation `c_fc.weight` is a method, which open_clip's `get_cast_dtype` reads; patched to f32."""
    import torch

    q = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    for module in q.modules():
        if hasattr(module, "get_cast_dtype"):
            module.get_cast_dtype = lambda: torch.float32
    return q


def open_clip_worker(args) -> None:
    """Runs in a child process: load the checkpoint with open_clip and time it."""
    import torch
    import open_clip

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = open_clip.create_model(args.model, pretrained=args.checkpoint, precision="fp32")
    model.eval()
    if args.quantize_dynamic:
        model = quantize_dynamic(model)
    load_seconds = time.perf_counter() - started
    tokenizer = open_clip.get_tokenizer(args.model)
    size = model.visual.image_size
    result = {"implementation": "open_clip", "load_seconds": load_seconds, "encode_image": {}, "encode_text": {}}
    with torch.no_grad():
        for b in args.batch_sizes:
            pixels = torch.randn(b, 3, size[0], size[1])
            secs = median_seconds(lambda: model.encode_image(pixels), args.warmup, args.iters)
            result["encode_image"][str(b)] = {"seconds": secs, "items_per_second": b / secs}
            ids = tokenizer([CAPTIONS[i % len(CAPTIONS)] for i in range(b)])
            secs = median_seconds(lambda: model.encode_text(ids), args.warmup, args.iters)
            result["encode_text"][str(b)] = {"seconds": secs, "items_per_second": b / secs}
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def write_checkpoint(model_name: str, out_dir: Path) -> Path:
    import oracle
    from safetensors.torch import save_file

    model = oracle.build_model(model_name)
    oracle.perturb_(model, seed=7)
    path = out_dir / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="coca_ViT-B-32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--coca-bin", default=str(ROOT / "target" / "release" / "coca"))
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16", "int8"],
                   help="coca precisions to run (bf16 and int8 from a file written by `coca quantize`)")
    p.add_argument("--open-clip-int8", action="store_true", help="also run open_clip with quantize_dynamic int8")
    p.add_argument("--markdown", action="store_true", help="also print a markdown table")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--quantize-dynamic", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        open_clip_worker(args)
        return
    if not Path(args.coca_bin).exists():
        sys.exit(f"error: {args.coca_bin} not found; run `cargo build --release -p coca-cli` first")

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), RAYON_NUM_THREADS=str(args.threads))
    runs = {}  # column name -> result JSON
    with tempfile.TemporaryDirectory(prefix="coca-bench-") as tmp:
        ckpt = write_checkpoint(args.model, Path(tmp))
        common = ["--iters", str(args.iters), "--warmup", str(args.warmup)]
        for label, extra in [("open_clip fp32", [])] + ([("open_clip int8", ["--quantize-dynamic"])]
                                                        if args.open_clip_int8 else []):
            oc = subprocess.run(
                [sys.executable, __file__, "--worker", "--model", args.model, "--checkpoint", str(ckpt),
                 "--threads", str(args.threads), "--batch-sizes", *map(str, args.batch_sizes), *common, *extra],
                env=env, check=True, capture_output=True, text=True)
            runs[label] = json.loads(oc.stdout.strip().splitlines()[-1])
        bs = [a for b in args.batch_sizes for a in ("--batch-size", str(b))]
        for precision in args.precisions:
            weights = coca_weights(args, ckpt, precision, Path(tmp), env)
            cc = subprocess.run(
                [args.coca_bin, "--threads", str(args.threads), "bench", "--model", args.model, "--pretrained",
                 str(weights), "--precision", precision, *bs, *common, "--json"],
                env=env, check=True, capture_output=True, text=True)
            runs[f"coca {precision}"] = json.loads(cc.stdout)

    base = runs["open_clip fp32"]
    names = list(runs)
    print(f"{args.model}, random weights, {args.threads} threads, {platform.processor() or platform.machine()}")
    print("ms per batch (speed vs open_clip fp32" + (", vs open_clip int8)" if args.open_clip_int8 else ")"))
    print(f"{'task':<13} {'batch':>5} " + " ".join(f"{n:>22}" for n in names))
    rows = []
    for task in ("encode_image", "encode_text"):
        for b in args.batch_sizes:
            cells = []
            for n in names:
                secs = runs[n][task][str(b)]["seconds"]
                ratios = [base[task][str(b)]["seconds"] / secs]
                if args.open_clip_int8:
                    ratios.append(runs["open_clip int8"][task][str(b)]["seconds"] / secs)
                cells.append((secs * 1e3, ratios))
            rows.append((task, b, cells))
            print(f"{task:<13} {b:>5} " + " ".join(
                f"{ms:>9.1f} ({'/'.join(f'{r:.2f}x' for r in ratios):>11})" for ms, ratios in cells))
    print("load s: " + ", ".join(f"{n} {runs[n]['load_seconds']:.2f}" for n in names))
    print("peak RSS MiB: " + ", ".join(f"{n} {runs[n]['peak_rss_mib']:.0f}" for n in names))
    for precision in args.precisions:
        print(f"coca {precision} stages:", json.dumps(runs[f"coca {precision}"]["stages"]))
    if args.markdown:
        print("\n| task | batch | " + " | ".join(f"{n} ms" for n in names) + " |")
        print("|---|---:|" + "---:|" * len(names))
        for task, b, cells in rows:
            print(f"| {task} | {b} | " + " | ".join(
                f"{ms:.1f} ({' / '.join(f'{r:.2f}×' for r in ratios)})" for ms, ratios in cells) + " |")
        print("| checkpoint load (s) | | " + " | ".join(f"{runs[n]['load_seconds']:.2f}" for n in names) + " |")
        print("| peak RSS (MiB) | | " + " | ".join(f"{runs[n]['peak_rss_mib']:.0f}" for n in names) + " |")


def coca_weights(args, ckpt: Path, precision: str, tmp: Path, env) -> Path:
    """The checkpoint coca runs at `precision`: the f32 file, or one `coca quantize` writes from it."""
    if precision == "fp32":
        return ckpt
    out = tmp / f"coca-{precision}.safetensors"
    if not out.exists():
        subprocess.run([args.coca_bin, "quantize", "--model", args.model, "--pretrained", str(ckpt), "--precision",
                        precision, "--output", str(out)], env=env, check=True, capture_output=True, text=True)
    return out


if __name__ == "__main__":
    main()
