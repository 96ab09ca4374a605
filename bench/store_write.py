"""Latency of storing a final: `AsyncStore.add_utterance`, awaited from the event loop.

This is the time a final waits between the ASR result and its `final` event. Prints p50, p95,
p99 and max over N utterances, one writer at a time and then with concurrent writers (sessions
sharing the store's thread), for `synchronous=NORMAL` (the default) and `FULL`; then the same
adds on a plain `Store` called directly, to separate SQLite's cost from the thread hop.

    python -m bench.store_write [--n 1000] [--writers 8] [--dir DIR]

`--dir` is where the database is made (a temporary directory by default): the figures depend
on that disk, above all with FULL.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from server.store import AsyncStore, Store, Synchronous


async def run(path: Path, n: int, writers: int, synchronous: Synchronous) -> list[float]:
    """Store `n` utterances from `writers` concurrent tasks; the latency of each add, in ms."""
    latencies: list[float] = []
    async with await AsyncStore.open(path, synchronous=synchronous) as store:

        async def writer(w: int) -> None:
            conversation = await store.open_conversation("bench", None, "en")
            for seq in range(n // writers):
                text = f"writer {w} says utterance number {seq}, about as long as a spoken sentence."
                t0 = time.perf_counter()
                await store.add_utterance(
                    "bench", conversation.id, seq, text, seq * 2.0, seq * 2.0 + 1.5, "en"
                )
                latencies.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(writer(w) for w in range(writers)))
    return latencies


def run_direct(path: Path, n: int) -> list[float]:
    """The same adds on a plain `Store`, without the thread hop: the cost of SQLite alone, in ms."""
    latencies: list[float] = []
    with Store.open(path) as store:
        conversation = store.open_conversation("bench", None, "en")
        for seq in range(n):
            text = f"writer 0 says utterance number {seq}, about as long as a spoken sentence."
            t0 = time.perf_counter()
            store.add_utterance("bench", conversation.id, seq, text, seq * 2.0, seq * 2.0 + 1.5, "en")
            latencies.append((time.perf_counter() - t0) * 1000)
    return latencies


def report(label: str, ms: list[float]) -> None:
    """Print one line of figures."""
    q = statistics.quantiles(ms, n=100, method="inclusive")
    print(
        f"{label:<45} n={len(ms):5d}  p50={q[49]:7.3f} ms  p95={q[94]:7.3f} ms  "
        f"p99={q[98]:7.3f} ms  max={max(ms):7.3f} ms"
    )


def main() -> None:
    """Run the benchmark and print its figures and the command that produced them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1000, help="utterances per run")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writers in the second run")
    parser.add_argument("--dir", type=Path, default=None, help="where to make the database")
    args = parser.parse_args()

    print("$ python -m bench.store_write " + " ".join(sys.argv[1:]))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(f"database in {tmp}, SQLite {sqlite3.sqlite_version}")
        runs: list[tuple[Synchronous, int]] = [("NORMAL", 1), ("NORMAL", args.writers), ("FULL", 1)]
        for i, (synchronous, writers) in enumerate(runs):
            ms = asyncio.run(run(Path(tmp) / f"bench{i}.db", args.n, writers, synchronous))
            report(f"AsyncStore synchronous={synchronous}, writers={writers}", ms)
        report("Store (no thread) synchronous=NORMAL", run_direct(Path(tmp) / "direct.db", args.n))


if __name__ == "__main__":
    main()
