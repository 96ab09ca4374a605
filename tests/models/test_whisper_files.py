"""Model names resolve to local CTranslate2 directories, offline; `base` is reassembled once and verified."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from models import whisper_files
from models.errors import ModelNotFound
from models.whisper_files import (
    BASE_SHA256,
    BASE_SIZE,
    choose_device,
    ensure_base,
    resolve_model,
)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_tiny_en_resolves_to_the_packaged_directory() -> None:
    spec = resolve_model("tiny.en")
    assert spec.name == "tiny.en"
    assert not spec.multilingual
    assert (spec.path / "model.bin").is_file()
    assert (spec.path / "tokenizer.json").is_file()


def test_base_is_reassembled_verified_and_reused(tmp_path: Path) -> None:
    spec = resolve_model("base", cache_dir=tmp_path)
    assert spec.multilingual
    assert spec.path == tmp_path / "base"
    model = spec.path / "model.bin"
    assert model.stat().st_size == BASE_SIZE
    assert sha256(model) == BASE_SHA256
    for small in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (spec.path / small).is_file()
    marker = json.loads((spec.path / ".verified.json").read_text())
    assert marker["sha256"] == BASE_SHA256
    assert not [p for p in spec.path.iterdir() if p.name.startswith(".model.bin.")], "temp file left behind"

    mtime = model.stat().st_mtime_ns
    start = time.perf_counter()
    again = resolve_model("base", cache_dir=tmp_path)
    assert time.perf_counter() - start < 0.2, "a verified cache must not be re-hashed"
    assert again == spec
    assert model.stat().st_mtime_ns == mtime, "a verified cache must not be rewritten"


def test_corrupted_cache_is_detected_and_rebuilt(tmp_path: Path) -> None:
    model = resolve_model("base", cache_dir=tmp_path).path / "model.bin"
    with model.open("r+b") as f:  # flip bytes in the middle: same size, new mtime
        f.seek(BASE_SIZE // 2)
        f.write(b"\x00garbage\x00")
    resolve_model("base", cache_dir=tmp_path)
    assert sha256(model) == BASE_SHA256

    model.write_bytes(b"truncated")
    resolve_model("base", cache_dir=tmp_path)
    assert model.stat().st_size == BASE_SIZE and sha256(model) == BASE_SHA256


def test_corruption_hidden_from_the_marker_is_found_by_verify(tmp_path: Path) -> None:
    target = resolve_model("base", cache_dir=tmp_path).path
    model = target / "model.bin"
    stat = model.stat()
    with model.open("r+b") as f:
        f.seek(1000)
        f.write(b"\xff\xff")
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the marker still matches
    ensure_base(target, verify=True)
    assert sha256(model) == BASE_SHA256


def test_a_directory_with_model_bin_resolves_to_itself() -> None:
    packaged = resolve_model("tiny.en").path
    spec = resolve_model(str(packaged))
    assert spec.path == packaged
    assert spec.multilingual is False


@pytest.mark.parametrize("name", ["no-such-model", "small", "palabre-test/does-not-exist"])
def test_unknown_or_unavailable_names_fail_fast_and_clearly(name: str, tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(ModelNotFound) as excinfo:
        resolve_model(name, cache_dir=tmp_path)
    assert time.perf_counter() - start < 5
    assert "tiny.en" in str(excinfo.value) and "base" in str(excinfo.value)


def test_a_failed_download_is_reported_as_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"could not be downloaded|not in the local cache"):
        resolve_model("palabre-test/does-not-exist", cache_dir=tmp_path, allow_download=True)


def test_choose_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctranslate2

    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 0)
    assert choose_device() == ("cpu", "int8")
    assert choose_device(compute_type="float32") == ("cpu", "float32")
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    assert choose_device() == ("cuda", "float16")
    assert choose_device("cpu") == ("cpu", "int8")
    assert choose_device("cuda", "int8_float16") == ("cuda", "int8_float16")


def test_builtin_names_are_listed() -> None:
    assert whisper_files.BUILTIN_MODELS == ("tiny.en", "base")
