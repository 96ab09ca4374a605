"""server/codecs/native.py: the WebRTC signalling messages and the WebRTC `start`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.codecs.native import MAX_SDP_CHARS, WEBRTC_SAMPLE_RATE, parse_client_text, serialize_event
from stream.errors import ErrorCode, ProtocolError
from stream.events import Start, WebRtcAnswer, WebRtcCandidate, WebRtcOffer

OFFER_SDP = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "a=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n"
    "a=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n"
)


def message(**fields: Any) -> str:
    return json.dumps(fields)


def error_code(text: str) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        parse_client_text(text)
    return info.value.code


def test_webrtc_start_takes_the_transports_format() -> None:
    assert parse_client_text(message(type="start", transport="webrtc", language="en")) == Start(
        sample_rate=WEBRTC_SAMPLE_RATE, encoding="pcm_s16le", language="en", channels=1, transport="webrtc"
    )
    explicit = message(type="start", transport="webrtc", sample_rate=48000, encoding="pcm_s16le", channels=1)
    assert parse_client_text(explicit) == Start(sample_rate=48000, transport="webrtc")


@pytest.mark.parametrize("transport", [{}, {"transport": "socket"}, {"transport": None}])
def test_socket_is_the_default_transport(transport: dict[str, Any]) -> None:
    start = parse_client_text(message(type="start", sample_rate=16000, **transport))
    assert isinstance(start, Start) and start.transport == "socket"


@pytest.mark.parametrize(
    "fields",
    [
        {"transport": "webrtc", "sample_rate": 16000},
        {"transport": "webrtc", "channels": 2},
        {"transport": "webrtc", "encoding": "mulaw"},
        {"transport": "sip", "sample_rate": 8000},
        {"transport": 1, "sample_rate": 8000},
    ],
)
def test_bad_webrtc_starts(fields: dict[str, Any]) -> None:
    assert error_code(message(type="start", **fields)) is ErrorCode.BAD_START


def test_offer() -> None:
    assert parse_client_text(message(type="webrtc.offer", sdp=OFFER_SDP)) == WebRtcOffer(OFFER_SDP)


@pytest.mark.parametrize(
    "sdp",
    [
        None,
        42,
        "",
        "hello",
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
        OFFER_SDP + "a=x" * (MAX_SDP_CHARS // 3),
    ],
)
def test_bad_offers(sdp: object) -> None:
    assert error_code(message(type="webrtc.offer", sdp=sdp)) is ErrorCode.BAD_OFFER


@pytest.mark.parametrize(
    ("candidate", "parsed"),
    [
        (
            "candidate:1 1 udp 2122260223 10.0.0.2 50000 typ host",
            "candidate:1 1 udp 2122260223 10.0.0.2 50000 typ host",
        ),
        (
            {"candidate": "candidate:2 1 udp 1 10.0.0.3 9 typ host", "sdpMid": "0"},
            "candidate:2 1 udp 1 10.0.0.3 9 typ host",
        ),
        (None, None),
        (7, None),
    ],
)
def test_candidates_are_accepted_in_any_shape(candidate: object, parsed: str | None) -> None:
    assert parse_client_text(message(type="webrtc.candidate", candidate=candidate)) == WebRtcCandidate(parsed)


def test_answer_serialization() -> None:
    assert json.loads(serialize_event(WebRtcAnswer("v=0\r\n"))) == {"type": "webrtc.answer", "sdp": "v=0\r\n"}
