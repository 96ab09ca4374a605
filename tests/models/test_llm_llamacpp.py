"""llama.cpp engine with the real bundled Gemma 3 270M (a base model), on one CPU thread."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.errors import ModelError, ModelNotFound
from models.llm_llamacpp import LlamaCppEngine, ensure_gemma
from models.registry import load_llm
from stream.answers import CANNOT_ANSWER, Passage, build_answer_request, fallback_answer, finalize_answer
from stream.interfaces import LlmRequest
from tests.requirements import require_module

require_module("llama_cpp")  # declared in the `llm` extra, which ./dev installs

pytestmark = pytest.mark.slow  # a real model: ~15 s in all on 2 idle cores (GGUF assembly 2.5 s)

COUNTING = "Count: 1, 2, 3, 4, 5,"


@pytest.fixture(scope="module")
def llm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache root: the GGUF is assembled (and verified) by this test module."""
    return tmp_path_factory.mktemp("llm-cache")


@pytest.fixture(scope="module")
def gemma(llm_cache: Path) -> Iterator[LlamaCppEngine]:
    # One thread: on a busy machine (tests run in parallel with others) two llama.cpp threads
    # waiting for each other were 5-15x slower than one (bench/llm.py).
    engine = load_llm("gemma3-270m", device="cpu", n_threads=1, cache_dir=llm_cache)
    assert isinstance(engine, LlamaCppEngine)
    yield engine


def test_bundled_model_is_assembled_once_then_reused(llm_cache: Path, gemma: LlamaCppEngine) -> None:
    path = ensure_gemma(llm_cache / "gemma3-270m")
    before = path.stat()
    t0 = time.perf_counter()
    again = ensure_gemma(llm_cache / "gemma3-270m")
    elapsed = time.perf_counter() - t0
    after = again.stat()
    assert again == path and path.parent == llm_cache / "gemma3-270m"
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert elapsed < 1.0  # the marker is trusted: no 250 MB re-hash (~2.5 s; mtime above proves no rewrite)
    marker = json.loads((path.parent / ".verified.json").read_text())
    assert marker["size"] == after.st_size
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".gemma")]  # no temporary left


def test_a_corrupt_file_is_rebuilt(tmp_path: Path) -> None:
    directory = tmp_path / "gemma3-270m"
    directory.mkdir()
    good = ensure_gemma(directory)
    size = good.stat().st_size
    with good.open("r+b") as f:  # same size, different bytes, new mtime: the marker no longer matches
        f.seek(size // 2)
        f.write(b"garbage!")
    os.utime(good, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    rebuilt = ensure_gemma(directory)
    assert rebuilt == good and rebuilt.stat().st_size == size
    with rebuilt.open("rb") as f:
        f.seek(size // 2)
        assert f.read(8) != b"garbage!"


def test_bundled_model_is_a_base_model_on_cpu(gemma: LlamaCppEngine) -> None:
    assert gemma.name == "gemma3-270m"
    assert gemma.device == "cpu"
    assert gemma.chat is False
    with pytest.raises(ValueError, match="not a chat model"):
        gemma.generate(LlmRequest(messages=(("user", "hi"),)))


def test_streams_several_pieces(gemma: LlamaCppEngine) -> None:
    request = LlmRequest(prompt="The days of the week are Monday, Tuesday,", max_tokens=12)
    pieces = list(gemma.generate(request))
    assert len(pieces) >= 3
    assert "Wednesday" in "".join(pieces)
    stats = gemma.last_stats
    assert stats.pieces == len(pieces) and not stats.cancelled
    assert stats.first_piece_seconds is not None and stats.first_piece_seconds < stats.total_seconds


def test_stops_on_the_stop_sequence(gemma: LlamaCppEngine) -> None:
    text = "".join(gemma.generate(LlmRequest(prompt=COUNTING, max_tokens=40, stop=("8",))))
    assert "6" in text and "7" in text
    assert "8" not in text and "9" not in text
    assert not gemma.last_stats.cancelled


def test_closing_the_iterator_stops_decoding(gemma: LlamaCppEngine) -> None:
    prompt_tokens = gemma.count_tokens(COUNTING) + 1  # + BOS
    stream = gemma.generate(LlmRequest(prompt=COUNTING, max_tokens=200))
    got = [next(stream) for _ in range(3)]
    t0 = time.perf_counter()
    stream.close()  # type: ignore[attr-defined]
    assert time.perf_counter() - t0 < 2.0  # loose: 197 more tokens would take ~5 s; the counts prove it
    stats = gemma.last_stats
    assert stats.cancelled and stats.pieces == 3 and len(got) == 3
    assert stats.context_tokens <= prompt_tokens + 5  # decoding stopped, not run on to 200 tokens
    # The engine is free again at once.
    assert "".join(gemma.generate(LlmRequest(prompt=COUNTING, max_tokens=4)))


def test_cancel_event_from_another_thread_stops_decoding(gemma: LlamaCppEngine) -> None:
    cancel = threading.Event()
    pieces: list[str] = []

    def consume() -> None:
        for piece in gemma.generate(LlmRequest(prompt=COUNTING, max_tokens=200), cancel=cancel):
            pieces.append(piece)
            if len(pieces) == 2:
                threading.Timer(0.0, cancel.set).start()

    worker = threading.Thread(target=consume)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert gemma.last_stats.cancelled and len(pieces) < 10


BUDGET_PASSAGES = [
    Passage("m:3", 3, "The marketing budget for next year is four hundred thousand euros.", 42.0, "Ana"),
    Passage("m:7", 7, "We should hire two more engineers before the summer.", 80.5, "Tom"),
    Passage("m:1", 1, "Thanks everyone for joining the call today.", 2.0, "Ana"),
]


def test_grounded_answer_mentions_the_amount_and_cites_it(gemma: LlamaCppEngine) -> None:
    question = "What is the marketing budget?"
    request = build_answer_request(question, BUDGET_PASSAGES, chat=gemma.chat)
    raw = "".join(gemma.generate(request))
    print(f"model answer: {raw!r} (first piece {gemma.last_stats.first_piece_seconds:.2f} s)")
    assert "four hundred thousand" in raw.lower() or "400" in raw
    assert "\n" not in raw and len(raw) < 80  # one short line: stopped by the stop sequence
    assert "[1]" in raw  # observed: ' Four hundred thousand euros [1]'
    final = finalize_answer(raw, BUDGET_PASSAGES, question)
    assert final.grounded and final.citations == ["m:3"]


def test_question_the_passages_do_not_answer(gemma: LlamaCppEngine) -> None:
    question = "Who is the new sales director?"
    request = build_answer_request(question, BUDGET_PASSAGES, chat=gemma.chat)
    raw = "".join(gemma.generate(request))
    print(f"model answer: {raw!r}")
    final = finalize_answer(raw, BUDGET_PASSAGES, question)
    # Whatever a 270M base model says, the user never gets an ungrounded claim: the only grounded
    # answer is the refusal itself; anything else is replaced by the fallback quoting passage [1].
    if final.grounded:
        assert final.text == CANNOT_ANSWER, final
    else:
        assert final.text == fallback_answer(BUDGET_PASSAGES), final
        assert final.citations == [BUDGET_PASSAGES[0].utterance_id], final
    # Observed: the refusal. The claim it might make instead is replaced, whatever it cites.
    claim = finalize_answer(" The new sales director is Ken Adams [1].", BUDGET_PASSAGES, question)
    assert (claim.grounded, claim.text) == (False, fallback_answer(BUDGET_PASSAGES)), claim


def test_load_llm_names(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="gemma3-270m"):
        load_llm("no-such-model")
    with pytest.raises(ModelNotFound, match="GGUF"):
        load_llm(str(tmp_path / "missing.gguf"))
    exl2 = tmp_path / "exl2"
    exl2.mkdir()
    (exl2 / "config.json").write_text("{}")
    (exl2 / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="CUDA"):
        load_llm(str(exl2), device="cpu")
