"""server/codecs/rtp.py: RTP packets captured from baresip, reordering and G.711 audio."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.codecs import rtp
from server.codecs.rtp import G711Receiver, Reorderer, RtpPacket
from stream.errors import ErrorCode, ProtocolError
from tests.server.sip_fixtures import fixture, rtp_pcmu

FUZZ = settings(max_examples=300, deadline=None)
SSRC = 4171996099


def packets() -> list[RtpPacket]:
    return [rtp.parse(data) for data in rtp_pcmu()]


def test_packets_of_a_softphone() -> None:
    first, second, *_ = packets()
    assert (first.payload_type, first.sequence, first.timestamp, first.ssrc) == (0, 4849, 40385, SSRC)
    assert first.marker and not second.marker  # the start of a talkspurt
    assert (first.csrcs, first.extension, first.padding) == ((), None, 0)
    assert len(first.payload) == 160  # 20 ms of 8 kHz μ-law
    assert [(p.sequence - 4849, p.timestamp - 40385) for p in packets()] == [(i, 160 * i) for i in range(8)]
    pcma = rtp.parse(fixture("rtp-pcma"))
    assert pcma.payload_type == 8 and len(pcma.payload) == 160


@pytest.mark.parametrize("name", [f"rtp-pcmu-{i}" for i in range(1, 9)] + ["rtp-pcma"])
def test_pack_is_the_inverse(name: str) -> None:
    assert rtp.pack(rtp.parse(fixture(name))) == fixture(name)


def test_rtcp_is_told_apart() -> None:
    rtcp = fixture("rtcp")
    assert rtp.is_rtcp(rtcp) and not any(rtp.is_rtcp(p) for p in rtp_pcmu())
    with pytest.raises(ProtocolError) as raised:
        rtp.parse(rtcp)
    assert raised.value.code is ErrorCode.BAD_AUDIO


def test_csrcs_extension_and_padding() -> None:
    packet = RtpPacket(
        payload_type=101,
        sequence=65535,
        timestamp=2**32 - 1,
        ssrc=1,
        payload=b"\x01\x0a\x00\xa0",
        marker=True,
        csrcs=(7, 8),
        extension=(0xBEDE, b"\x10\xff\x00\x00"),
        padding=4,
    )
    data = rtp.pack(packet)
    assert data[0] == 0b10_1_1_0010 and len(data) == 12 + 8 + 8 + 4 + 4
    assert rtp.parse(data) == packet


@pytest.mark.parametrize(
    "data",
    [
        b"",
        fixture("rtp-pcmu-2")[:11],
        b"\x40" + fixture("rtp-pcmu-2")[1:],  # version 1
        b"\xa0" + fixture("rtp-pcmu-2")[1:-1] + b"\x00",  # padding of 0 bytes
        b"\xa0" + fixture("rtp-pcmu-2")[1:-1] + b"\xff",  # padding longer than the packet
        b"\x90" + fixture("rtp-pcmu-2")[1:12] + b"\x00\x00\x00\x10",  # extension past the end
        b"\x8f" + fixture("rtp-pcmu-2")[1:20],  # 15 CSRCs in 20 bytes
    ],
)
def test_bad_packets(data: bytes) -> None:
    with pytest.raises(ProtocolError) as raised:
        rtp.parse(data)
    assert raised.value.code is ErrorCode.BAD_AUDIO


def with_sequence(packet: RtpPacket, sequence: int, ssrc: int | None = None) -> RtpPacket:
    return RtpPacket(
        packet.payload_type, sequence % 65536, packet.timestamp, ssrc or packet.ssrc, packet.payload
    )


def sequences(out: list[RtpPacket]) -> list[int]:
    return [p.sequence for p in out]


def test_reorder_a_small_window() -> None:
    p = packets()
    reorderer = Reorderer(depth=2)
    out: list[RtpPacket] = []
    for i in (0, 2, 1, 1, 3, 0, 5, 6, 7):  # 1 late, a duplicate of 1, a late 0, 4 lost
        out += reorderer.feed(p[i])
    out += reorderer.flush()
    assert sequences(out) == [4849, 4850, 4851, 4852, 4854, 4855, 4856]
    assert (reorderer.dropped, reorderer.lost) == (2, 1)


def test_waits_for_at_most_depth_packets() -> None:
    p = packets()
    reorderer = Reorderer(depth=2)
    assert sequences(reorderer.feed(p[0])) == [4849]
    assert reorderer.feed(p[2]) == [] and reorderer.feed(p[3]) == []
    assert sequences(reorderer.feed(p[4])) == [4851, 4852, 4853]  # 4850 given up
    assert reorderer.feed(p[1]) == [] and reorderer.dropped == 1  # too late


def test_sequence_wrap_and_restarts() -> None:
    base = packets()[1]
    reorderer = Reorderer(depth=2)
    out: list[RtpPacket] = []
    for sequence in (65534, 0, 65535, 1, 2):
        out += reorderer.feed(with_sequence(base, sequence))
    assert sequences(out) == [65534, 65535, 0, 1, 2]
    assert reorderer.feed(with_sequence(base, 20000)) == []  # a lone jump: dropped
    out = reorderer.feed(with_sequence(base, 40000))  # a jump the next packet confirms: a restart
    out += reorderer.feed(with_sequence(base, 40001))
    out += reorderer.feed(with_sequence(base, 3))  # the old stream is far behind now
    assert sequences(out) == [40000, 40001] and reorderer.restarts == 1
    assert reorderer.dropped == 2
    out = reorderer.feed(with_sequence(base, 7, ssrc=99))  # another source
    assert sequences(out) == [7] and reorderer.restarts == 2 and reorderer.ssrc == 99


@FUZZ
@given(st.lists(st.integers(0, 30), max_size=60), st.integers(0, 65535), st.integers(0, 4))
def test_reorder_never_repeats_or_goes_back(order: list[int], start: int, depth: int) -> None:
    """Within a window of 30, whatever the order: increasing, no repeats, all kept when the window fits."""
    base = packets()[1]
    reorderer = Reorderer(depth=depth)
    out: list[RtpPacket] = []
    for offset in order:
        out += reorderer.feed(with_sequence(base, start + offset))
    out += reorderer.flush()
    unwrapped = [(p.sequence - start) % 65536 for p in out]
    assert unwrapped == sorted(set(unwrapped))
    if order and depth >= len(order):  # a window as large as the stream: everything after the first
        assert unwrapped == sorted({o for o in order if o >= order[0]})


def test_g711_audio_with_a_lost_packet_filled() -> None:
    p = packets()
    receiver = G711Receiver(0, "mulaw", depth=1)
    audio = b"".join(receiver.feed(packet) for i, packet in enumerate(p) if i != 3) + receiver.flush()
    assert len(audio) == 8 * 160 and receiver.filled == 160
    assert audio[3 * 160 : 4 * 160] == b"\xff" * 160
    assert audio[:160] == p[0].payload and audio[-160:] == p[7].payload


def test_g711_ignores_events_and_starts_over() -> None:
    p = packets()
    receiver = G711Receiver(0, "mulaw", depth=0, max_gap_s=1.0)
    event = RtpPacket(101, p[1].sequence, p[1].timestamp, SSRC, b"\x01\x0a\x00\xa0")
    assert receiver.feed(p[0]) == p[0].payload
    assert receiver.feed(event) == b"" and receiver.ignored == 1
    assert receiver.feed(p[2]) == b"\xff" * 160 + p[2].payload  # the event's time is silence
    far = RtpPacket(0, p[3].sequence, p[3].timestamp + 8000 * 5, SSRC, p[3].payload)
    assert receiver.feed(far) == p[3].payload  # a jump beyond max_gap_s: no fill
    other = RtpPacket(0, 1, 0, 42, p[4].payload)
    assert receiver.feed(other) == p[4].payload
    assert (
        G711Receiver(8, "alaw", depth=0).feed(rtp.parse(fixture("rtp-pcma")))
        == rtp.parse(fixture("rtp-pcma")).payload
    )


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_any_bytes(data: bytes) -> None:
    try:
        packet = rtp.parse(data)
    except ProtocolError:
        return
    assert rtp.parse(rtp.pack(packet)) == packet
