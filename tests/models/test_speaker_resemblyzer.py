"""The resemblyzer d-vector encoder: its own mel front end, voices told apart, short input refused."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from models.onnx_lstm import lstm_model
from models.registry import load_speaker
from models.speaker_resemblyzer import (
    HOP,
    WINDOW_FRAMES,
    ResemblyzerEncoder,
    mel_frames,
    window_starts,
)
from stream.interfaces import SAMPLE_RATE
from tests.models.conftest import Speak


@pytest.fixture(scope="module")
def encoder() -> ResemblyzerEncoder:
    loaded = load_speaker(device="cpu")
    assert isinstance(loaded, ResemblyzerEncoder)
    return loaded


def test_mel_frames_are_librosa_shaped_power_mels() -> None:
    tone = np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32)
    mels = mel_frames(tone)
    assert mels.shape == (1 + SAMPLE_RATE // 160, 40)
    assert mels.dtype == np.float32
    # a 440 Hz tone lights the band around 440 Hz (Slaney scale: linear, 66.7 Hz per mel below 1 kHz)
    assert int(np.argmax(mels[50])) in (5, 6)


def test_the_package_and_its_librosa_stack_are_never_imported(encoder: ResemblyzerEncoder) -> None:
    assert "resemblyzer" not in sys.modules
    assert "librosa" not in sys.modules


def test_same_voice_is_closer_than_another_voice(encoder: ResemblyzerEncoder, speak: Speak) -> None:
    a1 = speak("The quick brown fox jumps over the lazy dog near the river bank.", voice="en-us")
    a2 = speak("We will meet again tomorrow morning to discuss the budget.", voice="en-us")
    b1 = speak("The quick brown fox jumps over the lazy dog near the river bank.", voice="en-gb-x-rp+f3")
    vectors = encoder.embed([a1, a2, b1])
    assert all(v is not None and v.shape == (256,) for v in vectors)
    va1, va2, vb1 = (v for v in vectors if v is not None)
    assert abs(float(np.linalg.norm(va1)) - 1.0) < 1e-5
    assert float(va1 @ va2) > float(va1 @ vb1) + 0.1


def test_a_batch_gives_what_single_calls_give(encoder: ResemblyzerEncoder, speak: Speak) -> None:
    audios = [speak("One two three four five six.", voice=v) for v in ("en-us", "en-gb-x-rp+f3")]
    together = encoder.embed(audios)
    alone = [encoder.embed([a])[0] for a in audios]
    for x, y in zip(together, alone, strict=True):
        assert x is not None and y is not None
        assert np.allclose(x, y, atol=1e-4)


def test_too_short_or_silent_speech_gives_no_embedding(encoder: ResemblyzerEncoder, speak: Speak) -> None:
    short = speak("Yes.")[: encoder.min_samples - 1]
    silent = np.zeros(SAMPLE_RATE * 2, np.float32)
    ok = speak("This sentence is long enough to embed.")
    out = encoder.embed([short, silent, ok])
    assert out[0] is None and out[1] is None and out[2] is not None


def test_a_long_utterance_is_seen_through_at_most_max_windows_spread_over_it() -> None:
    samples = 20 * SAMPLE_RATE
    assert len(window_starts(samples, 100)) == 25  # 1.3 windows per second, as resemblyzer cuts them
    starts = window_starts(samples, 3)
    last = int(np.ceil((samples + 1) / HOP)) - WINDOW_FRAMES
    assert starts == [0, round(last / 2), last]
    assert window_starts(samples, 1) == [last // 2]
    # short speech keeps all its windows
    assert window_starts(2 * SAMPLE_RATE, 2) == window_starts(2 * SAMPLE_RATE, 100)


def test_a_long_utterance_capped_keeps_the_voice(encoder: ResemblyzerEncoder, speak: Speak) -> None:
    text = ("We will meet again tomorrow morning to discuss the budget for the next quarter "
            "and the launch of the new product in March.")
    long_a, long_b = speak(text, voice="en-us"), speak(text, voice="en-gb-x-rp+f3")
    short_a = speak("The quick brown fox jumps over the lazy dog.", voice="en-us")
    assert len(long_a) > 4 * WINDOW_FRAMES * HOP  # more windows than the cap
    capped_a, capped_b, other_a = encoder.embed([long_a, long_b, short_a])
    every_a = ResemblyzerEncoder(max_windows=100).embed([long_a])[0]
    assert capped_a is not None and capped_b is not None and other_a is not None and every_a is not None
    assert float(capped_a @ every_a) > 0.9
    assert float(capped_a @ other_a) > float(capped_b @ other_a) + 0.1
    with pytest.raises(ValueError, match="max_windows"):
        ResemblyzerEncoder(max_windows=0)


def test_the_onnxruntime_lstm_is_torch_s_lstm(encoder: ResemblyzerEncoder) -> None:
    assert encoder.session is not None  # on CPU the LSTM runs on onnxruntime
    mels = torch.rand(3, WINDOW_FRAMES, 40) * 5
    with torch.inference_mode():
        _, (hidden, _) = encoder.network.lstm(mels)
    ours = encoder.session.run(None, {"mels": mels.transpose(0, 1).contiguous().numpy()})[0]
    assert ours.shape == (1, 3, 256)
    assert np.allclose(ours[0], hidden[-1].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="one-direction"):
        lstm_model(torch.nn.LSTM(4, 8, bidirectional=True))
