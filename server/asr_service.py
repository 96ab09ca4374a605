"""The asyncio adapter of the ASR micro-batcher: runs its batches on worker threads.

One `AsrService` per model, shared by every session of the process. Sessions submit requests
with a callback; the service asks the sans-I/O `Scheduler` for batches whenever a worker is
free (or the bounded wait expires), runs `engine.transcribe_batch` in a thread, reports the
cost back to the scheduler and calls each request's callback on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from stream.interfaces import AsrEngine, AsrOutput
from stream.scheduler import Batch, Request, Scheduler
from stream.session import AsrJob

log = logging.getLogger(__name__)

ResultCallback = Callable[[Request[AsrJob], AsrOutput | None, BaseException | None], None]
"""Called with (request, output, None) on success, (request, None, None) when the request was
dropped (a partial replaced or shed), and (request, None, error) when the engine failed."""

SHED_CHECK_S = 0.25


@dataclass(slots=True)
class BatchRecord:
    size: int
    audio_seconds: float
    compute_seconds: float


class AsrService:
    """Feeds one engine from one scheduler with `engine.concurrency` worker threads."""

    def __init__(self, engine: AsrEngine, scheduler: Scheduler[AsrJob]) -> None:
        self.engine = engine
        self.scheduler = scheduler
        self.workers = max(1, engine.concurrency)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="asr")
        self._free = self.workers
        self._callbacks: dict[int, ResultCallback] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.compute_seconds = 0.0
        self.audio_seconds = 0.0
        self.on_batch: Callable[[BatchRecord], None] | None = None

    # --- the sessions' side ---------------------------------------------------------------

    def submit(self, request: Request[AsrJob], callback: ResultCallback) -> None:
        """Queue a request; `callback` runs on the event loop when it completes or is dropped."""
        displaced = self.scheduler.submit(request, time.monotonic())
        self._callbacks[request.id] = callback
        for old in displaced:
            self._finish(old, None, None)
        self._wake.set()

    def cancel(self, session_id: str) -> None:
        """Forget the queued requests of a session that went away (running ones complete)."""
        for request in self.scheduler.cancel(session_id):
            self._callbacks.pop(request.id, None)

    @property
    def busy_workers(self) -> int:
        return self.workers - self._free

    # --- running --------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="asr-service")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = time.monotonic()
            for stale in self.scheduler.shed_stale(now):
                self._finish(stale, None, None)
            while self._free > 0:
                batch = self.scheduler.next_batch(now)
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

    def _execute(
        self, batch: Batch[AsrJob]
    ) -> tuple[list[AsrOutput] | list[AsrOutput | BaseException], float]:
        """Worker thread: one engine call for the batch; on failure, retry each item alone."""
        started = time.perf_counter()
        inputs = [r.payload.input for r in batch.requests]
        try:
            outputs: list[AsrOutput] | list[AsrOutput | BaseException] = self.engine.transcribe_batch(inputs)
        except Exception:
            log.exception("ASR batch of %d failed; retrying its items one by one", len(inputs))
            singles: list[AsrOutput | BaseException] = []
            for item in inputs:
                try:
                    singles.append(self.engine.transcribe_batch([item])[0])
                except Exception as error:
                    singles.append(error)
            outputs = singles
        return outputs, time.perf_counter() - started

    def _done(self, batch: Batch[AsrJob], future: asyncio.Future[tuple[list, float]]) -> None:  # type: ignore[type-arg]
        self._free += 1
        self._wake.set()
        error = future.exception()
        if error is not None:  # _execute catches engine errors; this is a bug or shutdown
            for request in batch.requests:
                self._finish(request, None, error)
            return
        outputs, elapsed = future.result()
        self.scheduler.complete(batch, elapsed)
        self.compute_seconds += elapsed
        self.audio_seconds += batch.seconds
        if self.on_batch is not None:
            self.on_batch(BatchRecord(len(batch.requests), batch.seconds, elapsed))
        for request, output in zip(batch.requests, outputs, strict=True):
            if isinstance(output, BaseException):
                self._finish(request, None, output)
            else:
                self._finish(request, output, None)

    def _finish(
        self, request: Request[AsrJob], output: AsrOutput | None, error: BaseException | None
    ) -> None:
        callback = self._callbacks.pop(request.id, None)
        if callback is None:
            return
        try:
            callback(request, output, error)
        except Exception:
            log.exception("result callback of session %s failed", request.session_id)
