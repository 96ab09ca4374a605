"""Asterisk AudioSocket: the framing of the TCP stream between Asterisk and an audio service.

Pure parse/pack, no I/O; the socket side is `server/transports/audiosocket.py`. Reference:
https://docs.asterisk.org/Configuration/Channel-Drivers/AudioSocket/

Every frame is a 1-byte type, a 2-byte big-endian payload length, then the payload:

    0x00  hangup   no payload (closing the socket says the same)
    0x01  UUID     16 bytes: the call's UUID, the first frame Asterisk sends
    0x03  DTMF     1 byte: an ASCII digit
    0x10  audio    signed linear 16-bit little-endian PCM, 8 kHz mono (320 bytes per 20 ms)
    0xff  error    an optional application-specific error code

`AudioSocketParser.feed(data)` takes the bytes as they arrive, split anywhere, and returns the
complete frames; `pack(frame)` is its inverse. A frame of another type or longer than the
parser's `max_payload` is a `ProtocolError` (UNKNOWN_TYPE, FRAME_TOO_LARGE), as is a UUID frame
that is not 16 bytes or a DTMF frame that is not 1 byte (BAD_START, BAD_AUDIO): the stream
cannot be resynchronised after one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from stream.errors import ErrorCode, ProtocolError

HANGUP = 0x00
UUID = 0x01
DTMF = 0x03
AUDIO = 0x10
ERROR = 0xFF

HEADER_BYTES = 3
MAX_PAYLOAD = 0xFFFF
"""The largest payload the 2-byte length can announce."""
DEFAULT_MAX_PAYLOAD = 16_000
"""The parser's default limit: one second of audio (Asterisk sends 320-byte frames)."""
SAMPLE_RATE = 8000
"""Hz of the audio frames (16-bit mono)."""


@dataclass(frozen=True, slots=True)
class Hangup:
    """The call ended."""


@dataclass(frozen=True, slots=True)
class CallId:
    """The call's UUID (the argument of the `AudioSocket()` dialplan application)."""

    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Digit:
    """A DTMF key pressed on the call."""

    digit: str


@dataclass(frozen=True, slots=True)
class Audio:
    """Audio of the call: s16le PCM at 8 kHz, mono."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """Asterisk reports an error (codes: 0x01 hangup, 0x02 frame forwarding, 0x04 memory)."""

    code: bytes = b""


Frame = Hangup | CallId | Digit | Audio | ErrorFrame


class AudioSocketParser:
    """Incremental parser of one AudioSocket stream: feed bytes in, get frames out.

    The result does not depend on how the bytes are split. At a bad frame header, `feed`
    first returns the frames before it and sets `error`; that call, or the next one when it had
    frames to return, raises the `ProtocolError`, and so does every later call.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray()
        self._error: ProtocolError | None = None

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the frames they complete."""
        if self._error is not None:
            raise self._error
        self._buffer += data
        frames: list[Frame] = []
        pos = 0
        buffer = self._buffer
        while len(buffer) - pos >= HEADER_BYTES:
            kind = buffer[pos]
            length = int.from_bytes(buffer[pos + 1 : pos + 3], "big")
            try:
                _check_header(kind, length, self.max_payload)
            except ProtocolError as error:
                self._error = error
                break
            end = pos + HEADER_BYTES + length
            if len(buffer) < end:
                break
            frames.append(_frame(kind, bytes(buffer[pos + HEADER_BYTES : end])))
            pos = end
        del buffer[:pos]
        if self._error is not None and not frames:
            raise self._error
        return frames

    @property
    def error(self) -> ProtocolError | None:
        """The error that ended the stream, once `feed` met it (the frames before it are good)."""
        return self._error

    @property
    def buffered(self) -> int:
        """Bytes received that do not make a complete frame yet."""
        return len(self._buffer)


def pack(frame: Frame) -> bytes:
    """The bytes of one frame on the wire."""
    match frame:
        case Hangup():
            kind, payload = HANGUP, b""
        case CallId(id=call_id):
            kind, payload = UUID, call_id.bytes
        case Digit(digit=digit):
            kind, payload = DTMF, digit.encode("latin-1")
            if len(payload) != 1:
                raise ValueError(f"a DTMF frame holds one character, not {digit!r}")
        case Audio(pcm=pcm):
            kind, payload = AUDIO, pcm
        case ErrorFrame(code=code):
            kind, payload = ERROR, code
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return bytes([kind]) + len(payload).to_bytes(2, "big") + payload


def _check_header(kind: int, length: int, max_payload: int) -> None:
    if kind not in (HANGUP, UUID, DTMF, AUDIO, ERROR):
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown AudioSocket frame type 0x{kind:02x}")
    if length > max_payload:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE, f"AudioSocket frame of {length} bytes exceeds {max_payload}"
        )
    if kind == UUID and length != 16:
        raise ProtocolError(ErrorCode.BAD_START, f"UUID frame of {length} bytes, not 16")
    if kind == DTMF and length != 1:
        raise ProtocolError(ErrorCode.BAD_AUDIO, f"DTMF frame of {length} bytes, not 1")


def _frame(kind: int, payload: bytes) -> Frame:
    if kind == AUDIO:
        return Audio(payload)
    if kind == UUID:
        return CallId(uuid.UUID(bytes=payload))
    if kind == DTMF:
        return Digit(payload.decode("latin-1"))
    if kind == HANGUP:
        return Hangup()
    return ErrorFrame(payload)
