"""A test seam: an ASR engine that fails like a lost GPU, to exercise the failover path end to end.

`FaultyAsr` wraps a real engine and lets its first `after` batches through, then raises
`InjectedDeviceFault` ("CUDA error: device lost") on every call, which `models.failover` treats as
a device error. The registry wraps the primary engine in it only when the test-only setting
``inject_asr_fault_after`` (``--inject-asr-fault-after N``) is given; no engine knows about it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from stream.interfaces import AsrEngine, AsrInput, AsrOutput

__all__ = ["FaultyAsr", "InjectedDeviceFault"]


class InjectedDeviceFault(RuntimeError):
    """A device failure injected by `FaultyAsr` (chaos testing of the failover path)."""


class FaultyAsr:
    """An `AsrEngine` that passes `after` batches to `engine`, then fails every call like a lost GPU."""

    def __init__(self, engine: AsrEngine, after: int) -> None:
        if after < 0:
            raise ValueError(f"a fault can be injected after 0 batches or more, not {after}")
        self.engine = engine
        self.after = after
        self.name = engine.name
        self.device = engine.device
        self.multilingual = engine.multilingual
        self.concurrency = engine.concurrency
        self.calls = 0
        """Batches asked so far (passed and failed)."""
        self._lock = threading.Lock()

    def transcribe_batch(self, inputs: Sequence[AsrInput]) -> list[AsrOutput]:
        """The wrapped engine's answer for the first `after` calls; `InjectedDeviceFault` afterwards."""
        with self._lock:
            self.calls += 1
            failing = self.calls > self.after
        if failing:
            raise InjectedDeviceFault("CUDA error: device lost (injected fault)")
        return self.engine.transcribe_batch(inputs)
