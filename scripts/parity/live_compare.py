#!/usr/bin/env python3
"""Live parity check of a full-size CoCa against the Rust implementation.

Builds the full architecture (coca_ViT-B-32, coca_ViT-L-14 or any open_clip
CoCa config JSON) with seeded random (perturbed) weights, writes a fixture
directory in the same layout as fixtures/parity/* (weights as safetensors
only), then runs the Rust comparison on it and relays its output:

    cargo run --release -p coca-cli -- parity DIR      (or --coca-bin PATH parity DIR)

The reference outputs are computed with a float64 copy of the f32 weights,
like the committed fixtures. With the standard vocab (49408) the text comes
from open_clip's tokenizer on a few real captions (a short one, one truncated
at the context length, one cut to context-1 tokens + 1 pad, a medium one;
--batch picks how many). Gradients are optional (--grads): for ViT-L-14 they
are 2.5 GB of f32 in io.safetensors.

Exit status: the Rust command's status; 0 with --no-rust when the Python
side succeeded.

Examples (from the repository root, with the parity venv):
    scripts/parity/.venv/bin/python scripts/parity/live_compare.py --model coca_ViT-B-32
    scripts/parity/.venv/bin/python scripts/parity/live_compare.py --model coca_ViT-L-14 --batch 1
    scripts/parity/.venv/bin/python scripts/parity/live_compare.py --model my_cfg.json --grads --keep /tmp/fx
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        required=True,
        help="built-in open_clip CoCa name (coca_ViT-B-32, coca_ViT-L-14) or a config JSON path",
    )
    p.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    p.add_argument("--grads", action="store_true", help="also store d(loss)/d(param) for every parameter")
    p.add_argument(
        "--keep", type=Path, help="write the fixture here and keep it (default: a temp dir, removed afterwards)"
    )
    p.add_argument("--seed", type=int, default=1234, help="seed for weights and inputs (default 1234)")
    p.add_argument(
        "--coca-bin", help="path of a built `coca` binary to run instead of `cargo run --release -p coca-cli --`"
    )
    p.add_argument("--no-rust", action="store_true", help="only write the fixture; skip the Rust comparison")
    p.add_argument(
        "--no-f32-check", action="store_true", help="skip the f32 open_clip noise-floor run (saves time and memory)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS", "1")),
        help="torch threads (default $OMP_NUM_THREADS or 1)",
    )
    args = p.parse_args(argv)
    if args.batch < 1:
        p.error("--batch must be at least 1")
    if args.batch == 1 and args.grads:
        # The contrastive loss over a single pair is identically 0, so every
        # gradient of the contrastive-only parameters is 0: nothing to compare.
        p.error("--grads needs --batch 2 or more (with batch 1 the contrastive loss and its gradients are 0)")
    return args


def resolve_model(spec: str):
    """A built-in name stays a string; a path is read as a config dict."""
    path = Path(spec)
    if spec.endswith(".json") or path.is_file():
        try:
            cfg = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"cannot read model config {spec}: {e}") from e
        return cfg.get("model_cfg", cfg), path.stem
    return spec, spec


def rust_command(args: argparse.Namespace, fixture: Path) -> list:
    if args.coca_bin:
        return [args.coca_bin, "parity", str(fixture)]
    return ["cargo", "run", "--release", "-p", "coca-cli", "--", "parity", str(fixture)]


def run_rust(cmd: list) -> int:
    """Run the comparison with its output going straight to our stdout/stderr."""
    print(f"$ {' '.join(cmd)}", flush=True)
    try:
        return subprocess.call(cmd, cwd=REPO)
    except FileNotFoundError as e:
        print(f"cannot start the Rust comparison ({e}); build it or pass --coca-bin PATH", file=sys.stderr)
        return 127


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch  # noqa: E402  (after OMP_NUM_THREADS is set)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import oracle  # noqa: E402

    torch.set_num_threads(args.threads)
    model, name = resolve_model(args.model)
    cfg = oracle.model_config(model)
    vocab = cfg["text_cfg"].get("vocab_size", 49408)
    tokens = "tokenizer" if vocab == 49408 and not cfg["text_cfg"].get("hf_tokenizer_name") else "synthetic"

    if args.keep:
        out_dir = args.keep
        out_dir.mkdir(parents=True, exist_ok=True)
        cleanup = False
    else:
        out_dir = Path(tempfile.mkdtemp(prefix=f"coca_parity_{name}_"))
        cleanup = True

    spec = oracle.FixtureSpec(
        name=f"live_{name}",
        model=model,
        out_dir=out_dir,
        seed=args.seed,
        batch=args.batch,
        grads=args.grads,
        write_bin=False,
        f32_check=not args.no_f32_check,
        strict=False,  # report saturation on full-size models, don't refuse to compare
        tokens=tokens,
        record_timings=True,
        notes=["live fixture written by scripts/parity/live_compare.py"],
    )
    t0 = time.perf_counter()
    try:
        status = write_and_compare(args, spec, oracle)
    finally:
        # A temp fixture is GBs for the full models: never leave one behind,
        # even when the oracle or the Rust run fails.
        if cleanup:
            shutil.rmtree(out_dir, ignore_errors=True)
    print(f"total {time.perf_counter() - t0:.1f}s")
    return status


def write_and_compare(args: argparse.Namespace, spec, oracle) -> int:
    """Write the fixture, print its summary, run the Rust comparison; return the exit status."""
    out_dir = spec.out_dir
    try:
        meta = oracle.make_fixture(spec)
    except oracle.OracleError as e:
        print(f"oracle failed: {e}", file=sys.stderr)
        return 2
    sat = meta["saturation_checks"]
    scalars = meta["scalars"]
    print(f"fixture: {out_dir} ({oracle.dir_size(out_dir) / 1e6:.1f} MB, {meta['n_params']:,} params)")
    print(f"  tokens: {meta['tokens']['rows']}")
    print(
        f"  loss {scalars['loss']:.5f} (contrastive {scalars['loss_contrastive']:.5f}, "
        f"caption {scalars['loss_caption']:.5f})"
    )
    print(
        f"  LM softmax max prob {sat['lm_softmax_max_prob']:.3f}, "
        f"contrastive max prob {sat['contrastive_softmax_max_prob']:.3f}"
    )
    for problem in sat.get("problems", []):
        print(f"  WARNING: {problem}")
    if meta["f32_vs_f64"]:
        nf = meta["f32_vs_f64"]
        worst = max(nf["max_abs"], key=nf["max_abs"].get)
        line = f"  open_clip f32 vs f64: worst max-abs {nf['max_abs'][worst]:.2e} ({worst})"
        if "grad_max_rel_norm_err" in nf:
            line += f", grads rel-norm {nf['grad_max_rel_norm_err']:.2e} ({nf['grad_worst_param']})"
        print(line)
    timings = ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in meta["timings_s"].items())
    print(f"  python: {timings}; peak RSS {meta['peak_rss_mib'] / 1024:.2f} GiB", flush=True)

    if args.no_rust:
        print("Rust comparison skipped (--no-rust)")
        return 0
    t = time.perf_counter()
    status = run_rust(rust_command(args, out_dir))
    print(f"Rust comparison exited with {status} after {time.perf_counter() - t:.1f}s")
    if status != 0 and not args.keep:
        print("rerun with --keep DIR to inspect the fixture", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
