"""End-to-end: telephony clients against a real `palabre serve` (tiny.en).

- Twilio: a client speaking the Media Streams protocol on `/v1/telephony/twilio` sends one
  espeak-ng sentence on the inbound track and another on the outbound track, as 20 ms messages
  of base64 μ-law at 8 kHz, at 3x real time; then `stop`.
- AudioSocket: a TCP client sends a call's UUID, a sentence as 20 ms slin frames (s16le, 8 kHz),
  at 3x real time, then the hangup frame.

Nothing comes back on these sockets, so each test then reads the server's store until the
words of every track are there, with their track.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import socket
import time
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from bench.common import WordErrors, load_references
from server.codecs.audiosocket import Audio, CallId, Hangup, pack
from server.store import Store, UtteranceRow
from server.transports.twilio import MAX_BAD_MESSAGES
from stream.audio import MULAW_TO_INT16
from tests.requirements import require_module, shared_audio_dir

pytestmark = pytest.mark.slow

RATE = 8000
FRAME_S = 0.02
SPEED = 3.0
"""How much faster than real time the clients send."""
STORE_TIMEOUT_S = 30.0
TAIL_SILENCE_S = 1.0

HAMMER = ("en_speaker_c.wav", 0, {"hammer", "bring"})
TRAINS = ("en_speaker_b.wav", 0, {"trains", "paris"})
TURTLE = ("en_speaker_a.wav", 0, {"red", "green", "turtle"})
"""(file, utterance index, words the transcript must contain). Telephone-band audio costs tiny.en
some words ("Paris for Berlin" → "Paris formal in"): these are words it keeps at 8 kHz."""


@pytest.fixture(scope="module")
def server_args() -> Iterator[tuple[str, ...]]:
    """One server for this module: transcription only, with an AudioSocket listener on a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield ("tiny.en", "--no-memory", "--audiosocket-port", str(port))


def audiosocket_port(server: Any) -> int:
    return int(server.args[server.args.index("--audiosocket-port") + 1])


def pcm16_8k(speech_dir: Path, manifest: dict[str, Any], name: str, index: int) -> bytes:
    """One utterance of a 16 kHz test file (with its lead-in), as 8 kHz s16le, plus a second of silence."""
    with wave.open(str(speech_dir / name), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16_000)
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    utterance = manifest["files"][name]["utterances"][index]
    start = max(0, round((utterance["start"] - 0.5) * 16_000))
    end = round((utterance["end"] + 0.2) * 16_000)
    audio = soxr.resample(samples[start:end], 16_000, RATE)
    audio = np.concatenate([audio, np.zeros(round(TAIL_SILENCE_S * RATE), np.float32)])
    return bytes(np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2").tobytes())


_MULAW_BY_VALUE = np.argsort(MULAW_TO_INT16, kind="stable").astype(np.uint8)
_MULAW_VALUES = MULAW_TO_INT16[_MULAW_BY_VALUE].astype(np.int32)


def lin2ulaw(pcm: bytes) -> bytes:
    """s16le samples to G.711 μ-law: each sample to the code of `stream.audio.MULAW_TO_INT16` nearest it."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    above = np.clip(np.searchsorted(_MULAW_VALUES, samples), 1, len(_MULAW_VALUES) - 1)
    below_nearer = samples - _MULAW_VALUES[above - 1] <= _MULAW_VALUES[above] - samples
    return bytes(_MULAW_BY_VALUE[np.where(below_nearer, above - 1, above)].tobytes())


def frames(pcm: bytes, sample_bytes: int) -> list[bytes]:
    """20 ms frames of audio with `sample_bytes` per sample."""
    size = round(FRAME_S * RATE) * sample_bytes
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


async def pace(started: float, frames_sent: int) -> None:
    """Sleep until `frames_sent` frames are due at SPEED times real time."""
    delay = started + frames_sent * FRAME_S / SPEED - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def stored(server: Any, conversation_id: str) -> list[UtteranceRow]:
    """The conversation's utterances once it has ended: every session closed, every final stored.

    Polls the server's store for up to STORE_TIMEOUT_S.
    """
    deadline = time.monotonic() + STORE_TIMEOUT_S
    while True:
        with Store.open(server.data_dir / "palabre.db") as store:
            conversation = store.get_conversation("default", conversation_id)
            rows = store.utterances("default", conversation_id)
        if conversation is not None and conversation.status == "ended":
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(
                f"conversation {conversation_id} not ended after {STORE_TIMEOUT_S} s: {conversation}, "
                f"utterances {[(r.track, r.text) for r in rows]}"
            )
        time.sleep(0.25)


def words(rows: list[UtteranceRow], track: str) -> set[str]:
    text = " ".join(row.text for row in rows if row.track == track).lower()
    return set("".join(c if c.isalnum() else " " for c in text).split())


async def twilio_call(
    server: Any, audio: dict[str, list[str]], conversation_id: str, parameters: dict[str, str] | None = None
) -> None:
    """One Media Streams call on /v1/telephony/twilio: `start`, each track's base64 μ-law payloads
    interleaved as 20 ms `media` messages at SPEED times real time, `stop`; the server closes (1000)."""
    call_sid = "CA" + uuid.uuid4().hex
    stream_sid = "MZ" + uuid.uuid4().hex
    sequence = iter(range(1, 1_000_000))

    def message(event: str, **body: Any) -> str:
        return json.dumps(
            {"event": event, "sequenceNumber": str(next(sequence)), "streamSid": stream_sid, **body}
        )

    async with connect(f"ws://127.0.0.1:{server.port}/v1/telephony/twilio") as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(
            message(
                "start",
                start={
                    "streamSid": stream_sid,
                    "accountSid": "AC" + "0" * 32,
                    "callSid": call_sid,
                    "tracks": list(audio),
                    "customParameters": {
                        "conversation_id": conversation_id,
                        "caller": "+15550100",
                        **(parameters or {}),
                    },
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            )
        )
        started = time.monotonic()
        for chunk in range(max(len(a) for a in audio.values())):
            for track, payloads in audio.items():
                if chunk < len(payloads):
                    media = {
                        "track": track,
                        "chunk": str(chunk + 1),
                        "timestamp": str(round(chunk * FRAME_S * 1000)),
                        "payload": payloads[chunk],
                    }
                    await ws.send(message("media", media=media))
            await pace(started, chunk + 1)
        await ws.send(message("stop", stop={"accountSid": "AC" + "0" * 32, "callSid": call_sid}))
        with pytest.raises(ConnectionClosedOK):
            async with asyncio.timeout(10):
                await ws.recv()  # the server sends nothing, then closes
        assert ws.close_code == 1000


def mulaw_payloads(pcm: bytes) -> list[str]:
    """8 kHz s16le as the base64 μ-law payloads of 20 ms `media` messages."""
    return [base64.b64encode(lin2ulaw(frame)).decode() for frame in frames(pcm, 2)]


async def test_twilio_media_stream(
    palabre_server: Any, server_args: tuple[str, ...], speech_dir: Path, speech_manifest: dict[str, Any]
) -> None:
    server = palabre_server(*server_args)
    tracks = {"inbound": HAMMER, "outbound": TRAINS}
    audio = {
        track: mulaw_payloads(pcm16_8k(speech_dir, speech_manifest, name, index))
        for track, (name, index, _) in tracks.items()
    }
    conversation_id = f"twilio-{uuid.uuid4().hex[:12]}"
    await twilio_call(server, audio, conversation_id)

    rows = await asyncio.to_thread(stored, server, conversation_id)
    assert {row.track for row in rows} == set(tracks)
    assert [row.seq for row in rows] == list(range(len(rows)))  # one sequence for both tracks
    for track, (_, _, expected) in tracks.items():
        assert expected <= words(rows, track), (track, [(r.track, r.text) for r in rows])
    assert not TRAINS[2] & words(rows, "inbound")
    assert not HAMMER[2] & words(rows, "outbound")


async def test_twilio_diarize_parameter_labels_the_speakers_of_one_leg(
    palabre_server: Any, server_args: tuple[str, ...], speech_dir: Path, speech_manifest: dict[str, Any]
) -> None:
    """Two people on the caller's leg (a speakerphone): with `<Parameter name="diarize"
    value="true"/>` each stored utterance's speaker is a label of the conversation, not "inbound"."""
    server = palabre_server(*server_args)
    gap = bytes(2 * RATE)  # 1 s of silence
    pcm = b"".join(
        pcm16_8k(speech_dir, speech_manifest, name, index) + gap for name, index, _ in (HAMMER, TRAINS)
    )
    conversation_id = f"twilio-diarize-{uuid.uuid4().hex[:12]}"
    await twilio_call(server, {"inbound": mulaw_payloads(pcm)}, conversation_id, {"diarize": "true"})

    rows = [row for row in await asyncio.to_thread(stored, server, conversation_id) if row.text.strip()]
    print([(row.speaker, row.text) for row in rows])
    assert rows and {row.track for row in rows} == {"inbound"}
    assert all(row.speaker is not None and re.fullmatch(r"S\d+", row.speaker) for row in rows), rows


TELEPHONE_WER_MARGIN = 0.10
OFFLINE_WER_JFK_TELEPHONE = 0.045


@pytest.mark.real_speech
async def test_twilio_real_speech(palabre_server: Any, server_args: tuple[str, ...]) -> None:
    """jfk.flac at telephone band (8 kHz, G.711 μ-law) on a Twilio call's inbound track.

    WER ≤ offline 0.045 + 0.10. Offline: faster-whisper tiny.en int8, beam 1, on the same audio
    (8 kHz μ-law decoded and resampled back to 16 kHz), 1 error in 22 words ("Americans" →
    "American"), measured 2026-12-03; the margin as in test_real_speech.py.
    """
    require_module("jiwer")
    (ref,) = load_references(shared_audio_dir(), ["jfk.flac"])
    band = soxr.resample(ref.samples, 16_000, RATE)
    band = np.concatenate([band, np.zeros(round(TAIL_SILENCE_S * RATE), np.float32)])
    pcm = np.clip(np.round(band * 32767.0), -32768, 32767).astype("<i2").tobytes()
    server = palabre_server(*server_args)
    conversation_id = f"twilio-jfk-{uuid.uuid4().hex[:12]}"
    await twilio_call(server, {"inbound": mulaw_payloads(pcm)}, conversation_id)

    rows = await asyncio.to_thread(stored, server, conversation_id)
    text = " ".join(row.text for row in rows)
    errors = WordErrors()
    errors.add(ref.text, text)
    print(f"WER {errors.wer:.3f} ({errors}): {text}")
    assert errors.wer <= OFFLINE_WER_JFK_TELEPHONE + TELEPHONE_WER_MARGIN, (errors, text)


async def test_twilio_audio_faster_than_the_rate_closes_the_call(palabre_server: Any) -> None:
    """Both tracks' audio counts against the connection's rate: on a server allowing 2x real time
    and a 2 s burst, a second of each track per pair of messages, sent as fast as the server reads
    them, closes the call within 30 pairs (a limit of its own: the default, 16x, is more than a
    loaded machine may read)."""
    server = palabre_server(
        "tiny.en", "--no-memory", "--set", "limits.audio_rate=2", "--set", "limits.audio_burst_s=2"
    )
    second = base64.b64encode(b"\xff" * RATE).decode()  # 1 s of μ-law silence
    start = {
        "streamSid": "MZ2",
        "callSid": "CA" + uuid.uuid4().hex,
        "tracks": ["inbound", "outbound"],
        "customParameters": {"conversation_id": f"twilio-fast-{uuid.uuid4().hex[:8]}"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    tracks = ("inbound", "outbound")
    media = [json.dumps({"event": "media", "media": {"track": t, "payload": second}}) for t in tracks]
    async with connect(f"ws://127.0.0.1:{server.port}/v1/telephony/twilio") as ws:
        await ws.send(json.dumps({"event": "start", "streamSid": "MZ2", "start": start}))
        with contextlib.suppress(ConnectionClosed):
            for _ in range(30):
                for message in media:
                    await ws.send(message)
            # The server closes at once, but with our unread messages queued its closing handshake
            # ends only at its close timeout (10 s, websockets' default): wait longer than that.
            async with asyncio.timeout(30):
                await ws.wait_closed()
        assert (ws.close_code, ws.close_reason) == (1008, "rate_limited")


async def test_asterisk_audiosocket(
    palabre_server: Any, server_args: tuple[str, ...], speech_dir: Path, speech_manifest: dict[str, Any]
) -> None:
    server = palabre_server(*server_args)
    name, index, expected = TURTLE
    call = uuid.uuid4()
    slin = frames(pcm16_8k(speech_dir, speech_manifest, name, index), 2)

    reader, writer = await asyncio.open_connection("127.0.0.1", audiosocket_port(server))
    try:
        writer.write(pack(CallId(call)))
        started = time.monotonic()
        for i, frame in enumerate(slin):
            writer.write(pack(Audio(frame)))
            await writer.drain()
            await pace(started, i + 1)
        writer.write(pack(Hangup()))
        await writer.drain()
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # nothing is sent back; the server closes after the hangup
    finally:
        writer.close()
        await writer.wait_closed()

    rows = await asyncio.to_thread(stored, server, call.hex)
    assert {row.track for row in rows} == {"caller"}
    assert expected <= words(rows, "caller"), [r.text for r in rows]


async def test_twilio_bad_messages(palabre_server: Any, server_args: tuple[str, ...]) -> None:
    """Bad messages are ignored, up to MAX_BAD_MESSAGES; a start that cannot be served closes at once."""
    server = palabre_server(*server_args)
    url = f"ws://127.0.0.1:{server.port}/v1/telephony/twilio"
    async with connect(url) as ws:
        for _ in range(MAX_BAD_MESSAGES - 1):
            await ws.send('{"event": "media", "media": {"track": "inbound", "payload": "AAAA"}}')
        await ws.send(b"\x00binary")
        async with asyncio.timeout(10):
            await ws.wait_closed()
        assert ws.close_code == 1008
    params = {"conversation_id": "not a valid id"}
    start = {"streamSid": "MZ1", "callSid": "CA1", "tracks": ["inbound"], "customParameters": params}
    async with connect(url) as ws:
        await ws.send(json.dumps({"event": "start", "start": start}))
        async with asyncio.timeout(10):
            await ws.wait_closed()
        assert ws.close_code == 1008


async def test_audiosocket_bad_frame_closes(palabre_server: Any, server_args: tuple[str, ...]) -> None:
    server = palabre_server(*server_args)
    reader, writer = await asyncio.open_connection("127.0.0.1", audiosocket_port(server))
    try:
        writer.write(pack(CallId(uuid.uuid4())) + b"\x42\x00\x00")
        async with asyncio.timeout(10):
            assert await reader.read() == b""
    finally:
        writer.close()
        await writer.wait_closed()
