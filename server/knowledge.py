"""Conversation memory: every stored final is embedded and indexed; questions and summaries.

* Embeddings go through a `ModelService` (the same micro-batcher as ASR), so the utterances
  of every session are embedded together.
* One FAISS index per tenant (`models.index_faiss`), loaded from the data dir at first use,
  caught up or rebuilt from the store when it is missing, corrupt or behind (the store is the
  source of truth), saved every `save_every` additions and at shutdown.
* `answer()` retrieves the question's best utterances (plus the most recent ones of the
  conversation), streams the LLM's answer through the shared `LlmQueue`, checks it against
  the passages (`stream.answers`) and returns the cited utterances.
* Rolling summaries: every `summary_every_finals` finals or `summary_every_s` seconds of a live
  conversation, and a final one when its last session stops. Extractive (key utterances chosen
  from their embeddings) unless the LLM is instruction-tuned, then generative.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.registry import load_index, new_index
from server.llm_queue import LlmQueue, Priority
from server.model_service import BatchService
from server.store import AsyncStore, UtteranceRow
from stream.answers import Passage, build_answer_request, build_summary_request, finalize_answer
from stream.errors import ErrorCode, ProtocolError
from stream.events import AnswerDelta, AnswerDone, Ask, Citation, ServerEvent, Summary
from stream.interfaces import EntityRecognizer, IndexFileError, VectorIndex
from stream.scheduler import Request
from stream.summary import extractive_summary

log = logging.getLogger(__name__)

Vector = np.ndarray


@dataclass(frozen=True, slots=True)
class KnowledgeConfig:
    top_k: int = 5
    recent_context: int = 2
    summary_every_finals: int = 4
    summary_every_s: float = 30.0
    summary_utterances: int = 5
    save_every: int = 25
    ivf_threshold: int = 20_000


@dataclass(slots=True)
class _ConversationState:
    tenant_id: str
    finals_since_summary: int = 0
    last_summary_at: float = field(default_factory=time.monotonic)
    pending: set[asyncio.Task[None]] = field(default_factory=set)
    summarizing: asyncio.Lock = field(default_factory=asyncio.Lock)
    previous_summary: str | None = None


@dataclass(frozen=True, slots=True)
class SearchHit:
    utterance: UtteranceRow
    score: float


def embed_request(tenant_id: str, text: str) -> Request[str]:
    """A request to the embedding service; its cost follows the text length."""
    return Request(
        session_id=tenant_id, kind="final", key="embed", seconds=max(len(text), 1) / 100, payload=text
    )


class Knowledge:
    """Per-process conversation memory over the store."""

    def __init__(
        self,
        store: AsyncStore,
        embed: BatchService[str, Vector],
        embedder_name: str,
        dim: int,
        index_dir: Path,
        llm: LlmQueue | None,
        config: KnowledgeConfig | None = None,
        publish: Callable[[str, ServerEvent], None] | None = None,
        ner: EntityRecognizer | None = None,
    ) -> None:
        self.store = store
        self.embed = embed
        self.embedder_name = embedder_name
        self.dim = dim
        self.index_dir = index_dir
        self.llm = llm
        self.config = config or KnowledgeConfig()
        self.publish = publish
        self._indexes: dict[str, VectorIndex] = {}
        self._index_locks: dict[str, asyncio.Lock] = {}
        self._unsaved: dict[str, int] = {}
        self._conversations: dict[str, _ConversationState] = {}
        self._ticker: asyncio.Task[None] | None = None
        self.ner = ner
        self._ner_executor = ThreadPoolExecutor(1, thread_name_prefix="ner")
        self._pending: set[asyncio.Task[None]] = set()
        """Every background task (indexing, entity tagging), awaited at shutdown."""

    @property
    def chat(self) -> bool:
        return self.llm is not None and self.llm.engine.chat

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick(), name="summary-ticker")

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.save_all()
        self._ner_executor.shutdown(wait=False, cancel_futures=True)

    async def save_all(self) -> None:
        for tenant_id in list(self._indexes):
            await self._save(tenant_id)

    # --- the index --------------------------------------------------------------------------

    def index_sizes(self) -> dict[str, int]:
        """Vectors in each tenant index loaded so far, by tenant (for metrics and readiness)."""
        return {tenant_id: len(index) for tenant_id, index in self._indexes.items()}

    def index_path(self, tenant_id: str) -> Path:
        return self.index_dir / f"{tenant_id}.faiss"

    async def index(self, tenant_id: str) -> VectorIndex:
        """The tenant's index, loaded (and caught up with the store) at first use."""
        index = self._indexes.get(tenant_id)
        if index is not None:
            return index
        lock = self._index_locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            index = self._indexes.get(tenant_id)
            if index is None:
                index = await self._load_or_rebuild(tenant_id)
                self._indexes[tenant_id] = index
        return index

    async def _load_or_rebuild(self, tenant_id: str) -> VectorIndex:
        path = self.index_path(tenant_id)
        stored = [row async for row in self.store.all_utterances(tenant_id)]
        index: VectorIndex | None = None
        try:
            index = await asyncio.to_thread(
                load_index, path, self.dim, self.embedder_name, ivf_threshold=self.config.ivf_threshold
            )
        except IndexFileError as error:
            log.warning("index of tenant %s unusable (%s): rebuilding from the store", tenant_id, error)
        if index is not None:
            held = [row for row in stored if row.id <= index.max_id]
            if not index.is_consistent_with(len(held), max((r.id for r in held), default=-1)):
                log.warning("index of tenant %s disagrees with the store: rebuilding", tenant_id)
                index = None
        if index is None:
            index = new_index(
                self.dim, embedder_name=self.embedder_name, ivf_threshold=self.config.ivf_threshold
            )
            missing = stored
        else:
            missing = [row for row in stored if row.id > index.max_id]
        untagged = [row for row in stored if row.entities is None]
        if self.ner is not None and untagged:
            self._background(self._tag_all(untagged))
        if missing:
            vectors = await asyncio.gather(*(self._embed(tenant_id, row.text) for row in missing))
            ids = np.array([row.id for row in missing], dtype=np.int64)
            await asyncio.to_thread(index.add, ids, np.stack(vectors))
            log.info("index of tenant %s: %d utterances added from the store", tenant_id, len(missing))
            self._indexes[tenant_id] = index
            await self._save(tenant_id)
        return index

    async def _save(self, tenant_id: str) -> None:
        index = self._indexes.get(tenant_id)
        if index is None:
            return
        self.index_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(index.save, self.index_path(tenant_id))
        self._unsaved[tenant_id] = 0

    async def _embed(self, tenant_id: str, text: str) -> Vector:
        return await self.embed.call(embed_request(tenant_id, text))

    # --- utterances -------------------------------------------------------------------------

    def utterance_stored(self, row: UtteranceRow) -> None:
        """A final was committed: embed and index it in the background."""
        state = self._state(row.tenant_id, row.conversation_id)
        task = self._background(self._add(row, state))
        state.pending.add(task)
        task.add_done_callback(state.pending.discard)

    def _background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def _add(self, row: UtteranceRow, state: _ConversationState) -> None:
        try:
            index = await self.index(row.tenant_id)
            if row.id in index:
                return
            vector = await self._embed(row.tenant_id, row.text)
            await asyncio.to_thread(index.add, np.array([row.id], dtype=np.int64), vector[None, :])
        except Exception:
            log.exception(
                "indexing utterance %s failed (it is rebuilt from the store at restart)", row.public_id
            )
            return
        if self.ner is not None:
            self._background(self._tag_all([row]))
        self._unsaved[row.tenant_id] = self._unsaved.get(row.tenant_id, 0) + 1
        if self._unsaved[row.tenant_id] >= self.config.save_every:
            await self._save(row.tenant_id)
        state.finals_since_summary += 1
        if state.finals_since_summary >= self.config.summary_every_finals:
            asyncio.get_running_loop().create_task(self._publish_summary(row.conversation_id, final=False))

    async def _tag_all(self, rows: list[UtteranceRow]) -> None:
        """Tag utterances stored before their entities were found (e.g. before a restart)."""
        for row in rows:
            try:
                await self._tag_entities(row)
            except Exception:
                log.exception("entity tagging of %s failed", row.public_id)

    async def _tag_entities(self, row: UtteranceRow) -> None:
        """Find and store the utterance's named entities (people, organisations, places, dates, amounts)."""
        assert self.ner is not None
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(
            self._ner_executor, self.ner.entities, row.text, row.language or ""
        )
        entities = [{"text": e.text, "label": e.label, "start": e.start, "end": e.end} for e in found]
        await self.store.set_entities(row.tenant_id, row.id, entities)

    def _state(self, tenant_id: str, conversation_id: str) -> _ConversationState:
        state = self._conversations.get(conversation_id)
        if state is None:
            state = self._conversations[conversation_id] = _ConversationState(tenant_id)
        return state

    async def flush(self, conversation_id: str) -> None:
        """Wait until every stored final of the conversation is indexed."""
        state = self._conversations.get(conversation_id)
        if state is not None and state.pending:
            await asyncio.gather(*list(state.pending), return_exceptions=True)

    # --- search -----------------------------------------------------------------------------

    async def search(
        self,
        tenant_id: str,
        query: str,
        conversation_id: str | None = None,
        k: int = 5,
        *,
        entity: str | None = None,
        entity_label: str | None = None,
    ) -> list[SearchHit]:
        """The `k` utterances of the tenant (or of one conversation) closest to `query`.

        `entity` / `entity_label` keep only utterances that mention that entity (by text,
        case-insensitive) or an entity of that kind (person, organization, place, date, amount).
        """
        allowed: list[int] | None = None
        if entity is not None or entity_label is not None:
            allowed = await self.store.utterance_ids_with_entity(
                tenant_id, text=entity, label=entity_label, conversation_id=conversation_id
            )
        elif conversation_id is not None:
            rows = await self.store.utterances(tenant_id, conversation_id)
            allowed = [row.id for row in rows]
        scores = dict(await self._nearest(tenant_id, query, allowed, k))
        rows = await self.store.utterances_by_ids(tenant_id, list(scores))
        return [SearchHit(row, scores[row.id]) for row in rows]

    async def _nearest(
        self, tenant_id: str, query: str, allowed: list[int] | None, k: int
    ) -> list[tuple[int, float]]:
        """(utterance id, score) of the `k` nearest to `query`, best first, among `allowed` ids if given."""
        index = await self.index(tenant_id)
        if allowed is not None and not allowed:
            return []
        vector = await self._embed(tenant_id, query)
        results = await asyncio.to_thread(index.search, vector, k, allowed)
        return results[0]

    # --- answers ----------------------------------------------------------------------------

    async def answer(
        self, tenant_id: str, ask: Ask, conversation_id: str | None
    ) -> AsyncIterator[ServerEvent]:
        """Stream `answer.delta` events then `answer.done` for a question."""
        answer_id = ask.answer_id or uuid.uuid4().hex[:12]
        if self.llm is None:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "this server runs no LLM (start it with --llm)")
        if ask.scope == "conversation":
            if conversation_id is None:
                raise ProtocolError(
                    ErrorCode.BAD_ASK, "scope 'conversation' needs a conversation_id or a start"
                )
            if await self.store.get_conversation(tenant_id, conversation_id) is None:
                raise ProtocolError(ErrorCode.CONVERSATION_NOT_FOUND, f"no conversation {conversation_id!r}")
            await self.flush(conversation_id)
        scope_id = conversation_id if ask.scope == "conversation" else None
        if scope_id is None:
            hits = await self.search(tenant_id, ask.question, None, self.config.top_k)
            rows = [hit.utterance for hit in sorted(hits, key=lambda h: -h.score)]
        else:
            # One read of the conversation serves the retrieval filter and the recent context.
            said = await self.store.utterances(tenant_id, scope_id)
            by_row_id = {row.id: row for row in said}
            nearest = await self._nearest(tenant_id, ask.question, list(by_row_id), self.config.top_k)
            rows = [by_row_id[i] for i, _ in nearest if i in by_row_id]
            seen = {row.id for row in rows}
            recent = said[-self.config.recent_context :] if self.config.recent_context > 0 else []
            rows += [row for row in recent if row.id not in seen]
        passages = [Passage(row.public_id, row.seq, row.text, row.start, row.track) for row in rows]
        by_id = {row.public_id: row for row in rows}
        text = ""
        if passages:
            request = build_answer_request(ask.question, passages, chat=self.llm.engine.chat)
            async for piece in self.llm.generate(request, Priority.ANSWER):
                text += piece
                yield AnswerDelta(answer_id, piece)
        final = finalize_answer(text, passages, ask.question)
        await self.store.add_answer(tenant_id, scope_id, ask.question, final.text, final.citations)
        cited = [
            Citation(uid, by_id[uid].text, by_id[uid].start, by_id[uid].conversation_id)
            for uid in final.citations
            if uid in by_id
        ]
        yield AnswerDone(answer_id, final.text, final.citations, final.grounded, cited)

    # --- summaries --------------------------------------------------------------------------

    async def summarize(self, conversation_id: str, *, final: bool) -> Summary | None:
        """Summarise the conversation now and store the summary; None when it has no utterance."""
        state = self._conversations.get(conversation_id)
        if state is None:
            return None
        async with state.summarizing:
            await self.flush(conversation_id)
            rows = await self.store.utterances(state.tenant_id, conversation_id)
            if not rows:
                return None
            state.finals_since_summary = 0
            state.last_summary_at = time.monotonic()
            if self.chat and self.llm is not None:
                summary = await self._generative(conversation_id, rows, state, final)
            else:
                summary = await self._extractive(conversation_id, rows, state, final)
            await self.store.add_summary(
                state.tenant_id, conversation_id, summary.text, summary.method, summary.upto_seq
            )
            state.previous_summary = summary.text
            return summary

    async def _extractive(
        self, conversation_id: str, rows: list[UtteranceRow], state: _ConversationState, final: bool
    ) -> Summary:
        index = await self.index(state.tenant_id)
        held = [row for row in rows if row.id in index]
        vectors = await asyncio.to_thread(index.vectors, [row.id for row in held])
        chosen = [held[i] for i in extractive_summary(vectors, self.config.summary_utterances)]
        text = "\n".join(f"- {row.text}" for row in chosen)
        upto = max(row.seq for row in rows)
        return Summary(conversation_id, "extractive", text, [row.public_id for row in chosen], upto, final)

    async def _generative(
        self, conversation_id: str, rows: list[UtteranceRow], state: _ConversationState, final: bool
    ) -> Summary:
        assert self.llm is not None
        passages = [Passage(row.public_id, row.seq, row.text, row.start, row.track) for row in rows]
        request = build_summary_request(passages, state.previous_summary, chat=True)
        text = "".join([piece async for piece in self.llm.generate(request, Priority.SUMMARY)]).strip()
        upto = max(row.seq for row in rows)
        return Summary(conversation_id, "generative", text, [row.public_id for row in rows], upto, final)

    async def _publish_summary(self, conversation_id: str, *, final: bool) -> None:
        try:
            summary = await self.summarize(conversation_id, final=final)
        except Exception:
            log.exception("summary of conversation %s failed", conversation_id)
            return
        if summary is not None and self.publish is not None:
            self.publish(conversation_id, summary)

    def conversation_ended(self, conversation_id: str) -> None:
        """Its last live session stopped: forget its live state (after the final summary)."""
        self._conversations.pop(conversation_id, None)

    async def _tick(self) -> None:
        """Time-based summaries of live conversations that have new finals."""
        while True:
            await asyncio.sleep(2.0)
            now = time.monotonic()
            for conversation_id, state in list(self._conversations.items()):
                due = now - state.last_summary_at >= self.config.summary_every_s
                if due and state.finals_since_summary > 0 and not state.summarizing.locked():
                    await self._publish_summary(conversation_id, final=False)
