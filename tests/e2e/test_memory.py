"""Conversation memory end to end: a streamed meeting becomes searchable, answerable, summarised,
and survives restarts and a lost or corrupt index (the store is the source of truth)."""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from palabre_client import ask, stream_file
from tests.conftest import PalabreServer, start_server

pytestmark = pytest.mark.slow

MEETING = "en_meeting.wav"


def search(server: PalabreServer, q: str, **params: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"q": q, **params})
    results: list[dict[str, Any]] = server.get_json(f"/v1/search?{query}", timeout=60)["results"]
    return results


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("memory-data")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("memory-servers")


@pytest.fixture(scope="module")
def meeting(speech_dir: Path, data_dir: Path, workdir: Path) -> dict[str, Any]:
    """Stream the meeting once into a fresh server; keep its events and ids for the other tests."""
    server = start_server("tiny.en", ("--data-dir", str(data_dir)), workdir)
    try:
        import asyncio

        events = asyncio.run(stream_file(server.url, speech_dir / MEETING, language="en", speed=1.5))
        conversation_id = events[0]["conversation_id"]
        done = asyncio.run(
            ask(
                "What is the marketing budget for next year?", url=server.url, conversation_id=conversation_id
            )
        )
        competitor = search(server, "Who is our main competitor?", conversation=conversation_id)
        return {
            "events": events,
            "answer": done,
            "competitor": competitor,
            "conversation_id": conversation_id,
        }
    finally:
        server.stop()


def test_finals_are_stored_and_a_live_summary_comes_before_the_end(meeting: dict[str, Any]) -> None:
    events = meeting["events"]
    kinds = [e["type"] for e in events]
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == 5, [e.get("text") for e in finals]
    summaries = [e for e in events if e["type"] == "summary"]
    assert summaries, kinds
    assert any(not s["final"] for s in summaries), "a rolling summary arrives while the meeting runs"
    last_final = max(i for i, k in enumerate(kinds) if k == "final")
    first_summary = kinds.index("summary")
    assert first_summary < last_final, "the first summary arrives before the meeting ends"
    assert summaries[-1]["final"] and kinds[-2:] == ["summary", "closed"]
    assert summaries[-1]["method"] == "extractive"  # the bundled LLM is a base model
    said = {f["utterance_id"]: f["text"] for f in finals}
    items = summaries[-1]["items"]
    assert items and all(said[item["utterance_ids"][0]] == item["text"] for item in items), items


def test_answer_cites_the_utterance_that_states_the_fact(meeting: dict[str, Any]) -> None:
    done = meeting["answer"]
    finals = [e for e in meeting["events"] if e["type"] == "final"]
    budget = next(f for f in finals if "budget" in f["text"].lower() and "marketing" in f["text"].lower())
    assert done["grounded"], f"the model's answer was replaced by the fallback: {json.dumps(done)}"
    assert "four hundred thousand" in done["text"].lower() or "400" in done["text"], json.dumps(done)
    assert budget["utterance_id"] in done["citations"], json.dumps(done)
    cited = {p["utterance_id"]: p["text"] for p in done["passages"]}
    assert "budget" in cited[budget["utterance_id"]].lower()


def test_search_survives_restart_with_the_same_ids(
    meeting: dict[str, Any], data_dir: Path, workdir: Path
) -> None:
    before = meeting["competitor"][0]
    assert "competitor" in before["text"].lower()
    server = start_server("tiny.en", ("--data-dir", str(data_dir), "--llm", "none"), workdir)
    try:
        after = search(server, "Who is our main competitor?", conversation=meeting["conversation_id"])[0]
        assert (after["id"], after["utterance_id"], after["text"]) == (
            before["id"],
            before["utterance_id"],
            before["text"],
        )
        conversation = server.get_json(f"/v1/conversations/{meeting['conversation_id']}")
        assert len(conversation["utterances"]) == 5
        assert conversation["summary"]["method"] == "extractive"
        assert conversation["summary"]["items"] == meeting["events"][-2]["items"]
        deadline = time.monotonic() + 180  # entities are tagged in the background (spaCy loads lazily)
        while time.monotonic() < deadline:
            conversation = server.get_json(f"/v1/conversations/{meeting['conversation_id']}")
            if all(u["entities"] is not None for u in conversation["utterances"]):
                break
            time.sleep(1.0)
        amounts = search(server, "how much money", entity_label="amount")
        assert amounts and "budget" in amounts[0]["text"].lower(), amounts
        assert all(any(e["label"] == "amount" for e in hit["entities"]) for hit in amounts)
    finally:
        server.stop()


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_lost_or_corrupt_index_is_rebuilt_from_the_store(
    meeting: dict[str, Any], data_dir: Path, workdir: Path, damage: str
) -> None:
    index = data_dir / "index" / "default.faiss"
    assert index.exists()
    if damage == "delete":
        index.unlink()
    else:
        index.write_bytes(index.read_bytes()[:100])
    server = start_server("tiny.en", ("--data-dir", str(data_dir), "--llm", "none"), workdir)
    try:
        hits = search(server, "Who is our main competitor?", conversation=meeting["conversation_id"])
        assert hits[0]["utterance_id"] == meeting["competitor"][0]["utterance_id"]
        assert "rebuilding" in server.log_tail(20000) or "added from the store" in server.log_tail(20000)
    finally:
        server.stop()
