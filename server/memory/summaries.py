"""Rolling summaries of live conversations, and the final one when a conversation's last session stops.

When: `stream.summary_schedule` (every few finals, or every so many seconds with something new);
`final_stored` counts the finals and a ticker checks the time. How: extractive (the key
utterances, `stream.summary.extractive_summary` over their index vectors) unless the LLM is
instruction-tuned, then generative (`stream.answers.build_summary_request`, read back into points
by `stream.answers.summary_items`), in the conversation's language. Either way a summary is a list
of items, each with the utterances it comes from, stored with the conversation.

Where it goes: every summary, rolling or final, is shown once to each of `observers` (the watch
hub: once per conversation, however many sessions it has); a rolling one is also handed to
`publish`, which sends it to the live sessions of its conversation. The final one is returned to
the caller (the last session, which sends it before its `closed`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from server.llm_queue import LlmQueue, Priority
from server.memory.answers import passage
from server.memory.index import TenantIndexes
from server.memory.tasks import TaskSet
from server.speakers import SpeakerNames, quoted
from server.store import UtteranceRow
from server.store_interface import ConversationStore
from stream.answers import build_summary_request, model_can_summarise, summary_items
from stream.events import Summary, SummaryItem
from stream.language import conversation_language
from stream.summary import extractive_summary
from stream.summary_schedule import SummaryCadence, SummarySchedule

log = logging.getLogger(__name__)

Publish = Callable[[str, Summary], None]
"""Sends a summary to the live sessions of a conversation (by its id)."""
SummaryObserver = Callable[[Summary], None]
"""Sees each summary once (the watch hub); must be quick and not raise."""


@dataclass(frozen=True, slots=True)
class SummaryConfig:
    cadence: SummaryCadence = field(default_factory=SummaryCadence)
    key_utterances: int = 5
    """Utterances an extractive summary quotes, at most."""
    tick_s: float = 2.0
    """How often the time-based cadence is checked."""


@dataclass(slots=True)
class _Conversation:
    tenant_id: str
    schedule: SummarySchedule
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    previous_text: str | None = None
    """The generative summary so far, as the model wrote it (the next prompt updates it)."""


class Summaries:
    """The rolling summaries of the live conversations of the process."""

    def __init__(
        self,
        store: ConversationStore,
        indexes: TenantIndexes,
        llm: LlmQueue | None,
        config: SummaryConfig | None = None,
        *,
        publish: Publish | None = None,
        observers: Sequence[SummaryObserver] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.indexes = indexes
        self.llm = llm
        self.config = config or SummaryConfig()
        self.publish = publish
        self.observers = list(observers)
        self.clock = clock
        self._conversations: dict[str, _Conversation] = {}
        self._tasks = TaskSet()
        self._ticker: asyncio.Task[None] | None = None

    @property
    def generative(self) -> bool:
        """Whether summaries are written by the LLM (an instruct model) rather than extracted."""
        return self.llm is not None and model_can_summarise(self.llm.engine.chat)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start checking the time-based cadence."""
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever(), name="summary-ticker")

    async def close(self) -> None:
        """Stop the ticker and the rolling summaries under way."""
        if self._ticker is not None:
            self._ticker.cancel()
        await self._tasks.cancel()

    # --- the live conversations -------------------------------------------------------------

    def final_stored(self, row: UtteranceRow) -> None:
        """A final of a live conversation was stored: a rolling summary follows when due."""
        state = self._conversations.get(row.conversation_id)
        if state is None:
            schedule = SummarySchedule(self.config.cadence, self.clock())
            state = self._conversations[row.conversation_id] = _Conversation(row.tenant_id, schedule)
        if state.schedule.final_stored():
            self._tasks.start(self._roll(row.conversation_id))

    def conversation_ended(self, conversation_id: str) -> None:
        """Its last live session stopped: forget its live state (after the final summary)."""
        self._conversations.pop(conversation_id, None)

    async def tick(self) -> None:
        """Make the rolling summaries due by time (the ticker calls this every `tick_s`)."""
        now = self.clock()
        for conversation_id, state in list(self._conversations.items()):
            if state.schedule.due(now) and not state.lock.locked():
                await self._roll(conversation_id)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_s)
            await self.tick()

    async def _roll(self, conversation_id: str) -> None:
        """Make a rolling summary and publish it."""
        try:
            summary = await self.summarize(conversation_id, final=False)
        except Exception:
            log.exception("summary of conversation %s failed", conversation_id)
            return
        if summary is not None and self.publish is not None:
            self.publish(conversation_id, summary)

    # --- making one -------------------------------------------------------------------------

    async def summarize(self, conversation_id: str, *, final: bool) -> Summary | None:
        """Summarise a live conversation now, store the summary and show it to the observers.

        None when the conversation is not live here or has no utterance, and for a rolling one
        (not `final`) when no final was stored since the last summary (e.g. it waited for the
        final one).
        """
        state = self._conversations.get(conversation_id)
        if state is None:
            return None
        async with state.lock:
            if not final and state.schedule.finals_since == 0:
                return None
            await self.indexes.flush(conversation_id)
            rows = await self.store.utterances(state.tenant_id, conversation_id)
            if not rows:
                return None
            state.schedule.summarized(self.clock())
            summary: Summary | None = None
            text = ""
            if self.generative:
                text, summary = await self._generative(conversation_id, rows, state, final)
            if summary is None:
                summary = await self._extractive(conversation_id, rows, state, final)
                text = "\n".join(item.text for item in summary.items)
            await self.store.add_summary(
                state.tenant_id,
                conversation_id,
                text,
                summary.method,
                summary.upto_seq,
                [dataclasses.asdict(item) for item in summary.items],
            )
        for observer in self.observers:
            observer(summary)
        return summary

    async def _extractive(
        self, conversation_id: str, rows: list[UtteranceRow], state: _Conversation, final: bool
    ) -> Summary:
        held, vectors = await self.indexes.vectors(state.tenant_id, rows)
        chosen = [held[i] for i in extractive_summary(vectors, self.config.key_utterances)]
        names = await SpeakerNames.of(self.store, state.tenant_id, chosen)
        items = [SummaryItem(quoted(row, names), [row.public_id]) for row in chosen]
        return Summary(conversation_id, "extractive", items, max(row.seq for row in rows), final)

    async def _generative(
        self, conversation_id: str, rows: list[UtteranceRow], state: _Conversation, final: bool
    ) -> tuple[str, Summary | None]:
        """The model's text and the summary read from it; None when it wrote no point."""
        assert self.llm is not None
        names = await SpeakerNames.of(self.store, state.tenant_id, rows)
        passages = [passage(row, names) for row in rows]
        conversation = await self.store.get_conversation(state.tenant_id, conversation_id)
        declared = conversation.language if conversation is not None else None
        language = conversation_language(declared, [row.language or "" for row in rows], "")
        request = build_summary_request(passages, state.previous_text, chat=True, language=language)
        text = "".join([piece async for piece in self.llm.generate(request, Priority.SUMMARY)]).strip()
        items = summary_items(text, passages, language)
        if not items:
            log.warning("summary of conversation %s: the model wrote no point; extracting", conversation_id)
            return text, None
        state.previous_text = text
        return text, Summary(conversation_id, "generative", items, max(row.seq for row in rows), final)
