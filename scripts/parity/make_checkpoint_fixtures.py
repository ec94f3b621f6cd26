#!/usr/bin/env python3
"""Write the tiny checkpoint fixtures used by the `coca-checkpoint` tests.

Every file in `fixtures/checkpoint/` holds the same small state dict, saved the
ways open_clip checkpoints exist in the wild, plus `expected.json` with the
exact values (as IEEE bit patterns, so the Rust tests can compare bit-for-bit):

  plain_f32.bin           torch.save(model.state_dict())               (zip, f32)
  plain_f16.bin           same, floating tensors cast with .half()
  plain_bf16.bin          same, floating tensors cast with .bfloat16()
  train_module.bin        {'epoch', 'name', 'state_dict', 'optimizer'} with
                          'module.'-prefixed keys (a DDP training checkpoint)
  model_f32.safetensors   safetensors.torch.save_file, f32, with metadata
  model_bf16.safetensors  same, bf16
  legacy.bin              torch.save(..., _use_new_zipfile_serialization=False)

The state dict deliberately contains the awkward cases a loader must handle:
a 0-d tensor (`logit_scale`), a transposed view saved without .contiguous()
(`visual.proj`), a strided view with a storage offset (`visual.sliced`), two
names sharing one storage (`text.token_embedding.weight` / `text.head.weight`),
an int64 buffer (`text.position_ids`) and numbered blocks.

All files are byte-for-byte reproducible except legacy.bin, whose storage keys
torch derives from object ids; its content (the values) is reproducible.

Usage (from the repo root, with the parity venv):
    OMP_NUM_THREADS=1 python scripts/parity/make_checkpoint_fixtures.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

OUT = Path(__file__).resolve().parents[2] / "fixtures" / "checkpoint"


class Tiny(nn.Module):
    """A toy module whose state dict exercises every layout case above."""

    def __init__(self) -> None:
        super().__init__()
        base = torch.randn(3, 4)
        # Fortran-ordered (transposed) parameter: shape (4, 3), stride (1, 4).
        self.visual_proj = nn.Parameter(base.t())
        wide = torch.randn(4, 6)
        # Neither C- nor Fortran-contiguous: offset 6, strides (6, 2).
        self.visual_sliced = nn.Parameter(wide[1:, ::2])
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))
        self.ln = nn.LayerNorm(4)
        with torch.no_grad():  # non-trivial values instead of ones/zeros
            self.ln.weight.copy_(1 + 0.1 * torch.randn(4))
            self.ln.bias.copy_(0.1 * torch.randn(4))
        self.blocks = nn.ModuleList([nn.Linear(4, 2) for _ in range(2)])
        self.embed = nn.Embedding(5, 4)
        self.head = nn.Linear(4, 5, bias=False)
        self.head.weight = self.embed.weight  # tied: one storage, two names
        self.register_buffer("position_ids", torch.arange(6).unsqueeze(0))

    def open_clip_like_state_dict(self) -> "dict[str, torch.Tensor]":
        """The module's state dict with open_clip-style names.

        Built by renaming the keys of a real `state_dict()` so the saved
        OrderedDict keeps its `_metadata` attribute (torch pickles it, and a
        loader has to skip it).
        """
        renames = {
            "visual_proj": "visual.proj",
            "visual_sliced": "visual.sliced",
            "ln.weight": "ln_final.weight",
            "ln.bias": "ln_final.bias",
            "embed.weight": "text.token_embedding.weight",
            "head.weight": "text.head.weight",
            "position_ids": "text.position_ids",
        }
        sd = self.state_dict()
        out = type(sd)()
        out._metadata = sd._metadata  # type: ignore[attr-defined]
        for key, value in sd.items():
            if key.startswith("blocks."):
                new_key = "visual.transformer.resblocks." + key[len("blocks.") :]
            else:
                new_key = renames.get(key, key)
            out[new_key] = value
        return out


def cast_floats(sd: "dict[str, torch.Tensor]", dtype: torch.dtype) -> "dict[str, torch.Tensor]":
    """Cast floating tensors, keep integer buffers (as open_clip's .half() does)."""
    out = type(sd)()
    for k, v in sd.items():
        out[k] = v.to(dtype) if v.is_floating_point() else v
    return out


def bits(t: torch.Tensor) -> list[int]:
    """Flattened (row-major) IEEE bit patterns of a float tensor, or int values."""
    t = t.contiguous().reshape(-1)
    if t.dtype == torch.float32:
        return t.view(torch.int32).to(torch.int64).bitwise_and(0xFFFFFFFF).tolist()
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.view(torch.int16).to(torch.int64).bitwise_and(0xFFFF).tolist()
    return t.tolist()


def main() -> None:
    torch.manual_seed(20240531)
    OUT.mkdir(parents=True, exist_ok=True)
    model = Tiny()
    # Run one optimizer step so the training checkpoint carries a realistic
    # optimizer state (tensors, nested dicts, lists, tuples, floats, bools, None).
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.logit_scale.sum().backward()
    opt.step()
    opt.zero_grad()

    sd = model.open_clip_like_state_dict()
    assert not sd["visual.proj"].is_contiguous()
    assert sd["visual.sliced"].storage_offset() == 6
    assert sd["text.head.weight"].data_ptr() == sd["text.token_embedding.weight"].data_ptr()

    torch.save(sd, OUT / "plain_f32.bin")
    torch.save(cast_floats(sd, torch.float16), OUT / "plain_f16.bin")
    torch.save(cast_floats(sd, torch.bfloat16), OUT / "plain_bf16.bin")
    train = {
        "epoch": 3,
        "name": "tiny-coca-test",
        "state_dict": {"module." + k: v for k, v in sd.items()},
        "optimizer": opt.state_dict(),
    }
    torch.save(train, OUT / "train_module.bin")
    torch.save(sd, OUT / "legacy.bin", _use_new_zipfile_serialization=False)

    # safetensors refuses shared or non-contiguous storage: store independent
    # contiguous copies, as open_clip's own conversion does.
    dense = {k: v.detach().contiguous().clone() for k, v in sd.items()}
    # A single entry: safetensors writes metadata in hash order, so more than one
    # key would make the file bytes differ between runs.
    meta = {"format": "pt"}
    save_file(dense, str(OUT / "model_f32.safetensors"), metadata=meta)
    save_file(cast_floats(dense, torch.bfloat16), str(OUT / "model_bf16.safetensors"), metadata=meta)

    expected = {}
    for k, v in sd.items():
        v = v.detach()
        entry = {"shape": list(v.shape), "stored_dtype": str(v.dtype).removeprefix("torch.")}
        if v.is_floating_point():
            entry["f32_bits"] = bits(v)
            entry["f16_bits"] = bits(v.half())
            entry["bf16_bits"] = bits(v.bfloat16())
            # torch's own f16 -> f32 and bf16 -> f32 widening, for conversion tests.
            entry["f16_to_f32_bits"] = bits(v.half().float())
            entry["bf16_to_f32_bits"] = bits(v.bfloat16().float())
        else:
            entry["values"] = bits(v)
        expected[k] = entry
    # One tensor per line: readable in a diff, still plain JSON.
    rows = ",\n".join(
        f"    {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(expected.items())
    )
    header = {"generator": "scripts/parity/make_checkpoint_fixtures.py", "torch": torch.__version__}
    head = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in header.items())
    (OUT / "expected.json").write_text("{\n" + head + ',\n  "tensors": {\n' + rows + "\n  }\n}\n")

    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files, {total} bytes, to {OUT}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
