"""Live fuzzing: malformed messages and frames against a running `palabre serve`, a good session alongside.

    .venv/bin/python -m bench.fuzz_live --messages 10000 [--seed 1] [--audio-dir ../shared/audio]

One server (tiny.en, no memory) with every listener: `/v1/stream`, the Twilio media stream,
AudioSocket (TCP), the OpenAI Realtime endpoint and SIP (UDP). Generated bad input, shared out
over the five (`--messages` in all, each connection carrying a handful):

- `/v1/stream`: broken JSON, wrong types and values in `start`, unknown types, audio before
  `start`, odd-sized and huge binary frames, invalid UTF-8, floods;
- Twilio: non-JSON, unknown events, `start` with broken fields, `media` with bad base64;
- AudioSocket: frames of unknown kinds, wrong lengths, truncated headers, audio before the UUID;
- Realtime: unknown event types, `session.update` with wrong fields, `input_audio_buffer.append`
  with bad base64, non-JSON;
- SIP: random datagrams and requests with mangled start lines and headers.

Checked, and printed: every `error` the server sends has a documented code (`stream.errors.ErrorCode`
for /v1/stream and Realtime; Realtime's own `error.code`s are listed too), every close code is a
documented one (`stream.errors.CloseCode`, or 1007 for invalid UTF-8); the server is up and
answers /healthz at the end; its RSS before, after and through the run stays bounded (at most
`RSS_GROWTH_LIMIT_MB` in all, and in a long run at most `RSS_LATE_GROWTH_LIMIT_MB` over its last
quarter, where a leak shows and a filling allocator does not); and a well-behaved session streaming
jfk.flac at the same time gets the same transcript as without the fuzzing (nothing lost).
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench.common import (
    DEFAULT_AUDIO_DIR,
    REPO_ROOT,
    ServerProcess,
    WordErrors,
    command_line,
    load_references,
    tcp_open,
)
from bench.streams import free_port
from palabre_client import to_pcm16
from palabre_client.client import ResilientStream
from stream.errors import CloseCode, ErrorCode

DOCUMENTED_CLOSES = {c.value for c in CloseCode} | {1007}
"""Close codes the server may send: its CloseCode list, and 1007 (invalid UTF-8, by websockets)."""
DOCUMENTED_ERRORS = {c.value for c in ErrorCode}
PER_CONNECTION = 8
"""Bad messages per connection (the server closes many connections at the first one anyway)."""
CONCURRENCY = 6
"""Connections fuzzed at once per transport."""
RECEIVE_S = 2.0
"""How long a fuzzing connection waits for answers after its last message."""
RSS_GROWTH_LIMIT_MB = 300.0
"""Most the server's RSS may grow over the whole run: its allocator's arenas fill while hundreds
of sessions start and end at once on five transports (measured: +125 MB at 10,000 messages)."""
RSS_LATE_GROWTH_LIMIT_MB = 40.0
"""Most it may grow over the last quarter of a long run (`LATE_CHECK_MESSAGES` or more): by then
the arenas are full (40,000 messages: 559, 594, 655, 743 MB at each tenth up to the seventh, then
flat), and memory that keeps growing is a leak."""
LATE_CHECK_MESSAGES = 10_000
RSS_SAMPLE_S = 1.0


@dataclass
class Tally:
    """What the fuzzing sent and what came back."""

    messages: Counter[str] = field(default_factory=Counter)
    """Messages or frames sent, by transport."""
    errors: Counter[str] = field(default_factory=Counter)
    """`error` events received, by transport:code."""
    closes: Counter[str] = field(default_factory=Counter)
    """Connection ends, by transport:close code (none: the connection stayed open)."""
    undocumented: list[str] = field(default_factory=list)

    def total(self) -> int:
        """Messages sent over every transport."""
        return sum(self.messages.values())


# --- generators -----------------------------------------------------------------------------------


def junk_value(rng: random.Random) -> Any:
    """A JSON value of a random type and size."""
    return rng.choice(
        [
            None,
            True,
            -1,
            0,
            10**30,
            16000.5,
            -1e308,
            "",
            "x" * rng.randint(1, 300),
            "../etc",
            [],
            [1, [2, [3]]],
            {},
            {"a": {"b": None}},
        ]
    )


def mutate_json(rng: random.Random, message: dict[str, Any]) -> str:
    """`message` with a field dropped, retyped or added; sometimes broken JSON text."""
    out = dict(message)
    action = rng.randrange(6)
    if action == 0 and out:
        out.pop(rng.choice(list(out)))
    elif action == 1 and out:
        out[rng.choice(list(out))] = junk_value(rng)
    elif action == 2:
        out[rng.choice(["x", "type", "event", "extra", "\u0000"])] = junk_value(rng)
    elif action == 3:
        text = json.dumps(out)
        return text[: rng.randrange(max(1, len(text)))]
    elif action == 4:
        return rng.choice(["[1, 2]", '"start"', "NaN", "{" * 50, "null", "{}", "1e999"])
    return json.dumps(out)


def junk_bytes(rng: random.Random, most: int = 4096) -> bytes:
    """Random bytes, of a random (often odd) length."""
    return rng.randbytes(rng.choice([0, 1, 3, 7, rng.randrange(most)]))


STREAM_START = {"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le", "language": "en"}


def stream_message(rng: random.Random) -> str | bytes:
    """One bad message for /v1/stream."""
    kind = rng.randrange(5)
    if kind == 0:
        return junk_bytes(rng)
    if kind == 1:
        valid: dict[str, Any] = rng.choice([STREAM_START, {"type": "stop"}, {"type": "ask", "question": "?"}])
        return mutate_json(rng, valid)
    if kind == 2:
        return json.dumps({"type": rng.choice(["begin", "", "START", "partial", 5])})
    if kind == 3:
        return mutate_json(rng, {**STREAM_START, "channels": rng.choice([0, 9, 1000]), "track": ""})
    return b"\x00" * rng.choice([1, 3, 999, 70_000])


def twilio_message(rng: random.Random) -> str | bytes:
    """One bad message for the Twilio media stream."""
    start = {
        "event": "start",
        "streamSid": "MZ1",
        "start": {
            "streamSid": "MZ1",
            "callSid": "CA1",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
    media = {"event": "media", "media": {"track": "inbound", "payload": "!!not base64!!"}}
    kind = rng.randrange(4)
    if kind == 0:
        return junk_bytes(rng, 512)
    if kind == 1:
        return mutate_json(rng, start)
    if kind == 2:
        return mutate_json(rng, media)
    return json.dumps({"event": rng.choice(["mark", "dtmf", "", "clear", None])})


def realtime_message(rng: random.Random) -> str | bytes:
    """One bad event for /v1/realtime."""
    update = {"type": "session.update", "session": {"input_audio_format": "pcm16"}}
    append = {"type": "input_audio_buffer.append", "audio": "%%%"}
    kind = rng.randrange(4)
    if kind == 0:
        return mutate_json(rng, update)
    if kind == 1:
        return mutate_json(rng, append)
    if kind == 2:
        return json.dumps({"type": rng.choice(["response.create", "x", "", "conversation.item.create"])})
    return junk_bytes(rng, 256)


def audiosocket_frame(rng: random.Random) -> bytes:
    """One bad AudioSocket frame (kind, 16-bit big-endian length, payload)."""
    kind = rng.choice([0x01, 0x03, 0x10, 0x42, 0xFF, rng.randrange(256)])
    payload = junk_bytes(rng, 700)
    length = rng.choice([len(payload), len(payload) + 5, 0xFFFF, 0])
    frame = bytes([kind]) + length.to_bytes(2, "big") + payload
    return frame[: rng.randrange(1, len(frame) + 1)] if rng.random() < 0.2 else frame


def sip_datagram(rng: random.Random, port: int) -> bytes:
    """One bad SIP datagram: garbage, or a request with something mangled."""
    if rng.random() < 0.3:
        return junk_bytes(rng, 1400)
    method = rng.choice(["INVITE", "OPTIONS", "BYE", "ACK", "CANCEL", "FOO", ""])
    branch = "z9hG4bK" + uuid.uuid4().hex[:10]
    lines = [
        f"{method} sip:palabre@127.0.0.1:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5099;branch={branch}",
        "From: <sip:fuzz@127.0.0.1>;tag=1",
        "To: <sip:palabre@127.0.0.1>",
        f"Call-ID: {uuid.uuid4().hex}",
        f"CSeq: {rng.choice(['1', 'x', '-5', '99999999999'])} {method}",
        f"Content-Length: {rng.choice(['0', '10', 'abc', '-1'])}",
    ]
    if rng.random() < 0.5:
        lines.pop(rng.randrange(len(lines)))
    if rng.random() < 0.3:
        lines[rng.randrange(len(lines))] = junk_bytes(rng, 80).decode("latin-1")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace")


# --- transports -----------------------------------------------------------------------------------


def record_error(tally: Tally, transport: str, event: dict[str, Any]) -> None:
    """Count an `error` event; note it when its code is not a documented one."""
    if transport == "realtime":
        error = event.get("error") or {}
        code = str(error.get("code"))
        tally.errors[f"realtime:{code}"] += 1
        return  # Realtime's codes are its own (docs/realtime.md); the event shape is checked below
    code = str(event.get("code"))
    tally.errors[f"{transport}:{code}"] += 1
    if code not in DOCUMENTED_ERRORS:
        tally.undocumented.append(f"{transport}: error code {code!r}: {event}")


async def websocket_connection(
    tally: Tally, transport: str, url: str, messages: list[str | bytes], first: str | None
) -> None:
    """Send `messages` (after `first`, when given) on one WebSocket; read what comes back."""
    try:
        async with connect(url, max_size=None, open_timeout=30) as ws:
            if first is not None:
                await ws.send(first)
            for message in messages:
                await ws.send(message)
                tally.messages[transport] += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECEIVE_S):
                    async for text in ws:
                        event = json.loads(text)
                        if event.get("type") == "error":
                            record_error(tally, transport, event)
            code = ws.close_code  # None: still open, the server ignored or answered what it got
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd is not None else None
    except InvalidStatus as refused:
        tally.closes[f"{transport}:http {refused.response.status_code}"] += 1
        return
    tally.closes[f"{transport}:{'open' if code is None else code}"] += 1
    if code is not None and code not in DOCUMENTED_CLOSES:
        tally.undocumented.append(f"{transport}: close code {code}")


async def audiosocket_connection(tally: Tally, port: int, frames: list[bytes], with_uuid: bool) -> None:
    """Send `frames` on one AudioSocket TCP connection; the server closes or ignores."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if with_uuid:
            writer.write(bytes([0x01, 0, 16]) + uuid.uuid4().bytes)
        for frame in frames:
            writer.write(frame)
            tally.messages["audiosocket"] += 1
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(RECEIVE_S):
                await reader.read()
        tally.closes["audiosocket:closed" if reader.at_eof() else "audiosocket:open"] += 1
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def sip_burst(tally: Tally, port: int, datagrams: list[bytes]) -> None:
    """Send `datagrams` to the SIP port from one UDP socket; count the responses by status."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        for datagram in datagrams:
            await loop.sock_sendto(sock, datagram, ("127.0.0.1", port))
            tally.messages["sip"] += 1
        deadline = time.monotonic() + RECEIVE_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = await asyncio.wait_for(loop.sock_recv(sock, 65536), left)
            except TimeoutError:
                break
            status = "?"
            if reply.startswith(b"SIP/2.0 "):
                status = reply.split(b" ", 2)[1].decode("ascii", "replace")
            tally.errors[f"sip:{status}"] += 1
    finally:
        sock.close()


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Ports:
    """Where the server listens."""

    http: int
    audiosocket: int
    sip: int


def start(workdir: Path, model: str) -> tuple[ServerProcess, Ports]:
    """`palabre serve` with every listener, transcription only; waits for /healthz."""
    ports = Ports(free_port(), free_port(), free_port())
    script = Path(sys.executable).parent / "palabre"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "server.cli"]
    command = [
        *base, "serve", "--host", "127.0.0.1", "--port", str(ports.http), "--data-dir", str(workdir / "data"),
        "--model", model, "--no-memory", "--audiosocket-port", str(ports.audiosocket),
        "--sip-port", str(ports.sip),
    ]  # fmt: skip
    server = ServerProcess.launch("palabre", command, workdir / "server.log", ports.http)
    server.wait_ready(lambda: healthy(ports.http), 180.0)
    return server, ports


def healthy(port: int) -> bool:
    """Whether /healthz answers 200."""
    import urllib.request

    if not tcp_open(port):
        return False
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


async def good_session(port: int, pcm: bytes, speed: float) -> str:
    """A well-behaved /v1/stream session: its finals' text."""
    stream = ResilientStream(f"ws://127.0.0.1:{port}/v1/stream", pcm, speed=speed, max_reconnects=0)
    await stream.run()
    return " ".join(str(f["text"]).strip() for f in stream.finals)


async def fuzz(ports: Ports, total: int, seed: int) -> Tally:
    """`total` bad messages, shared out over the five transports, CONCURRENCY connections at a time."""
    rng = random.Random(seed)
    tally = Tally()
    base = f"ws://127.0.0.1:{ports.http}"
    connected = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def batch(make: Callable[[random.Random], Any]) -> list[Any]:
        return [make(rng) for _ in range(PER_CONNECTION)]

    makers: list[Callable[[], Any]] = [
        lambda: websocket_connection(
            tally, "stream", f"{base}/v1/stream", batch(stream_message),
            json.dumps(STREAM_START) if rng.random() < 0.5 else None),
        lambda: websocket_connection(
            tally, "twilio", f"{base}/v1/telephony/twilio", batch(twilio_message),
            connected if rng.random() < 0.5 else None),
        lambda: websocket_connection(
            tally, "realtime", f"{base}/v1/realtime?intent=transcription", batch(realtime_message), None),
        lambda: audiosocket_connection(
            tally, ports.audiosocket, batch(audiosocket_frame), rng.random() < 0.5),
        lambda: sip_burst(tally, ports.sip, batch(lambda r: sip_datagram(r, ports.sip))),
    ]  # fmt: skip
    while tally.total() < total:
        await asyncio.gather(*(makers[i % len(makers)]() for i in range(CONCURRENCY * len(makers))))
    return tally


async def sample_rss(server: ServerProcess, samples: list[int]) -> None:
    """Append the server's RSS to `samples` every `RSS_SAMPLE_S` until cancelled."""
    while True:
        samples.append(server.rss())
        await asyncio.sleep(RSS_SAMPLE_S)


async def run(ports: Ports, server: ServerProcess, pcm: bytes, total: int, seed: int, speed: float) -> int:
    """Baseline good session, then fuzzing with a good session alongside; print the figures."""
    baseline = await good_session(ports.http, pcm, speed)
    rss_before = server.rss()
    started = time.monotonic()
    samples: list[int] = []
    sampler = asyncio.create_task(sample_rss(server, samples))
    during, tally = await asyncio.gather(good_session(ports.http, pcm, speed), fuzz(ports, total, seed))
    sampler.cancel()
    wall = time.monotonic() - started
    rss_after = server.rss()
    samples.append(rss_after)
    alive = server.alive() and healthy(ports.http)
    lost = WordErrors()
    lost.add(baseline, during)

    print(f"command: {command_line()}")
    print(f"messages: {tally.total()} in {wall:.1f} s ({dict(sorted(tally.messages.items()))})")
    print("errors by code:")
    for key, count in sorted(tally.errors.items()):
        print(f"  {key:<40} {count}")
    print("connection ends:")
    for key, count in sorted(tally.closes.items()):
        print(f"  {key:<40} {count}")
    growth_mb = (rss_after - rss_before) / 2**20
    late_mb = (rss_after - samples[3 * len(samples) // 4]) / 2**20
    print(f"RSS before {rss_before / 2**20:.0f} MB, after {rss_after / 2**20:.0f} MB ({growth_mb:+.0f} MB; "
          f"last quarter of the run {late_mb:+.0f} MB)")
    tenths = [samples[min(len(samples) - 1, i * len(samples) // 10)] for i in range(1, 11)]
    print("RSS at each tenth of the run (MB): " + " ".join(f"{r / 2**20:.0f}" for r in tenths))
    print(f"good session: baseline {baseline!r}")
    print(f"              during   {during!r} (word differences {lost.wer:.3f})")
    failures = [*tally.undocumented]
    if not alive:
        failures.append("the server is down or does not answer /healthz")
    if growth_mb > RSS_GROWTH_LIMIT_MB:
        failures.append(f"RSS grew by {growth_mb:.0f} MB (limit {RSS_GROWTH_LIMIT_MB:.0f})")
    if total >= LATE_CHECK_MESSAGES and late_mb > RSS_LATE_GROWTH_LIMIT_MB:
        failures.append(f"RSS grew by {late_mb:.0f} MB over the run's last quarter "
                        f"(limit {RSS_LATE_GROWTH_LIMIT_MB:.0f}): a leak")
    if lost.wer > 0.0:
        failures.append("the good session's transcript differs from the one without fuzzing")
    for failure in failures[:20]:
        print(f"FAIL: {failure}")
    print("ok" if not failures else f"{len(failures)} failures")
    return 0 if not failures else 1


def main(argv: list[str] | None = None) -> int:
    """Parse the options, start a server, fuzz it, print the figures; 1 when a check fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=10_000, help="bad messages and frames in all")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--speed", type=float, default=2.0, help="of the good session (x real time)")
    parser.add_argument(
        "--audio-dir", type=Path, default=DEFAULT_AUDIO_DIR, help="holds jfk.flac and refs.json"
    )
    args = parser.parse_args(argv)
    (jfk,) = load_references(args.audio_dir, ["jfk.flac"])
    with tempfile.TemporaryDirectory(prefix="palabre-fuzz-") as tmp:
        server, ports = start(Path(tmp), args.model)
        try:
            pcm = to_pcm16(jfk.samples)
            return asyncio.run(run(ports, server, pcm, args.messages, args.seed, args.speed))
        finally:
            server.stop()
            if server.proc.returncode not in (0, None):
                print(f"FAIL: the server exited with {server.proc.returncode} on SIGTERM")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())
