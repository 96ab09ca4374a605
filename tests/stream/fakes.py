"""Fakes for testing the core without models: an energy VAD."""

from __future__ import annotations

import numpy as np

from stream.interfaces import SAMPLE_RATE, Audio


class EnergyVad:
    """Speech probability 1 for frames louder than -40 dBFS RMS, else 0."""

    frame_samples = 512

    def open_stream(self) -> EnergyVad:
        return self

    def probability(self, frame: Audio) -> float:
        return 1.0 if float(np.sqrt(np.mean(frame.astype(np.float64) ** 2))) > 0.01 else 0.0


def tone(seconds: float, amplitude: float = 0.3) -> Audio:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def silence(seconds: float) -> Audio:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
