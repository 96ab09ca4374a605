"""The cost of exporting a long conversation: time and peak Python memory (tracemalloc) of the
streamed export (`server.export.export_chunks`, a page of `EXPORT_PAGE` utterances at a time)
against rendering the whole transcript at once (every row read, one string), per format.

    python bench/export.py --utterances 20000

The store is a real SQLite file filled with synthetic finals on two tracks (a third with words).
The HTTP layer is left out: it writes each chunk and waits while the socket's buffer is full.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sqlite3
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

from server.export import EXPORT_FORMATS, export_chunks, transcript_of
from server.routes import conversation_json, utterance_json
from server.store import UTTERANCE_COLUMNS, AsyncStore, ConversationRow, Store, utterance_id
from stream.transcript_formats import render


def fill(path: Path, count: int) -> None:
    with Store.open(path) as store:
        store.open_conversation("acme", "long", "en")
    rows = []
    for seq in range(count):
        start = seq * 3.0
        text = "".join(f" word{k}" for k in range(9))
        words = [{"word": f" word{k}", "start": start + k * 0.3, "end": start + k * 0.3 + 0.25,
                  "probability": 0.9} for k in range(9)]
        rows.append((utterance_id("long", seq), "long", "acme", seq, text, start, start + 2.9, "en",
                     None, "bob" if seq % 2 else "alice", None, 0.0,
                     json.dumps(words) if seq % 3 == 0 else None))
    with sqlite3.connect(path) as conn:
        conn.executemany(f"INSERT INTO utterances ({UTTERANCE_COLUMNS}) VALUES (NULL{', ?' * 13})", rows)


async def measured(run: Callable[[], Awaitable[int]]) -> tuple[float, float, int]:
    """(seconds, peak MiB allocated, bytes made) of `run`: timed once as is, then once more under
    tracemalloc (which slows it down several times) for the memory."""
    started = time.perf_counter()
    size = await run()
    seconds = time.perf_counter() - started
    tracemalloc.start()
    await run()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak, size


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--utterances", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fill(Path(tmp) / "palabre.db", args.utterances)
        store = await AsyncStore.open(Path(tmp) / "palabre.db")
        row = await store.get_conversation("acme", "long")
        assert row is not None
        print(f"$ python bench/export.py --utterances {args.utterances}")
        print("format  streamed: s, peak MiB   whole: s, peak MiB   size MiB")
        for fmt in EXPORT_FORMATS:
            streamed = await measured(functools.partial(streamed_size, store, row, fmt))
            whole = await measured(functools.partial(whole_size, store, row, fmt))
            print(f"{fmt:6}  {streamed[0]:6.2f} {streamed[1]:8.1f}      {whole[0]:6.2f} {whole[1]:8.1f}"
                  f"      {streamed[2] / 2**20:6.1f}")
        await store.close()


async def streamed_size(store: AsyncStore, row: ConversationRow, fmt: str) -> int:
    return sum([len(chunk) async for chunk in export_chunks(store, row, None, fmt)])


async def whole_size(store: AsyncStore, row: ConversationRow, fmt: str) -> int:
    """What the export did before it was streamed: every row read, the file made in one string."""
    utterances = await store.utterances(row.tenant_id, row.id)
    if fmt == "json":
        items = [utterance_json(u) for u in utterances]
        payload = {"conversation": conversation_json(row), "utterances": items}
        return len(json.dumps(payload, ensure_ascii=False).encode())
    return len(render(transcript_of(row, utterances, None), fmt).encode())  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(main())
