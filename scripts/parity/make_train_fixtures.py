#!/usr/bin/env python3
"""Write open_clip_train references for coca's optimiser step under fixtures/train/.

Runs open_clip_train 3.3.0's own `train_one_epoch` (not a re-implementation) on the committed tiny fixture
model `fixtures/parity/tiny_legacy`, for a few optimiser steps on random inputs, and records the per-step loss
parts and the final weights. Parameter groups are built with the rule of open_clip_train's `main.py` (no weight
decay on tensors with < 2 dims and on names containing bn/ln/bias/logit_scale), the learning rate follows its
`cosine_lr` with warmup, the gradient norm is clipped, and `logit_scale` is clamped by `train_one_epoch`.

Cases:
* `plain`  - batch 4, --accum-freq 1, 3 steps.
* `accum2` - micro-batches of 2, --accum-freq 2 (global batch 4), 3 steps: open_clip's accumulation that
  recomputes each micro-batch against the cached features of the others.
* `amp_bf16` - the inputs and hparams of `plain` under `--precision amp_bf16`: `train_one_epoch` wraps the
  forward and the loss in `get_autocast('amp_bf16', device_type='cpu')`, i.e. `torch.autocast('cpu', bfloat16)`
  (no grad scaler, f32 weights and AdamW state). The dtypes the loss saw are recorded to prove autocast was
  active. The final weights are too big to store in full, so the case keeps per-tensor summaries (the norm of the
  update, and the norm and largest element of the difference from the `plain` run's final weights) and a few
  whole tensors (`AMP_TENSORS`).

CPU autocast is not CUDA autocast: on the CPU `layer_norm`, `softmax` and `normalize` are not on the float32
list, so the vision tower's LayerNorms take bf16 inputs and the pooled features leave the model in bf16, where
CUDA would give f32. Both devices run the matrix products (including the loss logits and the LM head) in bf16,
and both keep the text tower's and the decoder's residual stream in f32 (the token embedding is not autocast
and a bf16 branch added to an f32 stream promotes).

Run from the repository root:

    scripts/parity/.venv/bin/python scripts/parity/make_train_fixtures.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oracle  # noqa: E402
import open_clip  # noqa: E402
from open_clip_train.scheduler import cosine_lr  # noqa: E402
from open_clip_train.train import train_one_epoch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "fixtures" / "parity" / "tiny_legacy"
STEPS = 3
# Final tensors of the `amp_bf16` run stored whole (small ones, spread over the towers; ~10 KB in all).
AMP_TENSORS = [
    "logit_scale",
    "visual.proj",
    "visual.ln_post.weight",
    "visual.transformer.resblocks.1.mlp.c_proj.bias",
    "text.text_projection",
    "text.ln_final.weight",
    "text_decoder.ln_final.bias",
    "text_decoder.cross_attn.1.attn.out_proj.bias",
]
HPARAMS = {
    "lr": 2e-3,
    "warmup": 2,
    "beta1": 0.9,
    "beta2": 0.98,
    "eps": 1e-6,
    "wd": 0.2,
    "grad_clip_norm": 1.0,
    "caption_loss_weight": 2.0,
    "contrastive_loss_weight": 1.0,
}


class Batches:
    """The minimal `data['train']` object `train_one_epoch` iterates."""

    def __init__(self, images, texts, micro):
        self.items = [(images[i : i + micro], texts[i : i + micro]) for i in range(0, len(images), micro)]
        self.dataloader = self
        self.num_batches = len(self.items)
        self.num_samples = len(images)

    def set_epoch(self, epoch):
        pass

    def __iter__(self):
        return iter(self.items)


class RecordingLoss(open_clip.CoCaLoss):
    """open_clip's CoCaLoss, remembering the parts of its last call."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = []
        self.dtypes = {}

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        self.calls.append({k: float(v.detach()) for k, v in out.items()})
        # What autocast made of the model outputs and of the loss (bf16 under amp_bf16 on the CPU).
        self.dtypes = {k: str(v.dtype) for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
        self.dtypes.update({f"loss.{k}": str(v.dtype) for k, v in out.items()})
        return out


def param_groups(model):
    # The rule of open_clip_train/main.py, written out because main() builds it inline.
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    named = list(model.named_parameters())
    no_decay = [p for n, p in named if exclude(n, p) and p.requires_grad]
    decay = [p for n, p in named if not exclude(n, p) and p.requires_grad]
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": HPARAMS["wd"]}]


def run_case(cfg, weights, images, texts, accum, pad_id, precision="fp32"):
    model = oracle.build_model(cfg)
    model.load_state_dict(weights)
    model.train()
    micro = len(images) // STEPS // accum
    optimizer = torch.optim.AdamW(
        param_groups(model), lr=HPARAMS["lr"], betas=(HPARAMS["beta1"], HPARAMS["beta2"]), eps=HPARAMS["eps"]
    )
    scheduler = cosine_lr(optimizer, HPARAMS["lr"], HPARAMS["warmup"], STEPS)
    loss = RecordingLoss(
        caption_loss_weight=HPARAMS["caption_loss_weight"],
        clip_loss_weight=HPARAMS["contrastive_loss_weight"],
        pad_id=pad_id,
    )
    args = SimpleNamespace(
        device="cpu", precision=precision, distill=False, accum_freq=accum, skip_scheduler=False,
        grad_clip_norm=HPARAMS["grad_clip_norm"], horovod=False, log_every_n_steps=1000, rank=0, local_rank=0,
        world_size=1, batch_size=micro, wandb=False, distributed=False, save_logs=False,
    )
    data = {"train": Batches(images, texts, micro)}
    train_one_epoch(model, data, loss, 0, optimizer, None, scheduler, None, args, tb_writer=None)
    # One loss call per step without accumulation; accum_freq calls per step (all equal in value) with it.
    per_step = loss.calls[accum - 1 :: accum]
    assert len(per_step) == STEPS, (len(loss.calls), accum)
    return per_step, {k: v.detach().contiguous() for k, v in model.state_dict().items()}, loss.dtypes


def amp_case(cfg, weights, images, texts, pad_id, plain_final, tensors):
    """The `plain` run under `--precision amp_bf16`: losses, dtypes, per-tensor summaries, `AMP_TENSORS`."""
    losses, final, dtypes = run_case(cfg, weights, images, texts, 1, pad_id, precision="amp_bf16")
    if dtypes.get("logits") != "torch.bfloat16":
        raise SystemExit(f"autocast was not active on the CPU: the loss saw {dtypes}")
    summaries = {
        k: {
            "update_norm": float((final[k].double() - weights[k].double()).norm()),
            "gap_norm_vs_plain": float((final[k].double() - plain_final[k].double()).norm()),
            "max_abs_vs_plain": float((final[k] - plain_final[k]).abs().max()),
        }
        for k in sorted(weights)
    }
    for k in AMP_TENSORS:
        tensors[f"amp_bf16.{k}"] = final[k].float()
    gap = max(s["max_abs_vs_plain"] for s in summaries.values())
    print(f"amp_bf16: losses {losses}, dtypes {dtypes}, largest weight gap to plain {gap:.3g}")
    return {
        "accum_freq": 1,
        "micro_batch": 4,
        "precision": "amp_bf16",
        "autocast": "torch.amp.autocast(device_type='cpu', dtype=torch.bfloat16)",
        "dtypes_seen_by_loss": dtypes,
        "losses": losses,
        "stored_tensors": AMP_TENSORS,
        "final_summaries": summaries,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "fixtures" / "train")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = json.loads((MODEL_DIR / "config.json").read_text())
    meta = json.loads((MODEL_DIR / "meta.json").read_text())
    weights = load_file(MODEL_DIR / "open_clip_model.safetensors")
    vocab = meta["tokens"]["vocab_size"]
    context = meta["tokens"]["context_length"]
    pad_id = meta["tokens"]["pad_id"]
    n = 4 * STEPS
    images = oracle.make_images(cfg, n, seed=4242)
    texts, _, _, _ = oracle.synthetic_rows(vocab, context, seed=4242, batch=n)
    args.out.mkdir(parents=True, exist_ok=True)
    tensors = {"images": images, "texts": texts}
    result = {
        "open_clip_version": open_clip.__version__,
        "torch_version": torch.__version__,
        "model": "fixtures/parity/tiny_legacy",
        "steps": STEPS,
        "hparams": HPARAMS,
        "schedule": "cosine",
        "cases": {},
    }
    finals = {}
    for name, accum in [("plain", 1), ("accum2", 2)]:
        losses, final, _ = run_case(cfg, weights, images, texts, accum, pad_id)
        finals[name] = final
        result["cases"][name] = {"accum_freq": accum, "micro_batch": 4 // accum, "losses": losses}
        for k, v in final.items():
            tensors[f"{name}.{k}"] = v.float()
        changed = max(float((final[k] - weights[k]).abs().max()) for k in weights)
        print(f"{name}: losses {losses}, largest weight change {changed:.3g}")
    result["cases"]["amp_bf16"] = amp_case(cfg, weights, images, texts, pad_id, finals["plain"], tensors)
    save_file(tensors, args.out / "steps.safetensors")
    (args.out / "steps.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
