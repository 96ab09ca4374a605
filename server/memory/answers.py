"""Answering questions about what was said: retrieval, the LLM's streamed answer, its check, citations.

`Answers.answer` retrieves the question's passages (`stream.retrieval.answer_context`: the nearest
utterances, plus the conversation's latest ones), streams the LLM's answer through the shared
`LlmQueue` as `answer.delta` events, checks and cites it (`stream.answers.finalize_answer`),
stores it, and ends with `answer.done`. The prompt, the refusal and the word matching are in the
conversation's language, or the question's for a question across conversations
(`stream.language.conversation_language`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from server.llm_queue import LlmQueue, Priority
from server.memory.index import TenantIndexes
from server.speakers import SpeakerNames
from server.store import UtteranceRow
from server.store_interface import ConversationStore
from stream.answers import Passage, build_answer_request, finalize_answer
from stream.errors import ErrorCode, ProtocolError
from stream.events import AnswerDelta, AnswerDone, Ask, Citation
from stream.language import conversation_language
from stream.retrieval import answer_context


@dataclass(frozen=True, slots=True)
class RetrievalConfig:
    top_k: int = 5
    """The nearest utterances shown to the LLM."""
    recent_context: int = 2
    """The latest utterances of the conversation shown besides (questions about one conversation)."""


def passage(row: UtteranceRow, names: SpeakerNames) -> Passage:
    """A stored utterance as a prompt shows it ("[n] Alice: …" when its speaker was named)."""
    return Passage(row.public_id, row.seq, row.text, row.start, names.who(row))


def speakers_named_in(question: str, names: dict[str, str]) -> set[str]:
    """The labels of the speakers whose name the question says as a word ("what did Alice say…"),
    so that retrieval looks at what they said."""
    words = set(re.findall(r"\w+", question.casefold()))
    return {
        label
        for label, name in names.items()
        if (name_words := re.findall(r"\w+", name.casefold())) and set(name_words) <= words
    }


class Answers:
    """Answers questions from the store and the tenant indexes with the LLM."""

    def __init__(
        self,
        store: ConversationStore,
        indexes: TenantIndexes,
        llm: LlmQueue | None,
        config: RetrievalConfig | None = None,
    ) -> None:
        self.store = store
        self.indexes = indexes
        self.llm = llm
        self.config = config or RetrievalConfig()

    async def answer(
        self, tenant_id: str, ask: Ask, conversation_id: str | None
    ) -> AsyncIterator[AnswerDelta | AnswerDone]:
        """Stream `answer.delta` events then `answer.done` for a question.

        Raises `ProtocolError` (before any event) when the server runs no LLM, or the question is
        about a conversation that is not given or does not exist.
        """
        answer_id = ask.answer_id or uuid.uuid4().hex[:12]
        if self.llm is None:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "this server runs no LLM (start it with --llm)")
        scope_id: str | None = None
        declared: str | None = None
        if ask.scope == "conversation":
            if conversation_id is None:
                raise ProtocolError(
                    ErrorCode.BAD_ASK, "scope 'conversation' needs a conversation_id or a start"
                )
            conversation = await self.store.get_conversation(tenant_id, conversation_id)
            if conversation is None:
                raise ProtocolError(ErrorCode.CONVERSATION_NOT_FOUND, f"no conversation {conversation_id!r}")
            declared = conversation.language
            await self.indexes.flush(conversation_id)
            scope_id = conversation_id
        rows = await self.retrieve(tenant_id, ask.question, scope_id)
        names = await SpeakerNames.of(self.store, tenant_id, rows)
        passages = [passage(row, names) for row in rows]
        by_id = {row.public_id: row for row in rows}
        detected = [row.language or "" for row in rows] if scope_id is not None else []
        language = conversation_language(declared, detected, ask.question)
        text = ""
        if passages:
            chat = self.llm.engine.chat
            request = build_answer_request(ask.question, passages, chat=chat, language=language)
            async for piece in self.llm.generate(request, Priority.ANSWER):
                text += piece
                yield AnswerDelta(answer_id, piece)
        final = finalize_answer(text, passages, ask.question, language)
        await self.store.add_answer(tenant_id, scope_id, ask.question, final.text, final.citations)
        cited = [
            Citation(row.public_id, row.text, row.start, row.conversation_id, names.who(row))
            for row in (by_id[uid] for uid in final.citations if uid in by_id)
        ]
        yield AnswerDone(answer_id, final.text, final.citations, final.grounded, cited)

    async def retrieve(
        self, tenant_id: str, question: str, conversation_id: str | None
    ) -> list[UtteranceRow]:
        """The utterances to show for a question, in prompt order (`stream.retrieval`)."""
        top_k, recent = self.config.top_k, self.config.recent_context
        if conversation_id is None:
            nearest = await self.indexes.nearest(tenant_id, question, None, top_k)
            order = answer_context([i for i, _ in nearest], None, top_k=top_k, recent=recent)
            found = await self.store.utterances_by_ids(tenant_id, order)
            by_row_id = {row.id: row for row in found}
        else:
            # One read of the conversation serves the retrieval filter and the recent context.
            said = await self.store.utterances(tenant_id, conversation_id)
            by_row_id = {row.id: row for row in said}
            names = await self.store.speaker_names(tenant_id, conversation_id)
            asked_about = speakers_named_in(question, names)
            allowed = [row.id for row in said if row.speaker in asked_about] or list(by_row_id)
            nearest = await self.indexes.nearest(tenant_id, question, allowed, top_k)
            order = answer_context([i for i, _ in nearest], list(by_row_id), top_k=top_k, recent=recent)
        return [by_row_id[i] for i in order if i in by_row_id]
