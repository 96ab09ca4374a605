"""The registry picks an engine for every kind of model, by name, and refuses unknown names clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import registry
from models.asr_ctranslate2 import CTranslate2Whisper
from models.errors import ModelNotFound
from models.failover import FailoverAsr
from models.fault_injection import FaultyAsr, InjectedDeviceFault
from models.index_faiss import FaissIndex
from models.ner_spacy import SpacyNer
from models.vad_silero import SileroVad
from stream.interfaces import SAMPLE_RATE, AsrInput, IndexStale


def test_every_kind_has_its_engines() -> None:
    assert registry.ENGINES == {
        "asr": ("ctranslate2",),
        "vad": ("silero",),
        "embedder": ("flag",),
        "index": ("faiss",),
        "llm": ("llamacpp", "exllamav2"),
        "ner": ("spacy",),
        "speaker": ("resemblyzer",),
    }


def test_importing_the_registry_loads_no_model_library() -> None:
    libraries = ["ctranslate2", "faster_whisper", "onnxruntime", "torch", "faiss", "llama_cpp", "spacy"]
    code = f"import sys, models.registry; print([m for m in {libraries!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("load", "known"),
    [
        (lambda: registry.load_vad("webrtc"), "silero"),
        (lambda: registry.load_ner("flair"), "spacy"),
        (lambda: registry.load_speaker("ecapa"), "resemblyzer"),
        (lambda: registry.new_index(8, engine="hnswlib"), "faiss"),
        (lambda: registry.load_index("x.index", 8, "minilm", engine="hnswlib"), "faiss"),
    ],
    ids=["vad", "ner", "speaker", "new_index", "load_index"],
)
def test_unknown_engine_names_are_refused_with_the_known_ones(load: object, known: str) -> None:
    assert callable(load)
    with pytest.raises(ModelNotFound, match=rf"unknown \w+ engine .*known: {known}"):
        load()


@pytest.mark.slow
def test_vad_and_ner_defaults() -> None:
    vad = registry.load_vad()
    assert isinstance(vad, SileroVad)
    stream = vad.open_stream()
    assert 0.0 <= stream.probability(np.zeros(vad.frame_samples, np.float32)) < 0.5
    assert isinstance(registry.load_ner(), SpacyNer)


def test_a_new_index_saves_and_loads_through_the_registry(tmp_path: Path) -> None:
    index = registry.new_index(8, embedder_name="test", device="cpu")
    assert isinstance(index, FaissIndex)
    vectors = np.eye(8, dtype=np.float32)[:3]
    assert index.add(np.array([5, 7, 9]), vectors) == 3
    path = tmp_path / "t.faiss"
    index.save(path)
    loaded = registry.load_index(path, 8, "test", device="cpu")
    assert (loaded.count, loaded.max_id) == (3, 9)
    assert loaded.search(vectors[1], 1) == [[(7, pytest.approx(1.0))]]
    with pytest.raises(IndexStale):
        registry.load_index(path, 8, "another-embedder", device="cpu")
    with pytest.raises(IndexStale):
        registry.load_index(tmp_path / "missing.faiss", 8, "test")


def test_llm_names_pick_their_engine(tmp_path: Path) -> None:
    assert registry.llm_engine("gemma3-270m") == "llamacpp"
    assert registry.llm_engine(str(tmp_path / "any.GGUF")) == "llamacpp"
    exl2 = tmp_path / "exl2"
    exl2.mkdir()
    (exl2 / "config.json").write_text("{}")
    (exl2 / "model.safetensors").write_bytes(b"")
    assert registry.llm_engine(str(exl2)) == "exllamav2"
    with pytest.raises(ModelNotFound, match="built-in: gemma3-270m"):
        registry.llm_engine("no-such-llm")
    with pytest.raises(ModelNotFound, match="built-in: gemma3-270m"):
        registry.llm_engine(str(tmp_path))  # a directory without an EXL2 model


def test_unknown_asr_and_embedder_names_are_refused() -> None:
    with pytest.raises(ModelNotFound, match=r"tiny\.en"):
        registry.load_asr("no-such-model")
    with pytest.raises(ModelNotFound, match="minilm"):
        registry.load_embedder("no-such-embedder")


def _tone() -> AsrInput:
    t = np.arange(SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
    return AsrInput(audio=(0.1 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32), language="en")


@pytest.mark.slow
def test_serving_asr_is_the_bare_engine_without_seams() -> None:
    engine = registry.load_serving_asr("tiny.en", device="cpu", cpu_threads=1)
    assert isinstance(engine, CTranslate2Whisper)


@pytest.mark.slow
def test_serving_asr_injects_the_fault_only_into_the_primary_engine() -> None:
    engine = registry.load_serving_asr("tiny.en", device="cpu", cpu_threads=1, fallback=True,
                                       inject_fault_after=1)
    assert isinstance(engine, FailoverAsr)
    assert isinstance(engine.primary, FaultyAsr) and isinstance(engine.fallback, CTranslate2Whisper)
    assert engine.primary.calls == 0, "the warm-up is not one of the counted batches"
    engine.transcribe_batch([_tone()])
    assert engine.state.active == "primary"
    engine.transcribe_batch([_tone()])  # the primary fails; the fallback answers the same batch
    assert engine.state.active == "fallback" and engine.state.switches == 1
    assert "injected" in (engine.state.last_error or "")

    alone = registry.load_serving_asr("tiny.en", device="cpu", cpu_threads=1, inject_fault_after=0)
    with pytest.raises(InjectedDeviceFault):
        alone.transcribe_batch([_tone()])
