"""server/memory/answers.py: questions answered from a real SQLite store, a fake embedder and a
scripted LLM."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from server.llm_queue import LlmQueue
from server.memory.answers import Answers, RetrievalConfig
from server.memory.index import TenantIndexes
from server.model_service import ModelService
from server.store import AsyncStore
from stream.answers import CANNOT_ANSWER, CANNOT_ANSWER_FR
from stream.errors import ErrorCode, ProtocolError
from stream.events import AnswerDelta, AnswerDone, Ask
from stream.interfaces import LlmRequest
from tests.server.memory_fakes import DIM, TENANT, ScriptedLlm, WordEmbedder, say

MEETING = (
    "Good morning everyone.",
    "The marketing budget is four hundred thousand euros.",
    "Our main competitor is Initech.",
    "We hire two engineers in March.",
    "Lunch is at noon today.",
)


def prompt_passages(request: LlmRequest) -> list[str]:
    """The passage lines of an answer prompt, [1] first."""
    text = request.messages[-1][1] if request.messages else request.prompt or ""
    return re.findall(r"^\[\d+\] (.*)$", text, flags=re.M)


def budget_reply(request: LlmRequest) -> str:
    passages = prompt_passages(request)
    n = next(i for i, text in enumerate(passages, start=1) if "budget" in text)
    return f"The marketing budget is four hundred thousand euros [{n}]."


@pytest.fixture
async def indexes(
    memory_store: AsyncStore, embed: ModelService[str, np.ndarray], tmp_path: Path
) -> AsyncIterator[TenantIndexes]:
    indexes = TenantIndexes(memory_store, embed, WordEmbedder.name, DIM, tmp_path / "index")
    yield indexes
    await indexes.close()


async def started(engine: ScriptedLlm) -> LlmQueue:
    queue = LlmQueue(engine)
    queue.start()
    return queue


async def collect(answers: Answers, ask: Ask, conversation_id: str | None) -> list[AnswerDelta | AnswerDone]:
    return [event async for event in answers.answer(TENANT, ask, conversation_id)]


async def test_the_answer_streams_then_cites_the_utterance_that_holds_it(
    memory_store: AsyncStore, indexes: TenantIndexes
) -> None:
    engine = ScriptedLlm(budget_reply)
    llm = await started(engine)
    answers = Answers(memory_store, indexes, llm, RetrievalConfig(top_k=2, recent_context=1))
    for row in await say(memory_store, "c1", *MEETING):
        indexes.add_later(row)  # not indexed yet: the answer waits for them
    events = await collect(answers, Ask("What is the marketing budget?", answer_id="a1"), "c1")
    *deltas, done = events
    assert all(isinstance(d, AnswerDelta) and d.answer_id == "a1" for d in deltas) and len(deltas) > 1
    assert isinstance(done, AnswerDone) and done.grounded
    assert "".join(d.text for d in deltas if isinstance(d, AnswerDelta)).startswith("The marketing budget")
    assert done.citations == ["c1:1"]
    assert [(p.utterance_id, p.conversation_id) for p in done.passages] == [("c1:1", "c1")]
    shown = prompt_passages(engine.requests[-1])
    assert len(shown) == 3, "top_k nearest, then the latest utterance"
    assert "budget" in shown[0] and shown[-1] == MEETING[-1]
    await llm.close()


async def test_a_question_about_every_conversation_searches_them_all(
    memory_store: AsyncStore, indexes: TenantIndexes
) -> None:
    engine = ScriptedLlm(budget_reply)
    llm = await started(engine)
    answers = Answers(memory_store, indexes, llm, RetrievalConfig(top_k=1, recent_context=3))
    await say(memory_store, "c1", *MEETING[2:])
    await say(memory_store, "c2", *MEETING[:2])
    events = await collect(answers, Ask("What is the marketing budget?", scope="tenant"), "c1")
    done = events[-1]
    assert isinstance(done, AnswerDone) and done.citations == ["c2:1"]
    assert len(prompt_passages(engine.requests[-1])) == 1, "no recent context across conversations"
    await llm.close()


async def test_a_named_speaker_is_shown_by_name_and_asked_about(
    memory_store: AsyncStore, indexes: TenantIndexes
) -> None:
    engine = ScriptedLlm(budget_reply)
    llm = await started(engine)
    answers = Answers(memory_store, indexes, llm, RetrievalConfig(top_k=1, recent_context=0))
    await memory_store.open_conversation(TENANT, "c1", "en")
    said = [("S1", "The budget is four hundred thousand euros."), ("S2", "The budget is too small.")]
    for seq, (label, text) in enumerate(said):
        await memory_store.add_utterance(TENANT, "c1", seq, text, 2.0 * seq, 2.0 * seq + 1, "en",
                                         speaker=label)
    assert await memory_store.name_speaker(TENANT, "c1", "S2", "Alice")
    events = await collect(answers, Ask("What did Alice say about the budget?"), "c1")
    done = events[-1]
    assert isinstance(done, AnswerDone) and done.citations == ["c1:1"]
    assert [p.speaker for p in done.passages] == ["Alice"]
    assert prompt_passages(engine.requests[-1]) == ["Alice: The budget is too small."]
    await llm.close()


async def test_nothing_to_show_is_a_refusal_without_asking_the_model(
    memory_store: AsyncStore, indexes: TenantIndexes
) -> None:
    engine = ScriptedLlm(budget_reply)
    llm = await started(engine)
    answers = Answers(memory_store, indexes, llm)
    await memory_store.open_conversation(TENANT, "quiet", "en")
    [done] = await collect(answers, Ask("Anything?"), "quiet")
    assert isinstance(done, AnswerDone) and done.text.startswith(CANNOT_ANSWER) and not done.citations
    assert engine.requests == []
    await llm.close()


async def test_refusals_are_protocol_errors(memory_store: AsyncStore, indexes: TenantIndexes) -> None:
    with pytest.raises(ProtocolError) as no_llm:
        await collect(Answers(memory_store, indexes, None), Ask("Who?"), "c1")
    assert no_llm.value.code == ErrorCode.UNAVAILABLE
    llm = await started(ScriptedLlm(budget_reply))
    answers = Answers(memory_store, indexes, llm)
    with pytest.raises(ProtocolError) as no_conversation:
        await collect(answers, Ask("Who?"), None)
    assert no_conversation.value.code == ErrorCode.BAD_ASK
    with pytest.raises(ProtocolError) as unknown:
        await collect(answers, Ask("Who?"), "nope")
    assert unknown.value.code == ErrorCode.CONVERSATION_NOT_FOUND
    await llm.close()


REUNION = (
    "Bonjour à tous.",
    "La réunion avec l'usager est déplacée à jeudi.",
    "Le budget marketing est de quatre cent mille euros.",
)


async def test_a_french_conversation_is_answered_in_french(
    memory_store: AsyncStore, indexes: TenantIndexes
) -> None:
    def reply(request: LlmRequest) -> str:
        passages = prompt_passages(request)
        if "midi" in request.messages[-1][1]:
            return "Le déjeuner est à midi [1]."  # not in the passages: replaced by the French fallback
        n = next(i for i, text in enumerate(passages, start=1) if "réunion" in text)
        return f"La réunion est déplacée à jeudi [{n}]."

    engine = ScriptedLlm(reply)
    llm = await started(engine)
    answers = Answers(memory_store, indexes, llm, RetrievalConfig(top_k=2, recent_context=0))
    for row in await say(memory_store, "fr1", *REUNION, language="fr"):
        indexes.add_later(row)
    done = (await collect(answers, Ask("Quand a lieu la réunion ?"), "fr1"))[-1]
    assert isinstance(done, AnswerDone) and done.grounded and done.citations == ["fr1:1"]
    assert "UNIQUEMENT" in engine.requests[-1].messages[0][1]
    done = (await collect(answers, Ask("À quelle heure est le déjeuner de midi ?"), "fr1"))[-1]
    assert isinstance(done, AnswerDone) and not done.grounded and done.text.startswith(CANNOT_ANSWER_FR)
    # Across conversations: the question's language.
    await say(memory_store, "en1", *MEETING)
    await collect(answers, Ask("Où est la réunion avec l'usager ?", scope="tenant"), None)
    assert "UNIQUEMENT" in engine.requests[-1].messages[0][1]
    await collect(answers, Ask("What is the marketing budget?", scope="tenant"), None)
    assert "ONLY" in engine.requests[-1].messages[0][1]
    await llm.close()
