"""Two front-ends (`palabre serve --store postgresql://…`) on one real PostgreSQL server, live at once.

* A watcher of `/v1/watch` on front-end B sees a conversation streamed on A: its start, its
  finals and its end (the watch relay, `server/watch_relay.py`).
* One conversation streamed on both at once (a track on A, another on B): every final of both is
  stored once, no two with the same seq (`LiveSession._store_final` renumbers a final whose seq the
  other front-end took).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from palabre_client import stream_file
from server.store_postgresql import PostgresStore
from tests.e2e.test_postgresql_e2e import front_ends
from tests.postgresql import PostgresServer

pytestmark = pytest.mark.slow

MEETING = "en_meeting.wav"
TIMEOUT_S = 60.0


def test_a_watcher_on_b_sees_the_session_streamed_on_a_and_its_finals(
    postgres_server: PostgresServer, speech_dir: Path, speech_manifest: dict[str, Any], tmp_path: Path
) -> None:
    a, b = front_ends(postgres_server.create_database(), tmp_path)
    received: list[dict[str, Any]] = []

    async def watch_while_streaming() -> list[dict[str, Any]]:
        async with connect(f"ws://127.0.0.1:{b.port}/v1/watch") as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))["type"] == "snapshot"
            await asyncio.sleep(1.0)  # B's relay is listening since it started; A's too

            async def follow() -> None:
                async for message in ws:
                    if (parsed := json.loads(message))["type"] != "stats":  # B's own figures
                        received.append(parsed)
                    if parsed["type"] == "conversation.ended":
                        return

            follower = asyncio.create_task(follow())
            events = await stream_file(a.url, speech_dir / MEETING, speed=4)
            await asyncio.wait_for(follower, TIMEOUT_S)
            return events

    try:
        events = asyncio.run(watch_while_streaming())
    finally:
        a.stop()
        b.stop()
    conversation_id = next(e for e in events if e["type"] == "ready")["conversation_id"]
    finals = [e["text"] for e in events if e["type"] == "final" and e["text"]]
    assert len(finals) == len(speech_manifest["files"][MEETING]["utterances"])
    kinds = [m["type"] for m in received]
    assert kinds[0] == "conversation.started" and kinds[-1] == "conversation.ended", kinds
    assert all(m.get("conversation_id") == conversation_id for m in received)
    assert [m["text"] for m in received if m["type"] == "final" and m["text"]] == finals
    assert received[-1]["utterances"] == len(finals)


def test_one_conversation_streamed_on_a_and_b_at_once_stores_every_final_once(
    postgres_server: PostgresServer, speech_dir: Path, speech_manifest: dict[str, Any], tmp_path: Path
) -> None:
    url = postgres_server.create_database()
    a, b = front_ends(url, tmp_path)
    conversation_id = f"both-{uuid.uuid4().hex[:8]}"
    files = {"alice": "en_speaker_a.wav", "bob": "en_speaker_b.wav"}

    async def both() -> list[list[dict[str, Any]]]:
        return list(
            await asyncio.gather(
                stream_file(a.url, speech_dir / files["alice"], speed=2, conversation_id=conversation_id,
                            track="alice"),
                stream_file(b.url, speech_dir / files["bob"], speed=2, conversation_id=conversation_id,
                            track="bob"),
            )
        )

    async def stored() -> list[tuple[int, str | None, str]]:
        store = await PostgresStore.open(url)
        try:
            return [(r.seq, r.track, r.text) for r in await store.utterances("default", conversation_id)]
        finally:
            await store.close()

    try:
        streams = asyncio.run(both())
    finally:
        a.stop()
        b.stop()
    sent = []
    for events in streams:
        assert events[-1]["type"] == "closed", events[-1]
        assert {e["conversation_id"] for e in events if e["type"] == "ready"} == {conversation_id}
        sent += [(e["seq"], e["track"], e["text"]) for e in events if e["type"] == "final" and e["text"]]
    for track, name in files.items():
        expected = len(speech_manifest["files"][name]["utterances"])
        assert sum(1 for _, t, _ in sent if t == track) == expected, sent
    rows = asyncio.run(stored())
    assert sorted(rows) == sorted(sent), "the finals sent are not the rows stored"
    assert len({seq for seq, _, _ in rows}) == len(rows), "two finals share a seq"
