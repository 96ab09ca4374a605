"""Search at scale: a tenant of 100,000 utterances, SQLite against PostgreSQL.

For each backend the store is filled with `--utterances` synthetic utterances (`--per-conversation`
per conversation; the text of each drawn from `--distinct` sentences made from templates), then
the index design of `server.memory.index` (one FAISS index per tenant and front-end, IVF above
`ivf_threshold`, following the store) is measured:

* rebuild: a front-end with no index file loads the tenant (reads every row from the store, embeds
  it, fills a flat index it searches at once, saves it; the IVF index is trained in the background
  and replaces it) — the catch-up of a fresh front-end;
* load: a front-end with an up-to-date index file loads it (reads the rows, checks the file);
* catch-up: the same with a file `--behind` rows behind the store (those embedded and added);
* search: `TenantIndexes.search` p50/p95 over `--queries` queries — embedding the query with the
  real embedder, FAISS, reading the hits' rows — over the whole tenant and within one
  conversation (once the IVF is in place); and the query's embedding and the FAISS search alone.

Vectors: the `--distinct` sentences are embedded once by the real embedder (`--embedder`, MiniLM
by default), and every stored utterance takes its sentence's precomputed vector: embedding 100,000
texts on CPU would take minutes and is the embedder's cost, measured elsewhere (about 8 ms per
sentence in batches of 32 on 2 cores); queries are embedded by the real model at search time.
The rows are inserted in bulk (the fill is not what is measured).

    python -m bench.index_scale [--utterances 100000] [--backends sqlite,postgresql]
                                [--postgresql URL] [--queries 200]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.store_write import postgresql_database
from bench.streams import percentile
from server.engines import embed_service
from server.memory.index import TenantIndexes, embed_request
from server.store import AsyncStore
from server.store_interface import ConversationStore
from server.store_postgresql import PostgresStore
from stream.events import utterance_id
from stream.interfaces import Embedder, Vectors

TENANT = "bench"
SUBJECTS = [
    "the budget", "our hiring plan", "the release", "the customer call", "the audit", "the roadmap",
    "the server migration", "the marketing launch", "the quarterly report", "the new office",
]
VERBS = [
    "was moved to", "needs a decision by", "depends on", "was approved for", "slipped to", "is blocked until",
]
WHEN = ["Monday", "March", "next quarter", "the board meeting", "the end of the year", "Friday afternoon",
        "the next sprint", "the holidays"]
WHO = ["Alice", "Bob", "the finance team", "legal", "the CTO", "our partner in Berlin", "support"]
QUERIES = ["when is the budget decided", "who approved the hiring plan", "what blocks the release",
           "the audit schedule", "what did legal say about the migration", "news about the new office"]


def sentences(n: int, seed: int = 7) -> list[str]:
    """`n` distinct synthetic sentences of a meeting."""
    combos = list(itertools.product(SUBJECTS, VERBS, WHEN, WHO))
    random.Random(seed).shuffle(combos)
    out = [f"{s.capitalize()} {v} {w}, according to {who}." for s, v, w, who in combos[:n]]
    return out + [f"Item {i}: {out[i % len(out)]}" for i in range(len(out), n)]


class PrecomputedEmbedder:
    """The real embedder's vectors of known texts, computed once; unknown texts (queries) are
    embedded by the real embedder."""

    def __init__(self, real: Embedder, texts: Sequence[str]) -> None:
        self.real = real
        self.name = real.name
        self.dim = real.dim
        self.device = real.device
        vectors = np.concatenate([real.embed(list(texts[i:i + 64])) for i in range(0, len(texts), 64)])
        self.table = dict(zip(texts, vectors, strict=True))

    def embed(self, texts: Sequence[str]) -> Vectors:
        unknown = [t for t in texts if t not in self.table]
        if not unknown:
            return np.stack([self.table[t] for t in texts])
        computed = dict(zip(unknown, self.real.embed(unknown), strict=True))  # not kept: queries
        return np.stack([self.table[t] if t in self.table else computed[t] for t in texts])


def rows(conversation_ids: Sequence[str], texts: Sequence[str], n: int, first: int, per: int) -> list[tuple]:
    """Utterances `first` … `first + n - 1` of the conversations, as insert parameters."""
    out = []
    for i in range(first, first + n):
        conversation, seq = conversation_ids[i // per], i % per
        out.append((utterance_id(conversation, seq), conversation, TENANT, seq, texts[i % len(texts)],
                    seq * 3.0, seq * 3.0 + 2.5, "en", None, None, None, time.time(), None))
    return out


COLUMNS = 'public_id, conversation_id, tenant_id, seq, text, start, "end", language, speaker, track, ' \
    "entities, created_at, words"


async def fill(store: ConversationStore, location: str | Path, texts: Sequence[str], n: int, first: int,
               per: int, conversation_ids: list[str]) -> None:
    """Add utterances `first` … `first + n - 1` (opening conversations as needed), in bulk."""
    while len(conversation_ids) * per < first + n:
        conversation_ids.append((await store.open_conversation(TENANT, None, "en")).id)
    params = rows(conversation_ids, texts, n, first, per)
    if isinstance(store, PostgresStore):
        import asyncpg

        conn = await asyncpg.connect(str(location))
        try:
            marks = ", ".join(f"${i}" for i in range(1, 14))
            await conn.executemany(f"INSERT INTO utterances ({COLUMNS}) VALUES ({marks})", params)
        finally:
            await conn.close()
    else:
        with sqlite3.connect(location) as conn:
            conn.executemany(f"INSERT INTO utterances ({COLUMNS}) VALUES ({', '.join('?' * 13)})", params)


async def timed_load(
    store: ConversationStore, embedder: PrecomputedEmbedder, index_dir: Path
) -> tuple[str, TenantIndexes]:
    """How long a fresh front-end's index takes to load the tenant (with what `index_dir` holds):
    until it answers searches, then until its IVF, trained in the background, has replaced the
    flat index it searches meanwhile (`models.index_faiss`)."""
    embed = embed_service(embedder)
    embed.start()
    indexes = TenantIndexes(store, embed, embedder.name, embedder.dim, index_dir)
    started = time.perf_counter()
    index = await indexes.get(TENANT)
    searchable = time.perf_counter() - started
    waited = getattr(index, "wait_for_rebuild", None)
    if waited is not None:
        await asyncio.to_thread(waited)
    trained = time.perf_counter() - started
    kind = getattr(index, "kind", "?")
    return f"{searchable:.1f} s to searchable, {trained:.1f} s to its {kind} index", indexes


async def searches(indexes: TenantIndexes, queries: int, conversation_id: str | None) -> list[float]:
    for i in range(3):  # warm-up
        await indexes.search(TENANT, f"warm-up {i}", conversation_id, k=5)
    times = []
    for i in range(queries):
        query = f"{QUERIES[i % len(QUERIES)]} {i}"  # distinct: each query embedded by the model
        started = time.perf_counter()
        await indexes.search(TENANT, query, conversation_id, k=5)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def embedding_only(indexes: TenantIndexes, queries: int) -> list[float]:
    times = []
    for i in range(queries):
        started = time.perf_counter()
        await indexes.embed.call(embed_request(TENANT, f"{QUERIES[i % len(QUERIES)]} {i}"))
        times.append((time.perf_counter() - started) * 1000)
    return times


async def reading_all(store: ConversationStore) -> float:
    started = time.perf_counter()
    async for _ in store.all_utterances(TENANT):
        pass
    return time.perf_counter() - started


def faiss_only(indexes: TenantIndexes, embedder: PrecomputedEmbedder, queries: int) -> list[float]:
    index = indexes._indexes[TENANT]
    vectors = embedder.embed([f"{QUERIES[i % len(QUERIES)]} {i}" for i in range(queries)])
    times = []
    for vector in vectors:
        started = time.perf_counter()
        index.search(vector, 5, None)
        times.append((time.perf_counter() - started) * 1000)
    return times


def line(label: str, ms: list[float]) -> None:
    print(f"  {label:<44} p50 {percentile(ms, 0.5):8.2f} ms   p95 {percentile(ms, 0.95):8.2f} ms")


async def measure(
    name: str,
    store: ConversationStore,
    location: str | Path,
    embedder: PrecomputedEmbedder,
    texts: Sequence[str],
    args: argparse.Namespace,
    tmp: Path,
) -> None:
    print(f"{name}: {args.utterances} utterances, {args.per_conversation} per conversation")
    conversations: list[str] = []
    started = time.perf_counter()
    await fill(store, location, texts, args.utterances - args.behind, 0, args.per_conversation, conversations)
    print(f"  filled in {time.perf_counter() - started:.1f} s (bulk insert)")
    index_dir = tmp / f"index-{name}"
    took, indexes = await timed_load(store, embedder, index_dir)
    print(f"  rebuild (no index file; a fresh front-end's catch-up): {took}")
    await indexes.close()
    await indexes.embed.close()
    took, indexes = await timed_load(store, embedder, index_dir)
    print(f"  load (index file up to date): {took}")
    await indexes.close()
    await indexes.embed.close()
    await fill(store, location, texts, args.behind, args.utterances - args.behind, args.per_conversation,
               conversations)
    took, indexes = await timed_load(store, embedder, index_dir)
    print(f"  load (index file {args.behind} rows behind): {took}")
    print(f"  index: {len(indexes._indexes[TENANT])} vectors")
    line("search, whole tenant (embed + FAISS + rows)", await searches(indexes, args.queries, None))
    one = conversations[len(conversations) // 2]
    line("search, one conversation", await searches(indexes, args.queries, one))
    line("embedding the query alone (embedding service)", await embedding_only(indexes, args.queries))
    line("FAISS search alone", faiss_only(indexes, embedder, args.queries))
    print(f"  reading every row from the store: {await reading_all(store):.1f} s")
    await indexes.close()
    await indexes.embed.close()


async def run(args: argparse.Namespace, postgresql: str | None) -> None:
    from models.registry import load_embedder

    texts = sentences(args.distinct)
    started = time.perf_counter()
    embedder = PrecomputedEmbedder(await asyncio.to_thread(load_embedder, args.embedder), texts)
    took = time.perf_counter() - started
    print(f"{len(texts)} distinct sentences embedded by {embedder.name} (loaded and run) in {took:.1f} s")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if "sqlite" in args.backends:
            path = tmp / "palabre.db"
            store: ConversationStore = await AsyncStore.open(path)
            await measure("SQLite", store, path, embedder, texts, args, tmp)
            await store.close()
        if postgresql is not None:
            store = await PostgresStore.open(postgresql)
            await measure("PostgreSQL", store, postgresql, embedder, texts, args, tmp)
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--utterances", type=int, default=100_000)
    parser.add_argument("--per-conversation", type=int, default=100)
    parser.add_argument("--distinct", type=int, default=1000, help="sentences embedded by the real model")
    parser.add_argument("--behind", type=int, default=1000, help="rows the index file misses in the catch-up")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--embedder", default="minilm")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--postgresql", metavar="URL", help="an empty PostgreSQL database (else a throwaway server)"
    )
    args = parser.parse_args()
    if "postgresql" in args.backends:
        with postgresql_database(args.postgresql) as url:
            asyncio.run(run(args, url))
    else:
        asyncio.run(run(args, None))


if __name__ == "__main__":
    main()
