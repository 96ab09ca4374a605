"""Entity tagging: the people, organisations, places, dates and amounts named in each utterance.

Each stored final is tagged in the background (`tag_later`) with the `EntityRecognizer` (spaCy,
`models/ner_spacy.py`) on one dedicated thread, and its entities are written to its store row;
search then filters on them (`/v1/search?entity=…&entity_label=…`). Utterances stored untagged
(before a restart, or while tagging was off) are tagged when their tenant's index is first loaded
(`tag_untagged`, a `TenantLoaded` observer of `TenantIndexes`). Tagging is resumable: shutdown
cancels what is left, and the next start tags it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from server.daemon_executor import DaemonExecutor
from server.memory.tasks import TaskSet
from server.store import UtteranceRow
from server.store_interface import ConversationStore
from stream.interfaces import EntityRecognizer

log = logging.getLogger(__name__)


class EntityTagger:
    """Finds and stores the named entities of stored utterances."""

    def __init__(self, store: ConversationStore, ner: EntityRecognizer) -> None:
        self.store = store
        self.ner = ner
        self._executor = DaemonExecutor(1, "ner")  # a stop does not wait for a pipeline loading
        self._tasks = TaskSet()

    def tag_later(self, row: UtteranceRow) -> None:
        """Tag a newly stored utterance in the background."""
        self._tasks.start(self._tag_all([row]))

    def tag_untagged(self, tenant_id: str, rows: Sequence[UtteranceRow]) -> None:
        """Tag, in the background, those of a tenant's stored `rows` that have no entities yet."""
        untagged = [row for row in rows if row.entities is None]
        if untagged:
            log.info("tenant %s: tagging the entities of %d stored utterances", tenant_id, len(untagged))
            self._tasks.start(self._tag_all(untagged))

    async def tag(self, row: UtteranceRow) -> None:
        """Find and store the utterance's named entities."""
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(self._executor, self.ner.entities, row.text, row.language or "")
        entities = [{"text": e.text, "label": e.label, "start": e.start, "end": e.end} for e in found]
        await self.store.set_entities(row.tenant_id, row.id, entities)

    async def wait(self) -> None:
        """Wait until the tagging under way is done (tests, benchmarks)."""
        await self._tasks.wait()

    async def close(self) -> None:
        """Stop tagging (what is left untagged is tagged at the next start)."""
        await self._tasks.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _tag_all(self, rows: Sequence[UtteranceRow]) -> None:
        for row in rows:
            try:
                await self.tag(row)
            except Exception:
                log.exception("entity tagging of %s failed", row.public_id)
