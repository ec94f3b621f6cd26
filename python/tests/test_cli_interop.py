"""Python gives what the `coca` command gives for the same inputs, and coca's clip-retrieval output feeds faiss."""

from __future__ import annotations

import json
import logging
import os
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


def test_autofaiss_index_of_coca_output_finds_what_coca_search_finds(coca_bin: Path, tmp_path: Path) -> None:
    """autofaiss, the index builder clip-retrieval runs, reads coca's folder through embedding_reader; its flat
    index finds for a coca text embedding the rows `coca search` finds, for image and caption embeddings alike,
    and the metadata read the way clip-retrieval's back end reads it names the same samples."""
    try:
        import pandas as pd
        from autofaiss import build_index
    except ImportError as e:
        if os.environ.get("COCA_TEST_AUTOFAISS") == "1":
            raise
        print(f"SKIPPED: autofaiss is not installed ({e}); pip install -r scripts/ci/requirements-autofaiss.txt")
        pytest.skip(f"autofaiss is not installed: {e}")
    names = ["astronaut_420.jpg", "camera_grey.jpg", "chelsea.png", "china.jpg", "coffee.webp", "coins.png"]
    names += ["flower.jpg", "horse.png", "rocket.jpg", "palette.png", "gradient_rgba.png", "grey16.png"]
    folder = tmp_path / "images"
    folder.mkdir()
    for name in names:
        shutil.copy(IMAGES / name, folder / name)
        (folder / name).with_suffix(".txt").write_text(f"a picture called {Path(name).stem.replace('_', ' ')}")
    out = tmp_path / "out"
    subprocess.run(
        [str(coca_bin), "embed", *MODEL, "--input-dir", str(folder), "--output-dir", str(out)]
        + ["--partition-size", "5", "-q"],
        check=True,
        capture_output=True,
    )
    query = "a photo of a horse in a field"
    (q,) = run_json(coca_bin, "embed", *MODEL, "--text", query, "--json")["text_embeddings"]
    q = np.array([q], dtype=np.float32)
    # clip-retrieval's back end (ParquetMetadataProvider): the metadata files in name order, concatenated; the
    # faiss id is the position in that frame.
    metadata = pd.concat(pd.read_parquet(f) for f in sorted((out / "metadata").glob("*.parquet")))
    assert {"image_path", "caption"} <= set(metadata.columns)
    k = 6
    for folder_name, against in [("img_emb", "image"), ("text_emb", "text")]:
        files = sorted((out / folder_name).glob("*.npy"))
        assert len(files) == 3, files
        index, _ = build_index(
            embeddings=str(out / folder_name),
            index_path=str(tmp_path / f"{against}.index"),
            index_infos_path=str(tmp_path / f"{against}.json"),
            index_key="Flat",
            metric_type="ip",
            file_format="npy",
            nb_cores=1,
            verbose=logging.WARNING,
        )
        assert index.ntotal == len(names) == len(metadata)
        _, ids = index.search(q, k)
        rows = [(p, r) for p, f in enumerate(files) for r in range(np.load(f).shape[0])]
        search = ["search", *MODEL, "--index", str(out), "--text", query, "--against", against, "--json"]
        coca = run_json(coca_bin, *search)
        assert coca["method"] == "exact"
        hits = coca["results"][:k]
        assert [rows[i] for i in ids[0]] == [(h["partition"], h["row"]) for h in hits]
        for i, hit in zip(ids[0], hits):
            meta = metadata[i : i + 1][["image_path", "caption"]].to_dict(orient="records")[0]
            assert (meta["image_path"], meta["caption"]) == (hit["image_path"], hit["caption"])
