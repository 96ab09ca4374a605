"""Wire audio → the 16 kHz mono float32 in [-1, 1] that every model consumes (`SAMPLE_RATE`).

Pure: bytes in, arrays out, no I/O. One `AudioConverter` per session, fed the payload of each
binary frame in order:

    conv = AudioConverter("mulaw", 8000)
    for frame in frames:
        audio = conv.feed(frame)      # float32, 16 kHz mono; may be empty
    tail = conv.flush()               # the resampler's last samples, at the end of the stream

Frames need not hold whole samples: the bytes of a split sample (or of a split multi-channel
sample frame) are kept and completed by the next `feed`. Interleaved channels are down-mixed to
mono by their mean (a live session does not mix them: it splits them into one track per channel
with `stream.channels` and converts each channel on its own). Rates other than 16 kHz go through
a streaming soxr resampler.

The G.711 tables are built from the ITU-T G.711 decoding rules (as in the reference `g711.c`):
μ-law codes decode to ±(((mantissa << 3) + 0x84) << exponent) - 0x84 of the complemented code,
A-law codes (after XOR 0x55) to ±((mantissa << 4) + 8), plus 0x100 and shifted by exponent - 1 when
the exponent is above 0; both on the 16-bit scale, divided by 32768 here.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

from stream.errors import ErrorCode, ProtocolError
from stream.events import ENCODINGS, Encoding
from stream.interfaces import SAMPLE_RATE, Audio

__all__ = [
    "ALAW_TO_INT16",
    "BYTES_PER_SAMPLE",
    "MAX_CHANNELS",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "MULAW_TO_INT16",
    "RESAMPLE_QUALITY",
    "AudioConverter",
    "validate_format",
]

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 48_000
MAX_CHANNELS = 8

RESAMPLE_QUALITY = "HQ"
"""soxr quality. Measured per 20 ms frame: "HQ" costs 6-7 µs and holds back 14 ms of output (8 kHz in),
33-35 ms (44.1/48 kHz); "VHQ" costs 5-11 µs but holds back 29-49 ms, latency a live server feels."""

BYTES_PER_SAMPLE: dict[str, int] = {"pcm_s16le": 2, "f32le": 4, "mulaw": 1, "alaw": 1}

_INT16_SCALE = np.float32(1.0 / 32768.0)


def _mulaw_to_int16() -> npt.NDArray[np.int16]:
    """The 256 G.711 μ-law codes decoded to 16-bit linear PCM."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    magnitude = (((u & 0x0F) << 3) + 0x84) << exponent
    return np.where(u & 0x80, 0x84 - magnitude, magnitude - 0x84).astype(np.int16)


def _alaw_to_int16() -> npt.NDArray[np.int16]:
    """The 256 G.711 A-law codes decoded to 16-bit linear PCM."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = (a & 0x0F) << 4
    magnitude = np.where(exponent == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


MULAW_TO_INT16: npt.NDArray[np.int16] = _mulaw_to_int16()
"""G.711 μ-law code → 16-bit linear sample (0xFF → 0, 0x00 → -32124, 0x80 → 32124)."""
ALAW_TO_INT16: npt.NDArray[np.int16] = _alaw_to_int16()
"""G.711 A-law code → 16-bit linear sample (0xD5 → 8, 0x55 → -8, 0xAA → 32256)."""

_FLOAT_TABLES: dict[str, Audio] = {
    "mulaw": MULAW_TO_INT16.astype(np.float32) * _INT16_SCALE,
    "alaw": ALAW_TO_INT16.astype(np.float32) * _INT16_SCALE,
}
for _table in _FLOAT_TABLES.values():
    _table.flags.writeable = False


def validate_format(encoding: str, sample_rate: int, channels: int = 1) -> None:
    """Check an announced audio format; raise `ProtocolError(BAD_START)` when it is not accepted.

    Accepted: an encoding of `stream.events.ENCODINGS`, an int sample rate in
    [`MIN_SAMPLE_RATE`, `MAX_SAMPLE_RATE`] Hz and 1 to `MAX_CHANNELS` channels.
    """
    if encoding not in ENCODINGS:
        raise ProtocolError(
            ErrorCode.BAD_START, f"encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r:.40}"
        )
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int):
        raise ProtocolError(ErrorCode.BAD_START, f"sample_rate must be an integer, not {sample_rate!r:.40}")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ProtocolError(
            ErrorCode.BAD_START,
            f"sample_rate must be {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz, not {sample_rate!s:.40}",
        )
    if isinstance(channels, bool) or not isinstance(channels, int):
        raise ProtocolError(ErrorCode.BAD_START, f"channels must be an integer, not {channels!r:.40}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise ProtocolError(ErrorCode.BAD_START, f"channels must be 1..{MAX_CHANNELS}, not {channels!s:.40}")


class AudioConverter:
    """Streaming converter of one session's wire audio to 16 kHz mono float32 in [-1, 1].

    `invalid_samples` counts the f32le values that were NaN or infinite (replaced by 0); other
    f32le values are clipped to [-1, 1]. Not thread-safe: one converter per session.
    """

    encoding: Encoding
    sample_rate: int
    channels: int
    invalid_samples: int
    """f32le only: how many received values were NaN or ±inf (each replaced by 0)."""

    def __init__(
        self, encoding: Encoding, sample_rate: int, channels: int = 1, *, quality: str = RESAMPLE_QUALITY
    ) -> None:
        validate_format(encoding, sample_rate, channels)
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.channels = channels
        self.invalid_samples = 0
        self._frame_bytes = BYTES_PER_SAMPLE[encoding] * channels
        self._pending = b""
        self._frames_in = 0
        self._table = _FLOAT_TABLES.get(encoding)
        scale = _INT16_SCALE if encoding == "pcm_s16le" else np.float32(1.0)
        self._mix_weights: Audio = np.full(channels, scale / channels, dtype=np.float32)
        self._resampler = (
            None
            if sample_rate == SAMPLE_RATE
            else soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality=quality)
        )

    @property
    def seconds_in(self) -> float:
        """Seconds of audio received so far (whole samples, at the input rate)."""
        return self._frames_in / self.sample_rate

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete sample held until the next `feed` (dropped by `flush`)."""
        return len(self._pending)

    def feed(self, data: bytes | bytearray | memoryview) -> Audio:
        """Convert the next bytes of the stream; returns a new array, possibly empty.

        With resampling the output lags the input by the resampler's delay; `flush` returns the rest.
        """
        if self._pending:
            data = self._pending + bytes(data)
        size = len(data)
        whole = size - size % self._frame_bytes
        self._pending = bytes(data[whole:]) if whole != size else b""
        if whole == 0:
            return np.zeros(0, dtype=np.float32)
        frames = whole // self._frame_bytes
        self._frames_in += frames
        mono = self._decode(data, frames * self.channels)
        if self._resampler is None:
            return mono
        return _clip_in_place(self._resampler.resample_chunk(mono))

    def flush(self) -> Audio:
        """End of stream: the resampler's remaining samples (empty at 16 kHz).

        An incomplete trailing sample is dropped. The converter is then ready for a new stream.
        """
        self._pending = b""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        out = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._resampler.clear()
        return _clip_in_place(out)

    def _decode(self, data: bytes | bytearray | memoryview, count: int) -> Audio:
        """The first `count` interleaved samples of `data` as a new mono float32 array in [-1, 1]."""
        samples: Audio
        if self._table is not None:
            samples = np.take(self._table, np.frombuffer(data, dtype=np.uint8, count=count))
        elif self.encoding == "pcm_s16le":
            ints = np.frombuffer(data, dtype="<i2", count=count)
            if self.channels == 1:
                samples = np.multiply(ints, _INT16_SCALE, dtype=np.float32)
                return samples
            samples = ints.astype(np.float32)
        else:
            samples = self._sanitize(np.frombuffer(data, dtype="<f4", count=count))
        if self.channels == 1:
            return samples if samples.flags.writeable else samples.copy()
        # A matrix-vector product is several times faster than .mean(axis=1) on small frames.
        mixed: Audio = np.dot(samples.reshape(-1, self.channels), self._mix_weights)
        return mixed

    def _sanitize(self, values: Audio) -> Audio:
        """f32le values with NaN/inf replaced by 0 (and counted), then clipped to [-1, 1].

        Returns `values` itself (read-only) in the common case where there is nothing to fix.
        """
        # min/max propagate NaN, and ±inf is out of range: one check covers every fix.
        if values.min() >= -1.0 and values.max() <= 1.0:
            return values
        bad = ~np.isfinite(values)
        out: Audio = np.clip(values, -1.0, 1.0, dtype=np.float32)
        n_bad = int(np.count_nonzero(bad))
        if n_bad:
            self.invalid_samples += n_bad
            out[bad] = 0.0
        return out


def _clip_in_place(samples: Audio) -> Audio:
    """Keep resampled audio in [-1, 1]: a band-limited full-scale signal overshoots a little."""
    if samples.size and (samples.min() < -1.0 or samples.max() > 1.0):
        np.clip(samples, -1.0, 1.0, out=samples)
    return samples
