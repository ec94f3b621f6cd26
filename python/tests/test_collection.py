"""`coca.write_collection` writes what `coca embed --output-dir` writes, and faiss indexes it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import coca
from conftest import DEMO_CONFIG, DEMO_WEIGHTS, IMAGES

PICTURES = [IMAGES / "chelsea.png", IMAGES / "rocket.jpg", IMAGES / "astronaut_420.jpg"]
FILES = ["img_emb/img_emb_00000.npy", "metadata/metadata_00000.parquet"]


def test_python_collection_equals_the_clis(demo: coca.Model, coca_bin: Path, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in PICTURES))
    cli_out, py_out = tmp_path / "cli", tmp_path / "py"
    subprocess.run(
        [str(coca_bin), "embed", "--model", str(DEMO_CONFIG), "--pretrained", str(DEMO_WEIGHTS),
         "--input-list", str(listing), "--output-dir", str(cli_out), "-q"],
        check=True,
        capture_output=True,
    )
    summary = coca.write_collection(py_out, demo.encode_image(PICTURES), image_paths=PICTURES, model=demo)
    assert summary["rows"] == 3 and summary["partitions"] == 1 and summary["dtype"] == "float16"
    for name in FILES:
        assert (py_out / name).read_bytes() == (cli_out / name).read_bytes(), name
    assert not (py_out / "text_emb").exists()


def test_faiss_indexes_a_python_collection_and_a_coca_text_embedding_queries_it(
    demo: coca.Model, tmp_path: Path
) -> None:
    faiss = pytest.importorskip("faiss")
    captions = ["a cat", "a rocket", "an astronaut"]
    coca.write_collection(
        tmp_path,
        demo.encode_image(PICTURES),
        demo.encode_text(captions),
        image_paths=PICTURES,
        captions=captions,
        partition_size=2,
        dtype="float32",
    )
    parts = sorted((tmp_path / "img_emb").glob("img_emb_*.npy"))
    assert [p.name for p in parts] == ["img_emb_00000.npy", "img_emb_00001.npy"]
    vectors = np.concatenate([np.load(p) for p in parts])
    assert vectors.dtype == np.float32 and np.array_equal(vectors, demo.encode_image(PICTURES))
    texts = np.concatenate([np.load(p) for p in sorted((tmp_path / "text_emb").glob("*.npy"))])
    assert np.array_equal(texts, demo.encode_text(captions))
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    query = demo.encode_text(["a photo of a cat"])
    scores, ids = index.search(query, len(PICTURES))
    exact = vectors @ query[0]
    assert ids[0].tolist() == np.argsort(-exact, kind="stable").tolist()
    assert np.allclose(scores[0], np.sort(exact)[::-1], atol=1e-5)


def test_rewriting_a_folder_needs_the_same_settings(tmp_path: Path) -> None:
    rows = np.eye(4, dtype=np.float32)
    coca.write_collection(tmp_path, rows, partition_size=3)
    coca.write_collection(tmp_path, rows[::-1], partition_size=3)
    assert np.array_equal(np.load(tmp_path / "img_emb" / "img_emb_00000.npy"), rows[::-1][:3])
    with pytest.raises(coca.CocaValueError, match="other settings.*rows: was 4, now 2"):
        coca.write_collection(tmp_path, rows[:2], partition_size=3)


def test_write_collection_errors(tmp_path: Path) -> None:
    rows = np.ones((2, 4), dtype=np.float32)
    cases = [
        ({}, "give image_embeddings, text_embeddings or both"),
        ({"image_embeddings": rows, "text_embeddings": rows[:1]}, r"are \(2, 4\) but text_embeddings \(1, 4\)"),
        ({"image_embeddings": rows, "image_paths": ["a"]}, "image_paths has 1 entries but the embeddings have 2"),
        ({"image_embeddings": rows, "captions": ["a", "b", "c"]}, "captions has 3 entries"),
        ({"image_embeddings": rows, "keys": []}, "keys has 0 entries"),
        ({"image_embeddings": rows, "dtype": "int8"}, "dtype \"int8\" is not"),
        ({"image_embeddings": rows, "partition_size": 0}, "partition_size must be at least 1"),
        ({"image_embeddings": np.array([[1.0, np.nan]], dtype=np.float32)}, "row 0 holds NaN"),
        ({"image_embeddings": np.ones(4, dtype=np.float32)}, "must be a 2-D float array"),
        ({"text_embeddings": np.ones((2, 4), dtype=np.int64)}, "text_embeddings must be a 2-D float array"),
    ]
    for kwargs, message in cases:
        with pytest.raises(coca.CocaValueError, match=message):
            coca.write_collection(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists(), "a refused call writes nothing"
