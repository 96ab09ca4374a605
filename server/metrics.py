"""Prometheus metrics (`GET /metrics`) and readiness (`GET /readyz`).

One `Metrics` per process, with its own `CollectorRegistry` (nothing global). Figures come from
three places, each kept cheap on the hot path:

* hooks given to the services when they are built (`server.loading`): `batch_recorder(name)`
  as `ModelService.on_batch` (batch size, queue wait, compute, RTF), `generation_done` as
  `LlmQueue.on_generation` (tokens/s, time to first token), `AsyncStore.on_write` (write latency);
* the session observer (`SessionServices.observers`), which sees each event a session delivers:
  sessions started, finals (utterances, final latency), partials (cadence), errors by code;
* collectors read at scrape time: live sessions, audio received, queue depths, dropped partials,
  index sizes, the GPU budget, and the GPUs through NVML (nothing without a GPU).

Final latency runs from the arrival of the audio that ends an utterance to its final being sent
(`server.timing.final_latency`, the same figure as `final_latency_ms` on `/v1/watch`); it is only
observed while the client is connected.

Metrics (every name starts with `palabre_`; labels in braces):

    sessions                              gauge      live sessions now
    sessions_started_total                counter    sessions opened
    audio_seconds_total                   counter    seconds of audio received from clients
    utterances_total                      counter    finals delivered (committed), empty ones included
    final_latency_seconds                 histogram  end of speech arrived → final sent
    partial_interval_seconds              histogram  between two partials of one utterance
    scheduler_queue_depth{model}          gauge      requests waiting (asr, embed; llm: generations)
    scheduler_queue_wait_seconds{model}   histogram  longest wait of a batch's requests
    scheduler_batch_size{model}           histogram  requests per batch
    scheduler_partials_dropped_total{model,reason}  counter  replaced / stale partial requests
    model_compute_seconds_total{model}    counter    seconds the model computed
    model_audio_seconds_total{model}      counter    audio seconds the model processed (asr)
    model_rtf{model}                      histogram  compute seconds per audio second, per batch (asr)
    llm_tokens_per_second                 histogram  decode speed of each generation
    llm_time_to_first_token_seconds       histogram  start of a generation → its first token
    index_size{tenant}                    gauge      vectors in the tenant's search index
    store_write_seconds{op}               histogram  store writes, queueing included
    speaker_wait_seconds                  histogram  a diarized final's commit waiting for its voice
    errors_total{code}                    counter    error events delivered by sessions, and refusals
                                                     of new sessions (`overloaded`, App.admit)
    gpu_budget_bytes{service}             gauge      the configured [gpu_budget]
    gpu_utilization_ratio{gpu,name}       gauge      0-1, from NVML
    gpu_memory_used_bytes{gpu,name}       gauge
    gpu_memory_total_bytes{gpu,name}      gauge
    gpu_temperature_celsius{gpu,name}     gauge
    gpu_power_watts{gpu,name}             gauge
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from server.auth import Scope
from server.config import ServerConfig
from server.gpu import open_nvml, read_gpus
from server.http import HttpRequest, HttpResponse, Router, json_response
from server.llm_queue import GenerationRecord
from server.model_service import BatchRecord, BatchService
from server.timing import final_latency
from stream.errors import ErrorCode
from stream.events import Closed, Error, Final, Partial, Ready, ServerEvent

if TYPE_CHECKING:
    from server.live import LiveSession, SessionServices

log = logging.getLogger(__name__)

GIB = 1 << 30
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
PARTIAL_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
TOKENS_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500)
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
READY_TIMEOUT_S = 2.0
AUDIO_MODELS = frozenset({"asr"})
"""Models whose scheduler unit is seconds of audio (the others have no RTF)."""


class MonitoredApp(Protocol):
    """What metrics and readiness read from the running server (`server.app.App`)."""

    config: ServerConfig

    @property
    def services(self) -> SessionServices | None: ...

    def active_sessions(self) -> int: ...


class Metrics:
    """The process's metrics and the hooks that feed them."""

    def __init__(self, app: MonitoredApp, nvml_opener: Callable[[], Any | None] = open_nvml) -> None:
        self.app = app
        registry = self.registry = CollectorRegistry()
        self.sessions_started = Counter("palabre_sessions_started", "Sessions opened", registry=registry)
        self.utterances = Counter(
            "palabre_utterances",
            "Finals delivered (committed to the store), empty ones included",
            registry=registry,
        )
        self.final_latency = Histogram(
            "palabre_final_latency_seconds",
            "Seconds from the arrival of the audio that ends an utterance to its final being sent",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.partial_interval = Histogram(
            "palabre_partial_interval_seconds",
            "Seconds between two partials of one utterance (partial cadence)",
            buckets=PARTIAL_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "palabre_scheduler_queue_wait_seconds",
            "Seconds the oldest request of a batch waited in the scheduler",
            ["model"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "palabre_scheduler_batch_size",
            "Requests per batch",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.compute_seconds = Counter(
            "palabre_model_compute_seconds", "Seconds the model computed", ["model"], registry=registry
        )
        self.model_audio_seconds = Counter(
            "palabre_model_audio_seconds",
            "Seconds of audio the model processed (a partial re-reads its utterance so far)",
            ["model"],
            registry=registry,
        )
        self.rtf = Histogram(
            "palabre_model_rtf",
            "Real-time factor of each batch: compute seconds per audio second",
            ["model"],
            buckets=RTF_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "palabre_errors", "Error events delivered to clients, by code", ["code"], registry=registry
        )
        for code in ErrorCode:
            self.errors.labels(code=code.value)
        self._open: dict[str, LiveSession] = {}
        self._closed_audio_s = 0.0
        self._add_dependency_metrics(registry)
        registry.register(_StateCollector(self))
        registry.register(GpuCollector(nvml_opener))

    def _add_dependency_metrics(self, registry: CollectorRegistry) -> None:
        """What the session path waits for besides the recogniser: the LLM, the store, the
        speaker encoder."""
        self.llm_tokens_per_second = Histogram(
            "palabre_llm_tokens_per_second",
            "Decode speed of each generation (tokens after the first per second)",
            buckets=TOKENS_BUCKETS,
            registry=registry,
        )
        self.llm_first_token = Histogram(
            "palabre_llm_time_to_first_token_seconds",
            "Seconds from the start of a generation to its first token",
            buckets=FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.store_write = Histogram(
            "palabre_store_write_seconds",
            "Seconds a store write took, queueing on the store thread included",
            ["op"],
            buckets=STORE_BUCKETS,
            registry=registry,
        )
        self.speaker_wait = Histogram(
            "palabre_speaker_wait_seconds",
            "Seconds a diarized final's commit waited for its speaker embedding (after its ASR)",
            buckets=STORE_BUCKETS,
            registry=registry,
        )

    # --- wiring ---------------------------------------------------------------------------

    def speaker_waited(self, seconds: float) -> None:
        """A diarized final's commit waited `seconds` for its speaker embedding (after its ASR)."""
        self.speaker_wait.observe(seconds)

    def batch_recorder(self, name: str) -> Callable[[BatchRecord], None]:
        """The `on_batch` hook of the model service `name`: records each of its batches."""
        for histogram in (self.queue_wait, self.batch_size):
            histogram.labels(model=name)
        self.compute_seconds.labels(model=name)
        if name in AUDIO_MODELS:
            self.model_audio_seconds.labels(model=name)
            self.rtf.labels(model=name)

        def on_batch(record: BatchRecord) -> None:
            self.batch_done(name, record)

        return on_batch

    def routes(self, router: Router) -> None:
        """`/metrics` (admin scope) and `/readyz` (open, like /healthz)."""
        router.add("/metrics", self._metrics_route, scope=Scope.ADMIN)
        router.add("/readyz", self._readyz_route, scope=None)

    # --- hooks ----------------------------------------------------------------------------

    def batch_done(self, model: str, record: BatchRecord) -> None:
        self.batch_size.labels(model=model).observe(record.size)
        self.queue_wait.labels(model=model).observe(record.queue_wait_s)
        self.compute_seconds.labels(model=model).inc(record.compute_seconds)
        if model in AUDIO_MODELS and record.seconds > 0:
            self.model_audio_seconds.labels(model=model).inc(record.seconds)
            self.rtf.labels(model=model).observe(record.compute_seconds / record.seconds)

    def generation_done(self, record: GenerationRecord) -> None:
        """An LLM generation ended (called on the LLM worker thread; the metrics are thread-safe)."""
        if record.first_piece_s is not None:
            self.llm_first_token.observe(record.first_piece_s)
        if record.tokens > 1 and record.decode_s > 0:
            self.llm_tokens_per_second.observe((record.tokens - 1) / record.decode_s)

    def store_write_done(self, op: str, seconds: float) -> None:
        self.store_write.labels(op=op).observe(seconds)

    def observe(self, live: LiveSession, event: ServerEvent) -> None:
        """A session delivered `event` (the session observer: quick, never raises)."""
        if isinstance(event, Ready):
            self.sessions_started.inc()
            self._open[live.session_id] = live
        elif isinstance(event, Final):
            self.utterances.inc()
            latency = final_latency(live, event)
            if latency is not None:
                self.final_latency.observe(latency)
        elif isinstance(event, Partial):
            interval = live.timing.partial_delivered(event.utterance_id, time.monotonic())
            if interval is not None:
                self.partial_interval.observe(interval)
        elif isinstance(event, Error):
            self.count_error(event.code)
        elif isinstance(event, Closed) and self._open.pop(live.session_id, None) is not None:
            self._closed_audio_s += live.audio_seconds

    def count_error(self, code: ErrorCode | str) -> None:
        """An error event was sent to a client (sessions' errors arrive through `observe`)."""
        self.errors.labels(code=str(getattr(code, "value", code))).inc()

    def audio_seconds(self) -> float:
        """Seconds of audio received by every session since start (closed ones included)."""
        return self._closed_audio_s + sum(live.audio_seconds for live in self._open.values())

    # --- HTTP -----------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)

    async def _metrics_route(self, _request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, self.exposition(), CONTENT_TYPE_LATEST)

    async def _readyz_route(self, _request: HttpRequest) -> HttpResponse:
        ready, services = await readiness(self.app)
        return json_response(200 if ready else 503, {"ready": ready, "services": services})


# --- collectors -----------------------------------------------------------------------------


class _StateCollector(Collector):
    """Figures read from the server's state at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        app = self.metrics.app
        yield GaugeMetricFamily("palabre_sessions", "Live sessions now", value=app.active_sessions())
        yield CounterMetricFamily(
            "palabre_audio_seconds",
            "Seconds of audio received from clients",
            value=self.metrics.audio_seconds(),
        )
        budget = GaugeMetricFamily(
            "palabre_gpu_budget_bytes", "GPU memory planned per service ([gpu_budget])", labels=["service"]
        )
        plan = app.config.gpu_budget
        for field in dataclasses.fields(plan):
            budget.add_metric([field.name], getattr(plan, field.name) * GIB)
        yield budget
        services = app.services
        if services is None:
            return
        depth = GaugeMetricFamily(
            "palabre_scheduler_queue_depth", "Requests waiting in the model's queue", labels=["model"]
        )
        dropped = CounterMetricFamily(
            "palabre_scheduler_partials_dropped",
            "Partial requests dropped: replaced by a newer one, or stale",
            labels=["model", "reason"],
        )
        models: list[BatchService[Any, Any]] = [lane.service for lane in services.asr.lanes]
        knowledge = services.knowledge
        if knowledge is not None:
            models.append(knowledge.embed)
        totals: dict[str, list[int]] = {}  # the ASR lanes add up under "asr"
        for service in models:
            scheduler = service.scheduler
            total = totals.setdefault(service.name, [0, 0, 0])
            total[0] += scheduler.pending
            total[1] += scheduler.stats.replaced_partials
            total[2] += scheduler.stats.dropped_partials
        for name, (pending, replaced, stale) in totals.items():
            depth.add_metric([name], pending)
            dropped.add_metric([name, "replaced"], replaced)
            dropped.add_metric([name, "stale"], stale)
        if knowledge is not None and knowledge.llm is not None:
            depth.add_metric(["llm"], knowledge.llm.pending)
        yield depth
        yield dropped
        if knowledge is not None:
            index = GaugeMetricFamily(
                "palabre_index_size", "Vectors in the tenant's search index", labels=["tenant"]
            )
            for tenant, size in sorted(knowledge.index_sizes().items()):
                index.add_metric([tenant], size)
            yield index


class GpuCollector(Collector):
    """Utilisation, memory, temperature and power of each GPU, through NVML; nothing without one.

    NVML is opened at the first scrape (`opener`, by default `server.gpu.open_nvml`).
    """

    def __init__(self, opener: Callable[[], Any | None] = open_nvml) -> None:
        self._opener = opener
        self._nvml: Any | None = None
        self._opened = False

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        if not self._opened:
            self._opened = True
            self._nvml = self._opener()
        if self._nvml is None:
            return
        gpus = read_gpus(self._nvml)
        labels = ["gpu", "name"]
        families = {
            "utilization": GaugeMetricFamily(
                "palabre_gpu_utilization_ratio",
                "Fraction of time a kernel ran on the GPU (0-1)",
                labels=labels,
            ),
            "used": GaugeMetricFamily("palabre_gpu_memory_used_bytes", "GPU memory in use", labels=labels),
            "total": GaugeMetricFamily("palabre_gpu_memory_total_bytes", "GPU memory in all", labels=labels),
            "temperature": GaugeMetricFamily(
                "palabre_gpu_temperature_celsius", "GPU core temperature", labels=labels
            ),
            "power": GaugeMetricFamily("palabre_gpu_power_watts", "GPU power draw", labels=labels),
        }
        for gpu in gpus:
            values = [str(gpu.index), gpu.name]
            families["used"].add_metric(values, gpu.memory_used_bytes)
            families["total"].add_metric(values, gpu.memory_total_bytes)
            if gpu.utilization is not None:
                families["utilization"].add_metric(values, gpu.utilization)
            if gpu.temperature_c is not None:
                families["temperature"].add_metric(values, gpu.temperature_c)
            if gpu.power_w is not None:
                families["power"].add_metric(values, gpu.power_w)
        yield from families.values()


# --- readiness ------------------------------------------------------------------------------


async def readiness(app: MonitoredApp, timeout_s: float = READY_TIMEOUT_S) -> tuple[bool, dict[str, Any]]:
    """(ready, {service: {"up", "required", "detail"?}}) for asr, vad, store, embedder, index, llm.

    Ready when every required service is up: asr, vad and store always; embedder and index with
    conversation memory; llm with memory and an LLM configured.
    """
    config = app.config
    memory = config.memory
    required = {
        "asr": True,
        "vad": True,
        "store": True,
        "embedder": memory,
        "index": memory,
        "llm": memory and config.llm != "none",
    }
    up = dict.fromkeys(required, False)
    detail: dict[str, str] = {}
    services = app.services
    if services is None:
        detail = dict.fromkeys(required, "loading")
    else:
        up["asr"] = services.asr.running
        up["vad"] = services.vad is not None
        try:
            await asyncio.wait_for(services.store.ping(), timeout_s)
            up["store"] = True
        except Exception as error:  # a timeout, a closed or broken database
            detail["store"] = f"{type(error).__name__}: {error}".rstrip(": ")
        knowledge = services.knowledge
        if knowledge is not None:
            up["embedder"] = knowledge.embed.running
            up["index"] = config.tenant in knowledge.index_sizes()
            up["llm"] = knowledge.llm is not None and knowledge.llm.running
        for name, wanted in required.items():
            if not wanted and not up[name]:
                detail.setdefault(name, "not configured")
    report: dict[str, Any] = {}
    for name, wanted in required.items():
        entry: dict[str, Any] = {"up": up[name], "required": wanted}
        if name in detail:
            entry["detail"] = detail[name]
        report[name] = entry
    if services is not None:
        report["asr"]["lanes"] = services.asr.describe()  # which model serves which languages
    ready = all(up[name] for name, wanted in required.items() if wanted)
    return ready, report
