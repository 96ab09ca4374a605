"""The GPU check's tiny random Llama is a valid Hugging Face model (checked on CPU with transformers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.gpu_check import main, write_tiny_llama
from tests.requirements import require_module


@pytest.mark.slow  # loads a (tiny, random) model with transformers and torch: ~12 s
def test_tiny_llama_loads_and_generates(tmp_path: Path) -> None:
    transformers = require_module("transformers")
    write_tiny_llama(tmp_path)
    model = transformers.LlamaForCausalLM.from_pretrained(tmp_path, torch_dtype="float32")
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    ids = tokenizer("the meeting", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5


def test_without_a_gpu_every_check_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    import ctranslate2

    if ctranslate2.get_cuda_device_count() > 0:
        pytest.skip("a GPU is present")
    assert main(["--only", "nvml", "faiss_gpu"]) == 1
    out = capsys.readouterr().out
    assert out.count("FAILED") == 2
