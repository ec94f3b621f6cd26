"""Type stubs of the coca package (see __init__.py for the documentation)."""

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from ._errors import CocaError as CocaError
from ._errors import CocaFileNotFoundError as CocaFileNotFoundError
from ._errors import CocaValueError as CocaValueError

__version__: str

ImageLike = Union[str, "os.PathLike[str]", bytes, Any, npt.NDArray[np.uint8]]
Images = Union[ImageLike, Sequence[ImageLike], npt.NDArray[np.float32], Any]
Texts = Union[str, Sequence[str], npt.NDArray[np.integer[Any]], Any]

class Model:
    @property
    def name(self) -> str: ...
    @property
    def weights(self) -> str: ...
    @property
    def image_size(self) -> int: ...
    @property
    def context_length(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def embed_dim(self) -> int: ...
    @property
    def logit_scale(self) -> float: ...
    def preprocess(self, images: Images) -> npt.NDArray[np.float32]: ...
    def encode_image(
        self, images: Images, normalize: bool = True, batch_size: int = 32
    ) -> npt.NDArray[np.float32]: ...
    def encode_text(self, texts: Texts, normalize: bool = True, batch_size: int = 32) -> npt.NDArray[np.float32]: ...
    def generate(
        self,
        images: Images,
        batch_size: int = 8,
        *,
        generation_type: str = ...,
        seq_len: int = ...,
        min_seq_len: int = ...,
        num_beams: int = ...,
        num_beam_groups: int = ...,
        length_penalty: float = ...,
        beam_scoring: str = ...,
        top_k: int = ...,
        top_p: float = ...,
        temperature: float = ...,
        repetition_penalty: float = ...,
        prompt: str = ...,
        seed: int = ...,
    ) -> npt.NDArray[np.int64]: ...
    def caption(self, images: Images, batch_size: int = 8, **kwargs: Any) -> List[str]: ...
    def zero_shot_classifier(
        self, classes: Union[str, Sequence[str]] = "imagenet", templates: Union[str, Sequence[str]] = "openai"
    ) -> npt.NDArray[np.float32]: ...
    def classify(
        self,
        images: Images,
        classes: Union[str, Sequence[str], npt.NDArray[np.float32]] = "imagenet",
        templates: Union[str, Sequence[str]] = "openai",
    ) -> npt.NDArray[np.float32]: ...

def load(
    model: Union[str, "os.PathLike[str]"],
    pretrained: Union[str, "os.PathLike[str]"],
    device: str = "cpu",
    precision: str = "fp32",
    allow_nonfinite_weights: bool = False,
) -> Model: ...
def list_models() -> List[str]: ...
def list_pretrained() -> List[Tuple[str, str]]: ...
def tokenize(
    texts: Union[str, Sequence[str]], context_length: Optional[int] = None, model: Optional[str] = None
) -> npt.NDArray[np.int64]: ...
def decode(ids: Any, caption: bool = False) -> str: ...
def classnames(spec: Union[str, "os.PathLike[str]"] = "imagenet", dataset: Optional[str] = None) -> List[str]: ...
def templates(spec: Union[str, "os.PathLike[str]"] = "openai", dataset: Optional[str] = None) -> List[str]: ...
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
) -> Dict[str, Any]: ...
