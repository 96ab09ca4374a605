"""Silero VAD (v5/v6 ONNX, shipped in the `silero-vad` package) on onnxruntime, without torch.

One `InferenceSession` (thread-safe, one intra- and one inter-op thread) is shared by every stream;
each `SileroVadStream` keeps its own recurrent state and the 64 samples of context that Silero
prepends to each 512-sample frame at 16 kHz, exactly as silero's own `OnnxWrapper` does.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime

from stream.interfaces import SAMPLE_RATE, Audio

__all__ = ["CONTEXT_SAMPLES", "FRAME_SAMPLES", "SileroVad", "SileroVadStream", "default_model_path"]

FRAME_SAMPLES = 512
"""Samples per frame at 16 kHz (32 ms), the only frame size Silero accepts at this rate."""
CONTEXT_SAMPLES = 64
"""Samples of the previous frame prepended to each frame (model input is 576 samples)."""
STATE_SHAPE = (2, 1, 128)


def default_model_path() -> Path:
    """The ONNX file shipped in the `silero_vad` package, found without importing it (it imports torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("Silero VAD needs the package silero-vad (pip install silero-vad)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"


class SileroVad:
    """A `VadModel`: one shared ONNX session, one `SileroVadStream` per session."""

    frame_samples = FRAME_SAMPLES

    def __init__(self, model_path: str | Path | None = None) -> None:
        """Load the Silero ONNX model (default: the one in the installed `silero-vad` package)."""
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        path = str(model_path or default_model_path())
        self.session = onnxruntime.InferenceSession(path, sess_options=options,
                                                    providers=["CPUExecutionProvider"])

    def open_stream(self) -> SileroVadStream:
        """A new stream with fresh state."""
        return SileroVadStream(self.session)


class SileroVadStream:
    """A `VadStream`: the per-session recurrent state and context of Silero VAD."""

    frame_samples = FRAME_SAMPLES

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        """Start a stream on a (shared) Silero session."""
        self._session = session
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self._state: npt.NDArray[np.float32] = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context: npt.NDArray[np.float32] = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    def probability(self, frame: Audio) -> float:
        """Speech probability of the next 512 samples (16 kHz float32 in [-1, 1])."""
        samples = np.asarray(frame, dtype=np.float32).reshape(-1)
        if samples.shape[0] != FRAME_SAMPLES:
            raise ValueError(f"Silero VAD takes frames of {FRAME_SAMPLES} samples, got {samples.shape[0]}")
        x = np.concatenate([self._context, samples])[np.newaxis, :]
        output, self._state = self._session.run(["output", "stateN"],
                                                {"input": x, "state": self._state, "sr": self._sr})
        self._context = x[0, -CONTEXT_SAMPLES:]
        return float(output[0, 0])
