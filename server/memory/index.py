"""The vector index of every tenant's utterances: load, catch up with the store, add, save, search.

* Embeddings go through a `BatchService` (the same micro-batcher as ASR), so the finals of every
  session are embedded together.
* One vector index per tenant (FAISS through `models.registry`), keyed by utterance row id, loaded from
  `index_dir` at first use and caught up — or rebuilt when it is missing, corrupt or disagrees —
  from the store, which is the source of truth. Saved every `save_every` additions and at
  shutdown.
* Each final is embedded and added in the background once stored (`add_later`); `flush` waits
  until a conversation's stored finals are all indexed (before answering or summarising).
* Erased utterances leave the index by the store's erasure log (`Store.erasures_after`): replayed
  when an index is loaded, and caught up before every search (`catch_up_erasures`), so an erasure
  made by another process (`palabre erase` beside the server) reaches this one too. Searches
  only ever return rows the store still holds, so an erased utterance is never a result even
  before its vector leaves.
* With a store shared by several front-ends (PostgreSQL), each front-end's indexes also follow
  the finals the others commit (`start`): the store's change feed names each committed row, which
  is read and embedded here; every `catch_up_s` (and after the feed reconnects) the rows above a
  cursor are read again, so a notification missed is caught up. Row ids are allocated before
  commit, so a row may commit after a higher one: the cursor only passes an id `grace_s` after it
  was first seen (every write is one short transaction), and rows already held are skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.registry import load_index, new_index
from server.memory.tasks import TaskSet
from server.model_service import BatchService
from server.store import UtteranceRow
from server.store_interface import ChangeFeed, ConversationStore
from stream.interfaces import IndexFileError, VectorIndex
from stream.scheduler import Request

log = logging.getLogger(__name__)

Vector = np.ndarray
TenantLoaded = Callable[[str, Sequence[UtteranceRow]], None]
"""Told a tenant's stored utterances when its index is first loaded (entity tagging catches up)."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    utterance: UtteranceRow
    score: float


def embed_request(tenant_id: str, text: str) -> Request[str]:
    """A request to the embedding service; its cost follows the text length."""
    return Request(
        session_id=tenant_id, kind="final", key="embed", seconds=max(len(text), 1) / 100, payload=text
    )


LOAD_LOOKBACK = 1000
"""At load, the catch-up cursor starts this many rows before the tenant's last (rows that were
still committing while it loaded)."""


EMBED_CHUNK = 256
"""Rows a load or rebuild submits to the embedding service at once: its scheduler's work per batch
grows with what is pending (100,000 rows at once took minutes of scheduling alone), and live
finals queue behind what is pending."""


class TenantIndexes:
    """The per-tenant vector indexes over the store's utterances."""

    def __init__(
        self,
        store: ConversationStore,
        embed: BatchService[str, Vector],
        embedder_name: str,
        dim: int,
        index_dir: Path,
        *,
        save_every: int = 25,
        ivf_threshold: int = 20_000,
        loaded: Sequence[TenantLoaded] = (),
        catch_up_s: float = 2.0,
        grace_s: float = 30.0,
    ) -> None:
        """`catch_up_s`, `grace_s`: how often rows of other front-ends are read again, and for
        how long after it is first seen an id stays in the range read (see the module's doc)."""
        self.store = store
        self.embed = embed
        self.embedder_name = embedder_name
        self.dim = dim
        self.index_dir = index_dir
        self.save_every = save_every
        self.ivf_threshold = ivf_threshold
        self._loaded = list(loaded)
        self._indexes: dict[str, VectorIndex] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._unsaved: dict[str, int] = {}
        self._erased_upto: dict[str, int] = {}
        """Tenant → the last erasure (log seq) its loaded index has applied."""
        self._tasks = TaskSet()
        self._pending: dict[str, set[asyncio.Task[None]]] = {}
        """Conversation id → its finals still being indexed."""
        self._adding: dict[int, asyncio.Future[None]] = {}
        """Utterance row id → done when its addition (by whichever path) has finished."""
        self.catch_up_s = catch_up_s
        self.grace_s = grace_s
        self._feed: ChangeFeed | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._notified_ids: dict[str, set[int]] = {}
        self._rescan: set[str] = set()
        self._catching_up: set[str] = set()
        self._cursor: dict[str, int] = {}
        self._marks: dict[str, deque[tuple[float, int]]] = {}
        """Tenant → (when, highest row id read then), oldest first: the cursor's next positions."""

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Follow the finals other front-ends commit, when the store is shared (else nothing)."""
        self._feed = self.store.utterance_feed(self._notified, self._catch_up_all)
        if self._feed is None:
            return
        self._feed.start()
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="index-catch-up")

    async def close(self) -> None:
        """Stop following other front-ends, finish the additions under way, save every index."""
        if self._ticker is not None:
            self._ticker.cancel()
        if self._feed is not None:
            await self._feed.close()
        await self._tasks.wait()
        await self.save_all()

    async def save_all(self) -> None:
        for tenant_id in list(self._indexes):
            await self._save(tenant_id)

    def sizes(self) -> dict[str, int]:
        """Vectors in each tenant index loaded so far, by tenant (for metrics and readiness)."""
        return {tenant_id: len(index) for tenant_id, index in self._indexes.items()}

    def path(self, tenant_id: str) -> Path:
        return self.index_dir / f"{tenant_id}.faiss"

    # --- loading ----------------------------------------------------------------------------

    async def get(self, tenant_id: str) -> VectorIndex:
        """The tenant's index, loaded (and caught up with the store) at first use."""
        index = self._indexes.get(tenant_id)
        if index is not None:
            return index
        async with self._locks.setdefault(tenant_id, asyncio.Lock()):
            index = self._indexes.get(tenant_id)
            if index is None:
                index = await self._load_or_rebuild(tenant_id)
                self._indexes[tenant_id] = index
                if self._feed is not None:  # rows committed while it loaded
                    self._rescan.add(tenant_id)
                    self._wake(tenant_id)
        return index

    async def _load_or_rebuild(self, tenant_id: str) -> VectorIndex:
        path = self.path(tenant_id)
        stored = [row async for row in self.store.all_utterances(tenant_id)]
        index: VectorIndex | None = None
        try:
            index = await asyncio.to_thread(
                load_index, path, self.dim, self.embedder_name, ivf_threshold=self.ivf_threshold
            )
        except IndexFileError as error:
            log.warning("index of tenant %s unusable (%s): rebuilding from the store", tenant_id, error)
        erased_upto, erased = await self._erasures(tenant_id, 0)
        self._erased_upto[tenant_id] = erased_upto
        if index is not None and erased:
            await asyncio.to_thread(index.remove, erased)
        if index is not None:
            held = [row for row in stored if row.id <= index.max_id]
            if not index.is_consistent_with(len(held), max((r.id for r in held), default=-1)):
                log.warning("index of tenant %s disagrees with the store: rebuilding", tenant_id)
                index = None
        if index is None:
            index = new_index(self.dim, embedder_name=self.embedder_name, ivf_threshold=self.ivf_threshold)
            missing = stored
        else:
            missing = [row for row in stored if row.id > index.max_id]
        self._cursor[tenant_id] = stored[-LOAD_LOOKBACK].id - 1 if len(stored) >= LOAD_LOOKBACK else 0
        for loaded in self._loaded:
            loaded(tenant_id, stored)
        if missing:
            vectors: list[Vector] = []
            for first in range(0, len(missing), EMBED_CHUNK):
                chunk = missing[first:first + EMBED_CHUNK]
                vectors += await asyncio.gather(*(self._embed(tenant_id, row.text) for row in chunk))
            row_ids = np.array([row.id for row in missing], dtype=np.int64)
            await asyncio.to_thread(index.add, row_ids, np.stack(vectors))
            log.info("index of tenant %s: %d utterances added from the store", tenant_id, len(missing))
            self._indexes[tenant_id] = index
            await self._save(tenant_id)
        return index

    async def _erasures(self, tenant_id: str, after_seq: int) -> tuple[int, list[int]]:
        """The erasure log of the tenant after `after_seq`: its last seq and the utterance row ids."""
        ids: list[int] = []
        while page := await self.store.erasures_after(tenant_id, after_seq):
            after_seq = page[-1][0]
            ids.extend(utterance_id for _, utterance_id in page)
        return after_seq, ids

    async def catch_up_erasures(self, tenant_id: str) -> int:
        """Drop from the tenant's loaded index the vectors of utterances erased since it last
        looked (by this process or another); save it when some left. Returns how many left."""
        index = self._indexes.get(tenant_id)
        if index is None:
            return 0  # replayed in full when it loads
        async with self._locks.setdefault(tenant_id, asyncio.Lock()):
            upto, erased = await self._erasures(tenant_id, self._erased_upto.get(tenant_id, 0))
            self._erased_upto[tenant_id] = upto
            removed = await asyncio.to_thread(index.remove, erased) if erased else 0
        if removed:
            await self._save(tenant_id)
        return removed

    async def _save(self, tenant_id: str) -> None:
        index = self._indexes.get(tenant_id)
        if index is None:
            return
        self.index_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(index.save, self.path(tenant_id))
        self._unsaved[tenant_id] = 0

    async def _embed(self, tenant_id: str, text: str) -> Vector:
        return await self.embed.call(embed_request(tenant_id, text))

    # --- adding -----------------------------------------------------------------------------

    def add_later(self, row: UtteranceRow) -> None:
        """A final was stored: embed and index it in the background."""
        task = self._tasks.start(self.add(row))
        pending = self._pending.setdefault(row.conversation_id, set())
        pending.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            pending.discard(finished)
            if not pending and self._pending.get(row.conversation_id) is pending:
                del self._pending[row.conversation_id]

        task.add_done_callback(done)

    async def add(self, row: UtteranceRow) -> None:
        """Embed and index one stored utterance (once: an utterance held or being added is not
        added again; this returns when it is held)."""
        adding = self._adding.get(row.id)
        if adding is not None:
            await asyncio.shield(adding)
            return
        done = asyncio.get_running_loop().create_future()
        self._adding[row.id] = done
        try:
            index = await self.get(row.tenant_id)
            if row.id in index:
                return
            vector = await self._embed(row.tenant_id, row.text)
            await asyncio.to_thread(index.add, np.array([row.id], dtype=np.int64), vector[None, :])
        except Exception:
            log.exception(
                "indexing utterance %s failed (it is rebuilt from the store at restart)", row.public_id
            )
            return
        finally:
            del self._adding[row.id]
            done.set_result(None)
        self._unsaved[row.tenant_id] = self._unsaved.get(row.tenant_id, 0) + 1
        if self._unsaved[row.tenant_id] >= self.save_every:
            await self._save(row.tenant_id)

    async def flush(self, conversation_id: str) -> None:
        """Wait until every stored final of the conversation is indexed."""
        pending = self._pending.get(conversation_id)
        if pending:
            await asyncio.gather(*list(pending), return_exceptions=True)

    # --- following other front-ends (a shared store) ------------------------------------------

    def _notified(self, tenant_id: str, row_id: int) -> None:
        """The change feed: a front-end (this one too) committed this utterance."""
        index = self._indexes.get(tenant_id)
        if index is None or row_id in index or row_id in self._adding:
            return  # not loaded yet (its load reads the store), or held, or being added
        self._notified_ids.setdefault(tenant_id, set()).add(row_id)
        self._wake(tenant_id)

    def _catch_up_all(self) -> None:
        """Read again the rows above the cursor of every loaded tenant."""
        for tenant_id in list(self._indexes):
            self._rescan.add(tenant_id)
            self._wake(tenant_id)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.catch_up_s)
            self._catch_up_all()

    def _wake(self, tenant_id: str) -> None:
        if tenant_id not in self._catching_up:  # else the running catch-up takes the new work
            self._catching_up.add(tenant_id)
            self._tasks.start(self._catch_up(tenant_id), name=f"catch-up-{tenant_id}")

    async def _catch_up(self, tenant_id: str) -> None:
        """Add the notified rows and, when asked, the rows above the cursor; until none is asked."""
        try:
            while True:
                row_ids = sorted(self._notified_ids.pop(tenant_id, ()))
                rescan = tenant_id in self._rescan
                self._rescan.discard(tenant_id)
                if not row_ids and not rescan:
                    return
                rows = await self.store.utterances_by_ids(tenant_id, row_ids) if row_ids else []
                if rescan:
                    rows += await self._rows_after_cursor(tenant_id)
                await asyncio.gather(*(self.add(row) for row in rows))
        except Exception:
            log.exception(
                "catching up the index of tenant %s failed (retried in %.0f s)", tenant_id, self.catch_up_s
            )
        finally:
            self._catching_up.discard(tenant_id)

    async def _rows_after_cursor(self, tenant_id: str) -> list[UtteranceRow]:
        """The tenant's rows above its cursor; the cursor then moves to the highest id read
        `grace_s` ago."""
        cursor = self._cursor.get(tenant_id, 0)
        rows: list[UtteranceRow] = []
        after = cursor
        while page := await self.store.utterance_page(tenant_id, after, 1000):
            rows += page
            after = page[-1].id
        marks = self._marks.setdefault(tenant_id, deque())
        now = time.monotonic()
        if not marks or after > marks[-1][1]:
            marks.append((now, after))
        while marks and marks[0][0] <= now - self.grace_s:
            cursor = max(cursor, marks.popleft()[1])
        self._cursor[tenant_id] = cursor
        return rows

    # --- reading ----------------------------------------------------------------------------

    async def vectors(
        self, tenant_id: str, rows: Sequence[UtteranceRow]
    ) -> tuple[list[UtteranceRow], Vector]:
        """The rows the index holds and their vectors (one row each), in the order given."""
        index = await self.get(tenant_id)
        held = [row for row in rows if row.id in index]
        return held, await asyncio.to_thread(index.vectors, [row.id for row in held])

    async def nearest(
        self, tenant_id: str, query: str, allowed: Sequence[int] | None, k: int
    ) -> list[tuple[int, float]]:
        """(utterance row id, score) of the `k` nearest to `query`, best first, among the
        `allowed` row ids if given."""
        index = await self.get(tenant_id)
        await self.catch_up_erasures(tenant_id)
        if allowed is not None and not allowed:
            return []
        vector = await self._embed(tenant_id, query)
        results = await asyncio.to_thread(index.search, vector, k, None if allowed is None else list(allowed))
        return results[0]

    async def search(
        self,
        tenant_id: str,
        query: str,
        conversation_id: str | None = None,
        k: int = 5,
        *,
        entity: str | None = None,
        entity_label: str | None = None,
        speaker: str | None = None,
    ) -> list[SearchHit]:
        """The `k` utterances of the tenant (or of one conversation) closest to `query`.

        `entity` / `entity_label` keep only utterances that mention that entity (by text,
        case-insensitive) or an entity of that kind (person, organization, place, date, amount);
        `speaker` only those of a speaker with that label or name (server/speakers.py).
        """
        allowed: list[int] | None = None
        if entity is not None or entity_label is not None:
            allowed = await self.store.utterance_row_ids_with_entity(
                tenant_id, text=entity, label=entity_label, conversation_id=conversation_id
            )
        if speaker is not None:
            spoken = await self.store.utterance_row_ids_by_speaker(tenant_id, speaker, conversation_id)
            allowed = spoken if allowed is None else sorted(set(allowed) & set(spoken))
        elif allowed is None and conversation_id is not None:
            rows = await self.store.utterances(tenant_id, conversation_id)
            allowed = [row.id for row in rows]
        scores = dict(await self.nearest(tenant_id, query, allowed, k))
        rows = await self.store.utterances_by_ids(tenant_id, list(scores))
        return [SearchHit(row, scores[row.id]) for row in rows]
