"""End-to-end: the connection limits on every transport (`[limits]`), against real servers.

Two servers with tight limits: one refuses audio faster than 2x real time (after a 1 s burst);
the other paces it at 4x instead (`audio_rate_policy = "pace"`) and closes connections idle for
2 s. A Twilio Media Stream and an AudioSocket call that send audio as fast as they can are cut
off; the same audio on `/v1/stream` under "pace" is transcribed whole, just no faster than the
rate; a Twilio stream and an AudioSocket call that go quiet are closed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
import uuid
import wave
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from palabre_client import stream_file
from server.codecs.audiosocket import Audio, CallId, pack

pytestmark = pytest.mark.slow

IDLE_S = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def refusing_args() -> tuple[str, ...]:
    return ("tiny.en", "--no-memory", "--audiosocket-port", str(free_port()),
            "--set", "limits.audio_rate=2", "--set", "limits.audio_burst_s=1")


@pytest.fixture(scope="module")
def pacing_args() -> tuple[str, ...]:
    return ("tiny.en", "--no-memory", "--audiosocket-port", str(free_port()),
            "--set", "limits.audio_rate=4", "--set", "limits.audio_burst_s=1",
            "--set", "limits.audio_rate_policy=pace", "--set", f"limits.idle_timeout_s={IDLE_S}")


def audiosocket_port(server: Any) -> int:
    return int(server.args[server.args.index("--audiosocket-port") + 1])


def twilio_start(call: str) -> str:
    start = {"streamSid": f"MZ{call}", "callSid": f"CA{call}", "tracks": ["inbound"], "customParameters": {}}
    return json.dumps({"event": "start", "start": start})


def twilio_media(payload: bytes) -> str:
    media = {"track": "inbound", "payload": base64.b64encode(payload).decode()}
    return json.dumps({"event": "media", "media": media})


async def test_twilio_audio_faster_than_the_rate_is_refused(
    palabre_server: Any, refusing_args: tuple[str, ...]
) -> None:
    server = palabre_server(*refusing_args)
    silence = b"\xff" * 160  # 20 ms of μ-law silence
    async with connect(f"ws://127.0.0.1:{server.port}/v1/telephony/twilio") as ws:
        await ws.send(twilio_start(uuid.uuid4().hex[:8]))
        with pytest.raises(ConnectionClosed):
            for _ in range(50 * 60):  # a minute of audio, as fast as possible
                await ws.send(twilio_media(silence))
            await ws.recv()
    assert ws.close_code == 1008 and ws.close_reason == "rate_limited", (ws.close_code, ws.close_reason)


async def test_audiosocket_audio_faster_than_the_rate_is_refused(
    palabre_server: Any, refusing_args: tuple[str, ...]
) -> None:
    server = palabre_server(*refusing_args)
    reader, writer = await asyncio.open_connection("127.0.0.1", audiosocket_port(server))
    try:
        writer.write(pack(CallId(uuid.uuid4())))
        frame = pack(Audio(b"\x00\x00" * 160))  # 20 ms of silence, 8 kHz s16le
        with pytest.raises(ConnectionError):  # the server closes mid-flood: a reset, or a read of b""
            for _ in range(50 * 60):
                writer.write(frame)
                await writer.drain()
            async with asyncio.timeout(5):
                if await reader.read() == b"":
                    raise ConnectionResetError("closed by the server")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_stream_faster_than_the_rate_is_paced_not_refused(
    palabre_server: Any, pacing_args: tuple[str, ...], speech_dir: Path
) -> None:
    server = palabre_server(*pacing_args)
    path = speech_dir / "en_fox.wav"
    with wave.open(str(path), "rb") as w:
        seconds = w.getnframes() / w.getframerate()
    started = time.monotonic()
    events = await stream_file(server.url, path, speed=0)  # as fast as the connection allows
    elapsed = time.monotonic() - started
    assert events[-1]["type"] == "closed", events[-3:]
    assert not [e for e in events if e["type"] == "error"], events
    assert "fox" in " ".join(e["text"].lower() for e in events if e["type"] == "final")
    assert elapsed >= (seconds - 1.0) / 4 - 0.3, (elapsed, seconds)  # 4x real time after a 1 s burst


async def test_quiet_twilio_stream_is_closed(palabre_server: Any, pacing_args: tuple[str, ...]) -> None:
    server = palabre_server(*pacing_args)
    async with connect(f"ws://127.0.0.1:{server.port}/v1/telephony/twilio") as ws:
        await ws.send(twilio_start(uuid.uuid4().hex[:8]))
        started = time.monotonic()
        async with asyncio.timeout(IDLE_S + 10):
            await ws.wait_closed()
    assert ws.close_code == 1008 and ws.close_reason == "idle_timeout", (ws.close_code, ws.close_reason)
    assert time.monotonic() - started >= IDLE_S - 0.5


async def test_quiet_audiosocket_call_is_closed(palabre_server: Any, pacing_args: tuple[str, ...]) -> None:
    server = palabre_server(*pacing_args)
    reader, writer = await asyncio.open_connection("127.0.0.1", audiosocket_port(server))
    try:
        writer.write(pack(CallId(uuid.uuid4())))
        await writer.drain()
        started = time.monotonic()
        async with asyncio.timeout(IDLE_S + 10):
            assert await reader.read() == b""
        assert time.monotonic() - started >= IDLE_S - 0.5
    finally:
        writer.close()
        await writer.wait_closed()
