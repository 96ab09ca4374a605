"""GPU → CPU failover for a speech recogniser.

`FailoverAsr` is an `AsrEngine` that runs its primary engine (CUDA) and, when a call fails with
a device error (CUDA error, out of memory, device lost), switches to its fallback engine (CPU)
for good and re-runs the failed batch there, so no request is lost. The switch is logged and
counted; `switch_back()` (an operator command) or a restart returns to the primary.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from stream.interfaces import AsrEngine, AsrInput, AsrOutput

__all__ = ["DEVICE_ERROR_MARKERS", "FailoverAsr", "FailoverState", "is_device_error"]

log = logging.getLogger(__name__)

DEVICE_ERROR_MARKERS = (
    "cuda",
    "cublas",
    "cudnn",
    "out of memory",
    "device-side",
    "device lost",
    "nccl",
    "gpu",
)


def is_device_error(error: BaseException) -> bool:
    """Whether an engine error means the accelerator failed (not a bad input)."""
    text = f"{type(error).__name__}: {error}".lower()
    return any(marker in text for marker in DEVICE_ERROR_MARKERS)


@dataclass(slots=True)
class FailoverState:
    """Which engine a `FailoverAsr` runs, and how it came to."""

    active: str
    """"primary" or "fallback"."""
    switches: int = 0
    last_error: str | None = None
    switched_at: float | None = None


class FailoverAsr:
    """A primary engine with a fallback on another device."""

    def __init__(self, primary: AsrEngine, fallback: AsrEngine) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = primary.name
        self.multilingual = primary.multilingual and fallback.multilingual
        self.concurrency = max(primary.concurrency, fallback.concurrency)
        self.state = FailoverState("primary")
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        """The device of the engine in use."""
        return self.active.device

    @property
    def active(self) -> AsrEngine:
        """The engine in use: the primary until a device error, then the fallback."""
        return self.primary if self.state.active == "primary" else self.fallback

    def transcribe_batch(self, inputs: Sequence[AsrInput]) -> list[AsrOutput]:
        """Transcribe on the active engine; on a device error of the primary, switch and re-run here."""
        engine = self.active
        try:
            return engine.transcribe_batch(inputs)
        except Exception as error:
            if engine is not self.primary or not is_device_error(error):
                raise
            self._switch(error)
        return self.fallback.transcribe_batch(inputs)

    def _switch(self, error: BaseException) -> None:
        with self._lock:
            if self.state.active == "fallback":
                return
            self.state.active = "fallback"
            self.state.switches += 1
            self.state.last_error = f"{type(error).__name__}: {error}"
            self.state.switched_at = time.time()
        log.error(
            "ASR engine on %s failed (%s): switched to the fallback on %s",
            self.primary.device,
            error,
            self.fallback.device,
        )

    def switch_back(self) -> None:
        """Return to the primary engine (an operator decided the device is healthy again)."""
        with self._lock:
            self.state.active = "primary"
        log.warning("ASR switched back to the primary engine on %s", self.primary.device)
