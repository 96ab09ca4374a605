"""An executor whose threads never hold the process up at exit.

`concurrent.futures.ThreadPoolExecutor` joins its threads when the interpreter exits, so a
server told to stop (SIGTERM) waits for whatever model call is running: a spaCy pipeline that
is still loading, an LLM generation, a model loading at start. Those results are worthless once
the server stops, so their threads are daemons: the process exits while they run. Work that must
finish (the store's writes) keeps a joined `ThreadPoolExecutor`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

__all__ = ["DaemonExecutor"]

P = ParamSpec("P")
T = TypeVar("T")

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonExecutor(Executor):
    """A pool of `workers` daemon threads named `name-N`, started at the first `submit`."""

    def __init__(self, workers: int, name: str) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.name = name
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut_down = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run `fn(*args, **kwargs)` on a worker thread; its future."""
        with self._lock:
            if self._shut_down:
                raise RuntimeError(f"executor {self.name} is shut down")
            future: Future[T] = Future()
            self._work.put((future, fn, args, kwargs))
            if len(self._threads) < self.workers:
                thread = threading.Thread(
                    target=self._serve, name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; `cancel_futures` cancels what has not started; `wait` joins the threads."""
        with self._lock:
            self._shut_down = True
            if cancel_futures:
                self._cancel_queued()
            for _ in self._threads:
                self._work.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _cancel_queued(self) -> None:
        kept: list[_Work | None] = []
        while True:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                break
            if item is None:
                kept.append(item)
            else:
                item[0].cancel()
        for item in kept:
            self._work.put(item)

    def _serve(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the caller, as ThreadPoolExecutor does
                future.set_exception(exc)
            else:
                future.set_result(result)
