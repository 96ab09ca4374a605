"""server/memory/__init__.py: `Knowledge` wires the four jobs; a stored final reaches each of them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from server.memory import Knowledge, KnowledgeConfig
from server.model_service import ModelService
from server.store import AsyncStore
from stream.events import ServerEvent, Summary
from tests.server.memory_fakes import DIM, TENANT, CapitalNer, WordEmbedder, say


async def test_a_stored_final_is_indexed_tagged_and_summarised(
    memory_store: AsyncStore, embed: ModelService[str, np.ndarray], tmp_path: Path
) -> None:
    published: list[tuple[str, ServerEvent]] = []
    observed: list[Summary] = []
    knowledge = Knowledge(
        memory_store,
        embed,
        WordEmbedder.name,
        DIM,
        tmp_path / "index",
        None,
        KnowledgeConfig(summary_every_finals=3),
        publish=lambda conversation_id, event: published.append((conversation_id, event)),
        ner=CapitalNer(),
        summary_observers=[observed.append],
    )
    knowledge.start()
    await knowledge.index(TENANT)
    for row in await say(memory_store, "c1", "Hello from Ana.", "So Tom has the budget.", "And Luis hires."):
        knowledge.utterance_stored(row)
    async with asyncio.timeout(5):
        while not published:
            await asyncio.sleep(0.01)
    [(conversation_id, summary)] = published
    assert conversation_id == "c1" and observed == [summary]
    assert knowledge.index_sizes() == {TENANT: 3}
    assert knowledge.entities is not None
    await knowledge.entities.wait()
    hits = await knowledge.indexes.search(TENANT, "So Tom has the budget", "c1", 3, entity_label="person")
    assert hits[0].utterance.public_id == "c1:1" and len(hits) == 3
    final = await knowledge.summarize("c1", final=True)
    assert final is not None and final.final and observed[-1] is final
    knowledge.conversation_ended("c1")
    await knowledge.close()
    assert (tmp_path / "index" / f"{TENANT}.faiss").exists()
