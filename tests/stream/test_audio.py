"""stream/audio.py: G.711 tables, format validation, streaming conversion to 16 kHz mono float32."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.audio import (
    ALAW_TO_INT16,
    MAX_CHANNELS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    MULAW_TO_INT16,
    AudioConverter,
    validate_format,
)
from stream.errors import ErrorCode, ProtocolError
from stream.events import ENCODINGS
from stream.interfaces import SAMPLE_RATE

FUZZ = settings(max_examples=150, deadline=None)


def s16(samples: npt.ArrayLike) -> bytes:
    return np.asarray(samples, dtype="<i2").tobytes()


def f32(samples: npt.ArrayLike) -> bytes:
    return np.asarray(samples, dtype="<f4").tobytes()


def nearest_codes(table: npt.NDArray[np.int16], linear: npt.NDArray[np.floating]) -> bytes:
    """A test-only G.711 encoder: the code whose decoded value is nearest each sample."""
    values = table.astype(np.float64)
    return np.abs(linear[:, None] - values[None, :]).argmin(axis=1).astype(np.uint8).tobytes()


def convert(conv: AudioConverter, chunks: list[bytes]) -> npt.NDArray[np.float32]:
    parts = [conv.feed(chunk) for chunk in chunks] + [conv.flush()]
    return np.concatenate(parts)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# --- G.711 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xFF, 0), (0x7F, 0), (0x00, -32124), (0x80, 32124), (0xFE, 8), (0x7E, -8), (0xF0, 120)],
)
def test_mulaw_known_values(code: int, value: int) -> None:
    assert MULAW_TO_INT16[code] == value


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0xC5, 264), (0x45, -264)],
)
def test_alaw_known_values(code: int, value: int) -> None:
    assert ALAW_TO_INT16[code] == value


def test_g711_tables_are_sign_symmetric() -> None:
    codes = np.arange(256)
    np.testing.assert_array_equal(MULAW_TO_INT16[codes], -MULAW_TO_INT16[codes ^ 0x80])
    np.testing.assert_array_equal(ALAW_TO_INT16[codes], -ALAW_TO_INT16[codes ^ 0x80])


def test_g711_tables_match_audioop() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    codes = bytes(range(256))
    np.testing.assert_array_equal(np.frombuffer(audioop.ulaw2lin(codes, 2), "<i2"), MULAW_TO_INT16)
    np.testing.assert_array_equal(np.frombuffer(audioop.alaw2lin(codes, 2), "<i2"), ALAW_TO_INT16)


@pytest.mark.parametrize(("encoding", "table"), [("mulaw", MULAW_TO_INT16), ("alaw", ALAW_TO_INT16)])
def test_g711_feed_decodes_every_code(encoding: str, table: npt.NDArray[np.int16]) -> None:
    conv = AudioConverter(encoding, 16_000)  # type: ignore[arg-type]
    out = conv.feed(bytes(range(256)))
    np.testing.assert_array_equal(out, table.astype(np.float32) / 32768)


# --- validate_format -------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("rate", [MIN_SAMPLE_RATE, 11_025, 16_000, 22_050, 44_100, MAX_SAMPLE_RATE])
@pytest.mark.parametrize("channels", [1, 2, MAX_CHANNELS])
def test_validate_format_accepts(encoding: str, rate: int, channels: int) -> None:
    validate_format(encoding, rate, channels)


@pytest.mark.parametrize(
    ("encoding", "rate", "channels"),
    [
        ("opus", 16_000, 1),
        ("PCM_S16LE", 16_000, 1),
        ("pcm_s16le", 7_999, 1),
        ("pcm_s16le", 48_001, 1),
        ("pcm_s16le", 0, 1),
        ("pcm_s16le", True, 1),
        ("pcm_s16le", 16_000.0, 1),
        ("pcm_s16le", "16000", 1),
        ("pcm_s16le", 16_000, 0),
        ("pcm_s16le", 16_000, MAX_CHANNELS + 1),
        ("pcm_s16le", 16_000, True),
        ("pcm_s16le", 16_000, 2.0),
    ],
)
def test_validate_format_refuses(encoding: str, rate: object, channels: object) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_format(encoding, rate, channels)  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.BAD_START


def test_converter_validates_its_format() -> None:
    with pytest.raises(ProtocolError):
        AudioConverter("pcm_s16le", 96_000)


# --- pass-through at 16 kHz ------------------------------------------------------------------------


def test_s16_pass_through_is_exact() -> None:
    samples = np.array([0, 1, -1, 16384, -32768, 32767], dtype=np.int16)
    conv = AudioConverter("pcm_s16le", SAMPLE_RATE)
    out = conv.feed(s16(samples))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, samples.astype(np.float32) / 32768)
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert conv.flush().size == 0


def test_f32_pass_through_sanitizes() -> None:
    conv = AudioConverter("f32le", SAMPLE_RATE)
    out = conv.feed(f32([0.25, np.nan, 1.5, -np.inf, np.inf, -2.0, -0.5]))
    np.testing.assert_array_equal(out, np.array([0.25, 0, 1, 0, 0, -1, -0.5], dtype=np.float32))
    assert conv.invalid_samples == 3
    conv.feed(f32([0.1, 0.2]))
    assert conv.invalid_samples == 3


def test_outputs_are_owned_by_the_caller() -> None:
    for encoding, data in [("f32le", f32([0.1, 0.2])), ("pcm_s16le", s16([1, 2])), ("mulaw", b"\x01\x02")]:
        out = AudioConverter(encoding, SAMPLE_RATE).feed(data)  # type: ignore[arg-type]
        assert out.flags.writeable and out.flags.c_contiguous
        out[:] = 0  # does not raise


def test_split_samples_are_kept_for_the_next_frame() -> None:
    data = s16([1000, -2000, 3000])
    conv = AudioConverter("pcm_s16le", SAMPLE_RATE)
    assert conv.feed(data[:1]).size == 0
    assert conv.pending_bytes == 1
    np.testing.assert_array_equal(conv.feed(data[1:3]), np.array([1000 / 32768], np.float32))
    np.testing.assert_array_equal(conv.feed(data[3:]), np.array([-2000, 3000], np.float32) / 32768)
    assert conv.pending_bytes == 0
    assert conv.seconds_in == pytest.approx(3 / SAMPLE_RATE)


def test_split_multichannel_f32_frames() -> None:
    data = f32([0.5, 0.1, -0.5, -0.1])  # two stereo frames of 8 bytes
    conv = AudioConverter("f32le", SAMPLE_RATE, channels=2)
    assert conv.feed(data[:7]).size == 0
    np.testing.assert_allclose(conv.feed(data[7:12]), [0.3])
    np.testing.assert_allclose(conv.feed(data[12:]), [-0.3])


def test_flush_drops_an_incomplete_sample() -> None:
    conv = AudioConverter("pcm_s16le", SAMPLE_RATE)
    conv.feed(b"\x01")
    assert conv.flush().size == 0
    assert conv.pending_bytes == 0


def test_accepts_bytearray_and_memoryview() -> None:
    data = s16([100, 200, 300])
    conv = AudioConverter("pcm_s16le", SAMPLE_RATE)
    a = conv.feed(bytearray(data[:3]))
    b = conv.feed(memoryview(data)[3:])
    np.testing.assert_array_equal(np.concatenate([a, b]), np.array([100, 200, 300], np.float32) / 32768)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_downmix_is_the_channel_mean(encoding: str) -> None:
    rng = np.random.default_rng(3)
    channels = 3
    if encoding == "f32le":
        wire = f32(rng.uniform(-1, 1, 100 * channels))
    else:  # any bytes are valid s16 or G.711 samples
        wire = rng.integers(
            0, 256, 300 * channels * (2 if encoding == "pcm_s16le" else 1), np.uint8
        ).tobytes()
    per_channel = AudioConverter(encoding, SAMPLE_RATE).feed(wire)  # type: ignore[arg-type]
    expected = per_channel.reshape(-1, channels).mean(axis=1)
    out = AudioConverter(encoding, SAMPLE_RATE, channels=channels).feed(wire)  # type: ignore[arg-type]
    assert out.shape == (per_channel.size // channels,)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_f32_invalid_values_counted_per_value_in_multichannel() -> None:
    conv = AudioConverter("f32le", SAMPLE_RATE, channels=2)
    out = conv.feed(f32([np.nan, 0.5, 0.2, np.inf]))
    np.testing.assert_allclose(out, [0.25, 0.1])
    assert conv.invalid_samples == 2


def test_seconds_in_counts_input_frames() -> None:
    conv = AudioConverter("mulaw", 8_000, channels=2)
    conv.feed(bytes(8_000 * 2))
    conv.feed(bytes(801))  # 400 frames and one pending byte
    assert conv.seconds_in == pytest.approx(1.05)


# --- resampling -------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8_000, 11_025, 22_050, 44_100, 48_000])
def test_resampled_length_follows_the_rate(rate: int) -> None:
    conv = AudioConverter("pcm_s16le", rate)
    one_second = s16(np.zeros(rate, np.int16))
    out = convert(conv, [one_second[i : i + rate // 25] for i in range(0, rate * 2, rate // 25)])
    assert abs(out.size - SAMPLE_RATE) <= 1
    assert conv.seconds_in == pytest.approx(1.0)


def test_flush_starts_a_fresh_stream() -> None:
    conv = AudioConverter("pcm_s16le", 8_000)
    data = s16(np.full(8_000, 1000, np.int16))
    first = convert(conv, [data])
    second = convert(conv, [data])
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(("encoding", "table"), [("mulaw", MULAW_TO_INT16), ("alaw", ALAW_TO_INT16)])
def test_telephone_sine_keeps_its_frequency(encoding: str, table: npt.NDArray[np.int16]) -> None:
    t = np.arange(8_000) / 8_000
    wire = nearest_codes(table, 16_000 * np.sin(2 * np.pi * 1_000 * t))
    conv = AudioConverter(encoding, 8_000)  # type: ignore[arg-type]
    out = convert(conv, [wire[i : i + 160] for i in range(0, len(wire), 160)])
    assert abs(out.size - SAMPLE_RATE) <= 1
    spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / out.size
    assert abs(peak_hz - 1_000) < 2
    assert np.max(np.abs(out)) == pytest.approx(16_000 / 32768, rel=0.05)
    # Nothing above the 4 kHz band of the source: the resampler adds no images.
    band = np.fft.rfftfreq(out.size, 1 / SAMPLE_RATE) > 4_500
    assert spectrum[band].max() < 1e-3 * spectrum.max()


# --- chunking invariance (fuzz) -----------------------------------------------------------------

_PCM = s16(np.random.default_rng(7).integers(-20_000, 20_000, 4_000, dtype=np.int16))


@FUZZ
@given(
    cuts=st.lists(st.integers(0, len(_PCM)), max_size=40),
    encoding=st.sampled_from(ENCODINGS),
    channels=st.sampled_from([1, 2]),
)
def test_chunking_does_not_change_pass_through(cuts: list[int], encoding: str, channels: int) -> None:
    whole = convert(AudioConverter(encoding, SAMPLE_RATE, channels), [_PCM])  # type: ignore[arg-type]
    pieces = convert(AudioConverter(encoding, SAMPLE_RATE, channels), split(_PCM, cuts))  # type: ignore[arg-type]
    np.testing.assert_array_equal(pieces, whole)


@FUZZ
@given(cuts=st.lists(st.integers(0, len(_PCM)), max_size=40), rate=st.sampled_from([8_000, 22_050, 48_000]))
def test_chunking_does_not_change_resampled_output(cuts: list[int], rate: int) -> None:
    whole = convert(AudioConverter("pcm_s16le", rate), [_PCM])
    pieces = convert(AudioConverter("pcm_s16le", rate), split(_PCM, cuts))
    assert abs(pieces.size - whole.size) <= 1
    n = min(pieces.size, whole.size)
    np.testing.assert_allclose(pieces[:n], whole[:n], atol=1e-5)


@FUZZ
@given(data=st.binary(max_size=2_000), rate=st.sampled_from([8_000, 16_000, 44_100]))
def test_any_f32_bytes_give_finite_samples_in_range(data: bytes, rate: int) -> None:
    conv = AudioConverter("f32le", rate)
    out = convert(conv, [data[: len(data) // 3], data[len(data) // 3 :]])
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert np.all(np.abs(out) <= 1.0)
    if rate == SAMPLE_RATE:
        assert out.size == len(data) // 4


def test_resampled_full_scale_square_stays_in_range() -> None:
    square = np.where(np.arange(8_000) % 40 < 20, 32767, -32768).astype(np.int16)
    out = convert(AudioConverter("pcm_s16le", 8_000), [s16(square)])
    assert out.min() == -1.0 and out.max() == 1.0
