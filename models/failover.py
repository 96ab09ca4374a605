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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stream.interfaces import AsrEngine, AsrInput, AsrOutput

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
    if isinstance(error, InjectedDeviceFault):
        return True
    text = f"{type(error).__name__}: {error}".lower()
    return any(marker in text for marker in DEVICE_ERROR_MARKERS)


class InjectedDeviceFault(RuntimeError):
    """A device failure injected by a fault hook (chaos testing of the failover path)."""


def fail_after(batches: int) -> Callable[[], None]:
    """A fault hook that lets `batches` calls through, then fails every call like a lost GPU."""
    calls = 0
    lock = threading.Lock()

    def hook() -> None:
        nonlocal calls
        with lock:
            calls += 1
            if calls > batches:
                raise InjectedDeviceFault("CUDA error: device lost (injected fault)")

    return hook


@dataclass(slots=True)
class FailoverState:
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
        self.on_switch: Callable[[FailoverState], None] | None = None

    @property
    def device(self) -> str:  # type: ignore[override]
        return self.active.device

    @property
    def active(self) -> AsrEngine:
        return self.primary if self.state.active == "primary" else self.fallback

    def transcribe_batch(self, inputs: Sequence[AsrInput]) -> list[AsrOutput]:
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
        if self.on_switch is not None:
            self.on_switch(self.state)

    def switch_back(self) -> None:
        """Return to the primary engine (an operator decided the device is healthy again)."""
        with self._lock:
            self.state.active = "primary"
        log.warning("ASR switched back to the primary engine on %s", self.primary.device)
