"""coca: open_clip's CoCa models computed in Rust, with open_clip's numbers and an API open_clip users know.

>>> import coca
>>> model = coca.load("coca_ViT-B-32", pretrained="laion2b_s13b_b90k")
>>> image = model.encode_image(["cat.jpg"])            # (1, 512) float32, L2-normalised
>>> text = model.encode_text(["a photo of a cat"])     # (1, 512)
>>> model.caption(["cat.jpg"])                          # open_clip's default generate() call

Images may be paths, encoded bytes, PIL images, uint8 ``(H, W, 3)`` arrays, or an already preprocessed float32
``(N, 3, H, W)`` array (numpy, or anything with ``__array__`` / ``__dlpack__`` such as a CPU torch tensor).
Every call releases the GIL while Rust computes, and Ctrl-C interrupts a long call within ~0.1 s. Errors are
:class:`CocaError` subclasses carrying the ``coca`` command's messages.
"""

from __future__ import annotations

import io
import os
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _coca
from ._errors import CocaError, CocaFileNotFoundError, CocaValueError

__version__ = _coca.__version__

__all__ = [
    "CocaError",
    "CocaFileNotFoundError",
    "CocaValueError",
    "Model",
    "classnames",
    "decode",
    "list_models",
    "list_pretrained",
    "load",
    "templates",
    "tokenize",
    "write_collection",
]

# PIL modes a PNG keeps exactly (decoded back in the same mode, so resized as open_clip resizes them).
_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}


def _as_array(x: Any) -> Optional[np.ndarray]:
    """``x`` as a numpy array when it is array-like (numpy, ``__array__``, ``__dlpack__``), else ``None``."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__dlpack__") and hasattr(np, "from_dlpack"):
        try:
            return np.from_dlpack(x)
        except (TypeError, RuntimeError, BufferError):
            pass
    if hasattr(x, "__array__"):
        return np.asarray(x)
    return None


def _is_pil(x: Any) -> bool:
    return hasattr(x, "mode") and hasattr(x, "save") and hasattr(x, "size")


def _pil_input(img: Any) -> Tuple[str, Any]:
    """A PIL image as encoded bytes in its own mode (exact), or as RGB pixels for modes PNG cannot hold."""
    buf = io.BytesIO()
    if img.mode in _PNG_MODES:
        img.save(buf, format="PNG")
        return "bytes", buf.getvalue()
    if img.mode == "CMYK":
        img.save(buf, format="TIFF")
        return "bytes", buf.getvalue()
    return "rgb", np.asarray(img.convert("RGB"))


def _image_input(item: Any, index: int) -> Tuple[str, Any]:
    """Classify one image: ``("path", str)``, ``("bytes", bytes)`` or ``("rgb", uint8 array)``."""
    if isinstance(item, (str, os.PathLike)):
        return "path", os.fspath(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return "bytes", bytes(item)
    if _is_pil(item):
        return _pil_input(item)
    arr = _as_array(item)
    if arr is not None:
        if arr.dtype != np.uint8:
            raise CocaValueError(
                f"image #{index + 1}: an image array must be uint8 (H, W, 3) RGB, got {arr.dtype} {arr.shape}; "
                "preprocessed images go as one float32 (N, 3, H, W) array"
            )
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        return "rgb", np.ascontiguousarray(arr)
    raise CocaValueError(
        f"image #{index + 1}: expected a path, bytes, a PIL image or a uint8 array, got {type(item).__name__}"
    )


class Model:
    """A loaded CoCa model (see :func:`load`). Safe to call from several threads at once."""

    def __init__(self, native: "_coca.Model") -> None:
        self._native = native

    def __repr__(self) -> str:
        return f"coca.Model({self.name!r}, weights={str(self.weights)!r})"

    @property
    def name(self) -> str:
        """The model name or config path it was loaded with."""
        return self._native.name

    @property
    def weights(self) -> str:
        """The checkpoint file the weights came from."""
        return str(self._native.weights)

    @property
    def image_size(self) -> int:
        """Side of the square input images."""
        return self._native.image_size

    @property
    def context_length(self) -> int:
        """Token positions of the text tower."""
        return self._native.context_length

    @property
    def vocab_size(self) -> int:
        """Size of the vocabulary."""
        return self._native.vocab_size

    @property
    def embed_dim(self) -> int:
        """Dimension of the embeddings."""
        return self._native.embed_dim

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale): open_clip's factor for cosine similarities."""
        return self._native.logit_scale

    def _pixels(self, images: Any) -> np.ndarray:
        """Any accepted image input as a float32 ``(N, 3, S, S)`` batch."""
        arr = None if isinstance(images, (list, tuple, str, bytes, os.PathLike)) or _is_pil(images) else _as_array(images)
        if arr is not None and arr.dtype != np.uint8:
            if arr.ndim == 3:
                arr = arr[None]
            if arr.ndim != 4:
                raise CocaValueError(
                    f"preprocessed images must be float32 (N, 3, {self.image_size}, {self.image_size}), "
                    f"got shape {arr.shape}"
                )
            return np.ascontiguousarray(arr, dtype=np.float32)
        if not isinstance(images, (list, tuple)):
            images = [images]
        kinds = [_image_input(item, i) for i, item in enumerate(images)]
        out = np.empty((len(kinds), 3, self.image_size, self.image_size), dtype=np.float32)
        for kind in ("path", "bytes", "rgb"):
            idx = [i for i, (k, _) in enumerate(kinds) if k == kind]
            if not idx:
                continue
            values = [kinds[i][1] for i in idx]
            if kind == "path":
                batch = self._native.preprocess_paths(values)
            elif kind == "bytes":
                batch = self._native.preprocess_bytes(values, [f"image #{i + 1}" for i in idx])
            else:
                batch = self._native.preprocess_rgb(values)
            out[idx] = batch
        return out

    def preprocess(self, images: Any) -> np.ndarray:
        """open_clip's eval transform: one image gives ``(3, S, S)`` float32, a list gives ``(N, 3, S, S)``."""
        single = not isinstance(images, (list, tuple))
        pixels = self._pixels(images)
        return pixels[0] if single else pixels

    def encode_image(self, images: Any, normalize: bool = True, batch_size: int = 32) -> np.ndarray:
        """Image embeddings ``(N, embed_dim)`` float32 (L2-normalised unless ``normalize=False``)."""
        return self._native.encode_pixels(self._pixels(images), normalize, batch_size)

    def encode_text(self, texts: Any, normalize: bool = True, batch_size: int = 32) -> np.ndarray:
        """Text embeddings ``(N, embed_dim)`` of texts (a string or a list) or of token ids ``(N, L)``."""
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, (list, tuple)) and all(isinstance(t, str) for t in texts):
            return self._native.encode_texts(list(texts), normalize, batch_size)
        ids = _as_array(texts)
        if ids is None or ids.dtype.kind not in "iu":
            raise CocaValueError("texts must be a string, a list of strings, or an integer array of token ids")
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2:
            raise CocaValueError(f"token ids must be (N, L), got shape {ids.shape}")
        return self._native.encode_ids(np.ascontiguousarray(ids, dtype=np.int64), normalize, batch_size)

    def _generate(self, images: Any, batch_size: int, kwargs: dict) -> List[Tuple[List[int], str, float]]:
        return self._native.generate_pixels(self._pixels(images), batch_size, **kwargs)

    def generate(self, images: Any, batch_size: int = 8, **kwargs: Any) -> np.ndarray:
        """Caption token ids as open_clip's ``generate`` returns them: int64 ``(N, L)``, start token first, rows
        padded with 0. Keywords are open_clip's (``generation_type``, ``seq_len``, ``min_seq_len``, ``num_beams``,
        ``num_beam_groups``, ``top_k``, ``top_p``, ``temperature``, ``repetition_penalty``) plus ``prompt``,
        ``seed``, ``length_penalty``, ``beam_scoring`` and ``generation_type="greedy"``."""
        captions = self._generate(images, batch_size, kwargs)
        width = max((len(t) for t, _, _ in captions), default=0)
        out = np.zeros((len(captions), width), dtype=np.int64)
        for row, (tokens, _, _) in zip(out, captions):
            row[: len(tokens)] = tokens
        return out

    def caption(self, images: Any, batch_size: int = 8, **kwargs: Any) -> List[str]:
        """Captions as text (what ``coca caption`` prints); keywords as :meth:`generate`."""
        return [text for _, text, _ in self._generate(images, batch_size, kwargs)]

    def zero_shot_classifier(
        self, classes: Union[str, Sequence[str]] = "imagenet", templates: Union[str, Sequence[str]] = "openai"
    ) -> np.ndarray:
        """open_clip's ``build_zero_shot_classifier``: class embeddings ``(C, embed_dim)``. ``classes`` and
        ``templates`` are lists, built-in names (``imagenet``; ``openai``, ``simple``) or files, as in ``coca
        classify``; templates mark the class name with ``{c}``."""
        names = classnames(classes) if isinstance(classes, (str, os.PathLike)) else list(classes)
        temps = _templates(templates) if isinstance(templates, (str, os.PathLike)) else list(templates)
        return self._native.zero_shot_classifier(names, temps)

    def classify(
        self,
        images: Any,
        classes: Union[str, Sequence[str], np.ndarray] = "imagenet",
        templates: Union[str, Sequence[str]] = "openai",
    ) -> np.ndarray:
        """Zero-shot class probabilities ``(N, C)``: softmax of 100 × cosine similarity, as ``coca classify``.
        ``classes`` may also be the ``(C, embed_dim)`` array :meth:`zero_shot_classifier` returned."""
        if isinstance(classes, np.ndarray):
            weights = np.ascontiguousarray(classes, dtype=np.float32)
        else:
            weights = self.zero_shot_classifier(classes, templates)
        return _coca.class_probabilities(self.encode_image(images), weights)


def load(
    model: str, pretrained: str, device: str = "cpu", precision: str = "fp32", allow_nonfinite_weights: bool = False
) -> Model:
    """Load ``model`` (an open_clip name such as ``coca_ViT-B-32``, or a config JSON path) with the weights
    ``pretrained`` (a checkpoint file, or an open_clip tag such as ``laion2b_s13b_b90k`` fetched into the Hugging
    Face cache). ``device`` is ``cpu`` or ``cuda:N`` (builds with the ``cuda`` feature); ``precision`` is
    ``fp32``, ``fp16``, ``bf16`` or ``int8`` (on the CPU bf16 and int8 pack the product weights; int8 is CPU
    only; see docs/inference.md). A checkpoint with NaN or infinite weights is refused unless
    ``allow_nonfinite_weights``."""
    return Model(_coca.load(os.fspath(model), os.fspath(pretrained), device, precision, allow_nonfinite_weights))


def list_models() -> List[str]:
    """The built-in model names."""
    return list(_coca.list_models())


def list_pretrained() -> List[Tuple[str, str]]:
    """``(model, tag)`` pairs of the pretrained weights coca can fetch, as open_clip's ``list_pretrained()``."""
    return list(_coca.list_pretrained())


def tokenize(
    texts: Union[str, Sequence[str]], context_length: Optional[int] = None, model: Optional[str] = None
) -> np.ndarray:
    """open_clip's tokenizer: int64 ``(N, context_length)`` ids (76 by default, CoCa's, as
    ``open_clip.get_tokenizer("coca_ViT-B-32")``; or ``model``'s context length), zero-padded, overlong texts
    truncated with the end token last."""
    if isinstance(texts, str):
        texts = [texts]
    return _coca.tokenize(list(texts), context_length, model)


def decode(ids: Any, caption: bool = False) -> str:
    """Token ids back to text as open_clip's ``decode`` (special ids spelled out, padding as ``!``);
    ``caption=True`` keeps only the caption: the text between the start and the end token."""
    return _coca.decode([int(i) for i in np.asarray(ids).ravel()], caption)


def classnames(spec: Union[str, "os.PathLike[str]"] = "imagenet", dataset: Optional[str] = None) -> List[str]:
    """A built-in class list (``imagenet``) or a class file (one per line, or CLIP_benchmark's JSON)."""
    return list(_coca.classnames(os.fspath(spec), dataset))


def _templates(spec: Union[str, "os.PathLike[str]"] = "openai", dataset: Optional[str] = None) -> List[str]:
    return list(_coca.templates(os.fspath(spec), dataset))


def templates(spec: Union[str, "os.PathLike[str]"] = "openai", dataset: Optional[str] = None) -> List[str]:
    """A built-in template set (``openai``, ``simple``) or a template file; ``{c}`` marks the class name."""
    return _templates(spec, dataset)


def _embedding_matrix(name: str, x: Any) -> Optional[np.ndarray]:
    if x is None:
        return None
    arr = _as_array(x)
    if arr is None or arr.dtype.kind != "f" or arr.ndim != 2:
        shape = getattr(arr, "shape", None)
        raise CocaValueError(f"{name} must be a 2-D float array (rows, dim), got {type(x).__name__} {shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def write_collection(
    out_dir: Union[str, "os.PathLike[str]"],
    image_embeddings: Any = None,
    text_embeddings: Any = None,
    image_paths: Optional[Sequence[Union[str, "os.PathLike[str]"]]] = None,
    captions: Optional[Sequence[Optional[str]]] = None,
    keys: Optional[Sequence[str]] = None,
    *,
    model: Optional[Model] = None,
    partition_size: int = 10_000,
    dtype: str = "float16",
) -> dict:
    """Write embeddings in clip-retrieval's layout, with the writer ``coca embed --output-dir`` uses:
    ``img_emb/img_emb_N.npy``, ``text_emb/text_emb_N.npy`` (row-aligned), ``metadata/metadata_N.parquet``
    (``image_path``, ``caption``, ``key`` per row), ``partition_size`` rows a partition, every file written
    atomically. ``image_paths`` with the embeddings of ``model.encode_image(image_paths)`` gives the files
    ``coca embed --input-list`` writes for the same list (a row's key is its path unless ``keys`` says
    otherwise). ``model`` records the model and checkpoint in ``coca_embed.json``, where ``coca index`` and
    ``coca search`` find them. ``dtype`` is ``"float16"`` (clip-retrieval's) or ``"float32"``. Writing again
    into the same folder rewrites it when the settings and row count are the same and is refused otherwise.
    Returns a summary: ``output_dir``, ``rows``, ``partitions``, ``dim``, ``dtype``, ``image_embeddings``,
    ``text_embeddings``."""
    settings = {}
    if model is not None:
        settings = {"model": _stable(model.name), "pretrained": _stable(model.weights)}
    return _coca.write_collection(
        os.fspath(out_dir),
        _embedding_matrix("image_embeddings", image_embeddings),
        _embedding_matrix("text_embeddings", text_embeddings),
        None if image_paths is None else [os.fspath(p) for p in image_paths],
        None if captions is None else list(captions),
        None if keys is None else [str(k) for k in keys],
        partition_size,
        dtype,
        settings,
    )


def _stable(name: str) -> str:
    """A model or checkpoint as ``coca embed`` records it: the absolute path of an existing file, else the name."""
    return os.path.realpath(name) if os.path.exists(name) else name
