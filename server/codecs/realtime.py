"""The OpenAI Realtime transcription protocol of `/v1/realtime`: pure parse and serialize.

OpenAI's Realtime API (and its official SDKs) speak JSON events over one WebSocket. This module
knows their shapes and nothing of sockets (`server/transports/realtime.py` owns the socket):

* `parse_client_event` turns a client's text message into a `SessionUpdate`, `AppendAudio`,
  `CommitAudio` or `ClearAudio`, or raises `RealtimeError` (a `ProtocolError` that also carries
  the Realtime error `param`, `code` and the client's `event_id`).
* `RealtimeTranslator` holds the session configuration the client chose and the state needed to
  turn Palabre's events (`stream.events`) into Realtime server events: item ids of utterances,
  the stable text already sent as deltas, the previous item. It does no I/O.

Two dialects exist and both are accepted:

* **beta** (`OpenAI-Beta: realtime=v1`, `client.beta.realtime`): flat session fields
  (`input_audio_format: "pcm16"`, `input_audio_transcription`, `turn_detection`);
  `transcription_session.update` / `.created` / `.updated`; the user item is announced with
  `conversation.item.created`.
* **ga** (`client.realtime`): nested `session.audio.input.{format, transcription, turn_detection}`
  with `format: {"type": "audio/pcm", "rate": 24000}`; `session.update` / `.created` / `.updated`
  with `session.type` "transcription" or "realtime"; the user item is announced with
  `conversation.item.added` and finished with `conversation.item.done`.

The dialect is chosen at connection (header or subprotocol) and follows the shape of the
client's latest update. Event mapping (Palabre → Realtime):

    speech_started → input_audio_buffer.speech_started          (server VAD only)
    speech_stopped → input_audio_buffer.speech_stopped          (server VAD only)
                     input_audio_buffer.committed
                     conversation.item.created (beta) | conversation.item.added (ga)
    partial        → conversation.item.input_audio_transcription.delta  (growth of `stable`)
    final          → ….delta (the rest, when the final extends what was sent)
                     conversation.item.input_audio_transcription.completed
                     conversation.item.done (ga)
    error          → error
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Literal, NoReturn
from urllib.parse import parse_qs

from server.codecs.fields import language_code, show
from server.codecs.json_text import JsonObject, load_object
from stream.errors import CloseCode, ErrorCode, ProtocolError
from stream.events import (
    Encoding,
    Error,
    Final,
    Partial,
    ServerEvent,
    SpeechStarted,
    SpeechStopped,
    Start,
)
from stream.segmenter import SegmenterConfig

Dialect = Literal["beta", "ga"]
SessionKind = Literal["transcription", "realtime"]
DIARIZE_MODEL_SUFFIX = "-diarize"
"""A transcription model whose name ends so (OpenAI's `gpt-4o-transcribe-diarize`) asks for
speaker labels."""
UpdateShape = Literal["transcription_session", "beta", "ga"]
"""`transcription_session.update` (beta), a flat `session.update` (beta), a nested one (ga)."""
TurnMode = Literal["vad", "manual"]

DEFAULT_TRANSCRIPTION_MODEL = "whisper-1"
"""Reported as the transcription model until the client names one (Palabre runs its own Whisper)."""
MAX_PROMPT_CHARS = 4096
MAX_MODEL_CHARS = 128
MIN_PCM_RATE = 8_000
MAX_PCM_RATE = 48_000
BETA_HEADER_VALUE = "realtime=v1"
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"


# --- errors --------------------------------------------------------------------------------------

ERROR_TYPES: dict[ErrorCode, tuple[str, str]] = {
    ErrorCode.BAD_JSON: ("invalid_request_error", "invalid_json"),
    ErrorCode.UNKNOWN_TYPE: ("invalid_request_error", "invalid_value"),
    ErrorCode.BAD_START: ("invalid_request_error", "invalid_value"),
    ErrorCode.BAD_AUDIO: ("invalid_request_error", "invalid_value"),
    ErrorCode.NOT_STARTED: ("invalid_request_error", "input_audio_buffer_commit_empty"),
    ErrorCode.FRAME_TOO_LARGE: ("invalid_request_error", "message_too_large"),
    ErrorCode.OVERLOADED: ("server_error", "overloaded"),
    ErrorCode.INTERNAL: ("server_error", "internal_error"),
}
"""Palabre error code → the Realtime error `type` and default `code`.

Realtime `error.code` values this endpoint sends: `invalid_json` (not a JSON object),
`invalid_value` (unknown or unsupported event `type`, a bad field: see `param`),
`invalid_type` (a field of the wrong JSON type), `input_audio_buffer_commit_empty` (commit with no
speech in the buffer), `session_locked` (format or turn detection changed after audio arrived),
`unsupported_language` (a language the server's model does not speak), `message_too_large`,
`overloaded` and `internal_error` (server errors). Any other Palabre code is sent as is.
"""


class RealtimeError(ProtocolError):
    """A client mistake in Realtime terms: a Palabre `ProtocolError` plus `param`, the Realtime
    `error.code` (`realtime_code`, defaulting from `ERROR_TYPES`) and the client's `event_id`."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        param: str | None = None,
        realtime_code: str | None = None,
        event_id: str | None = None,
        close: CloseCode | None = None,
    ) -> None:
        super().__init__(code, message, close)
        self.param = param
        self.realtime_code = realtime_code
        self.event_id = event_id


def error_event(error: ProtocolError, event_id: str) -> JsonObject:
    """The Realtime `error` event of a Palabre or Realtime protocol error."""
    kind, default_code = ERROR_TYPES.get(error.code, ("invalid_request_error", error.code.value))
    param = client_event_id = realtime_code = None
    if isinstance(error, RealtimeError):
        param, client_event_id, realtime_code = error.param, error.event_id, error.realtime_code
    return {
        "type": "error",
        "event_id": event_id,
        "error": {
            "type": kind,
            "code": realtime_code or default_code,
            "message": error.message,
            "param": param,
            "event_id": client_event_id,
        },
    }


def commit_empty_error(event_id: str | None) -> RealtimeError:
    """`input_audio_buffer.commit` with no speech in the buffer (the Realtime API's wording)."""
    return RealtimeError(
        ErrorCode.NOT_STARTED,
        "Error committing input audio buffer: the buffer holds no speech to transcribe.",
        realtime_code="input_audio_buffer_commit_empty",
        event_id=event_id,
    )


# --- session configuration -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """The input audio format: Palabre's encoding name and the sample rate."""

    encoding: Encoding
    sample_rate: int


PCM16 = AudioFormat("pcm_s16le", 24_000)
G711_ULAW = AudioFormat("mulaw", 8_000)
G711_ALAW = AudioFormat("alaw", 8_000)
BETA_FORMATS: dict[str, AudioFormat] = {"pcm16": PCM16, "g711_ulaw": G711_ULAW, "g711_alaw": G711_ALAW}
"""Beta `input_audio_format` names."""
GA_FORMATS: dict[str, AudioFormat] = {"audio/pcm": PCM16, "audio/pcmu": G711_ULAW, "audio/pcma": G711_ALAW}
"""GA `audio.input.format.type` names (audio/pcm may also name another `rate`)."""


@dataclass(frozen=True, slots=True)
class Transcription:
    """`input_audio_transcription` (beta) / `audio.input.transcription` (ga).

        `language` and `prompt` change what Palabre does (the prompt is given to the recogniser as
    the session's vocabulary, `stream.vocabulary`); `model` is echoed back, and a diarizing
    model (`gpt-4o-transcribe-diarize`, any name ending in `-diarize`) asks for speaker labels
    (`start.diarize`): each `completed` then carries `speaker`.
    """

    model: str = DEFAULT_TRANSCRIPTION_MODEL
    language: str | None = None
    prompt: str = ""

    @property
    def diarize(self) -> bool:
        """Whether the model named asks for speaker labels."""
        return self.model.endswith(DIARIZE_MODEL_SUFFIX)


@dataclass(frozen=True, slots=True)
class RealtimeConfig:
    """The effective configuration of a Realtime session."""

    kind: SessionKind = "transcription"
    model: str | None = None
    """The conversation model named in the URL (`?model=`), for realtime sessions."""
    input_format: AudioFormat = PCM16
    transcription: Transcription = field(default_factory=Transcription)
    server_vad: bool = True
    """True: Palabre's VAD ends turns (`server_vad`, also for `semantic_vad`); False
    (`turn_detection: null`): only `input_audio_buffer.commit` ends a turn."""


class Missing(Enum):
    """The type of `MISSING`: a field absent from an update (as opposed to `null`)."""

    MISSING = "missing"


MISSING = Missing.MISSING


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    """`session.update` or `transcription_session.update`: only the fields present change."""

    shape: UpdateShape
    kind: SessionKind | None = None
    input_format: AudioFormat | Missing = MISSING
    transcription: Transcription | Missing | None = MISSING
    """None (`null`) resets to the defaults: Palabre always transcribes."""
    server_vad: bool | Missing = MISSING
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class AppendAudio:
    """`input_audio_buffer.append`: audio bytes in the session's input format."""

    audio: bytes
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class CommitAudio:
    """`input_audio_buffer.commit`: the client ends the turn."""

    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ClearAudio:
    """`input_audio_buffer.clear`: forget the audio of the turn in progress."""

    event_id: str | None = None


ClientEvent = SessionUpdate | AppendAudio | CommitAudio | ClearAudio

UNSUPPORTED_TYPES = frozenset(
    {
        "response.create",
        "response.cancel",
        "conversation.item.create",
        "conversation.item.delete",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "output_audio_buffer.clear",
    }
)
"""Client events of the Realtime API that a transcription-only server answers with an error."""


# --- connection ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handshake:
    """What the WebSocket upgrade request says about the session."""

    dialect: Dialect
    kind: SessionKind
    model: str | None


def parse_handshake(path: str, headers: Mapping[str, str]) -> Handshake:
    """Read `?intent=transcription&model=…` and the beta marker (`OpenAI-Beta: realtime=v1`, or
    the `openai-beta.realtime-v1` subprotocol browsers send) from the upgrade request."""
    query = parse_qs(path.partition("?")[2])
    intent = query.get("intent", [""])[0]
    models = query.get("model")
    model = models[0] if models and len(models[0]) <= MAX_MODEL_CHARS else None
    beta = BETA_HEADER_VALUE in headers.get("OpenAI-Beta", "").replace(" ", "")
    protocols = [p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",")]
    beta = beta or BETA_SUBPROTOCOL in protocols
    return Handshake(
        "beta" if beta else "ga", "transcription" if intent == "transcription" else "realtime", model
    )


# --- parsing -------------------------------------------------------------------------------------


def parse_client_event(text: str | bytes, max_bytes: int) -> ClientEvent:
    """Parse one client text message.

    Raises `RealtimeError` (with the message's `event_id` when it has a string one): invalid
    JSON, an unknown, missing or unsupported `type`, a bad field (`param` names it), bad base64.
    A message over `max_bytes` raises FRAME_TOO_LARGE with close code MESSAGE_TOO_BIG.
    """
    try:
        obj = load_object(text, max_bytes)
    except ProtocolError as error:
        raise RealtimeError(error.code, error.message, close=error.close) from None
    raw_event_id = obj.get("event_id")
    event_id = raw_event_id if isinstance(raw_event_id, str) else None
    try:
        return _parse_object(obj, event_id)
    except RealtimeError as error:
        error.event_id = event_id
        raise


def _parse_object(obj: JsonObject, event_id: str | None) -> ClientEvent:
    kind = obj.get("type")
    if not isinstance(kind, str):
        _invalid("missing or non-string 'type'", "type", ErrorCode.UNKNOWN_TYPE, "missing_required_parameter")
    if kind == "input_audio_buffer.append":
        return AppendAudio(_audio(obj.get("audio")), event_id)
    if kind == "input_audio_buffer.commit":
        return CommitAudio(event_id)
    if kind == "input_audio_buffer.clear":
        return ClearAudio(event_id)
    if kind == "session.update":
        session = _session_object(obj)
        if "type" in session or "audio" in session:
            return _parse_ga_session(session, event_id)
        return _parse_beta_session(session, "beta", event_id)
    if kind == "transcription_session.update":
        return _parse_beta_session(_session_object(obj), "transcription_session", event_id)
    if kind in UNSUPPORTED_TYPES:
        _invalid(
            f"{show(kind)} is not supported: this server only transcribes (no model responses)",
            "type",
            ErrorCode.UNKNOWN_TYPE,
        )
    _invalid(f"unknown event type {show(kind)}", "type", ErrorCode.UNKNOWN_TYPE)


def _session_object(obj: JsonObject) -> JsonObject:
    session = obj.get("session")
    if not isinstance(session, dict):
        _invalid_type("session", session, "an object")
    return session


def _parse_beta_session(session: JsonObject, shape: UpdateShape, event_id: str | None) -> SessionUpdate:
    """Flat beta fields: `input_audio_format`, `input_audio_transcription`, `turn_detection`."""
    input_format: AudioFormat | Missing = MISSING
    if "input_audio_format" in session:
        input_format = _beta_format(session["input_audio_format"])
    transcription: Transcription | Missing | None = MISSING
    if "input_audio_transcription" in session:
        transcription = _transcription(
            session["input_audio_transcription"], "session.input_audio_transcription"
        )
    server_vad: bool | Missing = MISSING
    if "turn_detection" in session:
        server_vad = _turn_detection(session["turn_detection"], "session.turn_detection")
    if "input_audio_noise_reduction" in session:
        _noise_reduction(session["input_audio_noise_reduction"], "session.input_audio_noise_reduction")
    kind: SessionKind | None = "transcription" if shape == "transcription_session" else None
    return SessionUpdate(shape, kind, input_format, transcription, server_vad, event_id)


def _parse_ga_session(session: JsonObject, event_id: str | None) -> SessionUpdate:
    """Nested GA fields: `type`, `audio.input.{format, transcription, turn_detection}`."""
    kind = session.get("type")
    if kind is not None and kind not in ("transcription", "realtime"):
        _invalid(f"session.type must be 'transcription' or 'realtime', not {show(kind)}", "session.type")
    input_format: AudioFormat | Missing = MISSING
    transcription: Transcription | Missing | None = MISSING
    server_vad: bool | Missing = MISSING
    audio = session.get("audio")
    if audio is not None and not isinstance(audio, dict):
        _invalid_type("session.audio", audio, "an object")
    audio_input = (audio or {}).get("input")
    if audio_input is not None and not isinstance(audio_input, dict):
        _invalid_type("session.audio.input", audio_input, "an object")
    if audio_input:
        prefix = "session.audio.input"
        if "format" in audio_input:
            input_format = _ga_format(audio_input["format"], f"{prefix}.format")
        if "transcription" in audio_input:
            transcription = _transcription(audio_input["transcription"], f"{prefix}.transcription")
        if "turn_detection" in audio_input:
            server_vad = _turn_detection(audio_input["turn_detection"], f"{prefix}.turn_detection")
        if "noise_reduction" in audio_input:
            _noise_reduction(audio_input["noise_reduction"], f"{prefix}.noise_reduction")
    return SessionUpdate("ga", kind, input_format, transcription, server_vad, event_id)


def _beta_format(value: object) -> AudioFormat:
    if isinstance(value, str) and value in BETA_FORMATS:
        return BETA_FORMATS[value]
    _invalid(
        f"input_audio_format must be 'pcm16', 'g711_ulaw' or 'g711_alaw', not {show(value)}",
        "session.input_audio_format",
    )


def _ga_format(value: object, param: str) -> AudioFormat:
    if not isinstance(value, dict):
        _invalid_type(param, value, "an object")
    kind = value.get("type", "audio/pcm")
    if not isinstance(kind, str) or kind not in GA_FORMATS:
        _invalid(
            f"format type must be 'audio/pcm', 'audio/pcmu' or 'audio/pcma', not {show(kind)}",
            f"{param}.type",
        )
    fmt = GA_FORMATS[kind]
    rate = value.get("rate")
    if rate is None:
        return fmt
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)
    if kind == "audio/pcm" and isinstance(rate, int) and not isinstance(rate, bool):
        if MIN_PCM_RATE <= rate <= MAX_PCM_RATE:
            return replace(fmt, sample_rate=rate)
    elif rate == fmt.sample_rate:
        return fmt
    _invalid(f"unsupported rate {show(rate)} for {kind}", f"{param}.rate")


def _transcription(value: object, param: str) -> Transcription | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        _invalid_type(param, value, "an object or null")
    model = value.get("model")
    if model is None:
        model = DEFAULT_TRANSCRIPTION_MODEL
    elif not isinstance(model, str) or not 0 < len(model) <= MAX_MODEL_CHARS:
        _invalid(f"model must be a string of 1-{MAX_MODEL_CHARS} characters", f"{param}.model")
    prompt = value.get("prompt")
    if prompt is None:
        prompt = ""
    elif not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
        _invalid(f"prompt must be a string of at most {MAX_PROMPT_CHARS} characters", f"{param}.prompt")
    return Transcription(model, _language(value.get("language"), f"{param}.language"), prompt)


def _language(value: object, param: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return language_code(value)
        except ValueError:
            pass
    _invalid(f"language must be an ISO-639-1 code such as 'en', not {show(value)}", param)


def _turn_detection(value: object, param: str) -> bool:
    """True for server VAD (`server_vad`, or `semantic_vad` served by the same VAD), False for null."""
    if value is None:
        return False
    if not isinstance(value, dict):
        _invalid_type(param, value, "an object or null")
    kind = value.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        _invalid(
            f"turn_detection type must be 'server_vad' or 'semantic_vad', not {show(kind)}", f"{param}.type"
        )
    return True


def _noise_reduction(value: object, param: str) -> None:
    """Accepted and ignored (Palabre applies no noise reduction); checked for shape only."""
    if value is not None and not isinstance(value, dict):
        _invalid_type(param, value, "an object or null")


def _audio(value: object) -> bytes:
    if not isinstance(value, str):
        _invalid_type("audio", value, "a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        _invalid("audio is not valid base64", "audio", ErrorCode.BAD_AUDIO)


def _invalid(
    message: str, param: str, code: ErrorCode = ErrorCode.BAD_START, realtime_code: str | None = None
) -> NoReturn:
    raise RealtimeError(code, message, param=param, realtime_code=realtime_code)


def _invalid_type(param: str, value: object, expected: str) -> NoReturn:
    raise RealtimeError(
        ErrorCode.BAD_START,
        f"{param} must be {expected}, not {show(value)}",
        param=param,
        realtime_code="invalid_type",
    )


# --- serializing ---------------------------------------------------------------------------------


def random_id(prefix: str) -> str:
    """An id such as `item_3f9a…` (prefix, underscore, 20 hex digits)."""
    return f"{prefix}_{secrets.token_hex(10)}"


def dumps(event: JsonObject) -> str:
    """The compact JSON text of a server event."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(slots=True)
class _Item:
    """A user message item: one Palabre utterance."""

    id: str
    sent: str = ""
    """Transcript text already sent as deltas."""
    committed: bool = False


class RealtimeTranslator:
    """The state of one Realtime session, and Palabre events → Realtime server events.

    Pure: methods take parsed client events or Palabre events and return JSON objects to send.
    """

    def __init__(
        self,
        handshake: Handshake | None = None,
        *,
        vad: SegmenterConfig | None = None,
        multilingual: bool = True,
        new_id: Callable[[str], str] = random_id,
    ) -> None:
        handshake = handshake or Handshake("ga", "transcription", None)
        self.dialect: Dialect = handshake.dialect
        self.config = RealtimeConfig(kind=handshake.kind, model=handshake.model)
        self.vad = vad or SegmenterConfig()
        """Palabre's VAD settings, reported as the effective `turn_detection` parameters."""
        self.multilingual = multilingual
        self._new_id = new_id
        self.session_id = new_id("sess")
        self.audio_started = False
        """Set once audio opened the Palabre session: from then on the input format, the turn
        detection and the language are fixed."""
        self._items: dict[str, _Item] = {}
        """Items by Palabre utterance id, until their transcription completed."""
        self._previous_item_id: str | None = None

    # --- client events ---------------------------------------------------------------------

    def session_created(self) -> JsonObject:
        """The first event of a connection, with the default configuration."""
        beta_transcription = self.dialect == "beta" and self.config.kind == "transcription"
        kind = "transcription_session.created" if beta_transcription else "session.created"
        return self._event(kind, session=self._session(self._shape()))

    def apply(self, update: SessionUpdate) -> JsonObject:
        """Apply a session update; return its `*.updated` event.

        Raises `RealtimeError` (and changes nothing) when the update would change the input
        format or the turn detection after audio arrived, or names a language an English-only
        model cannot transcribe.
        """
        config = self.config
        if update.kind is not None:
            config = replace(config, kind=update.kind)
        if not isinstance(update.input_format, Missing):
            config = replace(config, input_format=update.input_format)
        if not isinstance(update.transcription, Missing):
            config = replace(config, transcription=update.transcription or Transcription())
        if not isinstance(update.server_vad, Missing):
            config = replace(config, server_vad=update.server_vad)
        language = config.transcription.language
        if language not in (None, "en") and not self.multilingual:
            raise RealtimeError(
                ErrorCode.BAD_START,
                f"this server's model is English-only; it cannot transcribe language {language!r}",
                param=_language_param(update.shape),
                realtime_code="unsupported_language",
                event_id=update.event_id,
            )
        if self.audio_started:
            old = self.config
            for changed, param in (
                (config.input_format != old.input_format, _format_param(update.shape)),
                (config.server_vad != old.server_vad, _turn_param(update.shape)),
                (config.transcription.language != old.transcription.language, _language_param(update.shape)),
            ):
                if changed:
                    raise RealtimeError(
                        ErrorCode.BAD_START,
                        f"{param} cannot change after audio was appended; open a new connection",
                        param=param,
                        realtime_code="session_locked",
                        event_id=update.event_id,
                    )
        self.config = config
        self.dialect = "ga" if update.shape == "ga" else "beta"
        kind = (
            "transcription_session.updated" if update.shape == "transcription_session" else "session.updated"
        )
        return self._event(kind, session=self._session(update.shape))

    def start(self) -> tuple[Start, TurnMode]:
        """The Palabre `Start` and turn mode for the first audio (the caller then sets
        `audio_started`, once the session opened)."""
        cfg = self.config
        start = Start(
            sample_rate=cfg.input_format.sample_rate,
            encoding=cfg.input_format.encoding,
            language=cfg.transcription.language,
            partials=True,
            vocabulary=(cfg.transcription.prompt,) if cfg.transcription.prompt.strip() else (),
            diarize=cfg.transcription.diarize,
        )
        return start, "vad" if cfg.server_vad else "manual"

    def cleared(self) -> JsonObject:
        """`input_audio_buffer.cleared`; the items of the turn in progress are forgotten."""
        for key in [k for k, item in self._items.items() if not item.committed]:
            del self._items[key]
        return self._event("input_audio_buffer.cleared")

    def error(self, error: ProtocolError) -> JsonObject:
        """The `error` event of a protocol error."""
        return error_event(error, self._new_id("event"))

    # --- Palabre events --------------------------------------------------------------------

    def translate(self, event: ServerEvent) -> list[JsonObject]:
        """The Realtime events for one Palabre event (none for `ready`, `closed`, answers…)."""
        if isinstance(event, SpeechStarted):
            item = self._item(event.utterance_id)
            if not self.config.server_vad:
                return []
            return [
                self._event(
                    "input_audio_buffer.speech_started", audio_start_ms=_ms(event.start), item_id=item.id
                )
            ]
        if isinstance(event, SpeechStopped):
            return self._committed(event)
        if isinstance(event, Partial):
            item = self._item(event.utterance_id)
            return self._delta(item, event.stable)
        if isinstance(event, Final):
            return self._completed(event)
        if isinstance(event, Error):
            return [error_event(ProtocolError(event.code, event.message), self._new_id("event"))]
        return []

    def _committed(self, event: SpeechStopped) -> list[JsonObject]:
        item = self._item(event.utterance_id)
        item.committed = True
        out = []
        if self.config.server_vad:
            out.append(
                self._event("input_audio_buffer.speech_stopped", audio_end_ms=_ms(event.end), item_id=item.id)
            )
        previous = self._previous_item_id
        out.append(self._event("input_audio_buffer.committed", previous_item_id=previous, item_id=item.id))
        kind = "conversation.item.added" if self.dialect == "ga" else "conversation.item.created"
        out.append(self._event(kind, previous_item_id=previous, item=_user_item(item.id, None)))
        self._previous_item_id = item.id
        return out

    def _delta(self, item: _Item, text: str) -> list[JsonObject]:
        """A delta of the text past what was sent, when `text` extends it."""
        if len(text) <= len(item.sent) or not text.startswith(item.sent):
            return []
        delta = text[len(item.sent) :]
        item.sent = text
        return [
            self._event(
                "conversation.item.input_audio_transcription.delta",
                item_id=item.id,
                content_index=0,
                delta=delta,
            )
        ]

    def _completed(self, final: Final) -> list[JsonObject]:
        item = self._items.pop(final.utterance_id, None) or _Item(self._new_id("item"))
        out = self._delta(item, final.text)
        speaker: JsonObject = {}
        if self.config.transcription.diarize:  # an extension: the Realtime API has no such field
            speaker["speaker"] = final.speaker
            if final.speaker_name is not None:
                speaker["speaker_name"] = final.speaker_name
        out.append(
            self._event(
                "conversation.item.input_audio_transcription.completed",
                item_id=item.id,
                content_index=0,
                transcript=final.text,
                usage={"type": "duration", "seconds": round(max(0.0, final.end - final.start), 3)},
                **speaker,
            )
        )
        if self.dialect == "ga":
            out.append(self._event("conversation.item.done", item=_user_item(item.id, final.text)))
        return out

    def _item(self, utterance_id: str) -> _Item:
        item = self._items.get(utterance_id)
        if item is None:
            item = self._items[utterance_id] = _Item(self._new_id("item"))
        return item

    # --- shapes ----------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> JsonObject:
        return {"type": kind, "event_id": self._new_id("event"), **fields}

    def _shape(self) -> UpdateShape:
        if self.dialect == "ga":
            return "ga"
        return "transcription_session" if self.config.kind == "transcription" else "beta"

    def _session(self, shape: UpdateShape) -> JsonObject:
        """The session object in the shape of the client's update (or of the dialect)."""
        cfg = self.config
        transcription = {
            "model": cfg.transcription.model,
            "language": cfg.transcription.language,
            "prompt": cfg.transcription.prompt,
        }
        turn_detection = self._turn_detection() if cfg.server_vad else None
        realtime = cfg.kind == "realtime"
        obj = "realtime.session" if realtime else "realtime.transcription_session"
        if shape == "ga":
            session: JsonObject = {"type": cfg.kind, "object": obj, "id": self.session_id}
            if realtime:
                session.update(model=cfg.model, output_modalities=["text"])
            session["audio"] = {
                "input": {
                    "format": _ga_format_object(cfg.input_format),
                    "transcription": transcription,
                    "noise_reduction": None,
                    "turn_detection": turn_detection,
                }
            }
            session["include"] = None
            return session
        session = {"id": self.session_id, "object": obj}
        if realtime:
            session["model"] = cfg.model
        else:
            session["client_secret"] = None  # only sessions made over REST have one
        session.update(
            modalities=["text"],
            input_audio_format=_beta_format_name(cfg.input_format),
            input_audio_transcription=transcription,
            turn_detection=turn_detection,
            input_audio_noise_reduction=None,
            include=None,
        )
        return session

    def _turn_detection(self) -> JsonObject:
        """Palabre's effective VAD settings in Realtime terms."""
        return {
            "type": "server_vad",
            "threshold": self.vad.threshold,
            "prefix_padding_ms": self.vad.pad_ms,
            "silence_duration_ms": self.vad.min_silence_ms,
        }


def _user_item(item_id: str, transcript: str | None) -> JsonObject:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _ga_format_object(fmt: AudioFormat) -> JsonObject:
    if fmt.encoding == "mulaw":
        return {"type": "audio/pcmu"}
    if fmt.encoding == "alaw":
        return {"type": "audio/pcma"}
    return {"type": "audio/pcm", "rate": fmt.sample_rate}


def _beta_format_name(fmt: AudioFormat) -> str:
    return {"mulaw": "g711_ulaw", "alaw": "g711_alaw"}.get(fmt.encoding, "pcm16")


def _format_param(shape: UpdateShape) -> str:
    return "session.audio.input.format" if shape == "ga" else "session.input_audio_format"


def _turn_param(shape: UpdateShape) -> str:
    return "session.audio.input.turn_detection" if shape == "ga" else "session.turn_detection"


def _language_param(shape: UpdateShape) -> str:
    if shape == "ga":
        return "session.audio.input.transcription.language"
    return "session.input_audio_transcription.language"
