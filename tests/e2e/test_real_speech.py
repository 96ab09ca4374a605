"""Real speech through the real server: recorded files with reference texts, WER against `refs.json`.

The audio is the shared folder of real recordings (`tests/requirements.shared_audio_dir`:
$PALABRE_SHARED_AUDIO, default ../shared/audio): jfk.flac (11 s, a 1961 broadcast) and ten
read sentences of two speakers (sb_*.wav, 2-3 s each). Text is normalised and WER counted as
the benchmarks do (`bench.common.normalise`, `bench.common.WordErrors`).

Thresholds are the offline WER of the same model plus a margin for streaming (VAD cuts, finals
cut mid-sentence, a loaded machine). Offline figures, faster-whisper 1.x on each whole file,
tiny.en int8 CPU, language en, greedy (beam 1, as the server decodes), measured 2026-12-03:

    jfk.flac                        0.000  (0/22 words)
    the ten sb_*.wav                0.040  (3/75: "tear a … pad" → "Tera … pan")
    jfk.flac at 8 kHz μ-law         0.045  (1/22: "Americans" → "American"; see test_telephony.py)

Streamed (2x real time, 2 loaded cores, 2026-12-03): jfk 0.000, sb one session 0.053, sb ten
sessions 0.040, jfk over Twilio 0.045. Margin: +0.10 absolute on every test (about two words
of jfk.flac, seven of the sb set).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.common import SAMPLE_RATE, Reference, WordErrors, load_references
from palabre_client import to_pcm16
from palabre_client.client import ResilientStream
from tests.requirements import require_module, shared_audio_dir

pytestmark = [pytest.mark.slow, pytest.mark.real_speech]

MARGIN = 0.10
"""Allowed streaming WER above the offline WER of the same model (module docstring)."""
OFFLINE_WER_JFK = 0.0
OFFLINE_WER_SB = 0.04
SPEED = 2.0
"""How much faster than real time the audio is sent."""
GAP_S = 1.0
"""Silence between the sentences of the one-session test: enough for the VAD to end each one."""
TIMEOUT_S = 180.0
SB_NAMES = tuple(f"sb_spk{speaker}_snt{n}.wav" for speaker in (1, 2) for n in range(1, 6))


@pytest.fixture(scope="module")
def audio_dir() -> Path:
    """The shared real speech (skips locally, fails under CI, when missing)."""
    require_module("jiwer")
    return shared_audio_dir()


async def transcribe(server: Any, samples: np.ndarray[Any, Any]) -> str:
    """Stream 16 kHz samples as one session at SPEED; the text of its finals in order."""
    stream = ResilientStream(server.url, to_pcm16(samples), speed=SPEED, max_reconnects=0)
    async with asyncio.timeout(TIMEOUT_S):
        events = await stream.run()
    assert not [e for e in events if e.get("type") == "error"], events
    return " ".join(str(f["text"]).strip() for f in stream.finals)


def with_gaps(refs: list[Reference]) -> np.ndarray[Any, Any]:
    """The files one after the other, GAP_S of silence after each."""
    gap = np.zeros(round(GAP_S * SAMPLE_RATE), np.float32)
    return np.concatenate([part for ref in refs for part in (ref.samples, gap)])


async def test_jfk(palabre_server: Any, audio_dir: Path) -> None:
    """jfk.flac streamed in one session: WER ≤ offline 0.000 + MARGIN."""
    (ref,) = load_references(audio_dir, ["jfk.flac"])
    text = await transcribe(palabre_server("tiny.en"), with_gaps([ref]))
    errors = WordErrors()
    errors.add(ref.text, text)
    print(f"WER {errors.wer:.3f} ({errors}): {text}")
    assert errors.wer <= OFFLINE_WER_JFK + MARGIN, (errors, text)


async def test_read_sentences_one_session(palabre_server: Any, audio_dir: Path) -> None:
    """The ten sb_*.wav one after the other in one session: WER ≤ offline 0.040 + MARGIN."""
    refs = load_references(audio_dir, SB_NAMES)
    text = await transcribe(palabre_server("tiny.en"), with_gaps(refs))
    errors = WordErrors()
    errors.add(" ".join(r.text for r in refs), text)
    print(f"WER {errors.wer:.3f} ({errors}): {text}")
    assert errors.wer <= OFFLINE_WER_SB + MARGIN, (errors, text)


async def test_read_sentences_concurrent_sessions(palabre_server: Any, audio_dir: Path) -> None:
    """The ten sb_*.wav as ten sessions at once (batched together): WER ≤ offline 0.040 + MARGIN."""
    refs = load_references(audio_dir, SB_NAMES)
    server = palabre_server("tiny.en")
    texts = await asyncio.gather(*(transcribe(server, with_gaps([ref])) for ref in refs))
    errors = WordErrors()
    for ref, text in zip(refs, texts, strict=True):
        errors.add(ref.text, text)
    print(f"WER {errors.wer:.3f} ({errors}): {texts}")
    assert errors.wer <= OFFLINE_WER_SB + MARGIN, (errors, dict(zip(SB_NAMES, texts, strict=True)))
