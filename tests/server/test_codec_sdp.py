"""server/codecs/sdp.py: a softphone's offers (captured from baresip) and Palabre's answers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.codecs import sdp
from server.codecs.sip import parse as parse_sip
from stream.errors import ErrorCode, ProtocolError
from tests.server.sip_fixtures import fixture

FUZZ = settings(max_examples=300, deadline=None)


def offer_of(name: str) -> bytes:
    return parse_sip(fixture(name)).body


def test_the_offer_of_a_softphone() -> None:
    offer = sdp.parse(offer_of("invite"))
    assert offer.origin == "- 1689204604 1426410410 IN IP4 192.0.2.2"
    assert offer.connection == "192.0.2.2" and offer.direction is None
    (audio,) = offer.media
    assert (audio.kind, audio.port, audio.protocol, audio.formats) == (
        "audio",
        4812,
        "RTP/AVP",
        ("0", "8", "101"),
    )
    assert audio.rtpmap == {
        0: sdp.RtpMap("PCMU", 8000),
        8: sdp.RtpMap("PCMA", 8000),
        101: sdp.RtpMap("telephone-event", 8000),
    }
    assert audio.fmtp == {101: "0-15"}
    assert (audio.direction, audio.ptime, audio.rtcp_mux) == ("sendrecv", 20, False)


def test_negotiate_and_answer() -> None:
    offer = sdp.parse(offer_of("invite"))
    chosen = sdp.negotiate(offer)
    assert chosen == sdp.Negotiated(
        media_index=0,
        payload_type=0,
        encoding="mulaw",
        telephone_event=101,
        telephone_event_fmtp="0-15",
        remote_address="192.0.2.2",
        remote_port=4812,
        ptime=20,
        direction="recvonly",
    )
    answer = sdp.build_answer(offer, chosen, address="127.0.0.1", port=20000, session_id=7, version=1)
    assert answer == (
        b"v=0\r\n"
        b"o=palabre 7 1 IN IP4 127.0.0.1\r\n"
        b"s=palabre\r\n"
        b"c=IN IP4 127.0.0.1\r\n"
        b"t=0 0\r\n"
        b"m=audio 20000 RTP/AVP 0 101\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-15\r\n"
        b"a=ptime:20\r\n"
        b"a=recvonly\r\n"
    )
    reread = sdp.parse(answer)
    assert reread.media[0].direction == "recvonly" and reread.media[0].port == 20000


def test_pcma_and_hold() -> None:
    pcma = sdp.negotiate(sdp.parse(offer_of("invite-pcma")))
    assert (pcma.payload_type, pcma.encoding, pcma.remote_port) == (8, "alaw", 20048)
    assert sdp.negotiate(sdp.parse(offer_of("invite")), ("PCMA",)).payload_type == 8
    hold = sdp.parse(offer_of("reinvite-hold"))
    assert hold.media[0].direction == "sendonly"
    assert sdp.negotiate(hold).direction == "recvonly"  # the caller still sends
    for direction in ("recvonly", "inactive"):
        offer = offer_of("invite").replace(b"a=sendrecv", b"a=" + direction.encode())
        assert sdp.negotiate(sdp.parse(offer)).direction == "inactive"


def test_static_payload_types_and_other_streams() -> None:
    text = (
        "v=0\no=- 1 1 IN IP6 ::1\ns=-\nt=0 0\n"
        "m=video 5002 RTP/AVP 96\nc=IN IP6 ::1\na=rtpmap:96 VP8/90000\n"
        "m=audio 0 RTP/AVP 0\n"
        "m=audio 5000 RTP/AVP 9 8\nc=IN IP6 ::2\na=rtcp-mux\n"
    )
    offer = sdp.parse(text)
    chosen = sdp.negotiate(offer)
    assert (chosen.media_index, chosen.payload_type, chosen.remote_address) == (2, 8, "::2")
    assert chosen.telephone_event is None and chosen.ptime is None
    answer = sdp.build_answer(offer, chosen, address="::1", port=30000, session_id=1, version=2).decode()
    assert answer.splitlines() == [
        "v=0",
        "o=palabre 1 2 IN IP6 ::1",
        "s=palabre",
        "c=IN IP6 ::1",
        "t=0 0",
        "m=video 0 RTP/AVP 96",
        "m=audio 0 RTP/AVP 0",
        "m=audio 30000 RTP/AVP 8",
        "a=rtpmap:8 PCMA/8000",
        "a=recvonly",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ((b"m=audio 4812 RTP/AVP 0 8 101", b"m=audio 4812 RTP/AVP 9 101"), "no PCMU/PCMA"),
        ((b"m=audio 4812 RTP/AVP", b"m=audio 4812 RTP/SAVP"), "RTP/SAVP"),
        ((b"m=audio 4812", b"m=video 4812"), "no audio"),
        ((b"m=audio 4812", b"m=audio 0"), "no audio"),
        ((b"c=IN IP4 192.0.2.2\r\n", b""), "no connection"),
        ((b"c=IN IP4 192.0.2.2", b"c=IN IP4"), "connection line"),
        ((b"m=audio 4812", b"m=audio 99999"), "media line"),
        ((b"v=0", b"v=1"), "v=0"),
        ((b"s=-", b"s -"), "bad SDP line"),
        ((b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:0 PCMU/16000"), None),  # 0 is then 16 kHz: PCMA
    ],
)
def test_offers_palabre_cannot_answer(change: tuple[bytes, bytes], message: str | None) -> None:
    body = offer_of("invite").replace(*change)
    if message is None:
        assert sdp.negotiate(sdp.parse(body)).payload_type == 8
        return
    with pytest.raises(ProtocolError) as raised:
        sdp.negotiate(sdp.parse(body))
    assert raised.value.code is ErrorCode.BAD_OFFER and message in raised.value.message


def test_size_and_encoding_limits() -> None:
    with pytest.raises(ProtocolError):
        sdp.parse(b"v=0\r\n" + b"a=x\r\n" * 5000)
    with pytest.raises(ProtocolError):
        sdp.parse(b"v=0\r\ns=\xff\r\n")


@FUZZ
@given(st.binary(max_size=1000))
def test_fuzz_any_bytes(data: bytes) -> None:
    try:
        sdp.negotiate(sdp.parse(data))
    except ProtocolError:
        pass


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 340), st.binary(max_size=5)), max_size=4), st.integers(0, 339))
def test_fuzz_damaged_offers(edits: list[tuple[int, bytes]], cut: int) -> None:
    data = bytearray(offer_of("invite"))
    for position, replacement in edits:
        data[position : position + len(replacement)] = replacement
    try:
        offer = sdp.parse(bytes(data[: len(data) - cut]))
        chosen = sdp.negotiate(offer)
    except ProtocolError:
        return
    sdp.parse(sdp.build_answer(offer, chosen, address="127.0.0.1", port=20000, session_id=1, version=1))
