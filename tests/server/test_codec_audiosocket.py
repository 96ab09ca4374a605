"""server/codecs/audiosocket.py: framing the Asterisk AudioSocket stream."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.codecs.audiosocket import (
    Audio,
    AudioSocketParser,
    CallId,
    Digit,
    ErrorFrame,
    Frame,
    Hangup,
    pack,
)
from stream.errors import ErrorCode, ProtocolError

FUZZ = settings(max_examples=200, deadline=None)

CALL = uuid.UUID("40325ec2-5efd-4bd3-805f-53576e581d13")
# A call as Asterisk's AudioSocket() writes it: the UUID, 20 ms of audio (160 samples of
# s16le), a DTMF digit, another audio frame, the hangup.
SAMPLES = b"".join(i.to_bytes(2, "little", signed=True) for i in range(-80, 80))
WIRE = (
    b"\x01\x00\x10" + bytes.fromhex("40325ec25efd4bd3805f53576e581d13")
    + b"\x10\x01\x40" + SAMPLES
    + b"\x03\x00\x01" + b"5"
    + b"\x10\x01\x40" + SAMPLES
    + b"\x00\x00\x00"
)  # fmt: skip
FRAMES: list[Frame] = [CallId(CALL), Audio(SAMPLES), Digit("5"), Audio(SAMPLES), Hangup()]


def parse_chunks(chunks: list[bytes], max_payload: int | None = None) -> tuple[list[Frame], ErrorCode | None]:
    """Every frame of a stream read in these chunks, and the error that ended it (if any)."""
    parser = AudioSocketParser() if max_payload is None else AudioSocketParser(max_payload)
    frames: list[Frame] = []
    try:
        for chunk in [*chunks, b""]:
            frames += parser.feed(chunk)
    except ProtocolError as error:
        return frames, error.code
    return frames, None


def test_a_call() -> None:
    assert AudioSocketParser().feed(WIRE) == FRAMES


def test_pack_is_the_inverse() -> None:
    assert b"".join(pack(frame) for frame in FRAMES) == WIRE
    assert pack(ErrorFrame(b"\x01")) == b"\xff\x00\x01\x01"
    assert pack(ErrorFrame()) == b"\xff\x00\x00"


def test_byte_by_byte() -> None:
    parser = AudioSocketParser()
    frames: list[Frame] = []
    for i in range(len(WIRE)):
        frames += parser.feed(WIRE[i : i + 1])
    assert frames == FRAMES
    assert parser.buffered == 0


def test_partial_frame_waits() -> None:
    parser = AudioSocketParser()
    assert parser.feed(WIRE[:100]) == [CallId(CALL)]
    assert parser.buffered == 100 - 19
    assert parser.feed(WIRE[100:]) == FRAMES[1:]


def test_error_frame() -> None:
    assert AudioSocketParser().feed(b"\xff\x00\x01\x02") == [ErrorFrame(b"\x02")]


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (b"\x02\x00\x00", ErrorCode.UNKNOWN_TYPE),
        (b"\x11\x01\x40", ErrorCode.UNKNOWN_TYPE),
        (b"\x10\xff\xff", ErrorCode.FRAME_TOO_LARGE),
        (b"\x01\x00\x04abcd", ErrorCode.BAD_START),
        (b"\x03\x00\x02" + b"12", ErrorCode.BAD_AUDIO),
    ],
)
def test_refused_frames(wire: bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        AudioSocketParser().feed(wire)
    assert info.value.code == code


def test_the_header_is_refused_before_its_payload_arrives() -> None:
    with pytest.raises(ProtocolError):
        AudioSocketParser(max_payload=320).feed(b"\x10\x01\x41")


def test_frames_before_an_error_are_returned_first() -> None:
    parser = AudioSocketParser()
    assert parser.feed(WIRE[:19] + b"\x7f\x00\x00") == [CallId(CALL)]
    assert parser.error is not None and parser.error.code == ErrorCode.UNKNOWN_TYPE
    for _ in range(2):  # the stream stays broken
        with pytest.raises(ProtocolError) as info:
            parser.feed(pack(Hangup()))
        assert info.value.code == ErrorCode.UNKNOWN_TYPE


def test_pack_refuses_what_cannot_be_framed() -> None:
    with pytest.raises(ValueError):
        pack(Audio(bytes(0x10000)))
    with pytest.raises(ValueError):
        pack(Digit("12"))


# --- fuzz --------------------------------------------------------------------------------------


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


frames = st.one_of(
    st.just(Hangup()),
    st.uuids().map(CallId),
    st.sampled_from("0123456789*#ABCD").map(Digit),
    st.binary(max_size=700).map(Audio),
    st.binary(max_size=2).map(ErrorFrame),
)


@FUZZ
@given(st.lists(frames, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
def test_fuzz_any_chunking_gives_the_frames(sent: list[Frame], cuts: list[int]) -> None:
    wire = b"".join(pack(frame) for frame in sent)
    assert parse_chunks(split(wire, cuts)) == (sent, None)


@FUZZ
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=10))
def test_fuzz_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    whole = parse_chunks([data], max_payload=200)  # the error is raised at the latest by the b"" feed
    assert parse_chunks(split(data, cuts), max_payload=200) == whole
    received, error = whole
    assert error is None or isinstance(error, ErrorCode)
    for frame in received:
        assert isinstance(frame, Hangup | CallId | Digit | Audio | ErrorFrame)
