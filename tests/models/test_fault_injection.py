"""The fault-injection seam: `FaultyAsr` fails like a lost GPU, and `FailoverAsr` takes it for one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest

from models.failover import FailoverAsr, is_device_error
from models.fault_injection import FaultyAsr, InjectedDeviceFault
from stream.interfaces import AsrInput, AsrOutput


@dataclass
class EchoAsr:
    """A fake engine: answers each input with its device's name, and counts its batches."""

    device: str
    name: str = "echo"
    multilingual: bool = False
    concurrency: int = 1
    batches: list[int] = field(default_factory=list)

    def transcribe_batch(self, inputs: Sequence[AsrInput]) -> list[AsrOutput]:
        self.batches.append(len(inputs))
        return [AsrOutput(text=self.device, language="en") for _ in inputs]


INPUT = AsrInput(audio=np.zeros(160, np.float32), language="en")


def test_passes_the_first_batches_then_fails_every_call() -> None:
    gpu = EchoAsr("cuda")
    faulty = FaultyAsr(gpu, after=2)
    assert (faulty.name, faulty.device, faulty.concurrency) == ("echo", "cuda", 1)
    assert [faulty.transcribe_batch([INPUT])[0].text for _ in range(2)] == ["cuda", "cuda"]
    for _ in range(2):
        with pytest.raises(InjectedDeviceFault) as failure:
            faulty.transcribe_batch([INPUT])
        assert is_device_error(failure.value)
    assert gpu.batches == [1, 1] and faulty.calls == 4


def test_failover_takes_over_without_losing_a_batch() -> None:
    gpu, cpu = EchoAsr("cuda"), EchoAsr("cpu")
    engine = FailoverAsr(FaultyAsr(gpu, after=1), cpu)
    texts = [engine.transcribe_batch([INPUT, INPUT])[0].text for _ in range(3)]
    assert texts == ["cuda", "cpu", "cpu"]
    assert engine.device == "cpu" and engine.state.switches == 1
    assert "injected fault" in (engine.state.last_error or "")


def test_a_negative_count_is_refused() -> None:
    with pytest.raises(ValueError):
        FaultyAsr(EchoAsr("cuda"), after=-1)
