"""ExLlamaV2 needs CUDA: on a machine without it, construction fails with a clear `ModelError`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.errors import ModelError, ModelNotFound
from models.llm_exllamav2 import ExLlamaV2Engine


def _fake_exl2_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (root / "output.safetensors").write_bytes(b"")
    return root


def test_construction_without_cuda_raises_a_clear_error(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: this test is about machines without one")
    with pytest.raises(ModelError, match=r"CUDA|exllamav2"):
        ExLlamaV2Engine(_fake_exl2_dir(tmp_path / "model"))


def test_a_directory_without_an_exl2_model_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"config\.json"):
        ExLlamaV2Engine(tmp_path)
