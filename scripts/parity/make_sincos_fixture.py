#!/usr/bin/env python3
"""Write fixtures/parity/sincos_2d.json: open_clip's fixed 2-D sine-cosine position tables.

open_clip builds them when a vision config says `pos_embed_type: "sin_cos_2d"`; coca computes the same table
(`coca_model::vision::sincos_2d_positional_embedding`) to initialise such models from scratch. The fixture holds
the tables of small ViTs built by open_clip itself, so the test compares against the module's actual parameter.

    scripts/parity/.venv/bin/python scripts/parity/make_sincos_fixture.py
"""

import json
from pathlib import Path

import torch
from open_clip.transformer import VisionTransformer

OUT = Path(__file__).resolve().parents[2] / "fixtures" / "parity" / "sincos_2d.json"
# (width, image size, patch size): grids of 3 and 12, widths 16 and 64 (the demo's vision tower).
CASES = [(16, 12, 4), (64, 48, 4)]


def main() -> None:
    tables = []
    for width, image, patch in CASES:
        vit = VisionTransformer(
            image_size=image, patch_size=patch, width=width, layers=1, heads=width // 16,
            mlp_ratio=4.0, output_dim=width, pos_embed_type="sin_cos_2d",
        )
        table = vit.positional_embedding.detach().to(torch.float32)
        assert not vit.positional_embedding.requires_grad
        tables.append({
            "width": width,
            "grid": image // patch,
            "shape": list(table.shape),
            "values": [float(v) for v in table.flatten()],
        })
    OUT.write_text(json.dumps({"open_clip": "3.3.0", "tables": tables}) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
