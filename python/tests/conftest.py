"""Shared fixtures: the committed tiny models, their open_clip references, and the `coca` binary if built."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import coca

REPO = Path(__file__).resolve().parents[2]
PARITY = REPO / "fixtures" / "parity"
TINY_MODELS = ["tiny_legacy", "tiny_parallel", "tiny_cascade", "tiny_clspool"]
DEMO_CONFIG = REPO / "assets" / "demo" / "coca_demo-tiny.json"
DEMO_WEIGHTS = REPO / "assets" / "demo" / "coca_demo-tiny.safetensors"
IMAGES = REPO / "fixtures" / "images" / "sources"

_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "F16": np.float16}


def read_safetensors(path: Path) -> dict:
    """The tensors of a safetensors file as numpy arrays (the format is a JSON header and raw bytes)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(body[start:end], dtype=_DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def load_tiny(name: str) -> coca.Model:
    return coca.load(str(PARITY / name / "config.json"), pretrained=str(PARITY / name / "open_clip_model.safetensors"))


@pytest.fixture(scope="session")
def demo() -> coca.Model:
    """The random-weight demo model: CLIP vocabulary, 224-pixel images."""
    return coca.load(str(DEMO_CONFIG), pretrained=str(DEMO_WEIGHTS))


@pytest.fixture(scope="session")
def legacy() -> coca.Model:
    return load_tiny("tiny_legacy")


@pytest.fixture(scope="session")
def legacy_io() -> dict:
    return read_safetensors(PARITY / "tiny_legacy" / "io.safetensors")


@pytest.fixture(scope="session")
def coca_bin() -> Path:
    """The CLI built by `cargo build`/`cargo test` (COCA_BIN overrides); tests that need it skip, saying so."""
    path = Path(os.environ.get("COCA_BIN", REPO / "target" / "debug" / "coca"))
    if not path.is_file():
        print(f"SKIPPED: {path} is not built (run `cargo build -p coca-cli`)")
        pytest.skip(f"the coca binary {path} is not built")
    return path
