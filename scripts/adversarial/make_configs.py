#!/usr/bin/env python3
"""Writes fixtures/adversarial/configs/: the demo model's config with one absurd size each, and the manifest
that says what coca must answer (crates/coca-cli/tests/hostile_configs.rs). Standard library only.

    python3 scripts/adversarial/make_configs.py
"""
import copy
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "adversarial" / "configs"
BASE = json.loads((ROOT / "assets" / "demo" / "coca_demo-tiny.json").read_text())

# Commands that read a config: all of them must refuse a size out of range.
ALL = ["info", "tokenize", "embed", "train"]
# Commands that allocate the model: they must refuse a model too large for the memory available.
ALLOCATING = ["embed", "train"]

CASES = [
    # (file, [(section, key, value)], commands, fragments, what)
    ("text_layers_1e9.json", [("text_cfg", "layers", 1_000_000_000)], ALL,
     ["text_cfg.layers = 1000000000 is outside 1..=256"], "a billion text blocks"),
    ("vision_layers_1e9.json", [("vision_cfg", "layers", 1_000_000_000)], ALL,
     ["vision_cfg.layers = 1000000000 is outside 1..=256"], "a billion vision blocks"),
    ("decoder_layers_1e9.json", [("multimodal_cfg", "layers", 1_000_000_000)], ALL,
     ["multimodal_cfg.layers = 1000000000 is outside 1..=256"], "a billion decoder blocks"),
    ("vision_width_1e9.json", [("vision_cfg", "width", 1_000_000_000)], ALL,
     ["vision_cfg.width = 1000000000 is outside 1..=16384"], "a residual width of a billion"),
    ("context_length_1e12.json",
     [("text_cfg", "context_length", 10**12), ("multimodal_cfg", "context_length", 10**12)], ALL,
     ["text_cfg.context_length = 1000000000000 is outside 1..=8192"],
     "a context of 10^12 tokens (the tokenizer would allocate 4 TB per row)"),
    ("vocab_size_1e12.json", [("text_cfg", "vocab_size", 10**12)], ALL,
     ["text_cfg.vocab_size = 1000000000000 is outside 1..=4194304"], "a vocabulary of 10^12 tokens"),
    ("image_size_1e6.json", [("vision_cfg", "image_size", 1_000_000)], ALL,
     ["vision_cfg.image_size (height) = 1000000 is outside 1..=4096"], "a million-pixel-wide input"),
    ("mlp_ratio_1e6.json", [("vision_cfg", "mlp_ratio", 1e6)], ALL,
     ["vision_cfg.mlp_ratio = 1000000 is outside (0, 16]"], "an MLP a million times wider than the stream"),
    ("zero_heads.json", [("text_cfg", "heads", 0)], ALL,
     ["text_cfg.heads = 0 is outside 1..=16384"], "no attention heads (a division by zero)"),
    ("negative_layers.json", [("vision_cfg", "layers", -1)], ALL,
     ["not a valid open_clip model config", "invalid value"], "a negative size"),
    ("huge_but_in_range.json",
     [("vision_cfg", "layers", 256), ("vision_cfg", "width", 16384), ("vision_cfg", "head_width", 128),
      ("vision_cfg", "attentional_pool", False)],
     ALLOCATING,
     ["would need at least", "vision_cfg (layers 256, width 16384)", "available"],
     "every size in range, but 3 TB of weights"),
]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = {
        "description": "Model configs with absurd sizes: each must be refused with a message naming the field "
                       "(or the cost), under an address-space limit, by every command listed.",
        "generator": "scripts/adversarial/make_configs.py",
        "files": [],
    }
    for name, edits, commands, fragments, what in CASES:
        cfg = copy.deepcopy(BASE)
        for section, key, value in edits:
            cfg[section][key] = value
        if name == "huge_but_in_range.json":
            # Without the attentional pooler the decoder reads the vision width directly.
            cfg["text_cfg"]["width"] = cfg["multimodal_cfg"]["width"] = 16384
            cfg["text_cfg"]["heads"] = cfg["multimodal_cfg"]["heads"] = 128
        (OUT / name).write_text(json.dumps(cfg, indent=2) + "\n")
        manifest["files"].append(
            {"file": name, "what": what, "commands": commands, "fragments": fragments})
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
