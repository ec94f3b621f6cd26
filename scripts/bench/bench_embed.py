"""Embedding throughput of coca and open_clip side by side, in one run, on the same random weights.

    scripts/parity/setup.sh                                   # once: the pinned open_clip venv
    cargo build --release -p coca-cli
    scripts/parity/.venv/bin/python scripts/bench/bench_embed.py --model coca_ViT-B-32 --threads 2

Both implementations run in their own process (so peak RSS is each one's own) with the same number of threads,
on a checkpoint written once by open_clip. Prints median seconds per batch, items/s, the coca/open_clip speed
ratio (> 1 means coca is faster), load time and peak RSS; `--markdown` prints a table for docs/benchmarks.md.
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


def open_clip_worker(args) -> None:
    """Runs in a child process: load the checkpoint with open_clip and time it."""
    import torch
    import open_clip

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = open_clip.create_model(args.model, pretrained=args.checkpoint, precision="fp32")
    model.eval()
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
    p.add_argument("--markdown", action="store_true", help="also print a markdown table")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        open_clip_worker(args)
        return
    if not Path(args.coca_bin).exists():
        sys.exit(f"error: {args.coca_bin} not found; run `cargo build --release -p coca-cli` first")

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), RAYON_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory(prefix="coca-bench-") as tmp:
        ckpt = write_checkpoint(args.model, Path(tmp))
        common = ["--iters", str(args.iters), "--warmup", str(args.warmup)]
        oc = subprocess.run(
            [sys.executable, __file__, "--worker", "--model", args.model, "--checkpoint", str(ckpt),
             "--threads", str(args.threads), "--batch-sizes", *map(str, args.batch_sizes), *common],
            env=env, check=True, capture_output=True, text=True)
        oc = json.loads(oc.stdout.strip().splitlines()[-1])
        bs = [a for b in args.batch_sizes for a in ("--batch-size", str(b))]
        cc = subprocess.run(
            [args.coca_bin, "--threads", str(args.threads), "bench", "--model", args.model, "--pretrained",
             str(ckpt), *bs, *common, "--json"],
            env=env, check=True, capture_output=True, text=True)
        cc = json.loads(cc.stdout)

    rows = []
    for task in ("encode_image", "encode_text"):
        for b in args.batch_sizes:
            o, c = oc[task][str(b)], cc[task][str(b)]
            rows.append((task, b, o["seconds"] * 1e3, c["seconds"] * 1e3, c["items_per_second"],
                         o["seconds"] / c["seconds"]))
    print(f"{args.model}, fp32, {args.threads} threads, {platform.processor() or platform.machine()}")
    print(f"{'task':<13} {'batch':>5} {'open_clip ms':>13} {'coca ms':>9} {'coca items/s':>13} {'speed ratio':>12}")
    for task, b, o_ms, c_ms, ips, ratio in rows:
        print(f"{task:<13} {b:>5} {o_ms:>13.1f} {c_ms:>9.1f} {ips:>13.1f} {ratio:>11.2f}x")
    print(f"load: open_clip {oc['load_seconds']:.2f}s, coca {cc['load_seconds']:.2f}s; "
          f"peak RSS: open_clip {oc['peak_rss_mib']:.0f} MiB, coca {cc['peak_rss_mib']:.0f} MiB")
    print("coca stages:", json.dumps(cc["stages"]))
    if args.markdown:
        print("\n| task | batch | open_clip ms | coca ms | coca/open_clip speed |")
        print("|---|---:|---:|---:|---:|")
        for task, b, o_ms, c_ms, _, ratio in rows:
            print(f"| {task} | {b} | {o_ms:.1f} | {c_ms:.1f} | {ratio:.2f}× |")
        print(f"| checkpoint load (s) | | {oc['load_seconds']:.2f} | {cc['load_seconds']:.2f} | |")
        print(f"| peak RSS (MiB) | | {oc['peak_rss_mib']:.0f} | {cc['peak_rss_mib']:.0f} | |")


if __name__ == "__main__":
    main()
