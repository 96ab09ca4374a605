"""server/codecs/native.py: parsing client text messages, serializing server events."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.codecs.json_text import MAX_DEPTH
from server.codecs.native import MAX_TEXT_BYTES, PARSERS, parse_client_text, serialize_event
from stream.errors import CloseCode, ErrorCode, ProtocolError
from stream.events import (
    ENCODINGS,
    Ask,
    Closed,
    Error,
    Final,
    Partial,
    Ready,
    ServerEvent,
    SpeechStarted,
    SpeechStopped,
    Start,
    Stop,
    Word,
    event_to_dict,
)

FUZZ = settings(max_examples=200, deadline=None)


def start(**fields: Any) -> str:
    return json.dumps({"type": "start", "sample_rate": 16000, **fields})


def error_code(text: str | bytes, **kwargs: Any) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        parse_client_text(text, **kwargs)
    return info.value.code


# --- start -----------------------------------------------------------------------------------------


def test_start_example_from_the_docs() -> None:
    text = '{"type":"start","sample_rate":16000,"encoding":"pcm_s16le","language":"en"}'
    assert parse_client_text(text) == Start(sample_rate=16000, encoding="pcm_s16le", language="en")


def test_start_channel_tracks_name_each_channel() -> None:
    message = parse_client_text(start(channels=2, channel_tracks=["Alice", "Bob"]))
    assert message == Start(16000, channels=2, channel_tracks=("Alice", "Bob"))


def test_start_defaults() -> None:
    assert parse_client_text('{"type":"start","sample_rate":8000}') == Start(
        sample_rate=8000,
        encoding="pcm_s16le",
        language=None,
        channels=1,
        conversation_id=None,
        partials=True,
        track=None,
    )


def test_start_every_field() -> None:
    text = start(
        sample_rate=8000,
        encoding="mulaw",
        language="FR",
        channels=2,
        conversation_id="call-42.leg_1-a",
        partials=False,
        track="inbound",
        diarize=True,
        client_id="page-7f3a_1",
        future_field={"nested": [1, 2]},
    )
    assert parse_client_text(text) == Start(
        sample_rate=8000,
        encoding="mulaw",
        language="fr",
        channels=2,
        conversation_id="call-42.leg_1-a",
        partials=False,
        track="inbound",
        diarize=True,
        client_id="page-7f3a_1",
    )


def test_start_null_fields_take_defaults() -> None:
    text = start(encoding=None, language=None, channels=None, conversation_id=None, partials=None, track=None,
                 diarize=None)
    assert parse_client_text(text) == Start(sample_rate=16000)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_start_encodings(encoding: str) -> None:
    message = parse_client_text(start(encoding=encoding))
    assert isinstance(message, Start) and message.encoding == encoding


@pytest.mark.parametrize(("wire", "language"), [("auto", None), ("AUTO", None), ("en", "en"), ("haw", "haw")])
def test_start_language(wire: str, language: str | None) -> None:
    message = parse_client_text(start(language=wire))
    assert isinstance(message, Start) and message.language == language


@pytest.mark.parametrize(("wire", "rate"), [(8000, 8000), (48000, 48000), (16000.0, 16000), (44100, 44100)])
def test_start_sample_rates(wire: object, rate: int) -> None:
    message = parse_client_text(start(sample_rate=wire))
    assert isinstance(message, Start) and message.sample_rate == rate and type(message.sample_rate) is int


@pytest.mark.parametrize(
    "fields",
    [
        {"sample_rate": None},
        {"sample_rate": 7999},
        {"sample_rate": 48001},
        {"sample_rate": 16000.5},
        {"sample_rate": 1e300},
        {"sample_rate": True},
        {"sample_rate": "16000"},
        {"sample_rate": [16000]},
        {"encoding": "opus"},
        {"encoding": "PCM_S16LE"},
        {"encoding": 1},
        {"language": "english"},
        {"language": "e"},
        {"language": "e1"},
        {"language": "zh-CN"},
        {"language": ""},
        {"language": 12},
        {"channels": 0},
        {"channels": 9},
        {"channels": True},
        {"channels": 1.5},
        {"channels": "2"},
        {"channel_tracks": ["Alice"]},  # channels 1
        {"channels": 2, "channel_tracks": ["Alice"]},
        {"channels": 2, "channel_tracks": ["Alice", "Alice"]},
        {"channels": 2, "channel_tracks": ["Alice", None]},
        {"channels": 2, "channel_tracks": ["Alice", ""]},
        {"channels": 2, "channel_tracks": "Alice,Bob"},
        {"channels": 2, "channel_tracks": ["Alice", "x" * 65]},
        {"conversation_id": ""},
        {"conversation_id": "a" * 129},
        {"conversation_id": "has space"},
        {"conversation_id": "slash/no"},
        {"conversation_id": "é"},
        {"conversation_id": 42},
        {"partials": 1},
        {"partials": "true"},
        {"diarize": 1},
        {"diarize": "yes"},
        {"client_id": ""},
        {"client_id": "has space"},
        {"client_id": "x" * 65},
        {"client_id": 7},
        {"track": ""},
        {"track": "x" * 65},
        {"track": "tab\there"},
        {"track": "\ud800"},
        {"track": 3},
        {"resume_after": 2},  # without conversation_id
        {"resume_after": -2, "conversation_id": "c"},
        {"resume_after": "3", "conversation_id": "c"},
        {"resume_after": 1.5, "conversation_id": "c"},
        {"resume_after": True, "conversation_id": "c"},
    ],
)
def test_start_refuses_bad_fields(fields: dict[str, object]) -> None:
    assert error_code(start(**fields)) is ErrorCode.BAD_START


def test_start_resume_after() -> None:
    message = parse_client_text(start(conversation_id="c1", resume_after=4))
    assert isinstance(message, Start) and message.resume_after == 4
    message = parse_client_text(start(conversation_id="c1", resume_after=-1))
    assert isinstance(message, Start) and message.resume_after == -1
    message = parse_client_text(start(conversation_id="c1"))
    assert isinstance(message, Start) and message.resume_after is None


def test_start_requires_sample_rate() -> None:
    assert error_code('{"type":"start","encoding":"mulaw"}') is ErrorCode.BAD_START


def test_start_accepts_limits() -> None:
    message = parse_client_text(start(conversation_id="a" * 128, track="é" * 64, channels=8))
    assert isinstance(message, Start) and message.channels == 8 and message.track == "é" * 64


def test_bad_start_error_is_short() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_text(start(encoding="x" * 10_000))
    assert len(info.value.message) < 200
    assert info.value.close is None


# --- stop, types, JSON -----------------------------------------------------------------------------


def test_stop() -> None:
    assert parse_client_text('{"type":"stop"}') == Stop()
    assert parse_client_text(b'{"type":"stop","reason":"done"}') == Stop()


def test_parsers_table() -> None:
    assert set(PARSERS) == {"start", "stop", "ask", "webrtc.offer", "webrtc.candidate"}


@pytest.mark.parametrize("text", ['{"type":"ping"}', '{"type":"Start"}', "{}", '{"type":null}', '{"type":1}'])
def test_unknown_type(text: str) -> None:
    assert error_code(text) is ErrorCode.UNKNOWN_TYPE


@pytest.mark.parametrize(
    "text",
    [
        "",
        "start",
        "{",
        '{"type":"stop"} x',
        '[{"type":"stop"}]',
        '"stop"',
        "null",
        "42",
        '{"type":"start","sample_rate":NaN}',
        '{"type":"start","sample_rate":Infinity}',
        '{"type":"start","sample_rate":' + "9" * 5000 + "}",
        b"\xff\xfe",
        b'{"type":"stop","x":"\xc3"}',
        "\ufeff" + '{"type":"stop"}',
    ],
)
def test_bad_json(text: str | bytes) -> None:
    assert error_code(text) is ErrorCode.BAD_JSON


def test_nesting_limit() -> None:
    def nested(depth: int) -> str:  # the top object is level 1
        return '{"type":"stop","x":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"

    assert parse_client_text(nested(MAX_DEPTH)) == Stop()
    assert error_code(nested(MAX_DEPTH + 1)) is ErrorCode.BAD_JSON
    assert error_code("[" * 30_000 + "]" * 30_000) is ErrorCode.BAD_JSON
    assert error_code('{"a":' * 10_000 + "1" + "}" * 10_000) is ErrorCode.BAD_JSON


def test_size_limit_counts_utf8_bytes() -> None:
    padding = "é" * 100  # 200 UTF-8 bytes
    text = '{"type":"stop","p":"' + padding + '"}'
    size = len(text.encode())
    assert parse_client_text(text, max_bytes=size) == Stop()
    assert parse_client_text(text.encode(), max_bytes=size) == Stop()
    with pytest.raises(ProtocolError) as info:
        parse_client_text(text, max_bytes=size - 1)
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    assert info.value.close is CloseCode.MESSAGE_TOO_BIG
    assert error_code(text.encode(), max_bytes=size - 1) is ErrorCode.FRAME_TOO_LARGE
    assert error_code(" " * (MAX_TEXT_BYTES + 1)) is ErrorCode.FRAME_TOO_LARGE


# --- serialize_event -------------------------------------------------------------------------------

EVENTS: list[ServerEvent] = [
    Ready(conversation_id="c1", session_id="s1", sample_rate=16000, model="base"),
    SpeechStarted(utterance_id="u1", start=1.23456),
    SpeechStopped(utterance_id="u1", end=2.5),
    Partial(utterance_id="u1", text="bonjour à", stable="bonjour", unstable=" à", start=1.2, end=2.0),
    Final(
        utterance_id="u1", text="Bonjour à tous.", start=1.2, end=2.5, language="fr", seq=0, track="inbound"
    ),
    Error(code=ErrorCode.BAD_START, message="sample_rate must be 8000..48000 Hz"),
    Closed(utterances=1),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_serialize_event_round_trips(event: ServerEvent) -> None:
    text = serialize_event(event)
    assert json.loads(text) == event_to_dict(event)
    assert next(iter(json.loads(text))) == "type"


def test_serialize_event_is_compact_utf8() -> None:
    assert serialize_event(SpeechStarted(utterance_id="u1", start=1.23456)) == (
        '{"type":"speech_started","utterance_id":"u1","start":1.235}'
    )
    assert serialize_event(Error(code=ErrorCode.OVERLOADED, message="busy")) == (
        '{"type":"error","code":"overloaded","message":"busy"}'
    )
    assert "à tous" in serialize_event(EVENTS[4])
    final_text = serialize_event(Final("u", "t", 0.0, 1.0, "en", 3))
    assert final_text.endswith('"seq":3,"track":null,"speaker":null}')


def test_serialize_event_refuses_nan() -> None:
    with pytest.raises(ValueError):
        serialize_event(SpeechStopped(utterance_id="u", end=float("nan")))


# --- fuzz ------------------------------------------------------------------------------------------


def parses_or_refuses(text: str | bytes) -> None:
    try:
        message = parse_client_text(text)
    except ProtocolError as exc:
        assert isinstance(exc.code, ErrorCode)
        assert isinstance(exc.message, str)
    else:
        assert isinstance(message, Start | Stop)


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
start_fields = st.dictionaries(
    st.sampled_from(
        ["sample_rate", "encoding", "language", "channels", "conversation_id", "partials", "track", "extra"]
    ),
    json_values
    | st.sampled_from([16000, 8000, 48000, 16000.0, "en", "auto", "mulaw", "f32le", "inbound", "c-1", True]),
)


@FUZZ
@given(start_fields, st.sampled_from(["start", "stop", "ask", None]))
def test_fuzz_json_messages(fields: dict[str, Any], kind: str | None) -> None:
    text = json.dumps({**fields, "type": kind}, allow_nan=True)
    try:
        message = parse_client_text(text)
    except ProtocolError as exc:
        # Any message fails as BAD_JSON on NaN/Infinity (json.dumps writes them) or deep nesting.
        expected = {"start": {ErrorCode.BAD_START}, "stop": set(), "ask": {ErrorCode.BAD_ASK}}.get(
            str(kind), {ErrorCode.UNKNOWN_TYPE}
        )
        assert exc.code in expected | {ErrorCode.BAD_JSON}
    else:
        assert isinstance(message, Start if kind == "start" else Stop)
        if isinstance(message, Start):
            assert 8000 <= message.sample_rate <= 48000
            assert message.encoding in ENCODINGS
            assert 1 <= message.channels <= 8
            assert message.language is None or 2 <= len(message.language) <= 3


@FUZZ
@given(
    rate=st.integers(8000, 48000),
    encoding=st.sampled_from(ENCODINGS),
    channels=st.integers(1, 8),
    language=st.sampled_from(["en", "fr", "yue", None]),
    conversation_id=st.none() | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", fullmatch=True),
    partials=st.booleans(),
    track=st.none()
    | st.text(
        st.characters(codec="utf-8", categories=["L", "N", "P", "S"], include_characters=" "),
        min_size=1,
        max_size=64,
    ),
)
def test_fuzz_valid_starts_round_trip(
    rate: int,
    encoding: str,
    channels: int,
    language: str | None,
    conversation_id: str | None,
    partials: bool,
    track: str | None,
) -> None:
    expected = Start(rate, encoding, language, channels, conversation_id, partials, track)  # type: ignore[arg-type]
    wire = {"type": "start", "sample_rate": rate, "encoding": encoding, "channels": channels}
    wire |= {"language": language or "auto", "conversation_id": conversation_id}
    wire |= {"partials": partials, "track": track}
    assert parse_client_text(json.dumps(wire)) == expected
    assert parse_client_text(json.dumps(wire, ensure_ascii=False).encode()) == expected


def test_ask() -> None:
    msg = parse_client_text('{"type":"ask","question":" What budget? ","scope":"tenant"}')
    assert msg == Ask("What budget?", "tenant", None, None)
    for bad in [
        '{"type":"ask"}',
        '{"type":"ask","question":""}',
        '{"type":"ask","question":"x","scope":"all"}',
        '{"type":"ask","question":"' + "x" * 1001 + '"}',
        '{"type":"ask","question":"x","conversation_id":"a:b"}',
    ]:
        with pytest.raises(ProtocolError) as info:
            parse_client_text(bad)
        assert info.value.code is ErrorCode.BAD_ASK


# --- vocabulary ------------------------------------------------------------------------------------


def test_start_vocabulary() -> None:
    message = parse_client_text(start(vocabulary=["Zyphrex", " Kessandra Vollmer "]))
    assert isinstance(message, Start) and message.vocabulary == ("Zyphrex", "Kessandra Vollmer")
    message = parse_client_text(start(vocabulary=None))
    assert isinstance(message, Start) and message.vocabulary == ()


@pytest.mark.parametrize(
    ("vocabulary", "says"),
    [
        ("Zyphrex,Kessandra Vollmer", "vocabulary must be a list of strings"),
        ([f"t{i}" for i in range(101)], "at most 100"),
        (["x" * 90] * 12, "bytes; at most 1024"),
        ([""], "non-empty string"),
    ],
)
def test_bad_vocabulary_is_a_bad_start(vocabulary: object, says: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_text(start(vocabulary=vocabulary))
    assert info.value.code == ErrorCode.BAD_START and says in info.value.message and info.value.close is None


# --- redact ----------------------------------------------------------------------------------------


def test_start_redact() -> None:
    message = parse_client_text(start(redact=["card", "phone", "email", "phone"]))
    assert isinstance(message, Start) and message.redact == ("phone", "email", "card")
    message = parse_client_text(start(redact=None))
    assert isinstance(message, Start) and message.redact == ()


@pytest.mark.parametrize(
    ("redact", "says"),
    [
        ("phone,email", "redact must be a list"),
        (["phone", "address"], "unknown kind 'address'"),
        ([1], "unknown kind"),
    ],
)
def test_bad_redact_is_a_bad_start(redact: object, says: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_text(start(redact=redact))
    assert info.value.code == ErrorCode.BAD_START and says in info.value.message and info.value.close is None


def test_word_timestamps_is_a_start_flag() -> None:
    assert parse_client_text(start()).word_timestamps is False  # type: ignore[union-attr]
    assert parse_client_text(start(word_timestamps=True)).word_timestamps is True  # type: ignore[union-attr]
    with pytest.raises(ProtocolError) as info:
        parse_client_text(start(word_timestamps="yes"))
    assert info.value.code == ErrorCode.BAD_START
    assert "word_timestamps must be true or false" in info.value.message


def test_a_final_carries_words_only_when_asked() -> None:
    plain = Final(utterance_id="c:0", text="Hi there.", start=1.0, end=2.0, language="en", seq=0)
    assert "words" not in json.loads(serialize_event(plain))
    words = (Word("Hi", 1.0, 1.2345, 0.9), Word(" there.", 1.2345, 2.0, 0.8))
    timed = dataclasses.replace(plain, words=words)
    assert json.loads(serialize_event(timed))["words"] == [
        {"word": "Hi", "start": 1.0, "end": 1.234, "probability": 0.9},
        {"word": " there.", "start": 1.234, "end": 2.0, "probability": 0.8},
    ]
    assert json.loads(serialize_event(dataclasses.replace(plain, words=())))["words"] == []
