"""Silero VAD on onnxruntime: state per stream, and the same probabilities as silero's own wrapper."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from models.vad_silero import FRAME_SAMPLES, SileroVad
from stream.interfaces import SAMPLE_RATE, Audio
from tests.requirements import require_module

from .conftest import Speak

pytestmark = pytest.mark.slow  # Silero VAD, a real model (and espeak-ng speech)

SENTENCE = "please send me the quarterly report before the meeting on friday"


def frames(audio: Audio) -> list[Audio]:
    usable = len(audio) // FRAME_SAMPLES * FRAME_SAMPLES
    return list(audio[:usable].reshape(-1, FRAME_SAMPLES))


def probabilities(vad: SileroVad, audio: Audio) -> list[float]:
    stream = vad.open_stream()
    return [stream.probability(f) for f in frames(audio)]


def test_speech_is_likely_and_silence_is_not(silero: SileroVad, speak: Speak) -> None:
    assert silero.frame_samples == FRAME_SAMPLES == 512
    noise = (np.random.default_rng(1).standard_normal(2 * SAMPLE_RATE) * 0.003).astype(np.float32)
    speech = speak(SENTENCE)
    silent = probabilities(silero, np.zeros(2 * SAMPLE_RATE, np.float32)) + probabilities(silero, noise)
    voiced = probabilities(silero, speech)
    assert max(silent) < 0.2 and np.mean(silent) < 0.05  # a fresh stream hit by noise starts near 0.13
    assert np.mean(voiced) > 0.5 and max(voiced) > 0.9


def test_streams_are_independent(silero: SileroVad, speak: Speak) -> None:
    speech = frames(speak(SENTENCE))
    a, b = silero.open_stream(), silero.open_stream()
    first = [a.probability(f) for f in speech[:20]]
    b.probability(np.ones(FRAME_SAMPLES, np.float32) * 0.5)  # b's state must not leak into a
    assert [b.probability(f) for f in speech[:20]] != first  # b heard something before
    fresh = silero.open_stream()
    assert [fresh.probability(f) for f in speech[:20]] == first


def test_wrong_frame_size_is_refused(silero: SileroVad) -> None:
    with pytest.raises(ValueError):
        silero.open_stream().probability(np.zeros(480, np.float32))


def test_no_torch_is_imported() -> None:
    code = "import sys, models.vad_silero as v; v.SileroVad(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # silero_vad's own importlib.resources use
def test_matches_silero_reference_wrapper(silero: SileroVad, speak: Speak) -> None:
    torch = require_module("torch")
    silero_vad = require_module("silero_vad")
    reference = silero_vad.load_silero_vad(onnx=True)
    audio = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), speak(SENTENCE),
                            np.zeros(SAMPLE_RATE // 2, np.float32), speak("good morning everyone")])
    ours = probabilities(silero, audio)
    theirs = [float(reference(torch.from_numpy(f.copy()), SAMPLE_RATE).item()) for f in frames(audio)]
    assert len(ours) == len(theirs) > 100
    assert np.max(np.abs(np.array(ours) - np.array(theirs))) < 1e-4
    assert max(ours) > 0.9  # real speech was in there
