"""The native WebSocket protocol of `/v1/stream`: JSON text messages, binary audio frames.

Pure parse/serialize (docs/protocol.md is the reference): `parse_client_text` turns a client's
text message into a `stream.events` client message, `serialize_event` turns a server event into
the text sent back. Binary frames are raw audio in the format announced by `start` and go to
`stream.audio.AudioConverter` untouched, so they have no codec here.

Message types are parsed by the functions in `PARSERS`, one per `type`; a new client message
(e.g. `ask`, `webrtc.offer`) is a new entry there plus its dataclass in `stream.events`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import NoReturn, cast

from server.codecs.fields import language_code, show
from server.codecs.json_text import JsonObject, load_object
from stream.audio import validate_format
from stream.errors import ErrorCode, ProtocolError
from stream.events import (
    CONVERSATION_ID_RE,
    MAX_QUESTION_CHARS,
    Ask,
    ClientMessage,
    Encoding,
    ServerEvent,
    Start,
    Stop,
    Transport,
    WebRtcCandidate,
    WebRtcOffer,
    event_to_dict,
)
from stream.redaction import check_redaction
from stream.vocabulary import check_vocabulary

MAX_TEXT_BYTES = 65_536
"""Default size limit of one client text message, in UTF-8 bytes."""
MAX_TRACK_CHARS = 64
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A `start.client_id`."""

WEBRTC_SAMPLE_RATE = 48_000
"""The audio format of a WebRTC session: the WebRTC transport decodes Opus to 48 kHz mono PCM16."""

Parser = Callable[[JsonObject], ClientMessage]


def parse_client_text(text: str | bytes, max_bytes: int = MAX_TEXT_BYTES) -> ClientMessage:
    """Parse one client text message (a JSON object with a `type`).

    Raises `ProtocolError` with code FRAME_TOO_LARGE (more than `max_bytes` UTF-8 bytes; its
    `close` is MESSAGE_TOO_BIG), BAD_JSON (not UTF-8, not JSON, not an object, nested deeper than
    `json_text.MAX_DEPTH`), UNKNOWN_TYPE (missing or unknown `type`) or the type's own code (BAD_START).
    """
    obj = load_object(text, max_bytes)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "message has no string 'type'")
    parser = PARSERS.get(kind)
    if parser is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {show(kind)}")
    return parser(obj)


def serialize_event(event: ServerEvent) -> str:
    """The compact JSON text of a server event (UTF-8 characters kept as they are)."""
    return json.dumps(event_to_dict(event), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# --- message parsers, by type ------------------------------------------------------------------


def parse_start(obj: JsonObject) -> Start:
    """`{"type":"start","sample_rate":16000,"encoding":"pcm_s16le","language":"en",...}` → `Start`.

    Missing optional fields (or null ones) take their defaults; unknown fields are ignored.
    With `"transport":"webrtc"` the audio format is the WebRTC transport's (48 kHz mono
    pcm_s16le): the format fields may be left out, and must say so when given.
    """
    transport = _transport(obj.get("transport"))
    webrtc = transport == "webrtc"
    sample_rate = _integer(obj, "sample_rate", WEBRTC_SAMPLE_RATE if webrtc else None)
    encoding = obj.get("encoding")
    if encoding is None:
        encoding = "pcm_s16le"
    elif not isinstance(encoding, str):
        _bad_start(f"encoding must be a string, not {show(encoding)}")
    channels = _integer(obj, "channels", 1)
    if webrtc and (sample_rate, encoding, channels) != (WEBRTC_SAMPLE_RATE, "pcm_s16le", 1):
        _bad_start(
            f"a webrtc session's audio is {WEBRTC_SAMPLE_RATE} Hz mono pcm_s16le; "
            "leave sample_rate, encoding and channels out"
        )
    validate_format(encoding, sample_rate, channels)
    partials = _flag(obj, "partials", True)
    diarize = _flag(obj, "diarize", False)
    resume_after = obj.get("resume_after")
    if resume_after is not None:
        resume_after = _integer(obj, "resume_after", None)
        if resume_after < -1:
            _bad_start(f"resume_after must be a seq (>= 0) or -1, not {resume_after}")
        if obj.get("conversation_id") is None:
            _bad_start("resume_after needs the conversation_id of the conversation to resume")
    return Start(
        sample_rate=sample_rate,
        encoding=cast(Encoding, encoding),
        language=_language(obj.get("language")),
        channels=channels,
        conversation_id=_conversation_id(obj.get("conversation_id")),
        partials=partials,
        track=_track(obj.get("track")),
        resume_after=resume_after,
        transport=transport,
        vocabulary=_vocabulary(obj.get("vocabulary")),
        diarize=diarize,
        client_id=_client_id(obj.get("client_id")),
        redact=_redact(obj.get("redact")),
        word_timestamps=_flag(obj, "word_timestamps", False),
        channel_tracks=_channel_tracks(obj.get("channel_tracks"), channels),
    )


def parse_stop(obj: JsonObject) -> Stop:
    """`{"type":"stop"}` → `Stop`."""
    return Stop()


def parse_ask(obj: JsonObject) -> Ask:
    """`{"type":"ask","question":"...","scope":"conversation"|"tenant"}` → `Ask`."""
    question = obj.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ProtocolError(ErrorCode.BAD_ASK, "ask needs a non-empty string 'question'")
    if len(question) > MAX_QUESTION_CHARS:
        raise ProtocolError(ErrorCode.BAD_ASK, f"question longer than {MAX_QUESTION_CHARS} characters")
    scope = obj.get("scope", "conversation")
    if scope not in ("conversation", "tenant"):
        raise ProtocolError(ErrorCode.BAD_ASK, f"scope must be 'conversation' or 'tenant', not {show(scope)}")
    conversation_id = obj.get("conversation_id")
    if conversation_id is not None and (
        not isinstance(conversation_id, str) or not CONVERSATION_ID_RE.fullmatch(conversation_id)
    ):
        raise ProtocolError(ErrorCode.BAD_ASK, f"bad conversation_id {show(conversation_id)}")
    answer_id = obj.get("answer_id")
    if answer_id is not None and (not isinstance(answer_id, str) or not 0 < len(answer_id) <= 64):
        raise ProtocolError(ErrorCode.BAD_ASK, "answer_id must be a string of 1-64 characters")
    return Ask(question.strip(), scope, conversation_id, answer_id)


MAX_SDP_CHARS = 32_768
"""Longest SDP accepted in `webrtc.offer` (a browser's audio offer is 2-6 kB)."""


def parse_webrtc_offer(obj: JsonObject) -> WebRtcOffer:
    """`{"type":"webrtc.offer","sdp":"v=0..."}` → `WebRtcOffer` (BAD_OFFER when the SDP is not one)."""
    sdp = obj.get("sdp")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise ProtocolError(ErrorCode.BAD_OFFER, "webrtc.offer needs an SDP string 'sdp' starting with v=0")
    if len(sdp) > MAX_SDP_CHARS:
        raise ProtocolError(ErrorCode.BAD_OFFER, f"SDP longer than {MAX_SDP_CHARS} characters")
    if "m=audio" not in sdp:
        raise ProtocolError(ErrorCode.BAD_OFFER, "the offer has no audio section (m=audio)")
    return WebRtcOffer(sdp)


def parse_webrtc_candidate(obj: JsonObject) -> WebRtcCandidate:
    """`{"type":"webrtc.candidate","candidate":"candidate:..."}` → `WebRtcCandidate` (any shape: ignored)."""
    candidate = obj.get("candidate")
    if isinstance(candidate, dict):  # RTCIceCandidate.toJSON() sent as is
        candidate = candidate.get("candidate")
    return WebRtcCandidate(candidate if isinstance(candidate, str) else None)


PARSERS: dict[str, Parser] = {
    "start": parse_start,
    "stop": parse_stop,
    "ask": parse_ask,
    "webrtc.offer": parse_webrtc_offer,
    "webrtc.candidate": parse_webrtc_candidate,
}
"""The parser of each client message `type`."""


# --- helpers -----------------------------------------------------------------------------------


def _bad_start(message: str) -> NoReturn:
    raise ProtocolError(ErrorCode.BAD_START, message)


def _integer(obj: JsonObject, name: str, default: int | None) -> int:
    """Field `name` as an int: a JSON integer or an integral number (16000.0); bools are refused."""
    value = obj.get(name)
    if value is None:
        if default is None:
            _bad_start(f"{name} is required")
        return default
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        _bad_start(f"{name} must be an integer, not {show(value)}")
    return value


def _flag(obj: JsonObject, name: str, default: bool) -> bool:
    """The boolean field `name` (`default` when absent or null)."""
    value = obj.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        _bad_start(f"{name} must be true or false, not {show(value)}")
    return value


def _language(value: object) -> str | None:
    """A 2-3 letter language code (lower-cased), or None for "auto" or absent."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return language_code(value)
        except ValueError:
            pass
    _bad_start(f"language must be a 2-3 letter code or 'auto', not {show(value)}")


def _vocabulary(value: object) -> tuple[str, ...]:
    """The terms of `vocabulary` (`stream.vocabulary.check_vocabulary`); none when absent."""
    if value is None:
        return ()
    try:
        return check_vocabulary(value)
    except ValueError as error:
        _bad_start(str(error))


def _redact(value: object) -> tuple[str, ...]:
    """The kinds of `redact` (`stream.redaction.check_redaction`); none when absent."""
    if value is None:
        return ()
    try:
        return check_redaction(value)
    except ValueError as error:
        _bad_start(str(error))


def _conversation_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not CONVERSATION_ID_RE.fullmatch(value):
        _bad_start(f"conversation_id must be 1-128 of [A-Za-z0-9_.-] (alphanumeric first), not {show(value)}")
    return value


def _transport(value: object) -> Transport:
    if value is None or value == "socket":
        return "socket"
    if value == "webrtc":
        return "webrtc"
    _bad_start(f"transport must be 'socket' or 'webrtc', not {show(value)}")


def _client_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not CLIENT_ID_RE.fullmatch(value):
        _bad_start(f"client_id must be 1-64 letters, digits, '-' or '_', not {show(value)}")
    return value


def _channel_tracks(value: object, channels: int) -> tuple[str, ...]:
    """The distinct track names of `channel_tracks`, one per channel (needs `channels` > 1)."""
    if value is None:
        return ()
    if channels < 2:
        _bad_start("channel_tracks needs channels > 1 (one channel is named by track)")
    if not isinstance(value, list) or len(value) != channels:
        _bad_start(f"channel_tracks must list one track per channel ({channels}), not {show(value)}")
    names = tuple(_track(name) or _bad_start("channel_tracks must not hold null") for name in value)
    if len(set(names)) != len(names):
        _bad_start(f"channel_tracks must be distinct, not {show(value)}")
    return names


def _track(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TRACK_CHARS or not value.isprintable():
        _bad_start(f"track must be 1-{MAX_TRACK_CHARS} printable characters, not {show(value)}")
    return value
