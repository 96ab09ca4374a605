"""Metrics and readiness: the session timing, the hooks, the collectors, /metrics and /readyz.

Everything runs without models: an energy VAD, a fake recogniser behind a real `ModelService`,
a real SQLite store in a temporary folder, and a fake NVML module.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.config import GpuBudget, LimitsConfig, ServerConfig
from server.http import Router
from server.live import LiveSession, SessionServices
from server.llm_queue import GenerationRecord
from server.metrics import GpuCollector, Metrics, readiness
from server.model_service import BatchRecord, ModelService
from server.store import AsyncStore
from server.timing import SessionTiming
from stream.errors import ErrorCode
from stream.events import Error, ServerEvent, Start
from stream.scheduler import Request, Scheduler, SchedulerConfig
from tests.stream.fakes import pcm16, silence, tone

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: Metrics) -> Samples:
    """Every sample of the exposition, parsed back with prometheus_client's own parser."""
    text = metrics.exposition().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def fake_app(services: Any = None, sessions: int = 0, **config: Any) -> SimpleNamespace:
    return SimpleNamespace(config=ServerConfig(**config), services=services, active_sessions=lambda: sessions)


class FakeNvml:
    """The parts of pynvml that server.gpu reads, for two GPUs (the second without power readings)."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"NVIDIA L4"

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-{handle}"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(total=24 * 2**30, used=(20 + handle) * 2**30, free=(4 - handle) * 2**30)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=75, memory=30)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 70 + handle

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        if handle == 1:
            raise self.NVMLError("Not Supported")
        return 72_500


# --- session timing ------------------------------------------------------------------------------


def test_arrival_maps_audio_time_to_wall_clock() -> None:
    timing = SessionTiming()
    for i in range(1, 11):  # 100 ms of audio every 100 ms, from t=1000.1
        timing.audio_arrived(i * 0.1, 1000.0 + i * 0.1)
    assert timing.arrival(0.05) == pytest.approx(1000.1)
    assert timing.arrival(0.1) == pytest.approx(1000.1)
    assert timing.arrival(0.55) == pytest.approx(1000.6)
    assert timing.arrival(1.1) == pytest.approx(1001.0)  # within the tail: the last arrival
    assert timing.arrival(2.0) is None


def test_arrival_history_is_bounded_and_coalesced() -> None:
    timing = SessionTiming(capacity=4, coalesce_s=0.005)
    timing.audio_arrived(0.02, 10.000)
    timing.audio_arrived(0.04, 10.001)  # merged into the previous entry
    assert timing.arrival(0.03) == 10.000
    for i in range(2, 8):
        timing.audio_arrived(i * 0.1, 10.0 + i)
    assert timing.arrival(0.05) is None  # forgotten
    assert timing.arrival(0.65) == 17.0


def test_final_latency_and_partial_interval() -> None:
    timing = SessionTiming()
    timing.audio_arrived(1.0, 50.0)
    timing.audio_arrived(2.0, 51.0)
    timing.speech_stopped("c:1", 1.5)
    assert timing.final_latency("c:1", 51.3) == pytest.approx(0.3)
    assert timing.final_latency("c:1", 52.0) == pytest.approx(0.3)  # every observer, one figure
    timing.speech_stopped("c:2", 1.9)
    assert timing.final_latency("c:2", 51.5) == pytest.approx(0.5)
    assert timing.final_latency("c:1", 52.0) is None  # its delivery is over
    assert timing.partial_delivered("c:2", 10.0) is None
    assert timing.partial_delivered("c:2", 10.6) == pytest.approx(0.6)
    assert timing.partial_delivered("c:3", 11.0) is None  # a new utterance starts over


# --- hooks and collectors ------------------------------------------------------------------------


def test_exposition_without_services() -> None:
    metrics = Metrics(fake_app(sessions=3, gpu_budget=GpuBudget(asr=3.5)), nvml_opener=lambda: None)
    samples = scrape(metrics)
    assert value(samples, "palabre_sessions") == 3
    assert value(samples, "palabre_audio_seconds_total") == 0
    assert value(samples, "palabre_gpu_budget_bytes", service="asr") == 3.5 * 2**30
    assert value(samples, "palabre_errors_total", code="internal") == 0  # every code from the start
    assert not any(name.startswith("palabre_gpu_memory") for name, _ in samples)


def test_batches_generations_and_errors() -> None:
    metrics = Metrics(fake_app(), nvml_opener=lambda: None)
    metrics.batch_done("asr", BatchRecord(size=4, seconds=8.0, compute_seconds=0.8, queue_wait_s=0.012))
    metrics.batch_done("embed", BatchRecord(size=2, seconds=0.5, compute_seconds=0.01, queue_wait_s=0.001))
    metrics.generation_done(GenerationRecord(tokens=21, first_piece_s=0.4, decode_s=0.5))
    metrics.generation_done(GenerationRecord(tokens=0, first_piece_s=None, decode_s=0.0))
    metrics.store_write_done("add_utterance", 0.002)
    metrics.observe(SimpleNamespace(), Error(ErrorCode.BAD_AUDIO, "bad frame"))  # type: ignore[arg-type]
    samples = scrape(metrics)
    assert value(samples, "palabre_scheduler_batch_size_count", model="asr") == 1
    assert value(samples, "palabre_scheduler_batch_size_sum", model="asr") == 4
    assert value(samples, "palabre_scheduler_queue_wait_seconds_sum", model="asr") == pytest.approx(0.012)
    assert value(samples, "palabre_model_compute_seconds_total", model="asr") == pytest.approx(0.8)
    assert value(samples, "palabre_model_audio_seconds_total", model="asr") == 8.0
    assert value(samples, "palabre_model_rtf_sum", model="asr") == pytest.approx(0.1)
    assert value(samples, "palabre_model_rtf_count", model="embed") == 0  # not audio: no RTF
    assert value(samples, "palabre_llm_time_to_first_token_seconds_count") == 1
    assert value(samples, "palabre_llm_tokens_per_second_sum") == pytest.approx(40.0)
    assert value(samples, "palabre_store_write_seconds_count", op="add_utterance") == 1
    assert value(samples, "palabre_errors_total", code="bad_audio") == 1


def test_gpu_collector_reads_nvml() -> None:
    metrics = Metrics(fake_app(), nvml_opener=FakeNvml)
    samples = scrape(metrics)
    gpu0 = {"gpu": "0", "name": "NVIDIA L4"}
    gpu1 = {"gpu": "1", "name": "NVIDIA L4"}
    assert value(samples, "palabre_gpu_memory_total_bytes", **gpu0) == 24 * 2**30
    assert value(samples, "palabre_gpu_memory_used_bytes", **gpu1) == 21 * 2**30
    assert value(samples, "palabre_gpu_utilization_ratio", **gpu0) == 0.75
    assert value(samples, "palabre_gpu_temperature_celsius", **gpu1) == 71
    assert value(samples, "palabre_gpu_power_watts", **gpu0) == 72.5
    assert ("palabre_gpu_power_watts", frozenset(gpu1.items())) not in samples  # not supported: absent


def test_gpu_collector_does_nothing_without_a_gpu() -> None:
    opened = []

    def opener() -> None:
        opened.append(1)
        return None

    collector = GpuCollector(opener)
    assert list(collector.collect()) == []
    assert list(collector.collect()) == []
    assert opened == [1]  # NVML is looked for once


async def test_model_service_batches_are_recorded() -> None:
    def run(payloads: Sequence[str]) -> list[str]:
        return [p.upper() for p in payloads]

    metrics = Metrics(fake_app(), nvml_opener=lambda: None)
    record = metrics.batch_recorder("asr")
    seen: list[BatchRecord] = []

    def on_batch(batch: BatchRecord) -> None:
        seen.append(batch)
        record(batch)

    scheduler = Scheduler[str](SchedulerConfig(max_wait_s=0))
    service = ModelService[str, str]("asr", run, scheduler, 1, on_batch=on_batch)
    service.start()
    try:
        assert service.running
        for i in range(3):
            await service.call(Request(session_id=f"s{i}", kind="final", key="en", seconds=2.0, payload="x"))
    finally:
        await service.close()
    assert not service.running
    samples = scrape(metrics)
    assert value(samples, "palabre_scheduler_batch_size_count", model="asr") == 3
    assert value(samples, "palabre_model_audio_seconds_total", model="asr") == 6.0
    assert len(seen) == 3


async def test_store_writes_are_timed(tmp_path: Path) -> None:
    metrics = Metrics(fake_app(), nvml_opener=lambda: None)
    async with await AsyncStore.open(tmp_path / "palabre.db", on_write=metrics.store_write_done) as store:
        await store.ensure_tenant("default")
        conversation = await store.open_conversation("default", None, "en")
        await store.add_utterance("default", conversation.id, 0, "hello", 0.0, 1.0, "en")
        await store.utterances("default", conversation.id)  # a read: not timed
        await store.ping()
    samples = scrape(metrics)
    assert value(samples, "palabre_store_write_seconds_count", op="add_utterance") == 1
    assert value(samples, "palabre_store_write_seconds_count", op="ensure_tenant") == 1
    assert not any(dict(labels).get("op") == "utterances" for _, labels in samples)


# --- a live session ------------------------------------------------------------------------------


async def test_live_session_feeds_the_metrics(services: SessionServices) -> None:
    app = fake_app(services, sessions=1)
    metrics = Metrics(app, nvml_opener=lambda: None)
    services.observers.append(metrics.observe)  # as server.loading builds them
    services.asr.lanes[0].service.on_batch = metrics.batch_recorder("asr")
    services.store.on_write = metrics.store_write_done
    sent: list[ServerEvent] = []

    async def send(event: ServerEvent) -> None:
        sent.append(event)

    live = LiveSession(services, "default", send=send)
    await live.open(Start(sample_rate=16000, language="en"))
    audio = np.concatenate([silence(0.3), tone(2.0), silence(1.0)])
    chunk = 1600  # 100 ms, sent ten times faster than real time
    for start in range(0, len(audio), chunk):
        live.feed(pcm16(audio[start : start + chunk]))
        await asyncio.sleep(0.01)
    live.stop()
    await asyncio.wait_for(live.wait_closed(), 10)

    samples = scrape(metrics)
    assert [e.type for e in sent].count("final") == 1
    assert value(samples, "palabre_sessions_started_total") == 1
    assert value(samples, "palabre_utterances_total") == 1
    assert value(samples, "palabre_final_latency_seconds_count") == 1
    latency = value(samples, "palabre_final_latency_seconds_sum")
    assert 0 < latency < 2.0
    assert value(samples, "palabre_partial_interval_seconds_count") >= 1
    assert value(samples, "palabre_audio_seconds_total") == pytest.approx(3.3, abs=0.01)
    assert value(samples, "palabre_scheduler_batch_size_count", model="asr") >= 2  # partials and the final
    assert value(samples, "palabre_store_write_seconds_count", op="add_utterance") == 1
    assert value(samples, "palabre_scheduler_queue_depth", model="asr") == 0


# --- readiness and routes ------------------------------------------------------------------------


async def test_readiness_while_loading() -> None:
    ready, report = await readiness(fake_app())  # type: ignore[arg-type]
    assert not ready
    assert report["asr"] == {"up": False, "required": True, "detail": "loading"}
    assert set(report) == {"asr", "vad", "store", "embedder", "index", "llm"}


async def test_readiness_of_a_transcription_server(services: SessionServices) -> None:
    ready, report = await readiness(fake_app(services, memory=False))  # type: ignore[arg-type]
    assert ready
    assert report["asr"]["up"] and report["vad"]["up"] and report["store"]["up"]
    assert report["embedder"] == {"up": False, "required": False, "detail": "not configured"}
    ready, report = await readiness(fake_app(services))  # type: ignore[arg-type]
    assert not ready  # memory is on by default: embedder and index are required and absent
    assert report["embedder"]["required"] and not report["embedder"]["up"]


async def test_readiness_when_the_store_is_closed(services: SessionServices, tmp_path: Path) -> None:
    closed = await AsyncStore.open(tmp_path / "other.db")
    await closed.close()
    original, services.store = services.store, closed
    try:
        ready, report = await readiness(fake_app(services, memory=False), timeout_s=1.0)  # type: ignore[arg-type]
    finally:
        services.store = original
    assert not ready
    assert report["store"]["up"] is False and report["store"]["detail"]


async def test_routes(services: SessionServices) -> None:
    metrics = Metrics(fake_app(services, memory=False), nvml_opener=lambda: None)
    router = Router()
    metrics.routes(router)
    matched = router.match("/metrics")
    assert matched is not None
    route, request = matched
    assert request.required_scope is not None and request.required_scope.value == "admin"
    response = await route(request)
    assert response.status == 200 and response.content_type.startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(response.body.decode())}
    assert {"palabre_sessions", "palabre_final_latency_seconds", "palabre_scheduler_queue_depth"} <= names
    matched = router.match("/readyz")
    assert matched is not None
    route, request = matched
    assert request.required_scope is None  # open, like /healthz
    response = await route(request)
    assert response.status == 200
    assert json.loads(response.body)["ready"] is True


def test_refused_sessions_are_counted() -> None:
    """The hub's admission counts the `overloaded` refusals that no session's outbox carries."""
    from server.app import App
    from stream.errors import ProtocolError

    app = App(ServerConfig(limits=LimitsConfig(max_sessions=1)))
    with pytest.raises(ProtocolError):
        app.hub.admit("default", count=2)
    assert value(scrape(app.metrics), "palabre_errors_total", code="overloaded") == 1
