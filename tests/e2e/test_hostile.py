"""End-to-end: hostile and broken clients of `/v1/stream` against a real server (tiny.en).

Each bad input gets its documented error code (docs/protocol.md, docs/security.md) and close
code; the limits (message rate, audio rate, idle timeout, sessions per tenant) refuse what goes
over them; and a good session running at the same time still gets its finals. The server runs
with the default rate limits, an idle timeout of 3 s and at most 3 sessions (open access: one
tenant; the per-tenant cap is tested in test_auth_e2e.py).

After each case the server must still be running and answer /healthz, or the case fails: the
`palabre_server` fixture (tests/conftest.py) checks every server a test used once it has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from palabre_client import stream_file
from server.config import LimitsConfig
from tests.conftest import PalabreServer

pytestmark = pytest.mark.slow

IDLE_S = 3
MAX_SESSIONS = 3
SERVER_ARGS = (
    "--no-memory",
    "--set",
    f"limits.idle_timeout_s={IDLE_S}",
    "--set",
    f"limits.max_sessions={MAX_SESSIONS}",
)
TIMEOUT_S = 30.0
START = json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le", "language": "en"})


@pytest.fixture
def server(palabre_server: Any) -> PalabreServer:
    result: PalabreServer = palabre_server("tiny.en", *SERVER_ARGS)
    return result


async def drain(ws: ClientConnection, stop_at_error: bool = False) -> list[dict[str, Any]]:
    """Events until the connection closes (or the first error, with `stop_at_error`)."""
    events: list[dict[str, Any]] = []
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(TIMEOUT_S):
            async for message in ws:
                events.append(json.loads(message))
                if stop_at_error and events[-1]["type"] == "error":
                    break
    return events


async def exchange(
    url: str, messages: Sequence[str | bytes], *, until_close: bool = False
) -> tuple[list[dict[str, Any]], int | None]:
    """Send `messages`; return the events up to the first error (or the close) and the close code.

    The close code is None while the connection is still open.
    """
    async with connect(url, max_size=None, max_queue=None) as ws:
        for message in messages:
            await ws.send(message)
        events = await drain(ws, stop_at_error=not until_close)
        return events, ws.close_code


async def send_until_answered(
    ws: ClientConnection, messages: Sequence[str | bytes], every: int
) -> list[dict[str, Any]]:
    """Send `messages` as fast as possible, stopping at the first event the server sends
    (looked for every `every` messages) or when it closes; returns that event, if any."""
    with contextlib.suppress(ConnectionClosed):
        for i, message in enumerate(messages, 1):
            await ws.send(message)
            if i % every == 0:
                with contextlib.suppress(TimeoutError):
                    return [json.loads(await asyncio.wait_for(ws.recv(), 0.001))]
    return []


def start(**fields: Any) -> str:
    return json.dumps({"type": "start", "sample_rate": 16000, **fields})


BAD_MESSAGES: list[tuple[str, list[str | bytes], str, int | None]] = [
    ("not JSON", ["{start"], "bad_json", None),
    ("JSON array", ["[1, 2]"], "bad_json", None),
    ("JSON string", ['"start"'], "bad_json", None),
    ("NaN", ['{"type": "start", "sample_rate": NaN}'], "bad_json", None),
    ("Infinity", ['{"type": "start", "sample_rate": -Infinity}'], "bad_json", None),
    ("nested 100 deep", ['{"type": "start", "x": ' + "[" * 100 + "]" * 100 + "}"], "bad_json", None),
    ("a 5000-digit integer", ['{"type": "start", "sample_rate": ' + "9" * 5000 + "}"], "bad_json", None),
    ("missing type", [json.dumps({"sample_rate": 16000})], "unknown_type", None),
    ("numeric type", [json.dumps({"type": 5})], "unknown_type", None),
    ("unknown type", [json.dumps({"type": "begin"})], "unknown_type", None),
    ("1e999 overflows to inf", ['{"type": "start", "sample_rate": 1e999}'], "bad_start", None),
    ("sample_rate 0", [start(sample_rate=0)], "bad_start", None),
    ("negative sample_rate", [start(sample_rate=-16000)], "bad_start", None),
    ("sample_rate 10**30", [start(sample_rate=10**30)], "bad_start", None),
    ("fractional sample_rate", [start(sample_rate=16000.5)], "bad_start", None),
    ("sample_rate as a string", [start(sample_rate="16000")], "bad_start", None),
    ("sample_rate true", [start(sample_rate=True)], "bad_start", None),
    ("no sample_rate", [json.dumps({"type": "start"})], "bad_start", None),
    ("channels 0", [start(channels=0)], "bad_start", None),
    ("channels 1000", [start(channels=1000)], "bad_start", None),
    ("encoding 5", [start(encoding=5)], "bad_start", None),
    ("encoding opus", [start(encoding="opus")], "bad_start", None),
    ("language english", [start(language="english")], "bad_start", None),
    ("conversation id with a slash", [start(conversation_id="../etc")], "bad_start", None),
    ("empty track", [start(track="")], "bad_start", None),
    ("partials yes", [start(partials="yes")], "bad_start", None),
    ("audio before start", [b"\x00\x01" * 800], "not_started", None),
    ("stop before start", [json.dumps({"type": "stop"})], "not_started", None),
    ("second start", [START, START], "already_started", None),
    ("ask without question", [json.dumps({"type": "ask"})], "bad_ask", None),
    ("text over 64 KiB", [json.dumps({"type": "start", "pad": "x" * 70_000})], "frame_too_large", 1009),
    ("audio frame over 1 MiB", [START, b"\x00" * ((1 << 20) + 2)], "frame_too_large", 1009),
]


@pytest.mark.parametrize(
    ("case", "messages", "code", "close"), BAD_MESSAGES, ids=[c[0] for c in BAD_MESSAGES]
)
async def test_bad_messages_get_their_error_codes(
    server: PalabreServer, case: str, messages: list[str | bytes], code: str, close: int | None
) -> None:
    events, close_code = await exchange(server.url, messages, until_close=close is not None)
    errors = [e for e in events if e["type"] == "error"]
    assert errors and errors[0]["code"] == code, f"{case}: {events}"
    assert close_code == close, f"{case}: close code {close_code}, expected {close} (None: still open)"


async def test_errors_that_keep_the_connection_open_let_the_client_go_on(server: PalabreServer) -> None:
    async with connect(server.url) as ws:
        for bad in ("{start", json.dumps({"type": "begin"}), start(sample_rate=3)):
            await ws.send(bad)
            assert json.loads(await ws.recv())["type"] == "error"
        await ws.send(START)
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(json.dumps({"type": "stop"}))
        events = await drain(ws)
    assert events[-1]["type"] == "closed" and ws.close_code == 1000


async def test_invalid_utf8_closes_with_1007(server: PalabreServer) -> None:
    async with connect(server.url) as ws:
        await ws.send(b"\xff\xfe\xfd", text=True)  # a text frame that is not UTF-8
        await drain(ws)
    assert ws.close_code == 1007, "invalid UTF-8 is refused by the WebSocket layer"


async def test_garbage_audio_odd_sizes_and_non_finite_floats_are_survived(server: PalabreServer) -> None:
    random = os.urandom(64_000)
    async with connect(server.url) as ws:
        await ws.send(START)
        assert json.loads(await ws.recv())["type"] == "ready"
        offset = 0
        for size in (1, 3, 7, 4095, 1, 10_001, 2):  # sample boundaries split anywhere
            await ws.send(random[offset : offset + size])
            offset += size
        await ws.send(json.dumps({"type": "stop"}))
        events = await drain(ws)
    assert [e["type"] for e in events if e["type"] in ("error", "closed")] == ["closed"], events

    specials = struct.pack("<8f", float("nan"), float("inf"), -float("inf"), 1e38, -1e38, 0.5, 2.0, -0.0)
    async with connect(server.url) as ws:
        await ws.send(start(encoding="f32le", sample_rate=44100, channels=2))
        assert json.loads(await ws.recv())["type"] == "ready"
        for _ in range(200):
            await ws.send(specials * 100)
        await ws.send(json.dumps({"type": "stop"}))
        events = await drain(ws)
    assert [e["type"] for e in events if e["type"] in ("error", "closed")] == ["closed"], events


async def test_audio_far_faster_than_real_time_is_refused_while_a_good_session_goes_on(
    server: PalabreServer, speech_dir: Path
) -> None:
    limits = LimitsConfig()
    frame = b"\x00\x00" * 1600  # 100 ms
    frames = int((limits.audio_burst_s + 170) * 10)  # the connection is closed long before the end

    async def flood() -> tuple[list[dict[str, Any]], int | None]:
        async with connect(server.url, max_queue=None) as ws:
            await ws.send(START)
            assert json.loads(await ws.recv())["type"] == "ready"
            events = await send_until_answered(ws, [frame] * frames, every=20)
            return events + await drain(ws), ws.close_code

    good = asyncio.create_task(stream_file(server.url, speech_dir / "en_fox.wav", speed=2))
    events, close_code = await flood()
    codes = [e["code"] for e in events if e["type"] == "error"]
    assert codes == ["rate_limited"] and close_code == 1008, (codes, close_code)
    good_events = await good
    finals = [e for e in good_events if e["type"] == "final" and e["text"]]
    assert finals and good_events[-1]["type"] == "closed", good_events
    assert "fox" in " ".join(f["text"].lower() for f in finals)


async def test_message_floods_are_refused(server: PalabreServer) -> None:
    """Tiny audio frames (one sample each) as fast as possible: the message rate limit trips."""
    limits = LimitsConfig()
    async with connect(server.url, max_queue=None) as ws:
        await ws.send(START)
        assert json.loads(await ws.recv())["type"] == "ready"
        events = await send_until_answered(ws, [b"\x00\x00"] * (50 * limits.message_burst), every=500)
        events += await drain(ws)
    codes = [e["code"] for e in events if e["type"] == "error"]
    assert codes == ["rate_limited"] and ws.close_code == 1008, (codes, ws.close_code)


async def test_idle_connections_are_closed(server: PalabreServer) -> None:
    for messages in ([], [START]):
        t0 = time.monotonic()
        async with connect(server.url) as ws:
            for message in messages:
                await ws.send(message)
            events = await drain(ws)
        waited = time.monotonic() - t0
        assert [e["code"] for e in events if e["type"] == "error"] == ["idle_timeout"], events
        assert ws.close_code == 1008 and IDLE_S - 0.5 <= waited <= IDLE_S + 5


async def test_sessions_are_capped(server: PalabreServer) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while stats(server)["sessions"] > 0:  # sessions of earlier tests finishing
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(MAX_SESSIONS):
            ws = await stack.enter_async_context(connect(server.url))
            await ws.send(START)
            assert json.loads(await ws.recv())["type"] == "ready"
        events, close_code = await exchange(server.url, [START], until_close=True)
    assert [e["code"] for e in events if e["type"] == "error"] == ["overloaded"] and close_code == 1013


def stats(server: PalabreServer) -> dict[str, Any]:
    with urllib.request.urlopen(server.http + "/v1/stats", timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result
