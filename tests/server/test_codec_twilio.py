"""server/codecs/twilio.py: parsing Twilio Media Streams messages."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.codecs.twilio import (
    TRACKS,
    Connected,
    Dtmf,
    Mark,
    Media,
    StreamStart,
    StreamStop,
    TwilioMessage,
    parse_message,
    session_start,
)
from stream.errors import ErrorCode, ProtocolError
from stream.events import CONVERSATION_ID_RE, Start

FUZZ = settings(max_examples=200, deadline=None)

# Messages as Twilio sends them (the examples of its Media Streams documentation).
CONNECTED = '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
START = """{
  "event": "start",
  "sequenceNumber": "1",
  "start": {
    "accountSid": "AC123",
    "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
    "callSid": "CA6d0dd0c1e4a2f6a5d9e4a1c7b3f8e2d1",
    "tracks": ["inbound", "outbound"],
    "customParameters": {"FirstName": "Jane", "LastName": "Doe"},
    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
  },
  "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0"
}"""
PAYLOAD = "no+JhoaJjpzSHxAKBgYJDhtEopGKh4aIjZm7JhILBwYIDBc0qZSLiIaHi5SpNBcMCAYHCxIm"
MEDIA = (
    '{"event": "media", "sequenceNumber": "3", "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",'
    ' "media": {"track": "outbound", "chunk": "1", "timestamp": "5", "payload": "' + PAYLOAD + '"}}'
)
DTMF = """{"event": "dtmf", "streamSid": "MZ18ad", "sequenceNumber": "5",
  "dtmf": {"track": "inbound_track", "digit": "1"}}"""
MARK = """{"event": "mark", "sequenceNumber": "4", "streamSid": "MZ18ad", "mark": {"name": "my label"}}"""
STOP = """{"event": "stop", "sequenceNumber": "5", "streamSid": "MZ18ad",
  "stop": {"accountSid": "AC123", "callSid": "CA6d0dd0c1e4a2f6a5d9e4a1c7b3f8e2d1"}}"""


def start_with(**changes: Any) -> str:
    obj = json.loads(START)
    obj["start"].update(changes)
    return json.dumps(obj)


def media_with(**changes: Any) -> str:
    obj = json.loads(MEDIA)
    obj["media"].update(changes)
    return json.dumps(obj)


def error_code(text: str | bytes, **kwargs: Any) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        parse_message(text, **kwargs)
    return info.value.code


# --- the messages Twilio sends -----------------------------------------------------------------


def test_connected() -> None:
    assert parse_message(CONNECTED) == Connected(protocol="Call", version="1.0.0")


def test_start() -> None:
    start = parse_message(START)
    assert start == StreamStart(
        stream_sid="MZ18ad3ab5a668481ce02b83e7395059f0",
        call_sid="CA6d0dd0c1e4a2f6a5d9e4a1c7b3f8e2d1",
        account_sid="AC123",
        tracks=("inbound", "outbound"),
        custom_parameters={"FirstName": "Jane", "LastName": "Doe"},
        conversation_id="CA6d0dd0c1e4a2f6a5d9e4a1c7b3f8e2d1",
        language=None,
    )


def test_start_custom_parameters_name_the_conversation_and_language() -> None:
    start = parse_message(start_with(customParameters={"conversation_id": "call-42", "language": "FR"}))
    assert isinstance(start, StreamStart)
    assert start.conversation_id == "call-42"
    assert start.language == "fr"
    auto = parse_message(start_with(customParameters={"language": "auto"}))
    assert isinstance(auto, StreamStart) and auto.language is None


def test_start_without_optional_fields() -> None:
    text = '{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1","tracks":["inbound"]}}'
    start = parse_message(text)
    assert isinstance(start, StreamStart)
    assert (start.tracks, start.custom_parameters, start.account_sid) == (("inbound",), {}, None)


def test_session_start_per_track() -> None:
    start = parse_message(start_with(customParameters={"conversation_id": "c1", "language": "en"}))
    assert isinstance(start, StreamStart)
    assert session_start(start, "outbound") == Start(
        sample_rate=8000,
        encoding="mulaw",
        language="en",
        channels=1,
        conversation_id="c1",
        partials=False,
        track="outbound",
    )


def test_session_start_diarizes_as_the_diarize_parameter_says_else_the_server_default() -> None:
    def diarized(params: dict[str, str], default: bool) -> bool:
        start = parse_message(start_with(customParameters=params))
        assert isinstance(start, StreamStart)
        return session_start(start, "inbound", default).diarize

    assert diarized({}, False) is False and diarized({}, True) is True
    assert diarized({"diarize": "true"}, False) is True
    assert diarized({"diarize": "False"}, True) is False


def test_media() -> None:
    media = parse_message(MEDIA)
    assert isinstance(media, Media)
    assert (media.track, media.chunk, media.timestamp) == ("outbound", 1, 5)
    assert media.payload[:3] == bytes([0x9E, 0x8F, 0x89])
    assert len(media.payload) == 54


def test_media_numbers_may_be_integers_or_absent() -> None:
    payload = base64.b64decode(PAYLOAD)
    assert parse_message(media_with(chunk=7, timestamp=140)) == Media("outbound", payload, 7, 140)
    obj = json.loads(MEDIA)
    del obj["media"]["chunk"], obj["media"]["timestamp"]
    media = parse_message(json.dumps(obj))
    assert isinstance(media, Media) and media.chunk is None and media.timestamp is None


def test_dtmf_mark_stop() -> None:
    assert parse_message(DTMF) == Dtmf(track="inbound_track", digit="1")
    assert parse_message(MARK) == Mark(name="my label")
    assert parse_message(STOP) == StreamStop(call_sid="CA6d0dd0c1e4a2f6a5d9e4a1c7b3f8e2d1")
    assert parse_message('{"event":"stop"}') == StreamStop()


def test_bytes_are_accepted() -> None:
    assert parse_message(CONNECTED.encode()) == Connected("Call", "1.0.0")


# --- refused -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", ErrorCode.BAD_JSON),
        ("not json", ErrorCode.BAD_JSON),
        ("[1, 2]", ErrorCode.BAD_JSON),
        (b"\xff\xfe", ErrorCode.BAD_JSON),
        ("[" * 100_000, ErrorCode.BAD_JSON),
        ("{}", ErrorCode.UNKNOWN_TYPE),
        ('{"event": 3}', ErrorCode.UNKNOWN_TYPE),
        ('{"event": "clear"}', ErrorCode.UNKNOWN_TYPE),
        ('{"event": "start"}', ErrorCode.BAD_START),
        ('{"event": "media", "media": []}', ErrorCode.BAD_AUDIO),
        ('{"event": "dtmf", "dtmf": {"track": "inbound_track"}}', ErrorCode.BAD_JSON),
        ('{"event": "mark", "mark": {"name": 3}}', ErrorCode.BAD_JSON),
    ],
)
def test_refused_messages(text: str | bytes, code: ErrorCode) -> None:
    assert error_code(text, max_bytes=1_000_000) == code


@pytest.mark.parametrize(
    "changes",
    [
        {"tracks": []},
        {"tracks": "inbound"},
        {"tracks": ["inbound", "inbound"]},
        {"tracks": ["both_tracks"]},
        {"callSid": None},
        {"callSid": ""},
        {"streamSid": 5},
        {"customParameters": ["conversation_id", "x"]},
        {"customParameters": {"conversation_id": "has space"}},
        {"customParameters": {"conversation_id": "-leading-dash"}},
        {"customParameters": {"conversation_id": "x" * 129}},
        {"customParameters": {"language": "english"}},
        {"customParameters": {"diarize": "yes"}},
        {"mediaFormat": {"encoding": "audio/x-alaw", "sampleRate": 8000, "channels": 1}},
        {"mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1}},
        {"mediaFormat": "mulaw"},
    ],
)
def test_refused_starts(changes: dict[str, Any]) -> None:
    assert error_code(start_with(**changes)) == ErrorCode.BAD_START


def test_call_sid_must_make_a_conversation_id() -> None:
    assert error_code(start_with(callSid="CA 1")) == ErrorCode.BAD_START


@pytest.mark.parametrize(
    "changes",
    [
        {"track": "inbound_track"},
        {"track": None},
        {"payload": "not base64!"},
        {"payload": "abc"},
        {"payload": None},
        {"chunk": "-1"},
        {"chunk": "1.5"},
        {"timestamp": True},
        {"timestamp": "٣"},
    ],
)
def test_refused_media(changes: dict[str, Any]) -> None:
    assert error_code(media_with(**changes)) == ErrorCode.BAD_AUDIO


def test_size_limit() -> None:
    text = media_with(payload=base64.b64encode(bytes(1000)).decode())
    assert isinstance(parse_message(text, max_bytes=len(text)), Media)
    assert error_code(text, max_bytes=len(text) - 1) == ErrorCode.FRAME_TOO_LARGE


# --- fuzz --------------------------------------------------------------------------------------


def parses_or_refuses(text: str | bytes) -> TwilioMessage | None:
    try:
        return parse_message(text)
    except ProtocolError as exc:
        assert isinstance(exc.code, ErrorCode)
        assert isinstance(exc.message, str)
        return None


@FUZZ
@given(st.text(max_size=300))
def test_fuzz_text(text: str) -> None:
    parses_or_refuses(text)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_bytes(data: bytes) -> None:
    parses_or_refuses(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
known_values = st.sampled_from(
    ["inbound", "outbound", "CA1", "MZ1", "AAAA", "1", 8000, "audio/x-mulaw", "c-1", "en", ["inbound"]]
)
bodies = st.dictionaries(
    st.sampled_from(
        [
            "streamSid",
            "callSid",
            "tracks",
            "customParameters",
            "mediaFormat",
            "track",
            "chunk",
            "timestamp",
            "payload",
            "digit",
            "name",
        ]
    ),
    json_values | known_values,
)


@FUZZ
@given(st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "clear", None]), bodies)
def test_fuzz_messages(event: str | None, body: dict[str, Any]) -> None:
    text = json.dumps({"event": event, str(event): body}, allow_nan=True)
    message = parses_or_refuses(text)
    if isinstance(message, StreamStart):
        assert message.tracks and set(message.tracks) <= set(TRACKS)
        assert CONVERSATION_ID_RE.fullmatch(message.conversation_id)
        for track in message.tracks:
            assert session_start(message, track).track == track
    elif isinstance(message, Media):
        assert message.track in TRACKS
