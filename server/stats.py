"""The server's figures for `/v1/stats` and the dashboard: sessions, the ASR engine and its
micro-batcher, the process."""

from __future__ import annotations

import os
import resource
import time
from typing import Any

from models.failover import FailoverAsr
from server.asr_lanes import AsrLanes
from server.model_service import BatchService
from server.ray_services import RemoteModelService
from server.sessions import SessionHub

__all__ = ["asr_status", "server_stats"]


def server_stats(hub: SessionHub, started_at: float) -> dict[str, Any]:
    """Sessions, uptime, the ASR lanes, their schedulers (once loaded) and the process.

    `scheduler.asr` is the first lane's micro-batcher (English on the default server); each entry
    of `asr.lanes` has its own lane's."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    services = hub.services
    out: dict[str, Any] = {
        "sessions": len(hub),
        "uptime_s": round(time.monotonic() - started_at, 1),
        "asr": asr_status(services.asr if services is not None else None),
        "process": {
            "rss_bytes": _current_rss(),
            "max_rss_bytes": usage.ru_maxrss * 1024,
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        },
    }
    if services is not None:
        out["scheduler"] = {"asr": scheduler_stats(services.asr.lanes[0].service)}
    return out


def asr_status(lanes: AsrLanes | None) -> dict[str, Any]:
    """The ASR lanes (None: still loading): every model, `+`-joined, the first lane's device and
    failover state, and `lanes`, each lane's model, languages, device, failover and scheduler."""
    if lanes is None:
        return {"loaded": False}
    described = lanes.describe()
    for entry, lane in zip(described, lanes.lanes, strict=True):
        entry.update(_failover(lane.engine))
        entry["scheduler"] = scheduler_stats(lane.service)
    first = lanes.lanes[0]
    return {
        "loaded": True,
        "model": lanes.model_name,
        "device": first.engine.device,
        **_failover(first.engine),
        "lanes": described,
    }


def _failover(engine: Any) -> dict[str, Any]:
    """`{"failover": {...}}` for an engine with a CPU fallback, else {}."""
    out: dict[str, Any] = {}
    if isinstance(engine, FailoverAsr):
        state = engine.state
        out["failover"] = {
            "active": state.active,
            "switches": state.switches,
            "last_error": state.last_error,
            "primary_device": engine.primary.device,
            "fallback_device": engine.fallback.device,
        }
    return out


def scheduler_stats(asr: BatchService[Any, Any]) -> dict[str, Any]:
    """A model service's micro-batcher: batches, requests, waits, compute (with `--ray`, the
    shared actor's figures and its description)."""
    st = asr.scheduler.stats
    waits = sorted(st.queue_wait_s)
    out: dict[str, Any] = {
        "batches": st.batches,
        "batch_sizes": {str(k): v for k, v in sorted(st.batch_sizes.items())},
        "requests": dict(st.submitted),
        "replaced_partials": st.replaced_partials,
        "dropped_partials": st.dropped_partials,
        "pending": asr.scheduler.pending,
        "busy_workers": asr.busy_workers,
        "workers": asr.workers,
        "queue_wait_ms_p50": _percentile_ms(waits, 0.5),
        "queue_wait_ms_p95": _percentile_ms(waits, 0.95),
        "compute_seconds": round(asr.compute_seconds, 3),
        "audio_seconds": round(asr.seconds_done, 3),
        "cost_per_audio_second": {
            str(b): round(c.per_audio_second, 4) for b, c in sorted(asr.scheduler.costs.items())
        },
    }
    if isinstance(asr, RemoteModelService):
        out["ray"] = asr.describe()
    return out


def _current_rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _percentile_ms(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return round(sorted_values[index] * 1000, 1)
