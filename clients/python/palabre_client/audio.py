"""Audio files in, the server's native format out: float32 mono samples and 16-bit PCM bytes."""

from __future__ import annotations

import os
from typing import Any

import av
import av.error
import numpy as np
import numpy.typing as npt

DEFAULT_SAMPLE_RATE = 16000
"""The rate the client sends at unless told otherwise (what Palabre's models run at)."""


def load_audio(
    path: str | os.PathLike[str], sample_rate: int = DEFAULT_SAMPLE_RATE
) -> npt.NDArray[np.float32]:
    """Decode the first audio stream of a file (wav, flac, mp3, opus, ogg, …) to mono float32.

    Decoding and resampling are done by FFmpeg through PyAV: every channel is mixed down and the
    audio is converted to 16-bit mono at `sample_rate`, then scaled to [-1, 1).

    Raises `FileNotFoundError` (or another `OSError`) when the file cannot be opened, and
    `ValueError` when it holds no audio or cannot be decoded.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    chunks: list[npt.NDArray[Any]] = []
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{path}: no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
            for frame in container.decode(stream):
                frame.pts = None  # let the resampler follow its own clock across timestamp gaps
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except av.error.FFmpegError as exc:
        if isinstance(exc, OSError):
            raise
        raise ValueError(f"{path}: cannot decode audio: {exc}") from exc
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32) / np.float32(32768.0)


def load_channels(
    path: str | os.PathLike[str], sample_rate: int = DEFAULT_SAMPLE_RATE
) -> list[npt.NDArray[np.float32]]:
    """Decode the first audio stream of a file to one float32 array per channel (no down-mix):
    a stereo file gives two arrays, each resampled to `sample_rate`. Channels that all carry the
    same signal (mono content in a stereo file) give one array: there is one voice to transcribe,
    not two. Errors as `load_audio`."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    chunks: list[npt.NDArray[Any]] = []
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{path}: no audio stream")
            stream = container.streams.audio[0]
            channels = stream.channels
            resampler = av.AudioResampler(format="s16p", layout=stream.layout, rate=sample_rate)
            for frame in container.decode(stream):
                frame.pts = None
                chunks.extend(out.to_ndarray().reshape(channels, -1) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().reshape(channels, -1) for out in resampler.resample(None))
    except av.error.FFmpegError as exc:
        if isinstance(exc, OSError):
            raise
        raise ValueError(f"{path}: cannot decode audio: {exc}") from exc
    if not chunks:
        return [np.zeros(0, dtype=np.float32)]
    planes = np.concatenate(chunks, axis=1).astype(np.float32) / np.float32(32768.0)
    if planes.shape[0] > 1 and same_signal(planes):
        return [planes.mean(axis=0)]
    return [planes[i].copy() for i in range(planes.shape[0])]


SAME_SIGNAL_DB = -30.0
"""Channels whose difference to their mean is this far below the mean's level carry one signal."""


def same_signal(planes: npt.NDArray[np.float32]) -> bool:
    """Whether every channel (row) of `planes` is the same signal, up to `SAME_SIGNAL_DB`."""
    mix = planes.mean(axis=0)
    level = float(np.sqrt(np.mean(np.square(mix, dtype=np.float64)))) if mix.size else 0.0
    if level == 0.0:
        return bool(not np.any(planes))
    spread = float(np.sqrt(np.mean(np.square(planes - mix, dtype=np.float64))))
    return spread <= level * 10 ** (SAME_SIGNAL_DB / 20)


def channel_track(track: str | None, channel: int) -> str:
    """The track a file's channel is streamed on: "ch1", "ch2", … or `track` with that suffix
    ("Alice-ch1"); `channel` counts from 0."""
    return f"{track}-ch{channel + 1}" if track else f"ch{channel + 1}"


def to_pcm16(samples: npt.ArrayLike) -> bytes:
    """Little-endian signed 16-bit PCM (`pcm_s16le`) of mono samples.

    Floating-point samples are taken as [-1, 1] and clipped; int16 samples are passed through.
    """
    array = np.asarray(samples)
    if array.dtype == np.int16:
        return array.astype("<i2", copy=False).tobytes()
    scaled = np.clip(array.astype(np.float32, copy=False), -1.0, 1.0) * 32767.0
    return np.round(scaled).astype("<i2").tobytes()
