"""End-to-end: the official `openai` SDK's Realtime client against Palabre's `/v1/realtime`.

The SDK is pointed at a real `palabre serve` (tiny.en) with a custom base URL, configures a
transcription session (pcm16, 24 kHz), streams espeak-ng speech resampled to 24 kHz in 100 ms
appends, and waits for `conversation.item.input_audio_transcription.completed`: with server VAD
(GA client), and with manual turns (`turn_detection: null`, then `input_audio_buffer.commit`,
beta client).
"""

from __future__ import annotations

import asyncio
import base64
import json
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.requirements import require_module

openai = require_module("openai")
soxr = require_module("soxr")
jiwer = require_module("jiwer")

pytestmark = pytest.mark.slow

RATE = 24_000
CHUNK_S = 0.1
TIMEOUT_S = 60.0
MAX_WER = 0.3
LEAD_S = 0.3
TAIL_S = 0.9
"""Silence kept around a sentence: more than the VAD's 480 ms, less than the files' 1 s gaps."""
PACE = 8.0
"""Times real time the tests stream at: under the server's 16x limit, whatever the burst left."""


def clip_24k(speech_dir: Path, manifest: dict[str, Any], name: str, index: int) -> tuple[bytes, str]:
    """One sentence of a test file (with LEAD_S before and TAIL_S after it) as 24 kHz mono PCM16,
    and its reference text."""
    utterance = manifest["files"][name]["utterances"][index]
    with wave.open(str(speech_dir / name), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16_000)
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    begin = max(0, round((utterance["start"] - LEAD_S) * 16_000))
    end = round((utterance["end"] + TAIL_S) * 16_000)
    audio = soxr.resample(samples[begin:end], 16_000, RATE)
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
    return pcm.tobytes(), utterance["text"]


def chunks(pcm: bytes) -> list[str]:
    """Base64 appends of CHUNK_S each."""
    size = round(CHUNK_S * RATE) * 2
    return [base64.b64encode(pcm[i : i + size]).decode() for i in range(0, len(pcm), size)]


async def append_paced(connection: Any, pcm: bytes) -> None:
    """Append `pcm` in CHUNK_S pieces at PACE times real time, as a client that respects the
    server's audio rate limit does (an unpaced test is refused once the 10 s burst is spent)."""
    for audio in chunks(pcm):
        await connection.input_audio_buffer.append(audio=audio)
        await asyncio.sleep(CHUNK_S / PACE)


def normalise(text: str) -> str:
    return " ".join("".join(c if c.isalnum() or c == "'" else " " for c in text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))


def client(port: int) -> Any:
    return openai.AsyncOpenAI(
        api_key="unused",
        base_url=f"http://127.0.0.1:{port}/v1",
        websocket_base_url=f"ws://127.0.0.1:{port}/v1",
    )


async def collect(connection: Any, done: Callable[[list[Any]], bool]) -> list[Any]:
    """Server events until `done(events)` holds."""
    events: list[Any] = []
    async with asyncio.timeout(TIMEOUT_S):
        async for event in connection:
            events.append(event)
            if event.type == "error":
                raise AssertionError(f"server error: {event.error}")
            if done(events):
                return events
    raise AssertionError(f"connection closed early; got {[e.type for e in events]}")


def server_vad_session(model: str) -> dict[str, Any]:
    """A GA transcription session: pcm16 at RATE, English, server VAD, `model` transcribing."""
    return {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": RATE},
                "transcription": {"model": model, "language": "en"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
            }
        },
    }


def completed(events: list[Any]) -> list[Any]:
    return [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]


async def test_server_vad_ga_client(
    palabre_server: Any, speech_dir: Path, speech_manifest: dict[str, Any]
) -> None:
    server = palabre_server("tiny.en")
    pcm, reference = clip_24k(speech_dir, speech_manifest, "en_meeting.wav", 2)
    async with client(server.port).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        assert created.session.type == "transcription"
        await conn.session.update(session=server_vad_session("gpt-4o-transcribe"))
        updated = await conn.recv()
        assert updated.type == "session.updated"
        assert updated.session.audio.input.format.rate == RATE
        await append_paced(conn, pcm)
        events = await collect(conn, lambda got: bool(completed(got)))

    types = [e.type for e in events]
    done = completed(events)[0]
    assert wer(reference, done.transcript) <= MAX_WER, done.transcript
    started = next(e for e in events if e.type == "input_audio_buffer.speech_started")
    committed = next(e for e in events if e.type == "input_audio_buffer.committed")
    assert started.item_id == committed.item_id == done.item_id
    assert started.item_id.startswith("item_")
    assert types.index("input_audio_buffer.speech_started") < types.index("input_audio_buffer.speech_stopped")
    assert types.index("input_audio_buffer.committed") < types.index("conversation.item.added")
    assert 100 <= started.audio_start_ms <= 700  # the sentence starts LEAD_S into the audio
    deltas = "".join(
        e.delta for e in events if e.type.endswith("transcription.delta") and e.item_id == done.item_id
    )
    assert deltas  # partials and/or the final arrive as deltas
    assert done.usage.type == "duration"


async def test_manual_commit_beta_client(
    palabre_server: Any, speech_dir: Path, speech_manifest: dict[str, Any]
) -> None:
    server = palabre_server("tiny.en")
    pcm, reference = clip_24k(speech_dir, speech_manifest, "en_speaker_c.wav", 1)
    connect = client(server.port).beta.realtime.connect(
        model="whisper-1", extra_query={"intent": "transcription"}
    )
    async with connect as conn:
        created = await conn.recv()
        assert created.type == "transcription_session.created"
        await conn.transcription_session.update(
            session={
                "input_audio_format": "pcm16",
                "input_audio_transcription": {"model": "whisper-1", "language": "en"},
                "turn_detection": None,
            }
        )
        updated = await conn.recv()
        assert updated.type == "transcription_session.updated"
        assert updated.session.turn_detection is None
        await append_paced(conn, pcm)
        await conn.input_audio_buffer.commit()
        events = await collect(conn, lambda got: bool(completed(got)))
        await conn.input_audio_buffer.commit(event_id="evt_empty")
        error = await conn.recv()

    types = [e.type for e in events]
    assert "input_audio_buffer.speech_started" not in types
    assert types.count("input_audio_buffer.committed") == 1
    assert "conversation.item.created" in types
    done = completed(events)[0]
    assert wer(reference, done.transcript) <= MAX_WER, done.transcript
    assert error.type == "error"
    assert error.error.code == "input_audio_buffer_commit_empty"
    assert error.error.event_id == "evt_empty"


async def test_errors_and_clear_raw_socket(
    palabre_server: Any, speech_dir: Path, speech_manifest: dict[str, Any]
) -> None:
    """A plain WebSocket client (beta header): errors carry the client's event_id and the session
    stays open; the format is locked once audio arrived; clear drops the turn in progress."""
    from websockets.asyncio.client import connect

    server = palabre_server("tiny.en")
    pcm, _ = clip_24k(speech_dir, speech_manifest, "en_speaker_c.wav", 1)
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?intent=transcription&model=whisper-1"

    async def exchange(ws: Any, event: dict[str, Any]) -> dict[str, Any]:
        await ws.send(json.dumps(event))
        reply: dict[str, Any] = json.loads(await ws.recv())
        return reply

    async with connect(url, additional_headers={"OpenAI-Beta": "realtime=v1"}) as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == "transcription_session.created"
        reply = await exchange(ws, {"type": "response.create", "event_id": "evt_r"})
        assert (reply["type"], reply["error"]["param"], reply["error"]["event_id"]) == (
            "error",
            "type",
            "evt_r",
        )
        reply = await exchange(ws, {"type": "input_audio_buffer.commit", "event_id": "evt_c"})
        assert reply["error"]["code"] == "input_audio_buffer_commit_empty"
        reply = await exchange(
            ws, {"type": "transcription_session.update", "session": {"turn_detection": None}}
        )
        assert reply["type"] == "transcription_session.updated"
        half = len(pcm) // 4 * 2
        await ws.send(
            json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[:half]).decode()})
        )
        update = {
            "type": "transcription_session.update",
            "event_id": "evt_u",
            "session": {"input_audio_format": "g711_alaw"},
        }
        reply = await exchange(ws, update)
        assert (reply["error"]["code"], reply["error"]["event_id"]) == ("session_locked", "evt_u")
        assert (await exchange(ws, {"type": "input_audio_buffer.clear"}))[
            "type"
        ] == "input_audio_buffer.cleared"
        reply = await exchange(ws, {"type": "input_audio_buffer.commit"})
        assert reply["error"]["code"] == "input_audio_buffer_commit_empty"
        await ws.send(
            json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[half:]).decode()})
        )
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(TIMEOUT_S):
            while not events or events[-1]["type"] != "conversation.item.input_audio_transcription.completed":
                events.append(json.loads(await ws.recv()))
    types = [e["type"] for e in events]
    assert "error" not in types
    assert types.count("input_audio_buffer.committed") == 1
    assert "conversation.item.created" in types


async def test_a_diarizing_model_labels_each_completed_with_its_speaker(
    palabre_server: Any, speech_dir: Path, speech_manifest: dict[str, Any]
) -> None:
    """`gpt-4o-transcribe-diarize` turns on Palabre's diarization: two synthesised voices taking
    turns come back as two alternating speaker labels on the `completed` events (an extension
    field the SDK keeps)."""
    server = palabre_server("tiny.en")
    turns = [(f"en_speaker_{who}.wav", index) for index in (0, 1) for who in ("a", "b")]
    clips = [clip_24k(speech_dir, speech_manifest, name, index) for name, index in turns]
    async with client(server.port).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session=server_vad_session("gpt-4o-transcribe-diarize"))
        assert (await conn.recv()).type == "session.updated"
        for pcm, _ in clips:
            await append_paced(conn, pcm)
        events = await collect(conn, lambda got: len(completed(got)) >= len(clips))

    done = [e for e in completed(events) if e.transcript.strip()]
    for event, (_, reference) in zip(done, clips, strict=True):
        assert wer(reference, event.transcript) <= 0.5, (reference, event.transcript)
    speakers = [getattr(e, "speaker", None) for e in done]
    assert speakers[0] is not None and speakers[1] is not None, speakers
    assert speakers[0] != speakers[1], speakers
    assert speakers == [speakers[0], speakers[1], speakers[0], speakers[1]], speakers
