"""Training-step speed of coca and open_clip side by side, in one run, on the same weights and the same batch.

    scripts/parity/setup.sh                                   # once: the pinned open_clip venv
    cargo build --release -p coca-cli
    scripts/parity/.venv/bin/python scripts/bench/bench_train.py --threads 2

The model and batch come from a JSON file (default scripts/bench/train_small.json: open_clip's model-config schema
under "model_cfg", plus "batch_size"). open_clip builds the model once with random weights, which are written as
safetensors together with one batch of inputs (N(0, 1) pixels, captions of varied length with padding); both
implementations then train on exactly that batch, each in its own process with the same number of threads.

A step is: forward, CoCaLoss (caption weight 2, contrastive weight 1), backward, AdamW update (lr 5e-4, betas
0.9/0.98, eps 1e-6, weight decay 0.2 on every parameter), fp32. Prints the median step time of each side, the
coca/open_clip speed ratio (> 1 means coca is faster), the phase split, peak RSS, and the first-step losses (which
must agree: same weights, same batch). `--markdown` prints a table for docs/benchmarks.md; `--grad-checkpointing`
turns on recomputation on both sides.
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

DEFAULT_CONFIG = ROOT / "scripts" / "bench" / "train_small.json"
PAD_ID = 0


def make_inputs(model_cfg: dict, batch: int, seed: int):
    """N(0, 1) pixels and captions `sot words… eot pad…` of lengths spread over the context, as open_clip pads."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    size = model_cfg["vision_cfg"]["image_size"]
    images = torch.randn(batch, 3, size, size, generator=gen)
    ctx = model_cfg["text_cfg"]["context_length"]
    vocab = model_cfg["text_cfg"]["vocab_size"]
    text = torch.full((batch, ctx), PAD_ID, dtype=torch.int64)
    for row in range(batch):
        words = int(torch.randint(4, ctx - 1, (1,), generator=gen))
        text[row, 0] = vocab - 2
        text[row, 1:words + 1] = torch.randint(1, vocab - 2, (words,), generator=gen)
        text[row, words + 1] = vocab - 1
    return images, text


def open_clip_worker(args) -> None:
    """Runs in a child process: train open_clip's model on the stored batch and time each phase."""
    import torch
    from open_clip.loss import CoCaLoss
    from safetensors.torch import load_file

    import oracle

    torch.set_num_threads(args.threads)
    spec = json.loads(Path(args.config).read_text())
    model = oracle.build_model(spec["model_cfg"])
    model.load_state_dict(load_file(args.checkpoint))
    model.train()
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    inputs = load_file(args.inputs)
    images, text = inputs["image"], inputs["text"]
    loss_fn = CoCaLoss(caption_loss_weight=2.0, clip_loss_weight=1.0, pad_id=PAD_ID)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)

    phases = {"forward_and_loss_seconds": [], "backward_seconds": [], "optimizer_seconds": [], "seconds": []}
    losses = []

    def step(record: bool) -> None:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = model(images, text)
        clip_loss, caption_loss = loss_fn(**out)
        total = clip_loss + caption_loss
        value = float(total)
        t1 = time.perf_counter()
        total.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        losses.append(value)
        if record:
            phases["forward_and_loss_seconds"].append(t1 - t0)
            phases["backward_seconds"].append(t2 - t1)
            phases["optimizer_seconds"].append(t3 - t2)
            phases["seconds"].append(t3 - t0)

    for _ in range(args.warmup):
        step(False)
    for _ in range(args.iters):
        step(True)
    batch = images.shape[0]
    result = {k: statistics.median(v) for k, v in phases.items()}
    result["min_seconds"] = min(phases["seconds"])
    result["samples_per_second"] = batch / result["seconds"]
    result["first_loss"] = losses[0]
    result["losses"] = losses[args.warmup:]
    out = {"implementation": "open_clip", "train_step": {str(batch): result},
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(out))


def write_model_and_inputs(spec: dict, out_dir: Path, seed: int):
    """open_clip's random init written once (so both sides start from the same weights), plus the batch."""
    import torch
    from safetensors.torch import save_file

    import oracle

    torch.manual_seed(seed)
    model = oracle.build_model(spec["model_cfg"])
    ckpt = out_dir / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    images, text = make_inputs(spec["model_cfg"], spec["batch_size"], seed)
    inputs = out_dir / "inputs.safetensors"
    save_file({"image": images.contiguous(), "text": text.contiguous()}, str(inputs))
    model_json = out_dir / "model.json"
    model_json.write_text(json.dumps(spec["model_cfg"]))
    return ckpt, inputs, model_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="model config + batch size (JSON)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--coca-bin", default=str(ROOT / "target" / "release" / "coca"))
    p.add_argument("--only", choices=["coca", "open_clip"], help="run one side only (profiling)")
    p.add_argument("--markdown", action="store_true", help="also print a markdown table")
    p.add_argument("--grad-checkpointing", action="store_true",
                   help="both sides recompute each residual block in the backward (open_clip's --grad-checkpointing)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--inputs", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        open_clip_worker(args)
        return
    if args.only != "open_clip" and not Path(args.coca_bin).exists():
        sys.exit(f"error: {args.coca_bin} not found; run `cargo build --release -p coca-cli` first")

    spec = json.loads(Path(args.config).read_text())
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), RAYON_NUM_THREADS=str(args.threads))
    # candle runs elementwise ops on its own spinning thread pool next to rayon's GEMM threads; on 2 shared cores
    # the two pools fight (measured: 4.0 s vs 2.3 s per step). One candle thread leaves the cores to rayon, which
    # also runs coca's fused kernels. Set CANDLE_NUM_THREADS yourself to override.
    coca_env = dict(env, CANDLE_NUM_THREADS=os.environ.get("CANDLE_NUM_THREADS", "1"))
    common = ["--iters", str(args.iters), "--warmup", str(args.warmup)]
    checkpointing = ["--grad-checkpointing"] if args.grad_checkpointing else []
    results = {}
    with tempfile.TemporaryDirectory(prefix="coca-bench-train-") as tmp:
        ckpt, inputs, model_json = write_model_and_inputs(spec, Path(tmp), args.seed)
        if args.only != "coca":
            oc = subprocess.run(
                [sys.executable, __file__, "--worker", "--config", args.config, "--checkpoint", str(ckpt),
                 "--inputs", str(inputs), "--threads", str(args.threads), *common, *checkpointing],
                env=env, check=True, capture_output=True, text=True)
            results["open_clip"] = json.loads(oc.stdout.strip().splitlines()[-1])
        if args.only != "open_clip":
            cc = subprocess.run(
                [args.coca_bin, "--threads", str(args.threads), "bench", "--train", "--model", str(model_json),
                 "--pretrained", str(ckpt), "--train-inputs", str(inputs), *common, *checkpointing, "--json"],
                env=coca_env, check=True, capture_output=True, text=True)
            results["coca"] = json.loads(cc.stdout)

    batch = str(spec["batch_size"])
    print(f"{Path(args.config).name}: batch {batch}, fp32, {args.threads} threads, "
          f"{'grad checkpointing, ' if args.grad_checkpointing else ''}"
          f"{platform.processor() or platform.machine()}")
    # coca's step computes forward, loss and backward in one call (the fused caption loss does its gradient
    # work in the forward), so both sides report their sum.
    phases = ("gradients_seconds", "optimizer_seconds", "seconds")
    for r in results.values():
        s = r["train_step"][batch]
        s.setdefault("gradients_seconds", s.get("forward_and_loss_seconds", 0.0) + s.get("backward_seconds", 0.0))
    print(f"{'implementation':<15}" + "".join(f"{p.replace('_seconds', '') + ' ms':>22}" for p in phases)
          + f"{'peak RSS MiB':>14}{'first loss':>12}")
    for name, r in results.items():
        s = r["train_step"][batch]
        print(f"{name:<15}" + "".join(f"{s[p] * 1e3:>22.1f}" for p in phases)
              + f"{r['peak_rss_mib']:>14.0f}{s['first_loss']:>12.5f}")
    if len(results) == 2:
        o, c = results["open_clip"]["train_step"][batch], results["coca"]["train_step"][batch]
        ratio = o["seconds"] / c["seconds"]
        rel = abs(o["first_loss"] - c["first_loss"]) / abs(o["first_loss"])
        print(f"coca/open_clip speed: {ratio:.2f}x (> 1: coca faster); first-step loss relative difference {rel:.1e}")
        if args.markdown:
            print("\n| implementation | step ms | forward+loss+backward ms | optimizer ms | peak RSS MiB |")
            print("|---|---:|---:|---:|---:|")
            for name, r in results.items():
                s = r["train_step"][batch]
                print(f"| {name} | {s['seconds'] * 1e3:.0f} | {s['gradients_seconds'] * 1e3:.0f} | "
                      f"{s['optimizer_seconds'] * 1e3:.0f} | {r['peak_rss_mib']:.0f} |")
            print(f"\ncoca/open_clip speed: **{ratio:.2f}×**")


if __name__ == "__main__":
    main()
