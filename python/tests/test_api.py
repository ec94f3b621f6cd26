"""Every call of the package, every input kind, every error."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import coca
from conftest import DEMO_CONFIG, DEMO_WEIGHTS, IMAGES, PARITY

CAT = IMAGES / "chelsea.png"
ROCKET = IMAGES / "rocket.jpg"


def test_listing() -> None:
    assert "coca_ViT-B-32" in coca.list_models()
    assert ("coca_ViT-B-32", "laion2b_s13b_b90k") in coca.list_pretrained()
    assert len(coca.classnames("imagenet")) == 1000
    assert len(coca.templates("openai")) == 80 and len(coca.templates("simple")) == 7


def test_tokenize_and_decode() -> None:
    ids = coca.tokenize("a photo of a cat")
    assert ids.shape == (1, 76) and ids.dtype == np.int64
    assert coca.tokenize(["a", "b"], model="coca_ViT-B-32").shape == (2, 76)
    assert coca.tokenize(["a"], context_length=5).shape == (1, 5)
    assert coca.decode(ids[0], caption=True) == "a photo of a cat"
    with pytest.raises(coca.CocaValueError, match="not both"):
        coca.tokenize("a", context_length=5, model="coca_ViT-B-32")
    with pytest.raises(coca.CocaValueError, match="at least 1"):
        coca.tokenize("a", context_length=0)


def test_load_errors_are_the_clis() -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        coca.load("missing/config.json", pretrained=str(DEMO_WEIGHTS))
    with pytest.raises(coca.CocaValueError):
        coca.load("coca_ViT-X-99", pretrained=str(DEMO_WEIGHTS))
    with pytest.raises(FileNotFoundError, match="neither an existing file nor a known pretrained tag"):
        coca.load(str(DEMO_CONFIG), pretrained="missing/weights.safetensors")
    with pytest.raises(ValueError, match="unknown precision `fp8`"):
        coca.load(str(DEMO_CONFIG), pretrained=str(DEMO_WEIGHTS), precision="fp8")
    with pytest.raises(ValueError, match="unknown device `tpu`"):
        coca.load(str(DEMO_CONFIG), pretrained=str(DEMO_WEIGHTS), device="tpu")
    with pytest.raises(coca.CocaError):
        coca.load(str(DEMO_CONFIG), pretrained=str(PARITY / "tiny_legacy" / "open_clip_model.safetensors"))


def test_properties(demo: coca.Model) -> None:
    assert (demo.image_size, demo.context_length, demo.vocab_size, demo.embed_dim) == (224, 76, 49408, 16)
    assert demo.logit_scale > 0 and demo.weights.endswith("coca_demo-tiny.safetensors")
    assert "coca_demo-tiny" in repr(demo)


class DLPackOnly:
    """A tensor that speaks only DLPack (as a torch tensor does besides __array__)."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_every_image_input_gives_the_same_embedding(demo: coca.Model) -> None:
    from PIL import Image

    by_path = demo.encode_image([CAT, str(ROCKET)])
    assert by_path.shape == (2, 16) and by_path.dtype == np.float32
    assert np.allclose(np.linalg.norm(by_path, axis=1), 1, atol=1e-5)
    rgb = np.asarray(Image.open(CAT).convert("RGB"))
    pixels = demo.preprocess([CAT, ROCKET])
    assert pixels.shape == (2, 3, 224, 224) and pixels.dtype == np.float32
    for given in (
        [Image.open(CAT), ROCKET.read_bytes()],
        [rgb, Image.open(ROCKET)],
        pixels,
        DLPackOnly(pixels),
    ):
        assert np.abs(demo.encode_image(given) - by_path).max() <= 1e-6
    assert np.abs(demo.encode_image(CAT) - by_path[:1]).max() <= 1e-6
    grey = np.asarray(Image.open(IMAGES / "camera_grey.jpg").convert("L"))
    assert np.abs(demo.encode_image([grey]) - demo.encode_image([np.stack([grey] * 3, axis=2)])).max() <= 1e-6
    raw = demo.encode_image([CAT], normalize=False)
    assert np.abs(raw / np.linalg.norm(raw) - by_path[:1]).max() <= 1e-5


def test_image_errors(demo: coca.Model, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jpg: no such image file"):
        demo.encode_image(["nope.jpg"])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(coca.CocaValueError, match="bad.jpg"):
        demo.encode_image([bad])
    with pytest.raises(coca.CocaValueError, match="image #2"):
        demo.encode_image([CAT, b"garbage"])
    with pytest.raises(coca.CocaValueError, match="must be uint8"):
        demo.encode_image([np.zeros((4, 4, 3), dtype=np.int32)])
    with pytest.raises(coca.CocaValueError, match=r"\(height, width, 3\)"):
        demo.encode_image([np.zeros((4, 4, 2), dtype=np.uint8)])
    with pytest.raises(coca.CocaValueError, match=r"\(N, 3, 224, 224\)"):
        demo.encode_image(np.zeros((1, 3, 32, 32), dtype=np.float32))
    with pytest.raises(coca.CocaValueError, match="NaN"):
        demo.encode_image(np.full((1, 3, 224, 224), np.nan, dtype=np.float32))
    with pytest.raises(coca.CocaValueError, match="expected a path"):
        demo.encode_image([3.5])
    with pytest.raises(coca.CocaValueError, match="batch_size"):
        demo.encode_image([CAT], batch_size=0)


def test_text_inputs_and_errors(demo: coca.Model) -> None:
    texts = ["a photo of a cat", "a rocket"]
    emb = demo.encode_text(texts)
    assert emb.shape == (2, 16) and emb.dtype == np.float32
    ids = coca.tokenize(texts, model=str(DEMO_CONFIG))
    assert np.abs(demo.encode_text(ids) - emb).max() <= 1e-6
    assert np.abs(demo.encode_text(DLPackOnly(ids)) - emb).max() <= 1e-6
    assert np.abs(demo.encode_text(ids[0]) - emb[:1]).max() <= 1e-6
    assert np.abs(demo.encode_text("a rocket") - emb[1:]).max() <= 1e-6
    with pytest.raises(coca.CocaValueError, match="text #2 is empty"):
        demo.encode_text(["a cat", "  "])
    with pytest.raises(coca.CocaValueError, match="outside this model's vocabulary"):
        demo.encode_text(np.array([[49406, 60000, 49407]]))
    with pytest.raises(coca.CocaValueError, match="columns"):
        demo.encode_text(np.zeros((1, 80), dtype=np.int64))
    with pytest.raises(coca.CocaValueError, match="integer array"):
        demo.encode_text(np.zeros((1, 5), dtype=np.float32))


def test_generate_and_caption(demo: coca.Model) -> None:
    tokens = demo.generate([CAT, ROCKET], generation_type="greedy", seq_len=10)
    assert tokens.dtype == np.int64 and tokens.shape[0] == 2 and tokens.shape[1] <= 10
    assert (tokens[:, 0] == 49406).all()
    captions = demo.caption([CAT, ROCKET], generation_type="greedy", seq_len=10)
    assert captions == [coca.decode(t, caption=True) for t in tokens]
    beams = demo.generate([CAT], num_beams=4, num_beam_groups=2, seq_len=8)
    assert beams.shape[0] == 1
    sampled = demo.caption([CAT], generation_type="top_p", top_p=0.9, temperature=0.7, seed=3, seq_len=8)
    assert sampled == demo.caption([CAT], generation_type="top_p", top_p=0.9, temperature=0.7, seed=3, seq_len=8)
    prompted = demo.caption([CAT], generation_type="greedy", prompt="a photo of", seq_len=12)
    assert prompted[0].startswith("a photo of")


def test_generate_errors(demo: coca.Model) -> None:
    with pytest.raises(coca.CocaValueError, match="unknown keyword \"beams\""):
        demo.generate([CAT], beams=3)
    with pytest.raises(coca.CocaValueError, match='generation_type "nucleus"'):
        demo.generate([CAT], generation_type="nucleus")
    with pytest.raises(ValueError, match='top_k/top_p/temperature apply to generation_type="top_k"'):
        demo.generate([CAT], top_p=0.5)
    with pytest.raises(ValueError, match='apply to generation_type="beam_search"'):
        demo.generate([CAT], generation_type="top_k", num_beams=4)
    with pytest.raises(ValueError, match="max_tokens must be between 2"):
        demo.generate([CAT], seq_len=200)
    with pytest.raises(ValueError, match="prompt .* has no tokens"):
        demo.generate([CAT], generation_type="greedy", prompt=" ")


def test_classify(demo: coca.Model, tmp_path) -> None:
    classes = ["cat", "rocket", "dog"]
    probs = demo.classify([CAT, ROCKET], classes, templates=["a photo of a {c}.", "a {c}"])
    assert probs.shape == (2, 3) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    weights = demo.zero_shot_classifier(classes, ["a photo of a {c}.", "a {c}"])
    assert weights.shape == (3, 16)
    emb = demo.encode_image([CAT, ROCKET])
    logits = 100 * emb @ weights.T
    want = np.exp(logits - logits.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    assert np.abs(probs - want).max() <= 1e-5
    assert np.abs(demo.classify([CAT, ROCKET], weights) - probs).max() <= 1e-6
    listed = tmp_path / "classes.txt"
    listed.write_text("cat\nrocket\ndog\n")
    assert np.abs(demo.classify([CAT, ROCKET], str(listed), ["a photo of a {c}.", "a {c}"]) - probs).max() <= 1e-6
    assert demo.zero_shot_classifier(["cat", "dog"], "simple").shape == (2, 16)
    with pytest.raises(FileNotFoundError):
        demo.classify([CAT], "missing_classes.txt")
    with pytest.raises(coca.CocaValueError):
        demo.classify([CAT], [], ["a {c}"])
    with pytest.raises(coca.CocaValueError):
        demo.zero_shot_classifier(["cat"], ["no placeholder {x"])


def test_threads_give_the_serial_results(demo: coca.Model) -> None:
    images = [CAT, ROCKET]
    serial_img = demo.encode_image(images)
    serial_txt = demo.encode_text(["a cat", "a rocket"])
    serial_cap = demo.caption(images, generation_type="greedy", seq_len=8)
    results: list = [None] * 6
    errors: list = []

    def work(i: int) -> None:
        try:
            results[i] = (
                demo.encode_image(images),
                demo.encode_text(["a cat", "a rocket"]),
                demo.caption(images, generation_type="greedy", seq_len=8),
            )
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for img, txt, cap in results:
        assert np.array_equal(img, serial_img) and np.array_equal(txt, serial_txt) and cap == serial_cap


def test_ctrl_c_interrupts_a_long_call(demo: coca.Model) -> None:
    """SIGINT during a many-batch call raises KeyboardInterrupt between batches instead of running to the end."""
    import math
    import os
    import signal
    import time

    pixels = demo.preprocess([CAT])
    long_caption = dict(generation_type="greedy", seq_len=60, min_seq_len=59)
    started = time.monotonic()
    demo.generate(pixels, batch_size=1, **long_caption)
    one = max(time.monotonic() - started, 1e-3)
    n = max(8, math.ceil(4.0 / one))  # at least 4 seconds of work, one image per batch
    batch = np.repeat(pixels, n, axis=0)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            demo.generate(batch, batch_size=1, **long_caption)
    finally:
        timer.cancel()
    assert time.monotonic() - started < n * one / 2


def test_calls_reuse_one_worker_thread() -> None:
    """Serial calls run on one kept worker thread (its kernel buffers stay warm), not on a new thread each."""
    import subprocess
    import sys
    from pathlib import Path

    if not Path("/proc/self/task").is_dir():
        pytest.skip("no /proc/self/task on this system to count threads by name")
    # Threads a worker starts (the kernels' pool, on first use) inherit its name, so the count is compared.
    child = f"""
import pathlib, coca
def workers():
    names = [p.read_text().strip() for p in pathlib.Path("/proc/self/task").glob("*/comm")]
    return names.count("coca-worker")
model = coca.load({str(DEMO_CONFIG)!r}, pretrained={str(DEMO_WEIGHTS)!r})
model.encode_image([{str(CAT)!r}])
first = workers()
for _ in range(5):
    model.encode_image([{str(CAT)!r}])
    model.encode_text(["a cat"])
print(first, workers())
"""
    out = subprocess.run([sys.executable, "-c", child], check=True, capture_output=True, text=True)
    first, last = map(int, out.stdout.split())
    assert first >= 1 and last == first, out.stdout + out.stderr
