"""Multichannel audio through the real server: `stereo_two_speakers.wav` (one speaker per
channel) streamed as interleaved stereo PCM16 on one `/v1/stream` connection with `channels: 2`
becomes two tracks, each transcribed on its own (tiny.en, silero VAD, and with `diarize` the
resemblyzer speaker encoder), stored with their speakers in `GET /v1/conversations/{id}`.

The audio is the shared folder of real recordings: $PALABRE_SHARED_AUDIO, default ../shared/audio
from the repository root; the test skips without it, and fails under CI (`CI` set).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect

from palabre_client.audio import load_channels
from tests.requirements import shared_audio_dir

pytestmark = [pytest.mark.slow, pytest.mark.real_speech]

SAMPLE_RATE = 16_000
FRAME_S = 0.02
SPEED = 4.0
TIMEOUT_S = 180.0


def stereo_frames() -> list[bytes]:
    """The file's two channels, then 1.5 s of silence, as 20 ms frames of interleaved PCM16."""
    left, right = load_channels(shared_audio_dir() / "stereo_two_speakers.wav", SAMPLE_RATE)
    tail = np.zeros(round(1.5 * SAMPLE_RATE), np.float32)
    both = np.stack([np.concatenate([left, tail]), np.concatenate([right, tail])], axis=1)
    pcm = (np.clip(both, -1, 1) * 32767).astype("<i2").tobytes()
    step = round(FRAME_S * SAMPLE_RATE) * 4
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


async def stream_stereo(url: str, start: dict[str, Any]) -> list[dict[str, Any]]:
    """Send `start`, the frames (one malformed frame among them), `stop`; every event until `closed`."""
    events: list[dict[str, Any]] = []
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": SAMPLE_RATE, "language": "en", **start}))
        events.append(json.loads(await ws.recv()))
        assert events[0]["type"] == "ready", events
        frames = stereo_frames()
        for i, frame in enumerate(frames):
            await ws.send(frame)
            if i == 10:
                await ws.send(b"\x00\x01\x02")  # not whole stereo sample frames: refused, nothing else lost
            await asyncio.sleep(FRAME_S / SPEED)
        await ws.send(json.dumps({"type": "stop"}))
        async for message in ws:
            events.append(json.loads(message))
            if events[-1]["type"] == "closed":
                break
    return events


def conversation(http: str, conversation_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{http}/v1/conversations/{conversation_id}", timeout=30) as response:
        body: dict[str, Any] = json.load(response)
    return body


@pytest.mark.parametrize("diarize", [False, True])
async def test_a_stereo_stream_is_two_tracks_with_their_speakers(palabre_server: Any, diarize: bool) -> None:
    server = palabre_server("tiny.en")
    conversation_id = f"stereo-{uuid.uuid4().hex[:8]}"
    start = {"channels": 2, "channel_tracks": ["Alice", "Bob"], "conversation_id": conversation_id}
    async with asyncio.timeout(TIMEOUT_S):
        events = await stream_stereo(server.url, {**start, "diarize": diarize})

    errors = [e for e in events if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["bad_audio"], errors
    assert [e["type"] for e in events].count("ready") == 1 and events[-1]["type"] == "closed"
    finals = [e for e in events if e["type"] == "final" and e["text"].strip()]
    print([(f["track"], f["speaker"], f["text"]) for f in finals])
    assert {f["track"] for f in finals} == {"Alice", "Bob"}
    assert len({f["seq"] for f in finals}) == len(finals)
    text = " ".join(f["text"] for f in finals).lower()
    assert "horizon" in text and "distant" in text

    body = conversation(server.http, conversation_id)
    stored = [u for u in body["utterances"] if u["text"].strip()]
    assert {u["track"] for u in stored} == {"Alice", "Bob"}
    if diarize:  # a label of the conversation on each final, the two voices apart
        assert all(u["speaker"] in ("S1", "S2", "S3") for u in stored), stored
        by_track = {u["track"]: u["speaker"] for u in stored}
        assert by_track["Alice"] != by_track["Bob"]
    else:  # each final's speaker is its channel's track
        assert all(u["speaker"] == u["track"] for u in stored), stored
        speakers = {s["label"]: s for s in body["speakers"]}
        assert set(speakers) == {"Alice", "Bob"}
        assert all(s["talk_time_s"] > 0.5 and s["utterances"] >= 1 for s in speakers.values())
