"""End-to-end: a real softphone (baresip) calls `palabre serve --sip-port` (tiny.en).

baresip runs headless from a temporary config folder: its audio source is a WAV file of one
espeak-ng sentence at 8 kHz (the `aufile` module), its player a bridge nobody listens to, and
it takes commands over its `ctrl_tcp` socket. It dials `sip:test@127.0.0.1:<sip port>`, talks
for the length of the file in real time, hangs up; the test then reads the store until the
conversation, named by the call's Call-ID, has ended, and looks for the words.

./dev test installs baresip (Debian package `baresip`); without it these tests skip (fail under CI).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr

from server.codecs.sip import Response, parse
from server.store import Store, UtteranceRow
from tests.requirements import require_tool
from tests.server.sip_fixtures import fixture

pytestmark = pytest.mark.slow

RATE = 8000
TURTLE = ("en_speaker_a.wav", 0, {"red", "green", "turtle"})
"""(file, utterance index, words the transcript must contain), as in test_telephony.py."""
TAIL_SILENCE_S = 1.0
STORE_TIMEOUT_S = 30.0
EVENT_TIMEOUT_S = 15.0


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server_args() -> Iterator[tuple[str, ...]]:
    """One server for this module: transcription only, SIP on a free UDP port."""
    rtp_low = free_port(socket.SOCK_DGRAM) & ~1
    yield (
        "tiny.en",
        "--no-memory",
        "--sip-port",
        str(free_port(socket.SOCK_DGRAM)),
        "--sip-rtp-ports",
        f"{rtp_low}-{min(rtp_low + 99, 65535)}",
    )


def sip_port(server: Any) -> int:
    return int(server.args[server.args.index("--sip-port") + 1])


def write_speech(speech_dir: Path, manifest: dict[str, Any], path: Path) -> float:
    """One utterance of a 16 kHz test file as an 8 kHz mono s16 WAV (plus silence); its seconds."""
    name, index, _ = TURTLE
    with wave.open(str(speech_dir / name), "rb") as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        rate = w.getframerate()
    utterance = manifest["files"][name]["utterances"][index]
    start = max(0, round((utterance["start"] - 0.5) * rate))
    end = round((utterance["end"] + 0.2) * rate)
    audio = soxr.resample(samples[start:end], rate, RATE)
    audio = np.concatenate([audio, np.zeros(round(TAIL_SILENCE_S * RATE), np.float32)])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2").tobytes())
    return len(audio) / RATE


class Baresip:
    """A headless baresip, driven through its ctrl_tcp socket (JSON in netstrings)."""

    def __init__(self, folder: Path, wav: Path) -> None:
        self.sip_port = free_port(socket.SOCK_DGRAM)
        self.ctrl_port = free_port(socket.SOCK_STREAM)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config").write_text(
            "\n".join(
                [
                    "poll_method epoll",
                    f"sip_listen 127.0.0.1:{self.sip_port}",
                    f"audio_source aufile,{wav}",
                    "audio_player aubridge,nobody",
                    "audio_alert aubridge,nobody",
                    "audio_srate 8000",
                    "audio_channels 1",
                    "module_path /usr/lib/baresip/modules",
                    "module g711.so",
                    "module aufile.so",
                    "module aubridge.so",
                    "module_app account.so",
                    "module_app menu.so",
                    "module_app ctrl_tcp.so",
                    f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
                    "",
                ]
            )
        )
        (folder / "accounts").write_text("<sip:caller@127.0.0.1>;regint=0\n")
        (folder / "contacts").write_text("")
        self.log_path = folder / "baresip.log"
        self._log = open(self.log_path, "wb")  # closed by close()
        self.proc = subprocess.Popen(
            ["baresip", "-f", str(folder)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.sock = self._connect()
        self._buffer = b""
        self.events: list[dict[str, Any]] = []

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while True:
            try:
                return socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1.0)
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError(f"baresip did not start:\n{self.log()}") from None
                time.sleep(0.1)

    def command(self, name: str, params: str = "") -> None:
        data = json.dumps({"command": name, "params": params, "token": name}).encode()
        self.sock.sendall(b"%d:%s," % (len(data), data))

    def wait_event(self, kind: str, timeout: float = EVENT_TIMEOUT_S) -> dict[str, Any]:
        """The next event of this type (JSON messages before it are kept in `events`)."""
        deadline = time.monotonic() + timeout
        while True:
            while b":" in self._buffer:
                length, _, rest = self._buffer.partition(b":")
                if len(rest) < int(length) + 1:
                    break
                message = json.loads(rest[: int(length)])
                self._buffer = rest[int(length) + 1 :]
                self.events.append(message)
                if message.get("event") and message.get("type") == kind:
                    return dict(message)
            if time.monotonic() > deadline:
                raise AssertionError(f"no {kind} from baresip; events {self.events}\n{self.log()}")
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError(f"baresip closed its control socket; events {self.events}\n{self.log()}")
            self._buffer += chunk

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.command("quit")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        self.sock.close()
        self._log.close()


@pytest.fixture
def baresip_path() -> str:
    return require_tool("baresip")  # ./dev test installs it


def stored(server: Any, conversation_id: str) -> list[UtteranceRow]:
    """The conversation's utterances once it has ended (polls the server's store)."""
    deadline = time.monotonic() + STORE_TIMEOUT_S
    while True:
        with Store.open(server.data_dir / "palabre.db") as store:
            conversation = store.get_conversation("default", conversation_id)
            rows = store.utterances("default", conversation_id)
        if conversation is not None and conversation.status == "ended":
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"conversation {conversation_id} not ended: {conversation}, {rows}")
        time.sleep(0.25)


def words(rows: list[UtteranceRow]) -> set[str]:
    text = " ".join(row.text for row in rows).lower()
    return set("".join(c if c.isalnum() else " " for c in text).split())


def test_a_softphone_call_is_transcribed(
    palabre_server: Any,
    server_args: tuple[str, ...],
    speech_dir: Path,
    speech_manifest: dict[str, Any],
    baresip_path: str,
    tmp_path: Path,
) -> None:
    server = palabre_server(*server_args)
    wav = tmp_path / "speech-8k.wav"
    seconds = write_speech(speech_dir, speech_manifest, wav)
    phone = Baresip(tmp_path / "baresip", wav)
    try:
        phone.command("dial", f"sip:test@127.0.0.1:{sip_port(server)}")
        established = phone.wait_event("CALL_ESTABLISHED")
        call_id = established["id"]  # baresip's Call-ID names the conversation
        time.sleep(seconds + 0.5)  # baresip sends the file in real time
        phone.command("hangup")
        closed = phone.wait_event("CALL_CLOSED")
        assert closed["id"] == call_id
    finally:
        phone.close()
    assert "Call established" in phone.log()

    rows = stored(server, call_id)
    assert {row.track for row in rows} == {"caller"}
    assert TURTLE[2] <= words(rows), [r.text for r in rows]


def test_sip_requests_without_a_softphone(palabre_server: Any, server_args: tuple[str, ...]) -> None:
    """OPTIONS (a PBX's ping) is answered; a BYE for no call gets 481; garbage gets nothing."""
    server = palabre_server(*server_args)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5.0)
        address = ("127.0.0.1", sip_port(server))
        for request, status in ((fixture("options"), 200), (fixture("bye"), 481)):
            s.sendto(request, address)
            response = parse(s.recv(65536))
            assert isinstance(response, Response) and response.status == status
        s.sendto(b"garbage", address)
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(65536)
