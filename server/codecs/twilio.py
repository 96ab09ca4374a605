"""Twilio Media Streams: the JSON text messages Twilio sends over a stream's WebSocket.

Pure parse, no I/O: `parse_message` turns one text message into one frozen dataclass, and
`session_start` turns a stream's `StreamStart` into the Palabre `Start` of one of its tracks.
The socket side is `server/transports/twilio.py`. Reference:
https://www.twilio.com/docs/voice/media-streams/websocket-messages

    {"event":"connected","protocol":"Call","version":"1.0.0"}
    {"event":"start","sequenceNumber":"1","streamSid":"MZ…","start":{"streamSid":"MZ…",
     "accountSid":"AC…","callSid":"CA…","tracks":["inbound","outbound"],
     "customParameters":{"conversation_id":"call-42","diarize":"true"},
     "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}
    {"event":"media","sequenceNumber":"2","streamSid":"MZ…","media":{"track":"inbound",
     "chunk":"1","timestamp":"5","payload":"<base64 μ-law>"}}
    {"event":"dtmf","streamSid":"MZ…","dtmf":{"track":"inbound_track","digit":"1"}}
    {"event":"mark","streamSid":"MZ…","mark":{"name":"greeting"}}
    {"event":"stop","sequenceNumber":"5","streamSid":"MZ…","stop":{"accountSid":"AC…","callSid":"CA…"}}

Twilio writes numbers as strings ("chunk":"1"); both forms are accepted. Unknown fields are
ignored. Errors are `ProtocolError`s: FRAME_TOO_LARGE (over `max_bytes`), BAD_JSON (not a JSON
object within the limits of server/codecs/json_text.py, or a missing or mistyped field of a
dtmf/mark message), UNKNOWN_TYPE (missing or unknown `event`), BAD_START (a start Palabre
cannot serve) and BAD_AUDIO (a malformed media message).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import NoReturn

from server.codecs.fields import language_code, show
from server.codecs.json_text import JsonObject, load_object
from stream.errors import ErrorCode, ProtocolError
from stream.events import CONVERSATION_ID_RE, Start

MAX_MESSAGE_BYTES = 65_536
"""Default size limit of one message; a 20 ms media message is about 350 bytes."""
TRACKS = ("inbound", "outbound")
"""The media tracks of a call: `inbound` is the caller's audio, `outbound` what Twilio plays to them."""
MEDIA_ENCODING = "audio/x-mulaw"
SAMPLE_RATE = 8000


@dataclass(frozen=True, slots=True)
class Connected:
    """The first message of a stream."""

    protocol: str | None
    version: str | None


@dataclass(frozen=True, slots=True)
class StreamStart:
    """The stream's metadata, sent once after `connected`.

    `conversation_id` is `customParameters.conversation_id`, else the `callSid`; `language` is
    `customParameters.language` (lower-cased; None when absent or "auto").
    """

    stream_sid: str
    call_sid: str
    account_sid: str | None
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str] = field(hash=False)
    """The `<Parameter>`s of the TwiML `<Stream>` (string values only)."""
    conversation_id: str
    language: str | None
    diarize: bool | None = None
    """`customParameters.diarize` ("true"/"false"): tell the speakers of each track apart (several
    people on one leg: a speakerphone, a conference bridge); None: the server's default."""
    encoding: str = MEDIA_ENCODING
    sample_rate: int = SAMPLE_RATE
    channels: int = 1


@dataclass(frozen=True, slots=True)
class Media:
    """A chunk of one track's audio: μ-law at 8 kHz, mono (20 ms, 160 bytes, from Twilio)."""

    track: str
    payload: bytes
    chunk: int | None = None
    """The chunk's number in its track, from 1."""
    timestamp: int | None = None
    """Milliseconds from the start of the stream."""


@dataclass(frozen=True, slots=True)
class Dtmf:
    """A key the caller pressed."""

    track: str
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    """A mark the server sent earlier has been played (bidirectional streams)."""

    name: str


@dataclass(frozen=True, slots=True)
class StreamStop:
    """The stream ended (the call hung up, or the stream was stopped)."""

    call_sid: str | None = None


TwilioMessage = Connected | StreamStart | Media | Dtmf | Mark | StreamStop


def parse_message(text: str | bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> TwilioMessage:
    """Parse one Media Streams text message; raise `ProtocolError` when it is not one."""
    obj = load_object(text, max_bytes)
    event = obj.get("event")
    if not isinstance(event, str):
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "message has no string 'event'")
    if event == "connected":
        return Connected(_optional_str(obj, "protocol"), _optional_str(obj, "version"))
    if event == "start":
        return _parse_start(_section(obj, "start", ErrorCode.BAD_START))
    if event == "media":
        return _parse_media(_section(obj, "media", ErrorCode.BAD_AUDIO))
    if event == "dtmf":
        dtmf = _section(obj, "dtmf", ErrorCode.BAD_JSON)
        return Dtmf(
            _string(dtmf, "dtmf.track", ErrorCode.BAD_JSON), _string(dtmf, "dtmf.digit", ErrorCode.BAD_JSON)
        )
    if event == "mark":
        return Mark(_string(_section(obj, "mark", ErrorCode.BAD_JSON), "mark.name", ErrorCode.BAD_JSON))
    if event == "stop":
        stop = obj.get("stop")
        return StreamStop(_optional_str(stop, "callSid") if isinstance(stop, dict) else None)
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown event {show(event)}")


def session_start(start: StreamStart, track: str, diarize: bool = False) -> Start:
    """The `Start` of the Palabre session that transcribes one track of the stream; `diarize` is
    the server's default for calls (`telephony_diarize`), which `customParameters.diarize` overrides.

    Partials are off: nobody reads them on a telephony stream, finals go to the store.
    """
    return Start(
        sample_rate=start.sample_rate,
        encoding="mulaw",
        language=start.language,
        channels=start.channels,
        conversation_id=start.conversation_id,
        partials=False,
        track=track,
        diarize=diarize if start.diarize is None else start.diarize,
    )


# --- message bodies ----------------------------------------------------------------------------


def _parse_start(start: JsonObject) -> StreamStart:
    code = ErrorCode.BAD_START
    tracks = start.get("tracks")
    if (
        not isinstance(tracks, list)
        or not tracks
        or any(t not in TRACKS for t in tracks)
        or len(set(tracks)) != len(tracks)
    ):
        _fail(code, f"start.tracks must list distinct tracks of {TRACKS}, not {show(tracks)}")
    params = start.get("customParameters")
    if params is None:
        params = {}
    elif not isinstance(params, dict):
        _fail(code, f"start.customParameters must be an object, not {show(params)}")
    custom = {k: v for k, v in params.items() if isinstance(v, str)}
    call_sid = _string(start, "start.callSid", code)
    conversation_id = custom.get("conversation_id", call_sid)
    if not CONVERSATION_ID_RE.fullmatch(conversation_id):
        _fail(
            code,
            "conversation_id (customParameters.conversation_id, else the callSid) must be 1-128 of "
            f"[A-Za-z0-9_.-], alphanumeric first, not {show(conversation_id)}",
        )
    language = custom.get("language")
    if language is not None:
        try:
            language = language_code(language)
        except ValueError:
            _fail(
                code, f"customParameters.language must be a 2-3 letter code or 'auto', not {show(language)}"
            )
    diarize = custom.get("diarize")
    if diarize is not None and diarize.lower() not in ("true", "false"):
        _fail(code, f"customParameters.diarize must be 'true' or 'false', not {show(diarize)}")
    media_format = start.get("mediaFormat")
    if media_format is not None:
        wanted = {"encoding": MEDIA_ENCODING, "sampleRate": SAMPLE_RATE, "channels": 1}
        if not isinstance(media_format, dict) or any(
            k in media_format and media_format[k] != v for k, v in wanted.items()
        ):
            _fail(code, f"start.mediaFormat must be {wanted}, not {show(media_format, 120)}")
    return StreamStart(
        stream_sid=_string(start, "start.streamSid", code),
        call_sid=call_sid,
        account_sid=_optional_str(start, "accountSid"),
        tracks=tuple(tracks),
        custom_parameters=custom,
        conversation_id=conversation_id,
        language=language,
        diarize=None if diarize is None else diarize.lower() == "true",
    )


def _parse_media(media: JsonObject) -> Media:
    code = ErrorCode.BAD_AUDIO
    track = media.get("track")
    if track not in TRACKS:
        _fail(code, f"media.track must be one of {TRACKS}, not {show(track)}")
    payload = _string(media, "media.payload", code)
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        _fail(code, "media.payload is not valid base64")
    return Media(track, audio, _number(media, "chunk"), _number(media, "timestamp"))


# --- helpers -----------------------------------------------------------------------------------


def _section(obj: JsonObject, name: str, code: ErrorCode) -> JsonObject:
    value = obj.get(name)
    if not isinstance(value, dict):
        _fail(code, f"a {name} message needs a {name!r} object")
    return value


def _string(obj: JsonObject, path: str, code: ErrorCode) -> str:
    value = obj.get(path.rpartition(".")[2])
    if not isinstance(value, str) or not value:
        _fail(code, f"{path} must be a non-empty string, not {show(value)}")
    return value


def _optional_str(obj: JsonObject, name: str) -> str | None:
    value = obj.get(name)
    return value if isinstance(value, str) else None


def _number(media: JsonObject, name: str) -> int | None:
    """An integer field that Twilio writes as a string of digits; None when absent."""
    value = media.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return int(value)
    _fail(ErrorCode.BAD_AUDIO, f"media.{name} must be a non-negative integer, not {show(value)}")


def _fail(code: ErrorCode, message: str) -> NoReturn:
    raise ProtocolError(code, message)
