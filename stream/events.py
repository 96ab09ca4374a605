"""The wire protocol's messages: one frozen dataclass per message, one serializer.

Client → server messages (`Start`, `Stop`, `Ask`, `WebRtcOffer`, ...) are parsed by
`server/codecs/native.py`; server → client events are produced by the core (`Session`) and
serialized with `event_to_dict`.
Field names here are the field names on the wire (docs/protocol.md).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from stream.errors import ErrorCode

__all__ = [
    "CONVERSATION_ID_RE",
    "ENCODINGS",
    "MAX_QUESTION_CHARS",
    "AnswerDelta",
    "AnswerDone",
    "Ask",
    "Citation",
    "ClientMessage",
    "Closed",
    "Encoding",
    "Error",
    "Final",
    "Partial",
    "Ready",
    "ServerEvent",
    "Speakers",
    "SpeechStarted",
    "SpeechStopped",
    "Start",
    "Stop",
    "Summary",
    "Transport",
    "WebRtcAnswer",
    "WebRtcCandidate",
    "WebRtcOffer",
    "Word",
    "event_to_dict",
    "utterance_id",
]

CONVERSATION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
"""What a client-chosen conversation id may be; utterance ids are "<conversation_id>:<seq>"."""


def utterance_id(conversation_id: str, seq: int) -> str:
    """The wire id of the utterance at position `seq` of a conversation."""
    return f"{conversation_id}:{seq}"


Encoding = Literal["pcm_s16le", "f32le", "mulaw", "alaw"]
ENCODINGS: tuple[Encoding, ...] = ("pcm_s16le", "f32le", "mulaw", "alaw")

Transport = Literal["socket", "webrtc"]
"""How a `/v1/stream` session's audio arrives: binary frames on the socket, or a WebRTC track."""


# --- client → server -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """Opens a session: the audio format that follows and the language spoken."""

    sample_rate: int
    encoding: Encoding = "pcm_s16le"
    language: str | None = None
    """An ISO 639-1 code, or None for automatic detection ("auto" on the wire)."""
    channels: int = 1
    """Interleaved channels in each audio frame; more than one: one track per channel
    (`stream.channels`), each with its own utterances, instead of a mix."""
    conversation_id: str | None = None
    partials: bool = True
    track: str | None = None
    """Which speaker or call leg this audio is (e.g. "inbound"), recorded on each utterance."""
    resume_after: int | None = None
    """A client resuming `conversation_id`: the seq of the last final it received (-1: none).
    The server first finishes the conversation's sessions that lost their client, then replays
    the stored finals of this track after that seq, and says in `ready` where to resume."""
    transport: Transport = "socket"
    """"webrtc": the audio comes over a WebRTC track negotiated with `webrtc.offer`."""
    vocabulary: tuple[str, ...] = ()
    """Names and terms the speakers use, given to the recogniser (`stream.vocabulary`)."""
    diarize: bool = False
    """Tell the speakers of this audio apart: each final's `speaker` is a label ("S1", "S2", …)
    stable for the whole conversation, instead of the track's name."""
    client_id: str | None = None
    """Who is streaming, as the client itself knows it (e.g. random per page load): a resuming
    `start` supersedes only the sessions of the same conversation, track and client id."""
    redact: tuple[str, ...] = ()
    """Kinds of spans replaced by a label in partials and finals before they are stored or sent
    (`stream.redaction.REDACTION_KINDS`), on top of the tenant's own."""
    word_timestamps: bool = False
    """Put each final's `words` (times of its words) on it; partials never carry them."""
    channel_tracks: tuple[str, ...] = ()
    """The track of each channel when `channels` > 1 (one name per channel); none: `<track>-ch1`,
    `<track>-ch2`, … (`ch1`, `ch2`, … without a `track`)."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Ends the audio: the server sends every remaining final, then `closed`."""


@dataclass(frozen=True, slots=True)
class Ask:
    """A question about what was said; answered with `answer.delta` events and `answer.done`."""

    question: str
    scope: Literal["conversation", "tenant"] = "conversation"
    conversation_id: str | None = None
    """Which conversation (defaults to the connection's own, once started)."""
    answer_id: str | None = None
    """Chosen by the client to match the answer events, or made by the server."""


MAX_QUESTION_CHARS = 1000


@dataclass(frozen=True, slots=True)
class WebRtcOffer:
    """A WebRTC offer for the session's audio track; answered with `webrtc.answer`."""

    sdp: str
    """The offer's SDP, with its ICE candidates (no trickle ICE)."""


@dataclass(frozen=True, slots=True)
class WebRtcCandidate:
    """A trickled ICE candidate: accepted and ignored (the offer carries the candidates)."""

    candidate: str | None = None


ClientMessage = Start | Stop | Ask | WebRtcOffer | WebRtcCandidate


# --- server → client -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    type: ClassVar[str] = "ready"
    conversation_id: str
    session_id: str
    sample_rate: int
    model: str
    time_offset: float = 0.0
    """Conversation seconds at this session's first audio sample (times in events are
    conversation seconds)."""
    resume_from: float | None = None
    """Conversation seconds where the stored transcript of this track ends (the `end` of its
    last stored utterance), None when it has none: a resuming client sends its audio from
    there, so nothing is transcribed twice or skipped."""


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
class Word:
    """One word of a final (`start.word_timestamps`), as the recogniser aligned it to the audio."""

    word: str
    """The word as it is written in the final's text, with its punctuation and leading space."""
    start: float
    end: float
    """Seconds: conversation time in a `final`, time in the recognised audio in an `AsrOutput`."""
    probability: float
    """The recogniser's mean token probability for the word, 0-1."""


@dataclass(frozen=True, slots=True)
class Final:
    """The definitive text of one utterance, sent once it is stored."""

    type: ClassVar[str] = "final"
    utterance_id: str
    text: str
    start: float
    end: float
    language: str | None
    """The language of the text: the session's, or the detected one; None when an `auto` session's
    utterance held nothing to detect a language in (silence)."""
    seq: int
    """The utterance's position in its conversation, from 0."""
    track: str | None = None
    speaker: str | None = None
    """Who spoke: with `start.diarize`, a label of the conversation ("S1", "S2", … in order of first
    appearance); without, the track's name. None when unknown."""
    speaker_name: str | None = dataclasses.field(default=None, metadata={"omit_default": True})
    """The name people gave `speaker` (`PUT /v1/conversations/{id}/speakers/{label}`), on the
    finals committed after it was named; on the wire only then."""
    replayed: bool = dataclasses.field(default=False, metadata={"omit_default": True})
    """Stored earlier and sent again to a resuming client (`start.resume_after`); on the wire
    only when true."""
    words: tuple[Word, ...] | None = dataclasses.field(default=None, metadata={"omit_default": True})
    """The words of `text` with their times, in order, when the session asked for them
    (`start.word_timestamps`); on the wire only then."""


@dataclass(frozen=True, slots=True)
class Speakers:
    """Speaker labels of a diarized conversation were found to be one speaker: finals already sent
    keep their label; later ones carry the label each merged label became."""

    type: ClassVar[str] = "speakers"
    conversation_id: str
    merged: dict[str, str]
    """{merged label: the label it is now}."""
    labels: list[str]
    """The conversation's labels after the merge, in order of first appearance."""


@dataclass(frozen=True, slots=True)
class Error:
    type: ClassVar[str] = "error"
    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class Closed:
    type: ClassVar[str] = "closed"
    utterances: int


@dataclass(frozen=True, slots=True)
class AnswerDelta:
    type: ClassVar[str] = "answer.delta"
    answer_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Citation:
    """An utterance an answer relies on."""

    utterance_id: str
    text: str
    start: float
    conversation_id: str
    speaker: str | None = None
    """Who said it: the speaker's name if it was named, else its label or track (None: unknown)."""


@dataclass(frozen=True, slots=True)
class AnswerDone:
    """The authoritative answer: it may differ from the concatenated deltas (grounding check)."""

    type: ClassVar[str] = "answer.done"
    answer_id: str
    text: str
    citations: list[str]
    """Utterance ids of the cited utterances (all retrieved ones when the answer cites none)."""
    grounded: bool
    passages: list[Citation]


SummarySection = Literal["key_points", "decisions", "action_items"]
"""The sections of a generative summary (an extractive one has none)."""


@dataclass(frozen=True, slots=True)
class SummaryItem:
    """One point of a summary and the utterances it comes from."""

    text: str
    utterance_ids: list[str]
    """Extractive: the one utterance quoted. Generative: the utterances that support the point
    best (by shared words), in conversation order; empty when none does."""
    section: SummarySection | None = None
    """Generative: the section the point is under; None for an extractive summary."""


@dataclass(frozen=True, slots=True)
class Summary:
    """The rolling summary of a conversation (`final` at the end of the stream)."""

    type: ClassVar[str] = "summary"
    conversation_id: str
    method: Literal["extractive", "generative"]
    items: list[SummaryItem]
    """Extractive: the key utterances, in conversation order. Generative: the points the model
    wrote, in its order."""
    upto_seq: int
    """The summary covers the conversation's utterances up to this seq."""
    final: bool = False


@dataclass(frozen=True, slots=True)
class WebRtcAnswer:
    """The server's answer to `webrtc.offer`: its SDP holds every server ICE candidate."""

    type: ClassVar[str] = "webrtc.answer"
    sdp: str


ServerEvent = (
    Ready
    | SpeechStarted
    | SpeechStopped
    | Partial
    | Final
    | Speakers
    | Error
    | Closed
    | AnswerDelta
    | AnswerDone
    | Summary
    | WebRtcAnswer
)


def event_to_dict(event: ServerEvent) -> dict[str, Any]:
    """The JSON object of a server event: `type` first, then its fields."""
    out: dict[str, Any] = {"type": event.type}
    out.update(_fields(event))
    return out


def _fields(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("omit_default") and value == f.default:
            continue
        out[f.name] = _value(value)
    return out


def _value(value: Any) -> Any:
    if isinstance(value, ErrorCode):
        return value.value
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, list | tuple):
        return [_value(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    return value
