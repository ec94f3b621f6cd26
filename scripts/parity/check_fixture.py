#!/usr/bin/env python3
"""Check fixture directories against the contract, from the Python side.

For each DIR: builds the model from DIR/config.json with open_clip, loads
open_clip_model.safetensors (and open_clip_pytorch_model.bin when present,
which must hold identical values), reruns the forward pass, loss and backward
in f32 with open_clip, and compares against DIR/io.safetensors with the same
tolerances the Rust side uses. This proves a fixture is self-consistent (the
weights, inputs and reference outputs belong together) without any Rust.

    scripts/parity/.venv/bin/python scripts/parity/check_fixture.py fixtures/parity/*/
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

# Same limits as the Rust comparison (README.md): f32 vs the f64 reference.
TOL_ABS = 1e-4
TOL_LOSS_REL = 1e-5
TOL_GRAD_REL = 1e-3


def check_dir(path: Path, grads: bool) -> list:
    """Return a list of problems (empty when the fixture is consistent)."""
    problems = []
    cfg = json.loads((path / "config.json").read_text())
    meta = json.loads((path / "meta.json").read_text())
    model = oracle.build_model(cfg)
    state = load_file(str(path / oracle.WEIGHTS_SAFETENSORS))
    expected = set(model.state_dict())
    if set(state) != expected:
        problems.append(f"safetensors keys differ from the model: {sorted(set(state) ^ expected)[:5]}")
        return problems
    model.load_state_dict(state, strict=True)
    bin_path = path / oracle.WEIGHTS_BIN
    if bin_path.exists():
        bin_state = torch.load(bin_path, map_location="cpu", weights_only=True)
        for k, v in state.items():
            if not torch.equal(bin_state[k], v):
                problems.append(f"{bin_path.name} and {oracle.WEIGHTS_SAFETENSORS} differ at {k}")
    io = load_file(str(path / "io.safetensors"))
    for k in meta["outputs"] + meta["inputs"]:
        if k not in io:
            problems.append(f"io.safetensors lacks {k}")
    do_grads = grads and bool(meta["grads"])
    run = oracle.run_reference(model, io["image"], io["text"], do_grads)
    if not torch.equal(run.outputs["labels"], io["labels"]):
        problems.append("labels differ")
    for k in oracle.FLOAT_OUTPUTS:
        ref, got = io[k].double(), run.outputs[k].double()
        if ref.shape != got.shape:
            problems.append(f"{k}: shape {list(got.shape)} != stored {list(ref.shape)}")
            continue
        if ref.dim() == 0 and k != "logit_scale":
            err = abs(float(ref - got)) / max(abs(float(ref)), 1e-30)
            if err > TOL_LOSS_REL:
                problems.append(f"{k}: relative error {err:.2e} > {TOL_LOSS_REL}")
        else:
            err = float((ref - got).abs().max())
            if err > TOL_ABS:
                problems.append(f"{k}: max abs error {err:.2e} > {TOL_ABS}")
    if do_grads:
        names = [n for n, _ in model.named_parameters()]
        if sorted(names) != sorted(meta["grads"]):
            problems.append("grad list in meta.json differs from model.named_parameters()")
        for n in names:
            ref = io[f"grad.{n}"].double()
            err = float((ref - run.grads[n].double()).norm() / ref.norm())
            if err > TOL_GRAD_REL:
                problems.append(f"grad.{n}: relative norm error {err:.2e} > {TOL_GRAD_REL}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="fixture directories")
    parser.add_argument("--no-grads", action="store_true", help="skip the backward pass")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    failed = 0
    for d in args.dirs:
        problems = check_dir(d, grads=not args.no_grads)
        status = "ok" if not problems else "FAILED"
        print(f"{d}: {status}")
        for p in problems:
            print(f"    {p}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
