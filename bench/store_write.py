"""Latency of storing a final: `add_utterance` of the store, awaited from the event loop.

This is the time a final waits between the ASR result and its `final` event. Prints p50, p95,
p99 and max over N utterances, one writer at a time and then with concurrent writers (sessions
sharing the store's thread), for `synchronous=NORMAL` (the default) and `FULL`; then the same
adds on a plain `Store` called directly, to separate SQLite's cost from the thread hop.

Then SQLite against PostgreSQL with 16 and 64 concurrent sessions (`--sessions`), each storing
finals back to back: latency per final and throughput (finals/s, all sessions together).
PostgreSQL is the server at `--postgresql URL`, or else a throwaway one started here with
Debian's initdb/pg_ctl (its defaults: fsync on), measured with `synchronous_commit` on (a
commit is on disk: like SQLite FULL) and off (it survives a crash of the server process, not a
power loss: like SQLite NORMAL).

Then the cross-front-end visibility delay: two front-ends' stores on one PostgreSQL database,
B's index following the change feed (`server.memory.index`) with the real embedder; sessions on
A store finals (one every `--final-every` seconds each) and each final's delay from its commit
on A to its being held by B's index (searchable on B) is printed (both in this process).

    python -m bench.store_write [--n 1000] [--writers 8] [--dir DIR] [--sessions 16,64]
                                [--postgresql URL | --no-postgresql] [--visibility 200]

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.memory.index import TenantIndexes
from server.store import AsyncStore, Store, Synchronous
from server.store_interface import ConversationStore
from server.store_postgresql import PostgresStore


async def run(path: Path, n: int, writers: int, synchronous: Synchronous) -> list[float]:
    """Store `n` utterances from `writers` concurrent tasks; the latency of each add, in ms."""
    store = await AsyncStore.open(path, synchronous=synchronous)
    return (await write_concurrently(store, n, writers))[0]


async def run_postgresql(url: str, n: int, writers: int) -> tuple[list[float], float]:
    """`write_concurrently` on the PostgreSQL store at `url` (a pool as large as the sessions)."""
    store = await PostgresStore.open(url, max_size=max(writers, 2))
    return await write_concurrently(store, n, writers)


async def write_concurrently(store: ConversationStore, n: int, writers: int) -> tuple[list[float], float]:
    """Store `n` utterances from `writers` concurrent tasks, then close the store.

    Returns the latency of each add (ms) and the throughput (adds per second, all writers)."""
    latencies: list[float] = []
    try:

        async def writer(w: int) -> None:
            conversation = await store.open_conversation("bench", None, "en")
            for seq in range(n // writers):
                text = f"writer {w} says utterance number {seq}, about as long as a spoken sentence."
                t0 = time.perf_counter()
                await store.add_utterance(
                    "bench", conversation.id, seq, text, seq * 2.0, seq * 2.0 + 1.5, "en"
                )
                latencies.append((time.perf_counter() - t0) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        elapsed = time.perf_counter() - started
    finally:
        await store.close()
    return latencies, len(latencies) / elapsed


async def visibility(
    url: str, n: int, sessions: int, final_every_s: float, embedder_name: str
) -> list[float]:
    """Commit on front-end A → held by front-end B's index, in ms, for `n` finals of `sessions`."""
    from models.registry import load_embedder
    from server.engines import embed_service

    embedder = await asyncio.to_thread(load_embedder, embedder_name)
    embed = embed_service(embedder)
    embed.start()
    a, b = await PostgresStore.open(url), await PostgresStore.open(url)
    with tempfile.TemporaryDirectory() as folder:
        index = TenantIndexes(b, embed, embedder.name, embedder.dim, Path(folder))
        index.start()
        held = await index.get("bench")
        await asyncio.sleep(0.5)  # the feed is listening
        delays: list[float] = []

        async def session(s: int) -> None:
            conversation = await a.open_conversation("bench", None, "en")
            await asyncio.sleep(final_every_s * s / sessions)
            for seq in range(n // sessions):
                text = f"session {s} says utterance number {seq}, about the budget of the project."
                row = await a.add_utterance("bench", conversation.id, seq, text, seq, seq + 1.5, "en")
                committed = time.perf_counter()
                while row.id not in held:
                    await asyncio.sleep(0.002)
                delays.append((time.perf_counter() - committed) * 1000)
                await asyncio.sleep(final_every_s)

        await asyncio.gather(*(session(s) for s in range(sessions)))
        await index.close()
    await embed.close()
    await a.close()
    await b.close()
    return delays


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


def report(label: str, ms: list[float], per_s: float | None = None) -> None:
    """Print one line of figures."""
    q = statistics.quantiles(ms, n=100, method="inclusive")
    rate = "" if per_s is None else f"  {per_s:7.0f} finals/s"
    print(
        f"{label:<52} n={len(ms):5d}  p50={q[49]:7.3f} ms  p95={q[94]:7.3f} ms  "
        f"p99={q[98]:7.3f} ms  max={max(ms):7.3f} ms{rate}"
    )


def compare_backends(tmp: Path, n: int, sessions: list[int], postgresql: str) -> None:
    """SQLite against PostgreSQL, each with every count of concurrent sessions."""
    for writers in sessions:
        for synchronous in ("NORMAL", "FULL"):
            path = tmp / f"sessions-{writers}-{synchronous}.db"
            ms, per_s = asyncio.run(write_concurrently_sqlite(path, n, writers, synchronous))
            report(f"SQLite synchronous={synchronous}, sessions={writers}", ms, per_s)
        for commit in ("on", "off"):
            joiner = "&" if "?" in postgresql else "?"
            url = f"{postgresql}{joiner}synchronous_commit={commit}"
            ms, per_s = asyncio.run(run_postgresql(url, n, writers))
            report(f"PostgreSQL synchronous_commit={commit}, sessions={writers}", ms, per_s)


async def write_concurrently_sqlite(
    path: Path, n: int, writers: int, synchronous: Synchronous
) -> tuple[list[float], float]:
    """`write_concurrently` on a new SQLite store at `path`."""
    return await write_concurrently(await AsyncStore.open(path, synchronous=synchronous), n, writers)


def main() -> None:
    """Run the benchmark and print its figures and the command that produced them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1000, help="utterances per run")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writers in the second run")
    parser.add_argument("--dir", type=Path, default=None, help="where to make the database")
    parser.add_argument("--sessions", default="16,64", help="concurrent sessions of the backend comparison")
    parser.add_argument("--postgresql", metavar="URL", help="a PostgreSQL database to use (emptied first)")
    parser.add_argument("--no-postgresql", action="store_true", help="SQLite figures only")
    parser.add_argument("--visibility", type=int, default=200, help="finals of the visibility run (0: none)")
    parser.add_argument("--visibility-sessions", type=int, default=16, help="sessions of the visibility run")
    parser.add_argument("--final-every", type=float, default=1.0, help="seconds between a session's finals")
    parser.add_argument("--embedder", default="minilm", help="B's embedder in the visibility run")
    args = parser.parse_args()

    print("$ python -m bench.store_write " + " ".join(sys.argv[1:]))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(f"database in {tmp}, SQLite {sqlite3.sqlite_version}")
        runs: list[tuple[Synchronous, int]] = [("NORMAL", 1), ("NORMAL", args.writers), ("FULL", 1)]
        for i, (synchronous, writers) in enumerate(runs):
            ms = asyncio.run(run(Path(tmp) / f"bench{i}.db", args.n, writers, synchronous))
            report(f"AsyncStore synchronous={synchronous}, writers={writers}", ms)
        report("Store (no thread) synchronous=NORMAL", run_direct(Path(tmp) / "direct.db", args.n))
        if not args.no_postgresql:
            sessions = [int(s) for s in args.sessions.split(",") if s]
            with postgresql_database(args.postgresql) as url:
                if sessions:
                    compare_backends(Path(tmp), args.n, sessions, url)
                if args.visibility:
                    ms = asyncio.run(
                        visibility(
                            url, args.visibility, args.visibility_sessions, args.final_every, args.embedder
                        )
                    )
                    label = f"commit on A → searchable on B, sessions={args.visibility_sessions}"
                    report(label, ms)


@contextmanager
def postgresql_database(url: str | None) -> Iterator[str]:
    """`url`, or a database of a throwaway server started here (stopped at the end)."""
    if url is not None:
        yield url
        return
    from tests.conftest import free_port
    from tests.postgresql import start_postgres

    server = start_postgres(free_port(), fsync=True)
    try:
        print(f"PostgreSQL {server.psql('SHOW server_version').strip()}: a throwaway server, fsync on")
        yield server.create_database()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
