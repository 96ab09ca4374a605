"""End-to-end: a vocabulary makes the real server (tiny.en) write a team's unusual names.

An espeak-ng sentence full of names tiny.en has never heard is streamed through `/v1/stream` with
and without `start.vocabulary` (the Python SDK), and through `/v1/realtime` with the official
`openai` SDK's `transcription.prompt`. Measured first (bench/vocabulary.py): without a vocabulary
tiny.en writes none of this sentence's names, with it all three ("Our competitor, Zyphrex, Open
the office in Lion, and Kessandra Vollmer will lead the Palabre rollout").
"""

from __future__ import annotations

import asyncio
import base64
import io
import subprocess
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from palabre_client import PalabreError, stream_file
from tests.requirements import require_module, require_tool

openai = require_module("openai")
soxr = require_module("soxr")

pytestmark = pytest.mark.slow

SENTENCE = ("Our competitor Zyphrex opened an office in Lyon, and Kessandra Vollmer will lead "
            "the Palabre rollout.")
VOCABULARY = ["Zyphrex", "Kessandra Vollmer", "Palabre"]
NAMES = ("Kessandra Vollmer", "Palabre")
"""The names asserted (measured: heard with the vocabulary, never without)."""


def espeak(text: str, rate: int) -> np.ndarray:
    """espeak-ng speech with a second of silence after it, at `rate` Hz, as int16."""
    require_tool("espeak-ng")
    command = ["espeak-ng", "-v", "en-us", "--stdout", text]
    wav = subprocess.run(command, capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        source = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    audio = np.concatenate([np.zeros(source // 2, np.float32), pcm, np.zeros(source, np.float32)])
    resampled = soxr.resample(audio, source, rate)
    return np.clip(np.round(resampled * 32767), -32768, 32767).astype("<i2")


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


async def test_stream_with_vocabulary_writes_the_names(palabre_server: Any, tmp_path: Path) -> None:
    server = palabre_server("tiny.en")
    wav = write_wav(tmp_path / "names.wav", espeak(SENTENCE, 16_000), 16_000)

    async def transcript(vocabulary: list[str]) -> str:
        events = await stream_file(server.url, wav, language="en", speed=4.0, vocabulary=vocabulary)
        return " ".join(e["text"] for e in events if e["type"] == "final")

    with_vocabulary = await transcript(VOCABULARY)
    without = await transcript([])
    assert all(name in with_vocabulary for name in NAMES), with_vocabulary
    assert not any(name in without for name in NAMES), without


async def test_a_bad_vocabulary_is_a_bad_start(palabre_server: Any, tmp_path: Path) -> None:
    server = palabre_server("tiny.en")
    wav = write_wav(tmp_path / "short.wav", np.zeros(1600, "<i2"), 16_000)
    with pytest.raises(PalabreError) as info:
        await stream_file(server.url, wav, vocabulary=[f"term{i}" for i in range(101)])
    assert info.value.code == "bad_start" and "at most 100" in str(info.value)


async def test_realtime_prompt_is_the_vocabulary(palabre_server: Any) -> None:
    server = palabre_server("tiny.en")
    rate = 24_000
    pcm = espeak(SENTENCE, rate).tobytes()
    client = openai.AsyncOpenAI(api_key="unused", base_url=f"http://127.0.0.1:{server.port}/v1",
                                websocket_base_url=f"ws://127.0.0.1:{server.port}/v1")
    connect = client.beta.realtime.connect(model="whisper-1", extra_query={"intent": "transcription"})
    async with connect as conn:
        assert (await conn.recv()).type == "transcription_session.created"
        await conn.transcription_session.update(session={
            "input_audio_format": "pcm16",
            "input_audio_transcription": {"model": "whisper-1", "language": "en",
                                          "prompt": ", ".join(VOCABULARY)},
            "turn_detection": None,
        })
        updated = await conn.recv()
        assert updated.session.input_audio_transcription.prompt == ", ".join(VOCABULARY)
        size = rate // 10 * 2
        for i in range(0, len(pcm), size):
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + size]).decode())
        await conn.input_audio_buffer.commit()
        async with asyncio.timeout(60):
            async for event in conn:
                assert event.type != "error", event
                if event.type == "conversation.item.input_audio_transcription.completed":
                    break
    assert all(name in event.transcript for name in NAMES), event.transcript
