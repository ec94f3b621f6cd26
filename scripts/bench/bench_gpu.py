"""coca and open_clip side by side on one GPU, in one run: image embedding, caption generation, training steps.

    scripts/cuda-build.sh                                   # here: target/cuda/release/coca
    python3 scripts/bench/bench_gpu.py --coca-bin target/cuda/release/coca --out /tmp/bench

Needs torch with CUDA and open_clip 3.3.0 importable (scripts/gpu/device_checks.sh installs carried wheels on the
device machine). Every measurement runs in its own process, open_clip first, then coca, on the same checkpoint
(open_clip's random init of --model, perturbed as the parity fixtures are) and the same inputs. While a process
runs, `nvidia-smi` is polled every 50 ms; the peak of the GPU's used memory minus the idle level is reported for
both sides (torch's own `max_memory_allocated` is reported too for open_clip).

Measurements (the sizes of issue #6's open_clip baseline by default):
  embed    encode_image at --embed-batch, bf16 (open_clip: autocast; coca: --precision bf16) and fp32
  caption  greedy decoding of exactly 20 new tokens (open_clip: generate top_k=1, seq_len 21, min_seq_len 20),
           fp32, batch 1 and --caption-batch; the tokens of both sides are compared
  train    one optimiser step (forward, CoCaLoss 2:1, backward, AdamW) at --train-batch on the same batch: open_clip
           bf16 autocast + fused AdamW (the baseline), open_clip fp32, coca fp32, coca amp_bf16, coca amp_bf16 with
           --grad-checkpointing; first-step losses compared
Prints one JSON object (also written to OUT/bench_gpu.json) and a markdown table for docs/benchmarks.md.
`--device cpu` with a tiny --model config runs the same code paths on a machine without a GPU (to test the script).
"""

from __future__ import annotations

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
NEW_TOKENS = 20
PAD_ID = 0


# ---------------------------------------------------------------------------------------------------------------
# open_clip workers (run in child processes)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, warmup: int, iters: int, device: str) -> list:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def load_open_clip(args, train: bool = False):
    import torch
    from safetensors.torch import load_file

    import oracle

    model = oracle.build_model(resolve_model(args.model))
    model.load_state_dict(load_file(args.checkpoint))
    model = model.to(args.device)
    model.train(train)
    return model, torch


def autocast(torch, device: str, precision: str):
    import contextlib

    if precision == "bf16":
        return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()


def worker_embed(args) -> dict:
    model, torch = load_open_clip(args)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    pixels = torch.randn(args.batch, 3, size, size, device=args.device)

    def run():
        with torch.no_grad(), autocast(torch, args.device, args.precision):
            model.encode_image(pixels)

    times = timed(run, args.warmup, args.iters, args.device)
    secs = statistics.median(times)
    return {"seconds": secs, "items_per_second": args.batch / secs, **torch_memory(torch, args.device)}


def worker_caption(args) -> dict:
    from open_clip.transform import image_transform
    from PIL import Image

    model, torch = load_open_clip(args)
    size = model.visual.image_size
    preprocess = image_transform(size, is_train=False)
    pixels = preprocess(Image.open(IMAGE)).unsqueeze(0).repeat(args.batch, 1, 1, 1).to(args.device)
    out = {}

    def run():
        with torch.no_grad():
            out["tokens"] = model.generate(pixels, generation_type="top_k", top_k=1, seq_len=NEW_TOKENS + 1,
                                           min_seq_len=NEW_TOKENS)

    times = timed(run, 1, args.iters, args.device)
    secs = statistics.median(times)
    tokens = [[t for t in row if t != 0] for row in out["tokens"].tolist()]
    new_tokens = sum(len(row) - 1 for row in tokens)
    return {"seconds": secs, "tokens_per_second": new_tokens / secs, "tokens": tokens[:2],
            **torch_memory(torch, args.device)}


def worker_train(args) -> dict:
    from open_clip.loss import CoCaLoss
    from safetensors.torch import load_file

    model, torch = load_open_clip(args, train=True)
    inputs = load_file(args.inputs)
    images, text = inputs["image"].to(args.device), inputs["text"].to(args.device)
    loss_fn = CoCaLoss(caption_loss_weight=2.0, clip_loss_weight=1.0, pad_id=PAD_ID)
    fused = args.device.startswith("cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2,
                            fused=fused)
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(torch, args.device, args.precision):
            out = model(images, text)
            clip_loss, caption_loss = loss_fn(**out)
            total = clip_loss + caption_loss
        total.backward()
        opt.step()
        losses.append(total.detach())

    times = timed(step, args.warmup, args.iters, args.device)
    secs = statistics.median(times)
    return {"seconds": secs, "samples_per_second": images.shape[0] / secs,
            "first_loss": float(losses[0]), **torch_memory(torch, args.device)}


def torch_memory(torch, device: str) -> dict:
    if device.startswith("cuda"):
        return {"torch_max_allocated_gib": torch.cuda.max_memory_allocated() / 2**30}
    return {}


WORKERS = {"embed": worker_embed, "caption": worker_caption, "train": worker_train}


# ---------------------------------------------------------------------------------------------------------------
# driver


def resolve_model(spec: str):
    if spec.endswith(".json"):
        cfg = json.loads(Path(spec).read_text())
        return cfg.get("model_cfg", cfg)
    return spec


class MemoryPoller:
    """Peak GPU memory in use (MiB) while a child process runs, from `nvidia-smi`, minus the level before it."""

    def __init__(self, device: str):
        self.enabled = device.startswith("cuda")
        self.index = device.split(":")[1] if ":" in device else "0"
        self.peak = 0.0
        self.stop = threading.Event()
        self.idle = self.read() if self.enabled else 0.0

    def read(self) -> float:
        try:
            out = subprocess.run(["nvidia-smi", "-i", self.index, "--query-gpu=memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
            return float(out.stdout.strip().splitlines()[0])
        except Exception:  # noqa: BLE001  (a missing reading only loses the memory column)
            return 0.0

    def __enter__(self):
        if self.enabled:
            self.thread = threading.Thread(target=self.loop, daemon=True)
            self.thread.start()
        return self

    def loop(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.read())
            time.sleep(0.05)

    def __exit__(self, *exc):
        self.stop.set()
        if self.enabled:
            self.thread.join()

    def gib(self):
        return round(max(self.peak - self.idle, 0.0) / 1024, 2) if self.enabled else None


def run_child(cmd: list, device: str, timeout: int) -> dict:
    print("$", " ".join(str(c) for c in cmd), flush=True)
    with MemoryPoller(device) as mem:
        started = time.perf_counter()
        try:
            out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout}s"}
        wall = time.perf_counter() - started
    if out.returncode != 0:
        # Backtraces end in frames without symbols: keep the message lines, not only the tail.
        lines = [l for l in (out.stderr or out.stdout).strip().splitlines() if "<unknown>" not in l]
        print("\n".join(lines[:40]), file=sys.stderr)
        return {"error": " | ".join(lines[:3] + lines[-3:])[-800:]}
    try:
        res = json.loads(out.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"error": f"no JSON in output: {out.stdout[-300:]!r}"}
    res["gpu_peak_gib"] = mem.gib()
    res["process_wall_s"] = round(wall, 2)
    return res


def open_clip_cmd(args, part: str, precision: str, batch: int, ckpt: Path, inputs: Path | None = None) -> list:
    cmd = [sys.executable, __file__, "--worker", part, "--model", args.model, "--device", args.device,
           "--precision", precision, "--batch", batch, "--checkpoint", ckpt, "--iters", args.iters,
           "--warmup", args.warmup]
    return cmd + (["--inputs", inputs] if inputs else [])


def coca_cmd(args, *rest) -> list:
    return [args.coca_bin, *rest]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="coca_ViT-B-32", help="open_clip model name or config JSON")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--coca-bin", default=str(ROOT / "target" / "cuda" / "release" / "coca"))
    p.add_argument("--out", default=None, help="folder for bench_gpu.json (default: a temp folder)")
    p.add_argument("--only", action="append", choices=list(WORKERS), help="run only these parts (repeatable)")
    p.add_argument("--embed-batch", type=int, default=1024)
    p.add_argument("--caption-batch", type=int, default=64)
    p.add_argument("--train-batch", type=int, default=256)
    p.add_argument("--coca-train-batches", default="",
                   help="extra coca-only training steps at these batch sizes (comma-separated; random inputs), "
                        "with device memory after every step")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--timeout", type=int, default=240, help="seconds per child process")
    # worker mode
    p.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--inputs", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return 0

    import torch

    from bench_embed import write_checkpoint
    from bench_train import make_inputs
    from safetensors.torch import save_file

    import oracle

    out_dir = Path(args.out or tempfile.mkdtemp(prefix="coca_bench_gpu_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="coca_bench_gpu_work_"))
    model = resolve_model(args.model)
    if isinstance(model, dict):
        # coca reads a bare open_clip config; a {"model_cfg": ...} wrapper is unwrapped for both sides.
        args.model = str(work / "model.json")
        Path(args.model).write_text(json.dumps(model))
    ckpt = write_checkpoint(model, work)
    cfg = oracle.model_config(model)
    parts = args.only or list(WORKERS)
    report = {"model": args.model, "device": args.device, "date": time.strftime("%Y-%m-%d"),
              "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__,
              # coca's own CUDA kernels (docs/gpu.md) are on when the caller exports COCA_CUDA_KERNELS=1.
              "coca_cuda_kernels": os.environ.get("COCA_CUDA_KERNELS") == "1"}
    common = ["--model", args.model, "--pretrained", ckpt, "--device", args.device]

    def save():
        # After every part, so a run cut short still leaves what it measured.
        (out_dir / "bench_gpu.json").write_text(json.dumps(report, indent=2))

    if "embed" in parts:
        b = args.embed_batch
        res = {}
        for precision in ("bf16", "fp32"):
            oc = run_child(open_clip_cmd(args, "embed", precision, b, ckpt), args.device, args.timeout)
            co = run_child(coca_cmd(args, "bench", *common, "--precision", precision, "--batch-size", b,
                                    "--iters", args.iters, "--warmup", args.warmup, "--json"),
                           args.device, args.timeout)
            if "encode_image" in co:
                co = {**co["encode_image"][str(b)], "gpu_peak_gib": co.get("gpu_peak_gib"),
                      "load_seconds": co.get("load_seconds")}
            res[precision] = {"open_clip": oc, "coca": co, "speedup": ratio(oc, co, "items_per_second")}
        report["encode_image"] = {"batch": b, **res}
        save()

    if "caption" in parts:
        res = {}
        for b in (1, args.caption_batch):
            oc = run_child(open_clip_cmd(args, "caption", "fp32", b, ckpt), args.device, args.timeout)
            co = run_child(coca_cmd(args, "caption", *common, "--strategy", "greedy", "--max-length",
                                    NEW_TOKENS + 1, "--min-length", NEW_TOKENS, "--batch-size", b, "--bench",
                                    "--bench-iters", max(args.iters // 2, 2), *([IMAGE] * b)),
                           args.device, args.timeout)
            if "median_run_s" in co:
                new = co["new_tokens_first_run"]
                co = {"seconds": co["median_run_s"], "tokens_per_second": new / co["median_run_s"],
                      "tokens": co["tokens_first_run"][:2], "gpu_peak_gib": co.get("gpu_peak_gib")}
            same = oc.get("tokens") is not None and oc.get("tokens") == co.get("tokens")
            res[str(b)] = {"open_clip": oc, "coca": co, "speedup": ratio(oc, co, "tokens_per_second"),
                           "tokens_identical": same}
        report["caption_greedy_fp32"] = res
        save()

    if "train" in parts:
        b = args.train_batch
        images, text = make_inputs(cfg, b, seed=11)
        inputs = work / "inputs.safetensors"
        save_file({"image": images.contiguous(), "text": text.contiguous()}, str(inputs))
        oc_bf16 = run_child(open_clip_cmd(args, "train", "bf16", b, ckpt, inputs), args.device, args.timeout)
        oc_fp32 = run_child(open_clip_cmd(args, "train", "fp32", b, ckpt, inputs), args.device, args.timeout)
        def coca_train(*extra):
            co = run_child(coca_cmd(args, "bench", "--train", *common, "--train-inputs", inputs, "--iters",
                                    max(args.iters // 2, 2), "--warmup", 2, "--json", *extra),
                           args.device, args.timeout)
            if "train_step" in co:
                co = {**co["train_step"][str(b)], "gpu_peak_gib": co.get("gpu_peak_gib")}
                co.pop("losses", None)
            return co

        # coca's fp32 step, its bf16 mixed precision (amp_bf16), and amp_bf16 with --grad-checkpointing.
        variants = {
            "coca_fp32": coca_train(),
            "coca_amp_bf16": coca_train("--precision", "bf16"),
            "coca_amp_bf16_checkpointing": coca_train("--precision", "bf16", "--grad-checkpointing"),
        }
        report["train_step"] = {
            "batch": b,
            "open_clip_bf16_autocast": oc_bf16,
            "open_clip_fp32": oc_fp32,
            **variants,
            **{f"speedup_{name}_vs_open_clip_bf16": ratio(oc_bf16, co, "samples_per_second")
               for name, co in variants.items()},
            "speedup_coca_fp32_vs_open_clip_fp32": ratio(oc_fp32, variants["coca_fp32"], "samples_per_second"),
        }

    if args.coca_train_batches:
        res = {}
        for b in [int(x) for x in args.coca_train_batches.split(",") if x]:
            co = run_child(coca_cmd(args, "bench", "--train", *common, "--batch-size", b, "--iters", 3,
                                    "--warmup", 1, "--json"), args.device, args.timeout)
            if "train_step" in co:
                co = {**co["train_step"][str(b)], "gpu_peak_gib": co.get("gpu_peak_gib")}
                co.pop("losses", None)
            res[str(b)] = co
        report["coca_train_steps"] = res

    save()
    print(json.dumps(report, indent=2))
    print(markdown(report))
    return 0


def ratio(open_clip: dict, coca: dict, key: str):
    if key in open_clip and key in coca and open_clip[key]:
        return round(coca[key] / open_clip[key], 3)
    return None


def markdown(r: dict) -> str:
    rows = ["| measurement | open_clip | coca | coca / open_clip | GPU memory (open_clip / coca) |",
            "| --- | --- | --- | --- | --- |"]

    def fmt(d, key, unit):
        return f"{d[key]:,.0f} {unit}" if key in d else f"error: {d.get('error', '?')[:60]}"

    def mem(a, b):
        return f"{a.get('gpu_peak_gib')} / {b.get('gpu_peak_gib')} GiB"

    if "encode_image" in r:
        e = r["encode_image"]
        for p in ("bf16", "fp32"):
            x = e[p]
            rows.append(f"| encode_image {p}, batch {e['batch']} | {fmt(x['open_clip'], 'items_per_second', 'img/s')}"
                        f" | {fmt(x['coca'], 'items_per_second', 'img/s')} | {x['speedup']} |"
                        f" {mem(x['open_clip'], x['coca'])} |")
    if "caption_greedy_fp32" in r:
        for b, x in r["caption_greedy_fp32"].items():
            rows.append(f"| greedy caption fp32, batch {b} | {fmt(x['open_clip'], 'tokens_per_second', 'tok/s')}"
                        f" | {fmt(x['coca'], 'tokens_per_second', 'tok/s')} | {x['speedup']}"
                        f" (tokens identical: {x['tokens_identical']}) | {mem(x['open_clip'], x['coca'])} |")
    if "train_step" in r:
        t = r["train_step"]
        o = t["open_clip_fp32"]
        c = t["coca_fp32"]
        rows.append(f"| train step batch {t['batch']}: open_clip fp32 vs coca fp32 |"
                    f" {fmt(o, 'samples_per_second', 'img/s')} | {fmt(c, 'samples_per_second', 'img/s')} |"
                    f" {t['speedup_coca_fp32_vs_open_clip_fp32']} | {mem(o, c)} |")
        o = t["open_clip_bf16_autocast"]
        for name in ("coca_fp32", "coca_amp_bf16", "coca_amp_bf16_checkpointing"):
            c = t[name]
            rows.append(f"| train step batch {t['batch']}: open_clip bf16 autocast vs {name} |"
                        f" {fmt(o, 'samples_per_second', 'img/s')} | {fmt(c, 'samples_per_second', 'img/s')} |"
                        f" {t[f'speedup_{name}_vs_open_clip_bf16']} | {mem(o, c)} |")
        rows.append(f"| first-step loss (open_clip fp32 / coca fp32 / open_clip bf16 / coca amp_bf16) |"
                    f" {t['open_clip_fp32'].get('first_loss')} | {t['coca_fp32'].get('first_loss')} |"
                    f" {t['open_clip_bf16_autocast'].get('first_loss')} | {t['coca_amp_bf16'].get('first_loss')} |")
    for b, c in r.get("coca_train_steps", {}).items():
        rows.append(f"| coca train step fp32, batch {b} | | {fmt(c, 'samples_per_second', 'img/s')} | |"
                    f" {c.get('gpu_peak_gib')} GiB |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
