"""server/memory/entities.py: entity tagging into a real SQLite store, with a fake recognizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from server.memory.entities import EntityTagger
from server.memory.index import TenantIndexes
from server.model_service import ModelService
from server.store import AsyncStore
from tests.server.memory_fakes import DIM, TENANT, CapitalNer, WordEmbedder, say


async def test_a_stored_final_gets_its_entities(memory_store: AsyncStore) -> None:
    ner = CapitalNer()
    tagger = EntityTagger(memory_store, ner)
    [row] = await say(memory_store, "c1", "Yesterday Ana paid 400 euros.")
    tagger.tag_later(row)
    await tagger.wait()
    [stored] = await memory_store.utterances(TENANT, "c1")
    assert stored.entities == [
        {"text": "Ana", "label": "person", "start": 10, "end": 13},
        {"text": "400", "label": "amount", "start": 19, "end": 22},
    ]
    assert await memory_store.utterance_row_ids_with_entity(TENANT, label="amount") == [row.id]
    assert await memory_store.utterance_row_ids_with_entity(TENANT, text="ana") == [row.id]
    await tagger.close()


async def test_utterances_stored_untagged_are_tagged_when_their_tenant_index_loads(
    memory_store: AsyncStore, embed: ModelService[str, np.ndarray], tmp_path: Path
) -> None:
    rows = await say(memory_store, "c1", "Tom met Ana.", "Then Luis called.")
    await memory_store.set_entities(TENANT, rows[0].id, [])  # tagged before (nothing found)
    ner = CapitalNer()
    tagger = EntityTagger(memory_store, ner)
    indexes = TenantIndexes(
        memory_store, embed, WordEmbedder.name, DIM, tmp_path / "index", loaded=[tagger.tag_untagged]
    )
    await indexes.get(TENANT)
    await tagger.wait()
    assert ner.texts == ["Then Luis called."], "only the untagged one"
    hits = await indexes.search(TENANT, "who called", None, entity="luis")
    assert [hit.utterance.public_id for hit in hits] == ["c1:1"]
    assert await indexes.search(TENANT, "who met", None, entity="ana") == [], "c1:0 stays as tagged"
    await tagger.close()
    await indexes.close()


async def test_close_stops_tagging_and_a_failure_is_logged_not_raised(memory_store: AsyncStore) -> None:
    class FailingNer(CapitalNer):
        def entities(self, text: str, language: str):  # type: ignore[no-untyped-def]
            if "fail" in text:
                raise RuntimeError("model broke")
            return super().entities(text, language)

    tagger = EntityTagger(memory_store, FailingNer())
    rows = await say(memory_store, "c1", "This will fail.", "Then Ana spoke.")
    tagger.tag_untagged(TENANT, rows)
    await tagger.wait()
    stored = await memory_store.utterances(TENANT, "c1")
    assert stored[0].entities is None and stored[1].entities is not None
    tagger.tag_untagged(TENANT, stored)
    await tagger.close()  # cancelled: c1:0 is tagged at the next start
    assert len(await memory_store.utterances(TENANT, "c1")) == 2
