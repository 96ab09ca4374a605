"""The GPUs of this machine, read through NVML (`pynvml`, from the `nvidia-ml-py` package).

Without the package, an NVIDIA driver or a GPU, every function here answers "no GPU" (None or an
empty list) instead of raising, so callers (the budget check of `palabre serve`, the GPU metrics)
need no special case. The NVML module is passed around as a value, so tests hand in a fake one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU as NVML sees it (NVML's index order is the PCI bus order)."""

    index: int
    name: str
    uuid: str
    memory_total_bytes: int
    memory_used_bytes: int
    utilization: float | None = None
    """Fraction of the last sample period (1/6 s to 1 s) a kernel was running, 0-1."""
    temperature_c: float | None = None
    power_w: float | None = None


def open_nvml() -> Any | None:
    """The initialised `pynvml` module, or None (not installed, no driver, no GPU)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception as error:  # NVMLError_LibraryNotFound / _DriverNotLoaded / ...: no usable GPU
        log.debug("NVML unavailable: %s", error)
        return None
    return pynvml


def read_gpus(nvml: Any | None, *, details: bool = True) -> list[GpuInfo]:
    """Every GPU NVML reports, with memory; with `details`, utilisation, temperature and power.

    A reading a GPU does not support is None; a GPU whose memory cannot be read is left out.
    """
    if nvml is None:
        return []
    count = _try(nvml.nvmlDeviceGetCount)
    if not count:
        return []
    gpus = []
    for index in range(count):
        handle = _try(nvml.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            continue
        memory = _try(nvml.nvmlDeviceGetMemoryInfo, handle)
        if memory is None:
            continue
        utilization = temperature = power = None
        if details:
            rates = _try(nvml.nvmlDeviceGetUtilizationRates, handle)
            utilization = None if rates is None else rates.gpu / 100.0
            temperature = _try(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
            milliwatts = _try(nvml.nvmlDeviceGetPowerUsage, handle)
            power = None if milliwatts is None else milliwatts / 1000.0
        gpus.append(
            GpuInfo(
                index=index,
                name=_text(_try(nvml.nvmlDeviceGetName, handle)) or f"GPU {index}",
                uuid=_text(_try(nvml.nvmlDeviceGetUUID, handle)),
                memory_total_bytes=int(memory.total),
                memory_used_bytes=int(memory.used),
                utilization=utilization,
                temperature_c=None if temperature is None else float(temperature),
                power_w=power,
            )
        )
    return gpus


def detect_gpus() -> list[GpuInfo]:
    """The GPUs of this machine with their memory (empty without NVML or a GPU)."""
    return read_gpus(open_nvml(), details=False)


def _try(read: Callable[..., T], *args: Any) -> T | None:
    try:
        return read(*args)
    except Exception as error:  # NVMLError_NotSupported, a GPU that fell off the bus, ...
        log.debug("NVML reading failed: %s", error)
        return None


def _text(value: str | bytes | None) -> str:
    """NVML strings are bytes in older `nvidia-ml-py` releases, str in newer ones."""
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
