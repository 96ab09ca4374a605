"""server/memory/index.py: per-tenant indexes over a real SQLite store, with a fake embedder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from server.memory.index import TenantIndexes, TenantLoaded
from server.model_service import ModelService
from server.store import AsyncStore, UtteranceRow
from tests.server.memory_fakes import DIM, TENANT, WordEmbedder, say

MEETING = (
    "Good morning everyone.",
    "The marketing budget is four hundred thousand euros.",
    "Our main competitor is Initech.",
    "We hire two engineers in March.",
)
Embed = ModelService[str, np.ndarray]


def indexes(
    store: AsyncStore, embed: Embed, tmp_path: Path, save_every: int = 25, loaded: Sequence[TenantLoaded] = ()
) -> TenantIndexes:
    return TenantIndexes(
        store, embed, WordEmbedder.name, DIM, tmp_path / "index", save_every=save_every, loaded=loaded
    )


async def test_stored_finals_are_indexed_in_the_background_and_searchable(
    memory_store: AsyncStore, embed: Embed, tmp_path: Path
) -> None:
    index = indexes(memory_store, embed, tmp_path)
    rows = await say(memory_store, "c1", *MEETING)
    await say(memory_store, "c2", "The competitor of the other team is Globex.")
    for row in rows:
        index.add_later(row)
    await index.flush("c1")
    hits = await index.search(TENANT, "who is the main competitor", "c1", k=2)
    assert hits[0].utterance.public_id == "c1:2" and len(hits) == 2
    assert hits[0].score >= hits[1].score
    everywhere = await index.search(TENANT, "competitor", None, k=10)
    assert {h.utterance.conversation_id for h in everywhere} == {"c1", "c2"}, "c2 caught up at load"
    assert index.sizes() == {TENANT: 5}
    await index.close()


async def test_an_utterance_is_indexed_once(
    memory_store: AsyncStore, embed: Embed, embedder: WordEmbedder, tmp_path: Path
) -> None:
    index = indexes(memory_store, embed, tmp_path)
    await index.get(TENANT)
    [row] = await say(memory_store, "c1", MEETING[0])
    await index.add(row)
    await index.add(row)
    assert embedder.calls == 1 and index.sizes() == {TENANT: 1}
    await index.close()


async def test_saved_every_n_additions_and_at_close_then_loaded_without_embedding_again(
    memory_store: AsyncStore, embed: Embed, embedder: WordEmbedder, tmp_path: Path
) -> None:
    index = indexes(memory_store, embed, tmp_path, save_every=2)
    await index.get(TENANT)
    rows = await say(memory_store, "c1", *MEETING)
    await index.add(rows[0])
    assert not index.path(TENANT).exists()
    await index.add(rows[1])
    assert index.path(TENANT).exists(), "saved after 2 additions"
    await index.add(rows[2])
    await index.add(rows[3])
    await index.close()
    calls = embedder.calls

    again = indexes(memory_store, embed, tmp_path)
    assert len(await again.get(TENANT)) == 4
    assert embedder.calls == calls, "the saved index is used as it is"
    await again.close()


async def test_an_index_behind_the_store_is_caught_up_and_a_corrupt_one_rebuilt(
    memory_store: AsyncStore, embed: Embed, embedder: WordEmbedder, tmp_path: Path
) -> None:
    index = indexes(memory_store, embed, tmp_path)
    for row in await say(memory_store, "c1", *MEETING[:2]):
        await index.add(row)
    await index.close()
    await say(memory_store, "c1", *MEETING[2:])  # stored while the index was not running

    calls = embedder.calls
    behind = indexes(memory_store, embed, tmp_path)
    assert len(await behind.get(TENANT)) == 4
    assert embedder.calls == calls + 2, "only the missing ones are embedded"
    await behind.close()

    path = tmp_path / "index" / f"{TENANT}.faiss"
    path.write_bytes(path.read_bytes()[:50])
    calls = embedder.calls
    rebuilt = indexes(memory_store, embed, tmp_path)
    assert len(await rebuilt.get(TENANT)) == 4 and embedder.calls == calls + 4
    hits = await rebuilt.search(TENANT, "hire engineers in March", "c1", k=1)
    assert hits[0].utterance.public_id == "c1:3"
    await rebuilt.close()


async def test_the_loaded_observers_see_the_stored_utterances_once_per_tenant(
    memory_store: AsyncStore, embed: Embed, tmp_path: Path
) -> None:
    await say(memory_store, "c1", *MEETING)
    seen: list[tuple[str, list[str]]] = []

    def loaded(tenant_id: str, rows: Sequence[UtteranceRow]) -> None:
        seen.append((tenant_id, [row.public_id for row in rows]))

    index = indexes(memory_store, embed, tmp_path, loaded=[loaded])
    await index.get(TENANT)
    await index.get(TENANT)
    assert seen == [(TENANT, ["c1:0", "c1:1", "c1:2", "c1:3"])]
    await index.close()


async def test_search_in_an_empty_scope_finds_nothing(
    memory_store: AsyncStore, embed: Embed, tmp_path: Path
) -> None:
    index = indexes(memory_store, embed, tmp_path)
    await say(memory_store, "c1", *MEETING)
    await memory_store.open_conversation(TENANT, "empty", "en")
    assert await index.search(TENANT, "budget", "empty") == []
    assert await index.search(TENANT, "budget", None, entity_label="person") == [], "nothing tagged"
    await index.close()


async def test_erased_utterances_leave_a_loaded_index_and_one_loaded_later_without_reembedding(
    memory_store: AsyncStore, embed: Embed, embedder: WordEmbedder, tmp_path: Path
) -> None:
    index = indexes(memory_store, embed, tmp_path)
    rows = await say(memory_store, "c1", *MEETING) + await say(memory_store, "c2", "Globex competes too.")
    for row in rows:
        await index.add(row)
    await index.close()  # saved with c1's vectors
    # Erased by another process (`palabre erase` beside the server): the next search catches up.
    await memory_store.erase_conversation(TENANT, "c1")
    assert [h.utterance.conversation_id for h in await index.search(TENANT, "competitor", None, 10)] == ["c2"]
    assert index.sizes() == {TENANT: 1}
    # A process that loads the index saved before the erasure replays the log, and embeds nothing.
    calls = embedder.calls
    await memory_store.erase_conversation(TENANT, "c2")
    later = indexes(memory_store, embed, tmp_path)
    assert len(await later.get(TENANT)) == 0 and embedder.calls == calls
    await later.close()
