"""Shared indexes: two front-ends' `TenantIndexes` on one PostgreSQL database follow each other's
finals through the change feed (LISTEN/NOTIFY) and the catch-up by id; SQLite has no feed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from server.memory.index import TenantIndexes
from server.model_service import ModelService
from server.store import AsyncStore
from server.store_postgresql import PostgresStore
from tests.postgresql import PostgresServer
from tests.server.memory_fakes import DIM, TENANT, WordEmbedder, say

Embed = ModelService[str, np.ndarray]
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def database(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()


@pytest.fixture
async def front_ends(database: str, tmp_path: Path) -> AsyncIterator[list[PostgresStore]]:
    """Two stores on one database, as two front-ends hold them."""
    stores = [await PostgresStore.open(database) for _ in range(2)]
    yield stores
    for store in stores:
        await store.close()


def indexes(
    store: PostgresStore | AsyncStore, embed: Embed, folder: Path, catch_up_s: float = 30.0
) -> TenantIndexes:
    return TenantIndexes(store, embed, WordEmbedder.name, DIM, folder, catch_up_s=catch_up_s)


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until `condition()` holds (fails after `timeout`)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "not within the timeout"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_a_final_committed_on_one_front_end_is_searchable_on_the_other(
    front_ends: list[PostgresStore], embed: Embed, embedder: WordEmbedder, tmp_path: Path
) -> None:
    a_store, b_store = front_ends
    await say(a_store, "c1", "An earlier meeting.")
    a, b = indexes(a_store, embed, tmp_path / "a"), indexes(b_store, embed, tmp_path / "b")
    a.start()
    b.start()  # the periodic catch-up is 30 s away: what follows comes through notifications
    await a.get(TENANT)
    await b.get(TENANT)
    await asyncio.sleep(0.2)  # the listeners are connected
    rows = await say(
        a_store, "c1", "The marketing budget is four hundred thousand euros.", "Initech competes."
    )
    for row in rows:
        a.add_later(row)
    delay = await eventually(lambda: b.sizes() == {TENANT: 3})
    assert delay < 1.0
    hits = await b.search(TENANT, "marketing budget", None, k=1)
    assert hits[0].utterance.public_id == "c1:1"
    await a.flush("c1")
    await asyncio.sleep(0.2)
    assert a.sizes() == {TENANT: 3}, "A's own notifications add nothing twice"
    assert embedder.calls == 2 + 2 * 2 + 1, "at load: 1 each; then each new final once per front-end"
    await a.close()
    await b.close()


async def test_finals_committed_while_the_feed_was_down_are_caught_up(
    front_ends: list[PostgresStore],
    embed: Embed,
    postgres_server: PostgresServer,
    database: str,
    tmp_path: Path,
) -> None:
    a_store, b_store = front_ends
    b = indexes(b_store, embed, tmp_path / "b")
    b.start()
    await b.get(TENANT)
    await asyncio.sleep(0.2)
    name = database.rsplit("/", 1)[1]
    postgres_server.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{name}' AND query LIKE 'LISTEN%'"
    )
    await say(a_store, "c1", "Said while nobody listened.", "And this too.")
    await eventually(lambda: b.sizes() == {TENANT: 2}, timeout=10.0)  # reconnected, then read again
    await b.close()


async def test_a_row_committed_after_a_higher_one_is_indexed(
    front_ends: list[PostgresStore], embed: Embed, database: str, tmp_path: Path
) -> None:
    a_store, b_store = front_ends
    await say(a_store, "c1", "Opening words.")
    b = indexes(b_store, embed, tmp_path / "b", catch_up_s=0.1)
    b.start()
    await b.get(TENANT)
    slow = await asyncpg.connect(database)
    transaction = slow.transaction()
    await transaction.start()
    await slow.execute(
        'INSERT INTO utterances (public_id, conversation_id, tenant_id, seq, text, start, "end", created_at)'
        " VALUES ('c1:5', 'c1', $1, 5, 'A slow transaction.', 10, 11, 0)",
        TENANT,
    )
    await say(a_store, "c2", "A quick one.")  # a higher id, committed first
    await eventually(lambda: b.sizes() == {TENANT: 2})
    await transaction.commit()
    await slow.close()
    await eventually(lambda: b.sizes() == {TENANT: 3})
    await b.close()


async def test_sqlite_has_no_feed(memory_store: AsyncStore, embed: Embed, tmp_path: Path) -> None:
    index = indexes(memory_store, embed, tmp_path)
    index.start()
    assert memory_store.utterance_feed(lambda _t, _i: None, lambda: None) is None
    await index.close()
