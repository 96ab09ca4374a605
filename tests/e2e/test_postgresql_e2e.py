"""Two front-ends (`palabre serve --store postgresql://…`, each its own data dir) on one database.

A conversation streamed on front-end A is listed and read on front-end B; a stream whose front-end
is killed (`kill -9`) mid-stream resumes on the other, and every final is stored exactly once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from palabre_client import Event, stream_file
from server.store_postgresql import PostgresStore
from tests.conftest import PalabreServer, start_server
from tests.postgresql import PostgresServer

pytestmark = pytest.mark.slow

MEETING = "en_meeting.wav"
KILL_AFTER_FINALS = 2


def front_ends(url: str, tmp_path: Path) -> tuple[PalabreServer, PalabreServer]:
    """Two front-ends on the database at `url`, with data dirs of their own (nothing shared on disk)."""
    a = start_server("tiny.en", ("--store", url, "--no-memory"), tmp_path / "a")
    try:
        b = start_server("tiny.en", ("--store", url, "--no-memory"), tmp_path / "b")
    except BaseException:
        a.stop()
        raise
    return a, b


def test_a_conversation_streamed_on_a_is_listed_and_read_on_b(
    postgres_server: PostgresServer, speech_dir: Path, speech_manifest: dict[str, Any], tmp_path: Path
) -> None:
    a, b = front_ends(postgres_server.create_database(), tmp_path)
    try:
        events = asyncio.run(stream_file(a.url, speech_dir / MEETING, speed=4))
        ready = next(e for e in events if e["type"] == "ready")
        finals = [e["text"] for e in events if e["type"] == "final" and e["text"]]
        conversation_id = ready["conversation_id"]
        listed = b.get_json("/v1/conversations")["conversations"]
        read = b.get_json(f"/v1/conversations/{conversation_id}")
    finally:
        a.stop()
        b.stop()
    assert events[-1]["type"] == "closed", events[-1]
    assert len(finals) == len(speech_manifest["files"][MEETING]["utterances"])
    assert [(c["id"], c["utterance_count"]) for c in listed] == [(conversation_id, len(finals))]
    assert [u["text"] for u in read["utterances"]] == finals
    assert read["conversation"]["status"] == "ended"


def test_a_stream_resumes_on_b_after_a_is_killed(
    postgres_server: PostgresServer, speech_dir: Path, speech_manifest: dict[str, Any], tmp_path: Path
) -> None:
    url = postgres_server.create_database()
    first, second = front_ends(url, tmp_path)
    urls = iter([first.url, second.url])
    finals: list[Event] = []
    readies: list[Event] = []
    try:

        def seen(event: Event) -> None:
            if event["type"] == "ready":
                readies.append(event)
            if event["type"] == "final":
                finals.append(event)
                if len(finals) == KILL_AFTER_FINALS:
                    first.proc.kill()

        events = asyncio.run(
            stream_file(lambda: next(urls), speech_dir / MEETING, speed=2, on_event=seen, max_reconnects=1)
        )
    finally:
        first.stop()
        second.stop()
    assert events[-1]["type"] == "closed", events[-1]
    assert len(readies) == 2, "no reconnection happened"
    conversation_id = readies[0]["conversation_id"]
    assert readies[1]["conversation_id"] == conversation_id
    texts = [f["text"] for f in finals]
    assert len(texts) == len(speech_manifest["files"][MEETING]["utterances"]), texts
    assert len(set(texts)) == len(texts) and len({f["seq"] for f in finals}) == len(finals)

    async def stored_texts() -> list[str]:
        store = await PostgresStore.open(url)
        try:
            return [row.text for row in await store.utterances("default", conversation_id)]
        finally:
            await store.close()

    assert asyncio.run(stored_texts()) == texts
