"""server/codecs/json_text.py and fields.py: the same JSON limits and field rules in every codec."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from server.codecs.fields import language_code, show
from server.codecs.json_text import MAX_DEPTH, load_object
from server.codecs.native import parse_client_text
from server.codecs.realtime import parse_client_event
from server.codecs.twilio import parse_message
from stream.errors import CloseCode, ErrorCode, ProtocolError

Parse = Callable[[str], object]

PARSERS: dict[str, Parse] = {
    "native": lambda text: parse_client_text(text, 65_536),
    "twilio": lambda text: parse_message(text, 65_536),
    "realtime": lambda text: parse_client_event(text, 65_536),
}
"""Each JSON codec, with a message of its own kind in `MESSAGES`."""

MESSAGES = {
    "native": {"type": "stop"},
    "twilio": {"event": "connected", "protocol": "Call", "version": "1.0.0"},
    "realtime": {"type": "input_audio_buffer.clear"},
}


def nested(message: dict[str, object], depth: int) -> str:
    """`message` with an extra field nested `depth` levels deep, counting the message itself."""
    return json.dumps({**message, "extra": json.loads("[" * (depth - 1) + "]" * (depth - 1))})


def code_of(parse: Parse, text: str) -> ErrorCode | None:
    try:
        parse(text)
    except ProtocolError as error:
        return error.code
    return None


@pytest.mark.parametrize("codec", sorted(PARSERS))
def test_every_codec_has_the_same_json_limits(codec: str) -> None:
    parse, message = PARSERS[codec], MESSAGES[codec]
    assert code_of(parse, json.dumps(message)) is None
    assert code_of(parse, nested(message, MAX_DEPTH)) is None
    assert code_of(parse, nested(message, MAX_DEPTH + 1)) is ErrorCode.BAD_JSON
    for constant in ("NaN", "Infinity", "-Infinity"):
        assert code_of(parse, json.dumps(message)[:-1] + f',"x":{constant}}}') is ErrorCode.BAD_JSON
    assert code_of(parse, "[" * 60_000) is ErrorCode.BAD_JSON  # deeper than the parser recurses


def test_load_object_size_limit_closes() -> None:
    with pytest.raises(ProtocolError) as info:
        load_object('{"a":"' + "é" * 40 + '"}', 60)
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE and info.value.close is CloseCode.MESSAGE_TOO_BIG
    assert load_object(b'{"a":1}', 7) == {"a": 1}


def test_language_code() -> None:
    assert language_code("EN") == "en"
    assert language_code("haw") == "haw"
    assert language_code("Auto") is None
    for bad in ("e", "engl", "en-US", "", "é"):
        with pytest.raises(ValueError):
            language_code(bad)


def test_show_cuts_long_values() -> None:
    assert show("abc") == "'abc'"
    assert show("x" * 100) == "'" + "x" * 36 + "..."
    assert len(show(list(range(100)), 120)) == 120
