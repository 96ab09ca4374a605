"""Resemblyzer's d-vector speaker encoder (GE2E, 3-layer LSTM on 40-band mel frames) on torch.

The pretrained weights ship inside the `resemblyzer` wheel (Apache-2.0, 17 MB). The package's own
preprocessing imports librosa and webrtcvad; this engine never imports the package: it finds the
weights file with `importlib.util.find_spec`, rebuilds the small network, and computes the mel
frames itself (numpy; the same power mel spectrogram as librosa's defaults: 25 ms Hann window,
10 ms hop, centred with zero padding, Slaney mel scale and norm). Speech comes from the VAD
already, so the package's silence trimming is left out; quiet speech is raised to −30 dBFS as
the package does.

An utterance is cut into 1.6 s windows (1.3 per second, like `VoiceEncoder.embed_utterance`),
at most `max_windows` of them spread evenly from its start to its end (the LSTM costs about
15 ms of CPU per window; two windows keep the margins of `bench.diarization`); the windows of
every utterance of a batch run through the LSTM together, and an utterance's embedding is the
normalised mean of its windows'.

On CPU the LSTM runs on onnxruntime (`models.onnx_lstm`: 60 % of torch's CPU time for two
windows), on CUDA on torch. The mel front end runs on torch's CPU threads (the filterbank
product in numpy went to OpenBLAS's own threads, which waited for cores held by torch's: 8 ms
instead of 0.1 ms).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from models.errors import ModelNotFound
from models.onnx_lstm import lstm_session
from stream.interfaces import SAMPLE_RATE, Audio, SpeakerVector

__all__ = [
    "MAX_WINDOWS", "MIN_SAMPLES", "ResemblyzerEncoder", "default_weights_path", "mel_frames", "window_starts",
]

N_FFT = 400
"""25 ms window at 16 kHz."""
HOP = 160
"""10 ms hop."""
N_MELS = 40
WINDOW_FRAMES = 160
"""Frames per window the network sees (1.6 s)."""
WINDOW_RATE = 1.3
"""Windows per second of speech."""
MIN_COVERAGE = 0.75
"""The last window is kept when at least this part of it is speech."""
MIN_SAMPLES = SAMPLE_RATE // 2
"""Shorter speech gives no usable embedding (0.5 s)."""
MAX_WINDOWS = 2
"""Windows per utterance by default: 3.2 s of speech, the first and last windows of a longer one
and any others spread evenly between them."""
TARGET_DBFS = -30.0
DIM = 256


def default_weights_path() -> Path:
    """The `pretrained.pt` shipped in the installed `resemblyzer` package, found without importing it."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "the speaker encoder needs the package resemblyzer "
            "(./dev setup installs it; or pip install --no-deps resemblyzer)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise ModelNotFound(f"resemblyzer is installed but has no weights file at {path}")
    return path


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    mel = hz / (200.0 / 3)
    log_part = hz >= 1000.0
    mel[log_part] = 15.0 + np.log(hz[log_part] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    hz = mel * (200.0 / 3)
    log_part = mel >= 15.0
    hz[log_part] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log_part] - 15.0))
    return hz


def _mel_filters() -> npt.NDArray[np.float32]:
    """(n_mels, n_fft/2+1) Slaney-normalised triangular filters from 0 Hz to Nyquist."""
    fft_hz = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array([0.0]))[0],
                                   _hz_to_mel(np.array([SAMPLE_RATE / 2]))[0], N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    filters = np.maximum(0, np.minimum(lower, upper))
    filters *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return filters.astype(np.float32)


_FILTERS = torch.from_numpy(np.ascontiguousarray(_mel_filters().T))
"""(n_fft/2+1, n_mels): power spectrum frames @ _FILTERS = mel frames."""
_WINDOW = torch.hann_window(N_FFT, periodic=True)


def _mel(audio: Audio) -> torch.Tensor:
    """(frames, 40) power mel spectrogram (see `mel_frames`) as a CPU tensor."""
    spectrum = torch.stft(torch.from_numpy(np.ascontiguousarray(audio, np.float32)), N_FFT, HOP,
                          window=_WINDOW, center=True, pad_mode="constant", return_complex=True)
    return (spectrum.real.square() + spectrum.imag.square()).T @ _FILTERS


def mel_frames(audio: Audio) -> npt.NDArray[np.float32]:
    """(frames, 40) power mel spectrogram of 16 kHz audio, one frame per 10 ms (librosa's
    `melspectrogram` with its defaults and n_fft=400, hop=160, n_mels=40)."""
    with torch.inference_mode():
        return _mel(audio).numpy()


def window_starts(samples: int, most: int = MAX_WINDOWS) -> list[int]:
    """Start frames of the 1.6 s windows covering `samples` (as `VoiceEncoder.compute_partial_slices`),
    at most `most` of them: the first, the last and the others spread evenly between."""
    n_frames = int(np.ceil((samples + 1) / HOP))
    step = int(np.round((SAMPLE_RATE / WINDOW_RATE) / HOP))
    starts = list(range(0, max(1, n_frames - WINDOW_FRAMES + step + 1), step))
    last = starts[-1] * HOP
    coverage = (samples - last) / (WINDOW_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts.pop()
    if len(starts) > most:
        end = max(0, n_frames - WINDOW_FRAMES)
        starts = [round(i * end / (most - 1)) for i in range(most)] if most > 1 else [end // 2]
    return starts


def _louder(audio: Audio) -> Audio:
    """`audio` raised to −30 dBFS when quieter (never lowered), as resemblyzer's preprocessing."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if rms <= 0.0:
        return audio
    gain_db = TARGET_DBFS - 20 * np.log10(rms)
    return audio * np.float32(10 ** (gain_db / 20)) if gain_db > 0 else audio


class _Network(torch.nn.Module):
    """Resemblyzer's `VoiceEncoder` network: the last hidden state of a 3-layer LSTM, linear, ReLU, L2."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = torch.nn.Linear(256, DIM)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        return self.head(hidden[-1])

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """(batch, 256) unit-norm embeddings from the LSTM's last hidden state."""
        raw = torch.relu(self.linear(hidden))
        return raw / torch.norm(raw, dim=1, keepdim=True).clamp_min(1e-12)


class ResemblyzerEncoder:
    """A `SpeakerEncoder`: resemblyzer's d-vector (256 dims) for each utterance of a batch."""

    name = "resemblyzer"
    dim = DIM
    min_samples = MIN_SAMPLES

    def __init__(self, weights: str | Path | None = None, *, device: str = "cpu",
                 threads: int | None = 1, max_windows: int = MAX_WINDOWS) -> None:
        """Load the weights (default: the installed package's) on `device` (``cpu``, ``cuda``).

        `threads` is torch's CPU thread count for `embed`, set in each thread that calls it
        (OpenMP's count is per thread: a worker thread left at the default of one thread per core
        ran 10x slower on a busy 2-core machine); None leaves torch's setting alone.
        `max_windows` caps the 1.6 s windows the LSTM sees per utterance (its cost is linear in them).
        """
        if max_windows < 1:
            raise ValueError(f"max_windows must be at least 1, not {max_windows}")
        self.threads = threads
        self.max_windows = max_windows
        path = Path(weights) if weights is not None else default_weights_path()
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        self.network = _Network()
        self.network.load_state_dict(checkpoint["model_state"], strict=False)
        self.network.eval().to(device)
        self.device = device
        self.session = lstm_session(self.network.lstm, threads) if device == "cpu" else None
        self.embed([np.zeros(MIN_SAMPLES, np.float32) + np.float32(1e-3)])  # warm up torch's kernels

    def embed(self, audios: Sequence[Audio]) -> list[SpeakerVector | None]:
        """One unit-norm vector per utterance, None for one shorter than `min_samples` or silent."""
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        out: list[SpeakerVector | None] = [None] * len(audios)
        with torch.inference_mode():
            windows, owners = self._mel_windows(audios)
            if not windows:
                return out
            vectors = self.network.head(self._hidden(torch.stack(windows))).cpu().numpy()
        index = np.array(owners)
        for i in set(owners):
            mean = vectors[index == i].mean(axis=0)
            out[i] = (mean / np.linalg.norm(mean)).astype(np.float32)
        return out

    def _hidden(self, mels: torch.Tensor) -> torch.Tensor:
        """The LSTM's last hidden state (batch, 256) for mel windows (batch, 160, 40)."""
        if self.session is None:
            _, (hidden, _) = self.network.lstm(mels.to(self.device))
            return hidden[-1]
        time_major = mels.transpose(0, 1).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {"mels": time_major})[0][0])

    def _mel_windows(self, audios: Sequence[Audio]) -> tuple[list[torch.Tensor], list[int]]:
        """The (160, 40) mel windows of every embeddable utterance, and the index of each one's owner."""
        windows: list[torch.Tensor] = []
        owners: list[int] = []
        for i, audio in enumerate(audios):
            if len(audio) < MIN_SAMPLES or not np.any(audio):
                continue
            starts = window_starts(len(audio), self.max_windows)
            needed = (starts[-1] + WINDOW_FRAMES) * HOP
            mel = _mel(np.pad(_louder(audio), (0, max(0, needed - len(audio)))))
            windows.extend(mel[start:start + WINDOW_FRAMES] for start in starts)
            owners.extend([i] * len(starts))
        return windows, owners
