"""Shared fixtures for the engine tests: real models (loaded once per session) and espeak-ng speech."""

from __future__ import annotations

import io
import re
import subprocess
import wave
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import soxr

from models.asr_ctranslate2 import CTranslate2Whisper
from models.registry import load_asr
from models.vad_silero import SileroVad
from stream.interfaces import SAMPLE_RATE, Audio
from tests.requirements import require_tool

Speak = Callable[..., Audio]


@cache
def _espeak(text: str, voice: str, speed: int) -> Audio:
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
                         capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return np.asarray(soxr.resample(pcm.astype(np.float32) / 32768, rate, SAMPLE_RATE), dtype=np.float32)


@pytest.fixture(scope="session")
def speak() -> Speak:
    """`speak(text, voice="en-us", speed=150)`: espeak-ng speech resampled to 16 kHz float32."""
    require_tool("espeak-ng")

    def speak(text: str, voice: str = "en-us", speed: int = 150) -> Audio:
        return _espeak(text, voice, speed).copy()

    return speak


def words(text: str) -> str:
    """Lowercase words without punctuation, for WER."""
    return " ".join(re.sub(r"[^\w' ]", " ", text.lower()).split())


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache root, so `base` is reassembled (and verified) by this test session."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def tiny_en() -> CTranslate2Whisper:
    """Whisper tiny.en on CPU, int8, 2 threads."""
    return load_asr("tiny.en", device="cpu", cpu_threads=2)


@pytest.fixture(scope="session")
def base(model_cache: Path) -> CTranslate2Whisper:
    """Whisper base (multilingual) on CPU, int8, 2 threads, reassembled into this session's cache."""
    return load_asr("base", device="cpu", cpu_threads=2, cache_dir=model_cache)


@pytest.fixture(scope="session")
def silero() -> SileroVad:
    """Silero VAD (ONNX) from the installed silero-vad package."""
    return SileroVad()
