"""Model services as Ray actors, shared by several `palabre serve` front-ends (`--ray ADDRESS`).

Without `--ray` every model runs in the server's process behind a `ModelService`. With it, the
ASR engine and the embedder each run in one named, detached Ray actor, and every front-end
reaches them through a `RemoteModelService`, which sessions and the memory use exactly like a
local `ModelService` (both are `BatchService`s):

    front-end: palabre serve (any number, any node)      model actor (one per model, in the cluster)
      transports, sessions, VAD, store, index, LLM          ModelActor → ModelHost
      RemoteModelService ─── infer(caller, request) ──────▶   ModelService + Scheduler (micro-batcher)
                         ◀── Outcome(result, batch) ──────    engine, on a fraction of a GPU

The actor is an async actor: its event loop runs the same `ModelService` and `Scheduler` as a
single process does, so the requests of every front-end merge into one batch, and a session's
newer partial replaces its pending one across front-ends (session ids are unique). The first
front-end creates the actor (`get_if_exists`); later ones use it as it is, settings included.
Ray restarts a crashed actor (`max_restarts=-1`, the model is loaded again) and retries the calls
it was running (`max_task_retries`). Calls from one front-end may start out of order (async
actor, retries); a late partial is harmless: the session ignores a partial of a finished utterance.

`ray` is imported only by the functions that connect, so a server without `--ray` never loads it.
`ModelHost` and `RemoteModelService` hold the logic and are tested without Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, TypeVar

from server.config import ServerConfig
from server.model_service import BatchRecord, ModelService, ResultCallback, submit_and_wait
from stream.scheduler import Request, SchedulerStats, SizeCost

log = logging.getLogger(__name__)

P = TypeVar("P")
R = TypeVar("R")

Kind = Literal["asr", "embed"]

NAMESPACE = "palabre"
"""The Ray namespace of the model actors (named actors are looked up per namespace)."""
TASK_RETRIES = 2
"""Times a call is retried when the actor died while running it (the restarted actor runs it)."""
STATS_POLL_S = 1.0
"""How often a front-end refreshes its copy of the actor's figures (for /v1/stats and metrics)."""
ACTOR_START_TIMEOUT_S = 600.0
"""How long a front-end waits for the actor to be placed and load its model."""
SEEN_BATCHES = 4096
"""Batch numbers a front-end remembers, to report each batch to `on_batch` once."""


# --- what crosses the wire -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a front-end needs to know of a remote model (also what `App.asr_status` shows)."""

    name: str
    device: str
    multilingual: bool = False
    concurrency: int = 1
    dim: int = 0
    """Vector size (embedders only)."""


@dataclass(frozen=True, slots=True)
class Outcome(Generic[R]):
    """The answer to one `infer` call."""

    result: R | None
    """None: the request was dropped (a partial replaced, shed or cancelled)."""
    batch: int = 0
    """The actor's number of the batch that ran it (0 when dropped)."""
    record: BatchRecord | None = None
    """What that batch cost."""


@dataclass(slots=True)
class CallerCounts:
    """One front-end's requests, as the actor counted them."""

    submitted: int = 0
    completed: int = 0
    dropped: int = 0
    failed: int = 0


@dataclass(slots=True)
class HostStats:
    """A snapshot of a model actor's figures (the fields `App.stats` reads of a `ModelService`)."""

    scheduler: SchedulerStats = field(default_factory=SchedulerStats)
    pending: int = 0
    costs: dict[int, SizeCost] = field(default_factory=dict)
    workers: int = 1
    busy_workers: int = 0
    compute_seconds: float = 0.0
    seconds_done: float = 0.0
    batches: int = 0
    callers: dict[str, CallerCounts] = field(default_factory=dict)
    """Per front-end (`caller_id`): what it sent and what became of it."""
    pid: int = 0
    node: str = ""
    started_at: float = 0.0
    """Wall-clock time the actor (re)started."""


# --- the actor's side ------------------------------------------------------------------------


class ModelHost(Generic[P, R]):
    """The logic of a model actor: one `ModelService` fed by the calls of every front-end.

    All methods run on one event loop (the actor's); the service starts on the first call.
    """

    def __init__(self, service: ModelService[P, R], info: ModelInfo) -> None:
        self.service = service
        self.info = info
        self.callers: dict[str, CallerCounts] = {}
        self.batches = 0
        self.started_at = time.time()
        self._last_batch: tuple[int, BatchRecord] | None = None
        self._waiting: dict[int, asyncio.Future[Outcome[R]]] = {}
        """Futures of the queued and running requests, by the scheduler's request id."""
        self._started = False
        previous = service.on_batch

        def on_batch(record: BatchRecord) -> None:
            # ModelService calls this just before the callbacks of the batch's requests.
            self.batches += 1
            self._last_batch = (self.batches, record)
            if previous is not None:
                previous(record)

        service.on_batch = on_batch

    def _ensure_started(self) -> None:
        if not self._started:
            self._started = True
            self.service.start()

    async def infer(self, caller: str, request: Request[P]) -> Outcome[R]:
        """Queue `request` with everyone else's and wait for its result (or its drop)."""
        self._ensure_started()
        counts = self.callers.setdefault(caller, CallerCounts())
        counts.submitted += 1
        future: asyncio.Future[Outcome[R]] = asyncio.get_running_loop().create_future()

        def done(_: Request[P], result: R | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            elif result is None:
                future.set_result(Outcome(None))
            else:
                batch, record = self._last_batch or (0, None)
                future.set_result(Outcome(result, batch, record))

        self.service.submit(request, done)
        self._waiting[request.id] = future
        try:
            outcome = await future
        except Exception:
            counts.failed += 1
            raise
        finally:
            self._waiting.pop(request.id, None)
        if outcome.result is None:
            counts.dropped += 1
        else:
            counts.completed += 1
        return outcome

    def cancel(self, session_id: str) -> int:
        """Drop a session's queued requests (their calls answer "dropped"); returns how many."""
        gone = self.service.cancel(session_id)
        for request in gone:
            future = self._waiting.get(request.id)
            if future is not None and not future.done():
                future.set_result(Outcome(None))
        return len(gone)

    def stats(self) -> HostStats:
        """The actor's figures now."""
        service = self.service
        return HostStats(
            scheduler=service.scheduler.stats,
            pending=service.scheduler.pending,
            costs=dict(service.scheduler.costs),
            workers=service.workers,
            busy_workers=service.busy_workers,
            compute_seconds=service.compute_seconds,
            seconds_done=service.seconds_done,
            batches=self.batches,
            callers={name: replace(counts) for name, counts in self.callers.items()},
            pid=os.getpid(),
            node=socket.gethostname(),
            started_at=self.started_at,
        )

    async def close(self) -> None:
        await self.service.close()


def build_host(kind: Kind, config: ServerConfig) -> ModelHost[Any, Any]:
    """Load the model of `kind` as `config` says and wrap it in a `ModelHost` (blocking: seconds).

    Models are assembled under ~/.cache/palabre/models of the actor's node, not under the
    front-end's data directory (which may be on another machine).
    """
    from models.registry import DEFAULT_CACHE_DIR, load_embedder
    from server.engines import asr_service, embed_service, load_asr_engine

    if kind == "asr":
        assert config.model is not None  # ServerConfig requires one model with ray_address
        engine = load_asr_engine(config, config.model, cache_dir=DEFAULT_CACHE_DIR.expanduser())
        info = ModelInfo(engine.name, engine.device, engine.multilingual, engine.concurrency)
        return ModelHost(asr_service(engine, config), info)
    embedder = load_embedder(config.embedder, device=config.device)
    info = ModelInfo(embedder.name, embedder.device, dim=embedder.dim)
    return ModelHost(embed_service(embedder), info)


class ModelActor:
    """The Ray actor (made remote by `model_actor`): a `ModelHost` on the actor's event loop.

    Its methods are coroutines, which makes it an async actor: calls from every front-end run
    concurrently on one event loop, where they meet in one scheduler.
    """

    def __init__(self, kind: Kind, config: ServerConfig) -> None:
        logging.basicConfig(
            level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        self.host = build_host(kind, config)
        log.info("%s actor ready: %s on %s", kind, self.host.info.name, self.host.info.device)

    async def info(self) -> ModelInfo:
        return self.host.info

    async def infer(self, caller: str, request: Request[Any]) -> Outcome[Any]:
        return await self.host.infer(caller, request)

    async def cancel(self, session_id: str) -> int:
        return self.host.cancel(session_id)

    async def stats(self) -> HostStats:
        return self.host.stats()


# --- the front-end's side --------------------------------------------------------------------


@dataclass(slots=True)
class SchedulerSnapshot:
    """The remote scheduler's figures as last polled (a `SchedulerView`)."""

    stats: SchedulerStats = field(default_factory=SchedulerStats)
    pending: int = 0
    costs: dict[int, SizeCost] = field(default_factory=dict)


class RemoteModelService(Generic[P, R]):
    """A `BatchService` whose model runs in a Ray actor shared with other front-ends.

    `actor` is the actor's handle (anything with `infer`, `cancel` and `stats` methods whose
    `.remote(...)` returns an awaitable). Callbacks run on this process's event loop, as with a
    local `ModelService`; the scheduler figures are the actor's, refreshed every `poll_s`.
    """

    def __init__(
        self,
        name: str,
        actor: Any,
        caller: str,
        info: ModelInfo,
        poll_s: float = STATS_POLL_S,
        *,
        on_batch: Callable[[BatchRecord], None] | None = None,
    ):
        self.name = name
        self.info = info
        self.caller = caller
        """This front-end's name in the actor's per-caller counts."""
        self.on_batch = on_batch
        """Called once per actor batch that held a request of this front-end."""
        self.actor_stats: HostStats | None = None
        """The actor's figures as last polled."""
        self.poll_s = poll_s
        self._actor = actor
        self._next = 0
        self._waiting: dict[int, tuple[Request[P], ResultCallback[P, R]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self._reachable = False

    # --- what App.stats and the metrics read (a BatchService) ------------------------------

    @property
    def scheduler(self) -> SchedulerSnapshot:
        stats = self.actor_stats or HostStats()
        return SchedulerSnapshot(stats.scheduler, stats.pending, stats.costs)

    @property
    def workers(self) -> int:
        return self.actor_stats.workers if self.actor_stats is not None else self.info.concurrency

    @property
    def busy_workers(self) -> int:
        return self.actor_stats.busy_workers if self.actor_stats is not None else 0

    @property
    def compute_seconds(self) -> float:
        return self.actor_stats.compute_seconds if self.actor_stats is not None else 0.0

    @property
    def seconds_done(self) -> float:
        return self.actor_stats.seconds_done if self.actor_stats is not None else 0.0

    @property
    def running(self) -> bool:
        """Started, not closed, and the actor answered the last poll."""
        return self._poller is not None and not self._poller.done() and self._reachable

    def describe(self) -> dict[str, Any]:
        """The actor's identity and per-front-end counts (for /v1/stats)."""
        stats = self.actor_stats
        out: dict[str, Any] = {"caller": self.caller, "reachable": self._reachable}
        if stats is not None:
            out.update(
                pid=stats.pid,
                node=stats.node,
                started_at=stats.started_at,
                batches=stats.batches,
                callers={
                    name: {
                        "submitted": c.submitted,
                        "completed": c.completed,
                        "dropped": c.dropped,
                        "failed": c.failed,
                    }
                    for name, c in sorted(stats.callers.items())
                },
            )
        return out

    # --- the callers' side -----------------------------------------------------------------

    def submit(self, request: Request[P], callback: ResultCallback[P, R]) -> None:
        """Send a request to the actor; `callback` runs here when it completes or is dropped."""
        self._next += 1
        ticket = self._next
        self._waiting[ticket] = (request, callback)
        awaitable = self._actor.infer.remote(self.caller, request)
        task = asyncio.get_running_loop().create_task(self._wait(ticket, awaitable))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def call(self, request: Request[P]) -> R:
        """Submit and wait for the result."""
        return await submit_and_wait(self.name, self.submit, request)

    def cancel(self, session_id: str) -> list[Request[P]]:
        """Forget a session's outstanding requests here and drop its queued ones in the actor."""
        tickets = [t for t, (request, _) in self._waiting.items() if request.session_id == session_id]
        gone = [self._waiting.pop(t)[0] for t in tickets]
        if gone:
            try:
                self._actor.cancel.remote(session_id)
            except Exception as error:  # the actor is gone: nothing queued there either
                log.warning("%s: cancel for session %s not sent: %s", self.name, session_id, error)
        return gone

    async def _wait(self, ticket: int, awaitable: Any) -> None:
        try:
            outcome: Outcome[R] = await awaitable
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the model failed, or the actor died beyond its retries
            self._finish(ticket, None, error)
            return
        if outcome.record is not None and outcome.batch not in self._seen:
            self._remember(outcome.batch)
            if self.on_batch is not None:
                try:
                    self.on_batch(outcome.record)
                except Exception:
                    log.exception("%s: on_batch failed", self.name)
        self._finish(ticket, outcome.result, None)

    def _remember(self, batch: int) -> None:
        self._seen.add(batch)
        self._seen_order.append(batch)
        if len(self._seen_order) > SEEN_BATCHES:
            self._seen.discard(self._seen_order.popleft())

    def _finish(self, ticket: int, result: R | None, error: BaseException | None) -> None:
        entry = self._waiting.pop(ticket, None)
        if entry is None:  # cancelled meanwhile
            return
        request, callback = entry
        try:
            callback(request, result, error)
        except Exception:
            log.exception("%s: result callback of session %s failed", self.name, request.session_id)

    # --- running ---------------------------------------------------------------------------

    async def refresh(self) -> HostStats | None:
        """Poll the actor's figures now; None (and `running` false) when it does not answer."""
        try:
            self.actor_stats = await self._actor.stats.remote()
        except Exception as error:
            if self._reachable:
                log.warning("%s actor unreachable: %s", self.name, error)
            self._reachable = False
            return None
        self._reachable = True
        return self.actor_stats

    def start(self) -> None:
        self._poller = asyncio.get_running_loop().create_task(self._poll(), name=f"{self.name}-ray-stats")

    async def _poll(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.poll_s)

    async def close(self) -> None:
        """Stop here; the actor keeps serving the other front-ends."""
        tasks = [*self._tasks, *([self._poller] if self._poller is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._waiting.clear()


# --- connecting ------------------------------------------------------------------------------


def connect(address: str) -> None:
    """Join the Ray cluster at `address` ("auto", "local" or HOST:PORT), once per process."""
    import ray

    if ray.is_initialized():
        return
    if address == "local":
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(namespace=NAMESPACE, include_dashboard=False, logging_level=logging.WARNING)
        return
    try:
        ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING)
    except ConnectionError as error:
        raise ConnectionError(
            f"{error}. Is the cluster up (`ray status --address {address}`)? If it uses token "
            "authentication, give this process RAY_AUTH_MODE=token and the token too "
            "(~/.ray/auth_token or RAY_AUTH_TOKEN; docs/deploy.md)"
        ) from error


def actor_name(kind: Kind, config: ServerConfig) -> str:
    """The shared actor's name: one per model, so front-ends naming the same model share it."""
    model = config.model if kind == "asr" else config.embedder
    return f"{kind}:{model}"


def caller_id(config: ServerConfig) -> str:
    """This front-end's name in the actor's figures."""
    return f"{socket.gethostname()}:{config.port}:{os.getpid()}"


def gpus_of(kind: Kind, config: ServerConfig) -> float:
    """The GPU fraction the actor of `kind` reserves; Ray accepts fractions up to 1, then whole GPUs."""
    gpus = config.ray_asr_gpus if kind == "asr" else config.ray_embed_gpus
    if gpus < 0 or (gpus > 1 and not float(gpus).is_integer()):
        raise ValueError(f"ray_{kind}_gpus must be a fraction up to 1 or a whole number, not {gpus}")
    return gpus


def model_actor(kind: Kind, config: ServerConfig) -> Any:
    """The handle of the shared actor of `kind`, created (detached) by the first front-end."""
    import ray

    actor_class = ray.remote(ModelActor)
    return actor_class.options(  # type: ignore[attr-defined]
        name=actor_name(kind, config),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=TASK_RETRIES,
        num_gpus=gpus_of(kind, config),
    ).remote(kind, config)


async def remote_service(
    kind: Kind, config: ServerConfig, on_batch: Callable[[BatchRecord], None] | None = None
) -> tuple[RemoteModelService[Any, Any], ModelInfo]:
    """Connect to the cluster, find or create the actor of `kind`, and wrap it (not started);
    `on_batch` sees each actor batch that held a request of this front-end."""
    assert config.ray_address is not None
    await asyncio.to_thread(connect, config.ray_address)
    actor = await asyncio.to_thread(model_actor, kind, config)
    name = actor_name(kind, config)
    try:
        info: ModelInfo = await asyncio.wait_for(actor.info.remote(), ACTOR_START_TIMEOUT_S)
    except TimeoutError:
        raise RuntimeError(
            f"Ray actor {name} did not start within {ACTOR_START_TIMEOUT_S:.0f} s: does the cluster "
            f"have 1 CPU and {gpus_of(kind, config)} GPU free for it (`ray status`)?"
        ) from None
    service = RemoteModelService[Any, Any](kind, actor, caller_id(config), info, on_batch=on_batch)
    await service.refresh()
    log.info("ray: %s served by actor %s (%s on %s)", kind, name, info.name, info.device)
    return service, info
