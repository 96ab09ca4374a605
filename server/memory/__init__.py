"""Conversation memory: every stored final is indexed and tagged; questions and rolling summaries.

One object per job, each given its collaborators when it is made:

* `index.TenantIndexes` — the per-tenant vector index: load, catch up with the store, add
  embedded finals, save, search;
* `entities.EntityTagger` — the named entities of stored utterances (when `--entities`);
* `answers.Answers` — questions answered by the LLM from retrieved utterances, with citations;
* `summaries.Summaries` — rolling summaries of live conversations and the final one.

`Knowledge` composes them and is what the rest of the server holds (`SessionServices.knowledge`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from server.llm_queue import LlmQueue
from server.memory.answers import Answers, RetrievalConfig
from server.memory.entities import EntityTagger
from server.memory.index import SearchHit, TenantIndexes, Vector
from server.memory.summaries import Publish, Summaries, SummaryConfig, SummaryObserver
from server.model_service import BatchService
from server.store import UtteranceRow
from server.store_interface import ConversationStore
from stream.events import AnswerDelta, AnswerDone, Ask, Summary
from stream.interfaces import EntityRecognizer, VectorIndex
from stream.summary_schedule import SummaryCadence

__all__ = ["Knowledge", "KnowledgeConfig", "SearchHit"]


@dataclass(frozen=True, slots=True)
class KnowledgeConfig:
    top_k: int = 5
    recent_context: int = 2
    summary_every_finals: int = 4
    summary_every_s: float = 30.0
    summary_utterances: int = 5
    save_every: int = 25
    ivf_threshold: int = 20_000


class Knowledge:
    """Per-process conversation memory over the store: the four jobs, composed."""

    def __init__(
        self,
        store: ConversationStore,
        embed: BatchService[str, Vector],
        embedder_name: str,
        dim: int,
        index_dir: Path,
        llm: LlmQueue | None,
        config: KnowledgeConfig | None = None,
        publish: Publish | None = None,
        ner: EntityRecognizer | None = None,
        summary_observers: Sequence[SummaryObserver] = (),
    ) -> None:
        """`publish` sends a rolling summary to the live sessions of its conversation;
        `summary_observers` see every summary once (the watch hub)."""
        config = config or KnowledgeConfig()
        self.embed = embed
        self.llm = llm
        self.entities = EntityTagger(store, ner) if ner is not None else None
        self.indexes = TenantIndexes(
            store,
            embed,
            embedder_name,
            dim,
            index_dir,
            save_every=config.save_every,
            ivf_threshold=config.ivf_threshold,
            loaded=[self.entities.tag_untagged] if self.entities is not None else [],
        )
        self.answers = Answers(store, self.indexes, llm, RetrievalConfig(config.top_k, config.recent_context))
        self.summaries = Summaries(
            store,
            self.indexes,
            llm,
            SummaryConfig(
                SummaryCadence(config.summary_every_finals, config.summary_every_s),
                key_utterances=config.summary_utterances,
            ),
            publish=publish,
            observers=summary_observers,
        )

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start summarising, and following other front-ends' finals when the store is shared."""
        self.summaries.start()
        self.indexes.start()

    async def close(self) -> None:
        """Stop summarising and tagging, finish indexing, save the indexes."""
        await self.summaries.close()
        if self.entities is not None:
            await self.entities.close()
        await self.indexes.close()

    # --- what the rest of the server calls --------------------------------------------------

    def utterance_stored(self, row: UtteranceRow) -> None:
        """A final was committed: index it and tag it in the background; count it for summaries."""
        self.indexes.add_later(row)
        if self.entities is not None:
            self.entities.tag_later(row)
        self.summaries.final_stored(row)

    def conversation_ended(self, conversation_id: str) -> None:
        """Its last live session stopped (after the final summary)."""
        self.summaries.conversation_ended(conversation_id)

    async def index(self, tenant_id: str) -> VectorIndex:
        """The tenant's index, loaded (and caught up with the store) at first use."""
        return await self.indexes.get(tenant_id)

    def index_sizes(self) -> dict[str, int]:
        """Vectors in each tenant index loaded so far, by tenant (for metrics and readiness)."""
        return self.indexes.sizes()

    def answer(
        self, tenant_id: str, ask: Ask, conversation_id: str | None
    ) -> AsyncIterator[AnswerDelta | AnswerDone]:
        """See `Answers.answer`."""
        return self.answers.answer(tenant_id, ask, conversation_id)

    async def summarize(self, conversation_id: str, *, final: bool) -> Summary | None:
        """See `Summaries.summarize`."""
        return await self.summaries.summarize(conversation_id, final=final)
