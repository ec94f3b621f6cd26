"""Python gives what the `coca` command gives for the same inputs, and coca's clip-retrieval output feeds faiss."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import coca
from conftest import DEMO_CONFIG, DEMO_WEIGHTS, IMAGES

MODEL = ["--model", str(DEMO_CONFIG), "--pretrained", str(DEMO_WEIGHTS)]
PICTURES = [IMAGES / "chelsea.png", IMAGES / "rocket.jpg", IMAGES / "astronaut_420.jpg"]


def run_json(binary: Path, *args: str) -> dict:
    out = subprocess.run([str(binary), *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_embed_equals_cli_json(demo: coca.Model, coca_bin: Path) -> None:
    texts = ["a photo of a cat", "a rocket on its launch pad"]
    args = ["embed", *MODEL, "--json"]
    for p in PICTURES:
        args += ["--image", str(p)]
    for t in texts:
        args += ["--text", t]
    cli = run_json(coca_bin, *args)
    assert np.abs(demo.encode_image(PICTURES) - np.array(cli["image_embeddings"], dtype=np.float32)).max() <= 1e-6
    assert np.abs(demo.encode_text(texts) - np.array(cli["text_embeddings"], dtype=np.float32)).max() <= 1e-6


def test_captions_equal_cli_json(demo: coca.Model, coca_bin: Path) -> None:
    for flags, kwargs in [
        ([], {}),
        (["--strategy", "greedy", "--max-length", "12"], {"generation_type": "greedy", "seq_len": 12}),
    ]:
        cli = run_json(coca_bin, "caption", *MODEL, "--json", "--tokens", *flags, *map(str, PICTURES))
        tokens = demo.generate(PICTURES, **kwargs)
        texts = demo.caption(PICTURES, **kwargs)
        for row, text, item in zip(tokens, texts, cli["captions"]):
            assert list(row[: len(item["tokens"])]) == item["tokens"] and not row[len(item["tokens"]) :].any()
            assert text == item["caption"]


def test_tokens_equal_cli_json(coca_bin: Path) -> None:
    texts = ["Hello, World!", "naïve café — ünïcödé", "a " * 100]
    cli = run_json(coca_bin, "tokenize", "--model", "coca_ViT-B-32", "--json", *texts)
    assert coca.tokenize(texts, model="coca_ViT-B-32").tolist() == cli["tokens"]


def test_faiss_index_from_coca_collection(demo: coca.Model, coca_bin: Path, tmp_path: Path) -> None:
    """`coca embed --input-dir` writes clip-retrieval's layout; faiss indexes it and a coca text embedding
    queries it, finding what exact search over the same vectors finds."""
    faiss = pytest.importorskip("faiss")
    folder = tmp_path / "images"
    folder.mkdir()
    for p in PICTURES:
        shutil.copy(p, folder / p.name)
    out = tmp_path / "out"
    subprocess.run(
        [str(coca_bin), "embed", *MODEL, "--input-dir", str(folder), "--output-dir", str(out), "-q"],
        check=True,
        capture_output=True,
    )
    parts = sorted((out / "img_emb").glob("img_emb_*.npy"))
    assert parts, "no embedding partitions written"
    vectors = np.concatenate([np.load(p) for p in parts]).astype(np.float32)
    assert vectors.shape == (len(PICTURES), demo.embed_dim)
    # The stored float16 vectors are coca's own image embeddings.
    order = np.argsort([np.abs(vectors - e).sum(axis=1).argmin() for e in demo.encode_image(PICTURES)])
    assert len(set(order.tolist())) == len(PICTURES)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    query = demo.encode_text(["a photo of a cat"])
    scores, ids = index.search(query, len(PICTURES))
    exact = np.argsort(-(vectors @ query[0]), kind="stable")
    assert ids[0].tolist() == exact.tolist()
    assert np.allclose(scores[0], np.sort(vectors @ query[0])[::-1], atol=1e-5)
