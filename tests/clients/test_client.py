"""Unit tests of the Python SDK and CLI against a fake server that speaks the stream protocol.

The fake runs in a thread (websockets' sync server) so that both async SDK tests and the
synchronous CLI, which runs its own event loop, can talk to it. End-to-end tests against the
real server live in tests/e2e.
"""

from __future__ import annotations

import io
import json
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from palabre_client import (
    ClientErrorCode,
    PalabreError,
    StreamSession,
    load_audio,
    stream_file,
    to_pcm16,
)
from palabre_client.audio import channel_track, load_channels
from palabre_client.cli import EventPrinter, main

RATE = 16000
BYTES_PER_FINAL = 16000
"""The fake sends one partial and one final per half second of pcm_s16le audio at 16 kHz."""


@dataclass
class FakeServer:
    """What the fake saw, for the tests to check."""

    url: str
    starts: list[dict[str, Any]] = field(default_factory=list)
    authorization: list[str | None] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)
    audio_bytes: int = 0


def _handle(fake: FakeServer, ws: ServerConnection) -> None:
    """Answer start with ready (or error), one final per BYTES_PER_FINAL, closed on stop.

    `conversation_id` in `start` selects a misbehaviour: "reject" answers with an `error` event,
    "drop" closes the connection after the first final without sending `closed`.
    """
    fake.authorization.append(ws.request.headers.get("Authorization") if ws.request else None)
    start = json.loads(ws.recv())
    fake.starts.append(start)
    if not 8000 <= start.get("sample_rate", 0) <= 48000 or start.get("conversation_id") == "reject":
        ws.send(json.dumps({"type": "error", "code": "bad_start", "message": "start rejected"}))
        ws.close(1008)
        return
    ws.send(
        json.dumps(
            {
                "type": "ready",
                "conversation_id": start.get("conversation_id") or "conv-1",
                "session_id": f"sess-{len(fake.starts)}",
                "sample_rate": start["sample_rate"],
                "model": "fake",
            }
        )
    )
    received = seq = 0
    try:
        for message in ws:
            if isinstance(message, bytes):
                fake.frame_times.append(time.monotonic())
                fake.audio_bytes += len(message)
                received += len(message)
                while received >= (seq + 1) * BYTES_PER_FINAL:
                    start_s, end_s = seq * 0.5, (seq + 1) * 0.5
                    uid = f"utt-{seq}"
                    text = f"chunk {seq}"
                    ws.send(
                        json.dumps(
                            {
                                "type": "partial",
                                "utterance_id": uid,
                                "text": text,
                                "stable": "",
                                "unstable": text,
                                "start": start_s,
                                "end": end_s,
                            }
                        )
                    )
                    ws.send(
                        json.dumps(
                            {
                                "type": "final",
                                "utterance_id": uid,
                                "text": text,
                                "start": start_s,
                                "end": end_s,
                                "language": start.get("language"),
                                "seq": seq,
                                "track": start.get("track"),
                            }
                        )
                    )
                    seq += 1
                    if start.get("conversation_id") == "drop":
                        ws.close(1011, "fake failure")
                        return
            elif json.loads(message).get("type") == "stop":
                ws.send(json.dumps({"type": "closed", "utterances": seq}))
                return
    except ConnectionClosed:
        pass


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    holder: list[FakeServer] = []
    # max_queue=None: keep reading while a handler is busy, so a close handshake never waits on
    # unread audio.
    server: Server = serve(lambda ws: _handle(holder[0], ws), "127.0.0.1", 0, max_queue=None)
    port = server.socket.getsockname()[1]
    holder.append(FakeServer(url=f"ws://127.0.0.1:{port}/v1/stream"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder[0]
    server.shutdown()
    thread.join(timeout=5)


def _sine(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_wav(path: Path, seconds: float, rate: int = RATE, channels: int = 1) -> Path:
    pcm = np.frombuffer(to_pcm16(_sine(seconds, rate)), dtype="<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(pcm, channels).astype("<i2").tobytes())
    return path


def _write_encoded(path: Path, codec: str, seconds: float, rate: int) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.audio.stream.AudioStream)
        frame = av.AudioFrame.from_ndarray(_sine(seconds, rate)[None, :], format="flt", layout="mono")
        frame.rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


# --- the session -----------------------------------------------------------------------------


async def test_session_sends_audio_and_receives_events(fake_server: FakeServer) -> None:
    async with await StreamSession.open(fake_server.url, language="fr", conversation_id="c-7") as session:
        assert session.conversation_id == "c-7"
        assert session.session_id == "sess-1"
        await session.send_audio(b"\x00" * (2 * BYTES_PER_FINAL))
        await session.stop()
        events = [event async for event in session]
        assert [e["type"] for e in events] == ["partial", "final", "partial", "final", "closed"]
        assert [f["text"] for f in session.finals] == ["chunk 0", "chunk 1"]
        assert session.finals[0]["language"] == "fr"
        assert [e async for e in session] == []  # iteration stays ended after `closed`
    assert fake_server.starts == [
        {
            "type": "start",
            "sample_rate": 16000,
            "encoding": "pcm_s16le",
            "language": "fr",
            "partials": True,
            "conversation_id": "c-7",
        }
    ]


async def test_language_none_is_sent_as_auto(fake_server: FakeServer) -> None:
    async with await StreamSession.open(fake_server.url, language=None, partials=False, track="inbound"):
        pass
    assert fake_server.starts[0]["language"] == "auto"
    assert fake_server.starts[0]["partials"] is False
    assert fake_server.starts[0]["track"] == "inbound"


async def test_error_answer_to_start_raises(fake_server: FakeServer) -> None:
    with pytest.raises(PalabreError) as info:
        await StreamSession.open(fake_server.url, sample_rate=1)
    assert info.value.code == "bad_start"
    assert info.value.message == "start rejected"
    assert info.value.event is not None and info.value.event["type"] == "error"


async def test_connection_refused_raises() -> None:
    with pytest.raises(PalabreError) as info:
        await StreamSession.open("ws://127.0.0.1:9/v1/stream", open_timeout=5)
    assert info.value.code == ClientErrorCode.CONNECTION_FAILED


async def test_token_is_sent_as_bearer_header_only_when_given(fake_server: FakeServer) -> None:
    async with await StreamSession.open(fake_server.url, token="s3cret"):
        pass
    async with await StreamSession.open(fake_server.url):
        pass
    assert fake_server.authorization == ["Bearer s3cret", None]


# --- stream_file -----------------------------------------------------------------------------


async def test_stream_file_is_paced_by_speed(fake_server: FakeServer, tmp_path: Path) -> None:
    wav = _write_wav(tmp_path / "two.wav", seconds=2.0)
    started = time.monotonic()
    events = await stream_file(fake_server.url, wav, speed=2.0)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed <= 10.0, elapsed  # at least the schedule; a loaded machine only adds
    assert fake_server.audio_bytes == 2 * RATE * 2
    frames = fake_server.frame_times
    assert len(frames) == 100  # 2 s in 20 ms frames
    # Frame k leaves when its last sample is due at 2x, (k + 1) * 10 ms after the start, never
    # before (load can only delay it): spread over the second instead of sent in a burst.
    early = [k for k, t in enumerate(frames) if t - started < (k + 1) * 0.010 - 0.002]
    assert not early, f"frames sent ahead of their time: {early}"
    assert events[0]["type"] == "ready"
    assert events[-1] == {"type": "closed", "utterances": 4}


async def test_stream_file_unpaced_and_on_event(fake_server: FakeServer, tmp_path: Path) -> None:
    wav = _write_wav(tmp_path / "two.wav", seconds=2.0)
    seen: list[dict[str, Any]] = []
    started = time.monotonic()
    events = await stream_file(fake_server.url, wav, speed=0, on_event=seen.append)
    assert time.monotonic() - started < 2.0  # faster than the 2 s real time a paced stream takes
    assert seen == events
    assert [e["text"] for e in events if e["type"] == "final"] == [f"chunk {i}" for i in range(4)]


async def test_stream_file_raises_when_connection_drops(fake_server: FakeServer, tmp_path: Path) -> None:
    wav = _write_wav(tmp_path / "two.wav", seconds=2.0)
    seen: list[dict[str, Any]] = []
    with pytest.raises(PalabreError) as info:
        await stream_file(fake_server.url, wav, speed=0, conversation_id="drop", on_event=seen.append)
    assert info.value.code == ClientErrorCode.CONNECTION_CLOSED
    assert "1011" in info.value.message and "fake failure" in info.value.message
    assert [e["type"] for e in seen] == ["ready", "partial", "final"]


async def test_stream_file_rejects_negative_speed(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        await stream_file("ws://127.0.0.1:9/v1/stream", tmp_path / "x.wav", speed=-1)


# --- the command line ------------------------------------------------------------------------


def test_cli_json_prints_every_event(
    fake_server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = _write_wav(tmp_path / "one.wav", seconds=1.0)
    code = main(["stream", str(wav), "--url", fake_server.url, "--json", "--speed", "0", "--token", "t"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in lines] == ["ready", "partial", "final", "partial", "final", "closed"]
    assert lines[2]["text"] == "chunk 0"
    assert fake_server.authorization == ["Bearer t"]


def test_cli_sends_the_vocabulary(fake_server: FakeServer, tmp_path: Path) -> None:
    wav = _write_wav(tmp_path / "one.wav", seconds=1.0)
    code = main(["stream", str(wav), "--url", fake_server.url, "--speed", "0",
                 "--vocabulary", "Zyphrex, Kessandra Vollmer,,"])
    assert code == 0
    assert fake_server.starts[0]["vocabulary"] == ["Zyphrex", "Kessandra Vollmer"]


def test_cli_prints_finals_without_partials_when_not_a_tty(
    fake_server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = _write_wav(tmp_path / "one.wav", seconds=1.0)
    code = main(["stream", str(wav), "--url", fake_server.url, "--speed", "0"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert out == "[0.00-0.50] chunk 0\n[0.50-1.00] chunk 1\n"


def test_cli_sends_track_and_diarize(
    fake_server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = _write_wav(tmp_path / "one.wav", seconds=0.5)
    assert main(["stream", str(wav), "--url", fake_server.url, "--speed", "0", "--track", "Alice",
                 "--diarize"]) == 0
    assert fake_server.starts[0]["track"] == "Alice" and fake_server.starts[0]["diarize"] is True
    assert main(["stream", str(wav), "--url", fake_server.url, "--speed", "0"]) == 0
    assert "diarize" not in fake_server.starts[1] and "track" not in fake_server.starts[1]


def test_printer_shows_the_speaker_of_a_final() -> None:
    out = io.StringIO()
    printer = EventPrinter(out, io.StringIO(), json_lines=False, tty=False)
    printer({"type": "final", "text": "hello.", "start": 1.0, "end": 2.0, "speaker": "S2"})
    printer({"type": "final", "text": "bye.", "start": 2.0, "end": 3.0, "speaker": None})
    named = {"type": "final", "text": "yes.", "start": 3.0, "end": 4.0, "speaker": "S2", "speaker_name": "Al"}
    printer(named)
    assert out.getvalue() == "[1.00-2.00] S2: hello.\n[2.00-3.00] bye.\n[3.00-4.00] Al: yes.\n"


def test_cli_takes_url_and_token_from_environment(
    fake_server: FakeServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PALABRE_URL", fake_server.url)
    monkeypatch.setenv("PALABRE_TOKEN", "from-env")
    wav = _write_wav(tmp_path / "one.wav", seconds=0.5)
    assert main(["stream", str(wav), "--speed", "0"]) == 0
    assert fake_server.authorization == ["Bearer from-env"]


def test_cli_server_error_exits_1(
    fake_server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = _write_wav(tmp_path / "one.wav", seconds=0.1)
    code = main(["stream", str(wav), "--url", fake_server.url, "--json", "--conversation-id", "reject"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "bad_start: start rejected" in err
    assert json.loads(out)["type"] == "error"


def test_cli_connection_failure_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = _write_wav(tmp_path / "one.wav", seconds=0.1)
    assert main(["stream", str(wav), "--url", "ws://127.0.0.1:9/v1/stream"]) == 1
    assert "connection_failed" in capsys.readouterr().err


def test_cli_missing_file_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["stream", str(tmp_path / "missing.wav"), "--url", "ws://127.0.0.1:9/v1/stream"]) == 1
    assert "missing.wav" in capsys.readouterr().err


def test_printer_overwrites_partials_on_a_tty() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = EventPrinter(out, err, json_lines=False, tty=True)
    printer({"type": "partial", "text": "hel"})
    printer({"type": "partial", "text": "hello"})
    printer({"type": "final", "text": "hello.", "start": 1.234, "end": 2.5})
    assert out.getvalue() == "\r\x1b[Khel\r\x1b[Khello\r\x1b[K[1.23-2.50] hello.\n"


# --- audio -----------------------------------------------------------------------------------


def test_load_audio_wav_resamples_and_downmixes(tmp_path: Path) -> None:
    wav = _write_wav(tmp_path / "stereo44.wav", seconds=1.0, rate=44100, channels=2)
    samples = load_audio(wav, sample_rate=RATE)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - RATE) <= 16
    assert _peak_hz(samples, RATE) == pytest.approx(440, abs=2)
    assert 0.4 < float(np.max(np.abs(samples))) < 0.6


def test_load_channels_splits_a_stereo_file_into_one_array_per_channel(tmp_path: Path) -> None:
    rate = 44100
    left = np.round(_sine(1.0, rate) * 32767).astype("<i2")
    right = np.zeros_like(left)
    path = tmp_path / "left_only.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.stack([left, right], axis=1).reshape(-1).tobytes())
    channels = load_channels(path, sample_rate=RATE)
    assert len(channels) == 2 and all(c.dtype == np.float32 and c.ndim == 1 for c in channels)
    assert abs(len(channels[0]) - RATE) <= 16 and len(channels[0]) == len(channels[1])
    assert _peak_hz(channels[0], RATE) == pytest.approx(440, abs=2)
    assert 0.45 < float(np.max(np.abs(channels[0]))) and float(np.max(np.abs(channels[1]))) < 1e-3
    assert len(load_channels(_write_wav(tmp_path / "mono.wav", seconds=0.5), sample_rate=RATE)) == 1
    assert [channel_track(None, 0), channel_track("call", 1)] == ["ch1", "call-ch2"]


def test_load_channels_keeps_mono_content_in_a_stereo_file_as_one_channel(tmp_path: Path) -> None:
    """A stereo file whose two channels carry the same voice (jfk.flac is one) is one track."""
    path = _write_wav(tmp_path / "dual_mono.wav", seconds=0.5, channels=2)
    (mono,) = load_channels(path, sample_rate=RATE)
    assert _peak_hz(mono, RATE) == pytest.approx(440, abs=2)
    silent = tmp_path / "silent.wav"
    with wave.open(str(silent), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(b"\0" * 4 * RATE)
    assert len(load_channels(silent, sample_rate=RATE)) == 1


@pytest.mark.parametrize(
    ("codec", "suffix", "rate"), [("libmp3lame", "mp3", 44100), ("libopus", "opus", 48000)]
)
def test_load_audio_compressed(tmp_path: Path, codec: str, suffix: str, rate: int) -> None:
    path = _write_encoded(tmp_path / f"sine.{suffix}", codec, seconds=1.0, rate=rate)
    samples = load_audio(path, sample_rate=8000)
    assert abs(len(samples) - 8000) <= 80
    assert _peak_hz(samples, 8000) == pytest.approx(440, abs=2)


def test_load_audio_rejects_non_audio(tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 10)
    with pytest.raises(ValueError):
        load_audio(junk)


def test_to_pcm16_clips_and_is_little_endian() -> None:
    pcm = to_pcm16(np.array([0.0, 1.0, -1.0, 2.0, -2.0, 0.5], dtype=np.float32))
    assert np.frombuffer(pcm, dtype="<i2").tolist() == [0, 32767, -32767, 32767, -32767, 16384]
    assert to_pcm16(np.array([1, -2], dtype=np.int16)) == b"\x01\x00\xfe\xff"
