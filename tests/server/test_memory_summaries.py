"""server/memory/summaries.py: rolling summaries over a real SQLite store, a fake embedder, a
scripted LLM and a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from server.llm_queue import LlmQueue
from server.memory.index import TenantIndexes
from server.memory.summaries import Summaries, SummaryConfig
from server.model_service import ModelService
from server.store import AsyncStore, UtteranceRow
from stream.events import Summary, SummaryItem
from stream.summary_schedule import SummaryCadence
from tests.server.memory_fakes import DIM, TENANT, ScriptedLlm, WordEmbedder, say

MEETING = (
    "Good morning everyone.",
    "The marketing budget is four hundred thousand euros.",
    "Our main competitor is Initech.",
    "We hire two engineers in March.",
)
GENERATIVE = (
    "Key points:\n"
    "- The marketing budget is four hundred thousand euros.\n"
    "Decisions:\n"
    "- Two engineers are hired in March.\n"
    "Action items:\n"
    "- None"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Outbox:
    """What the summaries handed to `publish` and to their observers."""

    def __init__(self) -> None:
        self.published: list[tuple[str, Summary]] = []
        self.observed: list[Summary] = []

    def publish(self, conversation_id: str, summary: Summary) -> None:
        self.published.append((conversation_id, summary))


@pytest.fixture
async def indexes(
    memory_store: AsyncStore, embed: ModelService[str, np.ndarray], tmp_path: Path
) -> AsyncIterator[TenantIndexes]:
    indexes = TenantIndexes(memory_store, embed, WordEmbedder.name, DIM, tmp_path / "index")
    yield indexes
    await indexes.close()


def summaries(
    store: AsyncStore,
    indexes: TenantIndexes,
    out: Outbox,
    cadence: SummaryCadence,
    *,
    llm: LlmQueue | None = None,
    clock: Callable[[], float] | None = None,
) -> Summaries:
    return Summaries(
        store,
        indexes,
        llm,
        SummaryConfig(cadence, key_utterances=2),
        publish=out.publish,
        observers=[out.observed.append],
        clock=clock or Clock(),
    )


async def stored(summaries: Summaries, indexes: TenantIndexes, rows: list[UtteranceRow]) -> None:
    """What `Knowledge.utterance_stored` does with each new final."""
    for row in rows:
        indexes.add_later(row)
        summaries.final_stored(row)


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_an_extractive_summary_every_n_finals_quotes_key_utterances_with_their_ids(
    memory_store: AsyncStore, indexes: TenantIndexes
) -> None:
    out = Outbox()
    rolling = summaries(memory_store, indexes, out, SummaryCadence(every_finals=2, every_s=0))
    await stored(rolling, indexes, await say(memory_store, "c1", MEETING[0]))
    await asyncio.sleep(0.05)
    assert out.published == []
    await stored(rolling, indexes, await say(memory_store, "c1", MEETING[1]))
    await eventually(lambda: len(out.published) == 1)
    [(conversation_id, summary)] = out.published
    assert conversation_id == "c1" and out.observed == [summary], "observed once, published once"
    assert (summary.method, summary.upto_seq, summary.final) == ("extractive", 1, False)
    assert summary.items == [SummaryItem(MEETING[0], ["c1:0"]), SummaryItem(MEETING[1], ["c1:1"])]
    await stored(rolling, indexes, await say(memory_store, "c1", *MEETING[2:]))
    await eventually(lambda: len(out.published) == 2)
    latest = out.published[-1][1]
    assert latest.upto_seq == 3 and len(latest.items) == 2
    assert all(len(item.utterance_ids) == 1 for item in latest.items)
    by_id = {row.public_id: row.text for row in await memory_store.utterances(TENANT, "c1")}
    assert all(item.text == by_id[item.utterance_ids[0]] for item in latest.items)
    row = await memory_store.latest_summary(TENANT, "c1")
    assert row is not None and row.items == [
        {"text": item.text, "utterance_ids": item.utterance_ids, "section": None} for item in latest.items
    ]
    await rolling.close()


async def test_a_summary_every_s_seconds_while_something_new_is_said(
    memory_store: AsyncStore, indexes: TenantIndexes
) -> None:
    out, clock = Outbox(), Clock()
    rolling = summaries(memory_store, indexes, out, SummaryCadence(every_finals=0, every_s=30), clock=clock)
    await stored(rolling, indexes, await say(memory_store, "c1", *MEETING[:2]))
    clock.now += 29
    await rolling.tick()
    assert out.published == []
    clock.now += 1
    await rolling.tick()
    assert [s.upto_seq for _, s in out.published] == [1]
    clock.now += 60
    await rolling.tick()
    assert len(out.published) == 1, "nothing new was said"
    await stored(rolling, indexes, await say(memory_store, "c1", *MEETING[2:]))
    await rolling.tick()
    assert [s.upto_seq for _, s in out.published] == [1, 3]
    await rolling.close()


async def test_the_final_summary_is_returned_and_observed_not_published(
    memory_store: AsyncStore, indexes: TenantIndexes
) -> None:
    out = Outbox()
    rolling = summaries(memory_store, indexes, out, SummaryCadence(every_finals=0, every_s=0))
    assert await rolling.summarize("c1", final=True) is None, "not live here"
    await stored(rolling, indexes, await say(memory_store, "c1", *MEETING[:2]))
    final = await rolling.summarize("c1", final=True)
    assert final is not None and final.final and out.observed == [final] and out.published == []
    assert await rolling.summarize("c1", final=False) is None, "nothing new since the final one"
    rolling.conversation_ended("c1")
    assert await rolling.summarize("c1", final=True) is None
    await rolling.close()


async def test_a_generative_summary_has_sections_and_supporting_utterances(
    memory_store: AsyncStore, indexes: TenantIndexes
) -> None:
    engine = ScriptedLlm(lambda request: GENERATIVE, chat=True)
    llm = LlmQueue(engine)
    llm.start()
    out = Outbox()
    rolling = summaries(memory_store, indexes, out, SummaryCadence(every_finals=0, every_s=0), llm=llm)
    await stored(rolling, indexes, await say(memory_store, "c1", *MEETING))
    summary = await rolling.summarize("c1", final=False)
    assert summary is not None and summary.method == "generative"
    assert summary.items == [
        SummaryItem("The marketing budget is four hundred thousand euros.", ["c1:1"], "key_points"),
        SummaryItem("Two engineers are hired in March.", ["c1:3"], "decisions"),
    ]
    row = await memory_store.latest_summary(TENANT, "c1")
    assert row is not None and row.text == GENERATIVE and row.items[1]["section"] == "decisions"
    await rolling.summarize("c1", final=True)
    assert GENERATIVE in engine.requests[-1].messages[-1][1], "the next summary updates this one"
    await rolling.close()
    await llm.close()


async def test_a_model_that_writes_no_point_falls_back_to_the_extractive_summary(
    memory_store: AsyncStore, indexes: TenantIndexes
) -> None:
    llm = LlmQueue(ScriptedLlm(lambda request: "Key points:\n- None", chat=True))
    llm.start()
    rolling = summaries(memory_store, indexes, Outbox(), SummaryCadence(every_finals=0, every_s=0), llm=llm)
    await stored(rolling, indexes, await say(memory_store, "c1", *MEETING))
    summary = await rolling.summarize("c1", final=True)
    assert summary is not None and summary.method == "extractive" and summary.items
    await rolling.close()
    await llm.close()


async def test_a_base_model_does_not_write_summaries(
    memory_store: AsyncStore, indexes: TenantIndexes
) -> None:
    engine = ScriptedLlm(lambda request: GENERATIVE, chat=False)
    llm = LlmQueue(engine)
    llm.start()
    rolling = summaries(memory_store, indexes, Outbox(), SummaryCadence(every_finals=0, every_s=0), llm=llm)
    await stored(rolling, indexes, await say(memory_store, "c1", *MEETING))
    summary = await rolling.summarize("c1", final=True)
    assert summary is not None and summary.method == "extractive" and engine.requests == []
    rolling.start()
    await rolling.close()
    await llm.close()
