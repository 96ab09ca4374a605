"""The daemon executor: runs work like a thread pool, and never holds the process up at exit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from server.daemon_executor import DaemonExecutor

REPO = Path(__file__).resolve().parents[2]


def test_it_runs_work_and_hands_back_results_and_exceptions() -> None:
    executor = DaemonExecutor(2, "t")
    assert executor.submit(pow, 2, 10).result(5) == 1024
    failing = executor.submit(int, "not a number")
    with pytest.raises(ValueError):
        failing.result(5)
    names = {executor.submit(lambda: threading.current_thread().name).result(5) for _ in range(8)}
    assert names <= {"t-0", "t-1"}
    executor.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        executor.submit(pow, 2, 2)


def test_shutdown_cancels_what_has_not_started() -> None:
    executor = DaemonExecutor(1, "t")
    release = threading.Event()
    running = executor.submit(release.wait, 5)
    queued = executor.submit(pow, 2, 2)
    executor.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    release.set()
    assert running.result(5) is True


def test_asyncio_awaits_it_through_run_in_executor() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(DaemonExecutor(1, "t"), sum, [1, 2, 3])

    assert asyncio.run(main()) == 6


def test_the_process_exits_while_a_worker_is_busy() -> None:
    """The reason it exists: a ThreadPoolExecutor would keep this process alive for 60 s."""
    code = (
        "import time\n"
        "from server.daemon_executor import DaemonExecutor\n"
        "DaemonExecutor(1, 'busy').submit(time.sleep, 60)\n"
        "time.sleep(0.2)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=50, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 50
