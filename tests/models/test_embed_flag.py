"""FlagEmbedder on the bundled MiniLM: real embeddings, offline, one torch thread."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models.embed_flag import FlagEmbedder
from models.errors import ModelNotFound
from models.registry import load_embedder

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def minilm() -> Iterator[FlagEmbedder]:
    yield load_embedder("minilm", device="cpu", threads=1)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_importing_the_module_loads_no_model_library() -> None:
    code = (
        "import sys, models.embed_flag; "
        "print(sorted(m for m in ('torch', 'FlagEmbedding', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_and_unavailable_names_fail_fast() -> None:
    with pytest.raises(ModelNotFound, match="known embedders"):
        load_embedder("no-such-embedder")
    t0 = time.perf_counter()
    with pytest.raises(ModelNotFound, match="BAAI/bge-m3"):
        load_embedder("bge-m3")  # not in the Hugging Face cache, and there is no network here
    assert time.perf_counter() - t0 < 10


@pytest.mark.slow
def test_minilm_is_bundled_and_described(minilm: FlagEmbedder) -> None:
    assert (minilm.name, minilm.dim, minilm.device) == ("minilm", 384, "cpu")
    vectors = minilm.embed(["hello", "a second, longer sentence about the quarterly budget"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32 and vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert minilm.embed([]).shape == (0, 384)


@pytest.mark.slow
def test_meaning_is_captured(minilm: FlagEmbedder) -> None:
    statement, budget_q, weather_q = minilm.embed([
        "We agreed to cut the marketing budget by ten percent next quarter.",
        "How much money can marketing spend next quarter?",
        "Will it rain in Lyon tomorrow afternoon?",
    ])
    assert cosine(statement, budget_q) > cosine(statement, weather_q) + 0.2


@pytest.mark.slow
def test_batching_keeps_order_and_values(minilm: FlagEmbedder) -> None:
    texts = [f"item {i}: " + "word " * (i % 7) for i in range(70)]  # several batches, mixed lengths
    together = minilm.embed(texts)
    alone = np.vstack([minilm.embed([t]) for t in texts[:5]])
    np.testing.assert_allclose(together[:5], alone, atol=1e-5)


@pytest.mark.slow
def test_same_vectors_as_flagembedding_and_sentence_transformers(minilm: FlagEmbedder) -> None:
    from FlagEmbedding import FlagModel
    from sentence_transformers import SentenceTransformer

    texts = ["The launch moves to March.", "Who owns the hiring plan?", "ok"]
    ours = minilm.embed(texts)
    flag = FlagModel(str(minilm.path), use_fp16=False, pooling_method="mean", devices="cpu",
                     passage_max_length=256)
    np.testing.assert_allclose(ours, flag.encode(texts), atol=1e-5)
    st = SentenceTransformer(str(minilm.path), device="cpu")
    np.testing.assert_allclose(ours, st.encode(texts, normalize_embeddings=True), atol=1e-5)


@pytest.mark.slow
def test_a_directory_loads_with_its_declared_pooling(minilm: FlagEmbedder) -> None:
    other = load_embedder(str(minilm.path), device="cpu", threads=1)
    assert other.name == "model" and other.dim == 384
    text = ["Pooling is read from 1_Pooling/config.json."]
    np.testing.assert_allclose(other.embed(text), minilm.embed(text), atol=1e-6)
