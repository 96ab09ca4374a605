"""The asyncio adapter of a micro-batcher: runs one model's batches on worker threads.

One `ModelService` per model (ASR, embeddings), shared by every session of the process.
Sessions submit requests with a callback; the service asks the sans-I/O `Scheduler` for a batch
whenever a worker is free (or the bounded wait expires), runs the batch function in a thread,
reports the cost back to the scheduler and calls each request's callback on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from stream.scheduler import Batch, Request, Scheduler, SchedulerStats, SizeCost

log = logging.getLogger(__name__)

P = TypeVar("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

ResultCallback = Callable[[Request[P], R | None, BaseException | None], None]
"""Called with (request, result, None) on success, (request, None, None) when the request was
dropped (a partial replaced or shed), and (request, None, error) when the model failed."""

SHED_CHECK_S = 0.25


@dataclass(slots=True)
class BatchRecord:
    """What one batch cost (for metrics and the dashboard)."""

    size: int
    seconds: float
    """The batch's length in the scheduler's unit (audio seconds for ASR)."""
    compute_seconds: float
    queue_wait_s: float


class SchedulerView(Protocol):
    """What the server reads of a scheduler: a local `Scheduler`, or a remote one's last figures."""

    @property
    def stats(self) -> SchedulerStats: ...

    @property
    def pending(self) -> int: ...

    @property
    def costs(self) -> dict[int, SizeCost]: ...


class BatchService(Protocol[P, R_co]):
    """A model service as sessions and the server use it.

    `ModelService` runs the model in this process; `server.ray_services.RemoteModelService`
    sends the requests to a model actor shared by several front-ends (`palabre serve --ray`).
    """

    name: str
    on_batch: Callable[[BatchRecord], None] | None

    @property
    def scheduler(self) -> SchedulerView: ...

    @property
    def workers(self) -> int: ...

    @property
    def busy_workers(self) -> int: ...

    @property
    def compute_seconds(self) -> float: ...

    @property
    def seconds_done(self) -> float: ...

    @property
    def running(self) -> bool: ...

    def submit(self, request: Request[P], callback: ResultCallback[P, R_co]) -> None: ...

    async def call(self, request: Request[P]) -> R_co: ...

    def cancel(self, session_id: str) -> list[Request[P]]: ...

    def start(self) -> None: ...

    async def close(self) -> None: ...


class ModelService(Generic[P, R]):
    """Feeds one model from one scheduler with `workers` threads.

    `run_batch` receives the payloads of a batch and returns one result per payload, in order;
    it must be safe to call from `workers` threads at once.
    """

    def __init__(
        self,
        name: str,
        run_batch: Callable[[Sequence[P]], Sequence[R]],
        scheduler: Scheduler[P],
        workers: int = 1,
        *,
        on_batch: Callable[[BatchRecord], None] | None = None,
    ) -> None:
        self.name = name
        self.run_batch = run_batch
        self.scheduler = scheduler
        self.workers = max(1, workers)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix=name)
        self._free = self.workers
        self._callbacks: dict[int, ResultCallback[P, R]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.compute_seconds = 0.0
        self.seconds_done = 0.0
        self.on_batch = on_batch
        """Called with each batch's figures (metrics)."""

    # --- the callers' side ----------------------------------------------------------------

    def submit(self, request: Request[P], callback: ResultCallback[P, R]) -> None:
        """Queue a request; `callback` runs on the event loop when it completes or is dropped."""
        displaced = self.scheduler.submit(request, time.monotonic())
        self._callbacks[request.id] = callback
        for old in displaced:
            self._finish(old, None, None)
        self._wake.set()

    async def call(self, request: Request[P]) -> R:
        """Submit and wait for the result (for callers that simply await one)."""
        return await submit_and_wait(self.name, self.submit, request)

    def cancel(self, session_id: str) -> list[Request[P]]:
        """Forget the queued requests of a session that went away (running ones complete).

        Returns the forgotten requests; their callbacks will not be called.
        """
        gone = self.scheduler.cancel(session_id)
        for request in gone:
            self._callbacks.pop(request.id, None)
        return gone

    @property
    def busy_workers(self) -> int:
        return self.workers - self._free

    @property
    def running(self) -> bool:
        """Started and not stopped (for readiness)."""
        return self._task is not None and not self._task.done()

    # --- running --------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.name}-service")

    async def close(self) -> None:
        task = self._task
        if task is not None:
            # Python 3.11's asyncio.wait_for swallows a cancellation that arrives as its awaitable
            # completes (the loop's wake-up), so cancel until the loop has really stopped.
            while not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=0.1)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = time.monotonic()
            for stale in self.scheduler.shed_stale(now):
                self._finish(stale, None, None)
            while self._free > 0:
                batch = self.scheduler.next_batch(now, self._free, self.workers)
                if batch is None:
                    break
                self._free -= 1
                future = loop.run_in_executor(self._executor, self._execute, batch)
                future.add_done_callback(functools.partial(self._done, batch))
            timeout = SHED_CHECK_S
            if self._free > 0:
                wake = self.scheduler.wake_at(now)
                if wake is not None:
                    timeout = min(timeout, max(0.0, wake - now))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _execute(self, batch: Batch[P]) -> tuple[list[R | BaseException], float]:
        """Worker thread: one model call for the batch; on failure, retry each item alone."""
        started = time.perf_counter()
        payloads = [r.payload for r in batch.requests]
        results: list[R | BaseException]
        try:
            results = list(self.run_batch(payloads))
        except Exception:
            log.exception("%s: batch of %d failed; retrying its items one by one", self.name, len(payloads))
            results = []
            for payload in payloads:
                try:
                    results.append(self.run_batch([payload])[0])
                except Exception as error:
                    results.append(error)
        return results, time.perf_counter() - started

    def _done(self, batch: Batch[P], future: asyncio.Future[tuple[list[R | BaseException], float]]) -> None:
        self._free += 1
        self.scheduler.finished(batch)
        self._wake.set()
        error = future.exception()
        if error is not None:  # _execute catches model errors; this is shutdown or a bug
            for request in batch.requests:
                self._finish(request, None, error)
            return
        results, elapsed = future.result()
        self.scheduler.complete(batch, elapsed)
        self.compute_seconds += elapsed
        self.seconds_done += batch.seconds
        if self.on_batch is not None:
            wait = max(batch.formed_at - r.submitted_at for r in batch.requests)
            self.on_batch(BatchRecord(len(batch.requests), batch.seconds, elapsed, wait))
        for request, result in zip(batch.requests, results, strict=True):
            if isinstance(result, BaseException):
                self._finish(request, None, result)
            else:
                self._finish(request, result, None)

    def _finish(self, request: Request[P], result: R | None, error: BaseException | None) -> None:
        callback = self._callbacks.pop(request.id, None)
        if callback is None:
            return
        try:
            callback(request, result, error)
        except Exception:
            log.exception("%s: result callback of session %s failed", self.name, request.session_id)


async def submit_and_wait(
    name: str, submit: Callable[[Request[P], ResultCallback[P, R]], None], request: Request[P]
) -> R:
    """Submit `request` through `submit` and wait for its result; a dropped request raises."""
    future: asyncio.Future[R] = asyncio.get_running_loop().create_future()

    def done(_: Request[P], result: R | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        elif result is None:
            future.set_exception(RuntimeError(f"{name}: request dropped"))
        else:
            future.set_result(result)

    submit(request, done)
    return await future
