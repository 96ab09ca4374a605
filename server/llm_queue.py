"""The one LLM work queue of the process: answers before summaries, cancellable.

An LLM engine decodes one generation at a time. Jobs wait in a priority queue (answers
first, then summaries, each in arrival order); one worker thread runs the current job's
`engine.generate` and hands each text piece to the event loop. A job is cancelled when its
consumer stops iterating (the client left): decoding stops after the current token.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import IntEnum

from server.daemon_executor import DaemonExecutor
from stream.interfaces import LlmEngine, LlmRequest

log = logging.getLogger(__name__)


class Priority(IntEnum):
    ANSWER = 0
    SUMMARY = 1


_DONE = object()


@dataclass(order=True)
class _Job:
    priority: int
    order: int
    request: LlmRequest = field(compare=False)
    pieces: asyncio.Queue[object] = field(compare=False)
    cancelled: threading.Event = field(compare=False, default_factory=threading.Event)


@dataclass(frozen=True, slots=True)
class GenerationRecord:
    """What one generation cost (for metrics)."""

    tokens: int
    """Text pieces produced (one per token with llama.cpp and ExLlamaV2)."""
    first_piece_s: float | None
    """Seconds from the start of the generation to its first piece; None when it produced none."""
    decode_s: float
    """Seconds after the first piece until the generation ended."""


@dataclass(slots=True)
class LlmStats:
    generations: int = 0
    tokens: int = 0
    decode_seconds: float = 0.0
    first_piece_seconds: list[float] = field(default_factory=list)


class LlmQueue:
    """Serialises generations on one engine by priority."""

    def __init__(
        self, engine: LlmEngine, *, on_generation: Callable[[GenerationRecord], None] | None = None
    ) -> None:
        self.engine = engine
        self._queue: asyncio.PriorityQueue[_Job] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._executor = DaemonExecutor(1, "llm")  # a stop does not wait for a generation
        self._task: asyncio.Task[None] | None = None
        self.stats = LlmStats()
        self.on_generation = on_generation
        """Called on the worker thread after each generation (finished or cancelled)."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="llm-queue")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    @property
    def running(self) -> bool:
        """Started and not stopped (for readiness)."""
        return self._task is not None and not self._task.done()

    async def generate(self, request: LlmRequest, priority: Priority) -> AsyncIterator[str]:
        """Stream the text pieces of one generation; leaving the loop early cancels it."""
        job = _Job(int(priority), next(self._order), request, asyncio.Queue())
        await self._queue.put(job)
        try:
            while True:
                piece = await job.pieces.get()
                if piece is _DONE:
                    return
                if isinstance(piece, BaseException):
                    raise piece
                assert isinstance(piece, str)
                yield piece
        finally:
            job.cancelled.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = await self._queue.get()
            if job.cancelled.is_set():
                continue
            await loop.run_in_executor(self._executor, self._decode, job, loop)

    def _decode(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        """Worker thread: run one generation, forwarding pieces until done or cancelled."""
        started = time.perf_counter()
        first: float | None = None
        count = 0
        pieces = self.engine.generate(job.request)
        try:
            for piece in pieces:
                if job.cancelled.is_set():
                    break
                if first is None:
                    first = time.perf_counter() - started
                count += 1
                loop.call_soon_threadsafe(job.pieces.put_nowait, piece)
        except Exception as error:
            log.exception("LLM generation failed")
            loop.call_soon_threadsafe(job.pieces.put_nowait, error)
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
            loop.call_soon_threadsafe(job.pieces.put_nowait, _DONE)
        decode_s = time.perf_counter() - started - (first or 0.0)
        self.stats.generations += 1
        self.stats.tokens += count
        self.stats.decode_seconds += decode_s
        if self.on_generation is not None:
            try:
                self.on_generation(GenerationRecord(count, first, decode_s))
            except Exception:
                log.exception("generation callback failed")
        if first is not None:
            self.stats.first_piece_seconds.append(first)
            del self.stats.first_piece_seconds[:-512]
