"""The wire protocol's messages: one frozen dataclass per message, one serializer.

Client → server messages (`Start`, `Stop`) are parsed by `server/codecs/native.py`; server →
client events are produced by the core (`Session`) and serialized with `event_to_dict`.
Field names here are the field names on the wire (docs/protocol.md).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from stream.errors import ErrorCode

CONVERSATION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
"""What a client-chosen conversation id may be; utterance ids are "<conversation_id>:<seq>"."""


def utterance_id(conversation_id: str, seq: int) -> str:
    """The wire id of the utterance at position `seq` of a conversation."""
    return f"{conversation_id}:{seq}"


Encoding = Literal["pcm_s16le", "f32le", "mulaw", "alaw"]
ENCODINGS: tuple[Encoding, ...] = ("pcm_s16le", "f32le", "mulaw", "alaw")


# --- client → server -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """Opens a session: the audio format that follows and the language spoken."""

    sample_rate: int
    encoding: Encoding = "pcm_s16le"
    language: str | None = None
    """An ISO 639-1 code, or None for automatic detection ("auto" on the wire)."""
    channels: int = 1
    conversation_id: str | None = None
    partials: bool = True
    track: str | None = None
    """Which speaker or call leg this audio is (e.g. "inbound"), recorded on each utterance."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Ends the audio: the server sends every remaining final, then `closed`."""


ClientMessage = Start | Stop


# --- server → client -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    type: ClassVar[str] = "ready"
    conversation_id: str
    session_id: str
    sample_rate: int
    model: str


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    type: ClassVar[str] = "speech_started"
    utterance_id: str
    start: float
    """Seconds from conversation start."""


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    type: ClassVar[str] = "speech_stopped"
    utterance_id: str
    end: float


@dataclass(frozen=True, slots=True)
class Partial:
    """Provisional text of an utterance in progress.

    `stable` is an append-only prefix: later partials of the same utterance start with it.
    `text` is `stable` followed by the still unstable tail.
    """

    type: ClassVar[str] = "partial"
    utterance_id: str
    text: str
    stable: str
    unstable: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Final:
    """The definitive text of one utterance, sent once it is stored."""

    type: ClassVar[str] = "final"
    utterance_id: str
    text: str
    start: float
    end: float
    language: str
    seq: int
    """The utterance's position in its conversation, from 0."""
    track: str | None = None


@dataclass(frozen=True, slots=True)
class Error:
    type: ClassVar[str] = "error"
    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class Closed:
    type: ClassVar[str] = "closed"
    utterances: int


ServerEvent = Ready | SpeechStarted | SpeechStopped | Partial | Final | Error | Closed


def event_to_dict(event: ServerEvent) -> dict[str, Any]:
    """The JSON object of a server event: `type` first, then its fields."""
    out: dict[str, Any] = {"type": event.type}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if isinstance(value, ErrorCode):
            value = value.value
        elif isinstance(value, float):
            value = round(value, 3)
        out[f.name] = value
    return out
