"""server/watch_relay.py: the watch hubs of two front-ends sharing one real PostgreSQL server.

A watcher on front-end B sees the conversations live on A (snapshot, events, finals — a final too
long for a notification is read back from the store), of its own tenant only, and their end,
including when A goes silent without ending them (killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from server.store_postgresql import PostgresStore
from server.watch import Subscriber, WatchHub
from server.watch_relay import WatchRelay
from stream.events import Closed, Final, Partial, SpeechStarted
from tests.postgresql import PostgresServer
from tests.server.test_watch import READER_A, READER_B, emit, final, ready, server_stats, session

pytestmark = pytest.mark.timeout(60)

BEAT_S = 0.2


class FrontEnd:
    """A watch hub and its relay over a store of its own (as a front-end has)."""

    def __init__(self, store: PostgresStore, heartbeat_s: float = BEAT_S) -> None:
        self.store = store
        self.hub = WatchHub(server_stats)
        self.relay = WatchRelay(self.hub, store, heartbeat_s=heartbeat_s)

    async def close(self) -> None:
        await self.relay.close()
        await self.hub.close()
        await self.store.close()


@contextlib.asynccontextmanager
async def front_end(url: str, heartbeat_s: float = BEAT_S) -> AsyncIterator[FrontEnd]:
    node = FrontEnd(await PostgresStore.open(url), heartbeat_s)
    assert node.relay.start()
    try:
        yield node
    finally:
        await node.close()


async def until(
    subscriber: Subscriber, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 5.0
) -> list[dict[str, Any]]:
    """The messages a subscriber receives until `done` holds for them."""
    got: list[dict[str, Any]] = []

    async def collect() -> None:
        while not done(got):
            text = await subscriber.get()
            assert text is not None
            got.append(json.loads(text))

    await asyncio.wait_for(collect(), timeout)
    return got


def types(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages]


async def test_a_watcher_on_b_sees_a_conversation_live_on_a_of_its_tenant_only(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database()
    async with front_end(url) as a, front_end(url) as b:
        watcher = b.hub.subscribe(READER_A)
        other_tenant = b.hub.subscribe(READER_B)
        await asyncio.sleep(0.5)  # both listening
        live = session("s1", "c1", track="Alice")
        emit(a.hub, live, ready(live), SpeechStarted("c1:0", 0.5), final("c1", 0, "Hello from A."))
        got = await until(watcher, lambda got: "final" in types(got))
        assert types(got) == ["snapshot", "conversation.started", "speech_started", "final"]
        assert got[1]["conversation_id"] == "c1" and got[1]["participants"] == ["Alice"]
        assert got[3]["text"] == "Hello from A." and got[3]["track"] == "Alice"

        late = b.hub.subscribe(READER_A)  # B's snapshot lists A's conversation
        snapshot = (await until(late, lambda got: bool(got)))[0]
        listed = [(c["conversation_id"], c["utterances"], c["last_final"]) for c in snapshot["conversations"]]
        assert listed == [("c1", 1, "Hello from A.")]
        assert snapshot["stats"]["conversations"] == 1

        emit(a.hub, live, Closed(utterances=1))
        ended = await until(watcher, lambda got: "conversation.ended" in types(got))
        assert ended[-1] == {"type": "conversation.ended", "conversation_id": "c1", "utterances": 1}
        assert types(await until(other_tenant, lambda got: bool(got))) == ["snapshot"]
        await asyncio.sleep(0.3)
        assert other_tenant.pending() == 0, "another tenant's conversation leaked"


async def test_a_final_too_long_to_notify_is_read_back_from_the_store(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database()
    async with front_end(url) as a, front_end(url) as b:
        conversation = await a.store.open_conversation("tenant-a", None, "en")
        long_text = "word " * 2500  # 12,500 bytes: more than a notification holds
        await a.store.add_utterance("tenant-a", conversation.id, 0, long_text, 0.0, 9.0, "en")
        watcher = b.hub.subscribe(READER_A)
        await asyncio.sleep(0.5)
        live = session("s1", conversation.id)
        emit(a.hub, live, ready(live),
             Final(f"{conversation.id}:0", long_text, 0.0, 9.0, "en", 0))
        got = await until(watcher, lambda got: "final" in types(got))
        assert got[-1]["text"] == long_text and got[-1]["seq"] == 0


async def test_b_learns_of_a_conversation_started_before_it_and_ends_it_when_a_goes_silent(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database()
    async with front_end(url) as a:
        live = session("s1", "c1")
        emit(a.hub, live, ready(live))
        async with front_end(url) as b:  # started after: it asks A to announce its conversations
            await asyncio.sleep(1.0)
            watcher = b.hub.subscribe(READER_A)
            snapshot = (await until(watcher, lambda got: bool(got)))[0]
            assert [c["conversation_id"] for c in snapshot["conversations"]] == ["c1"]
            await a.relay.close()  # A stops talking without ending c1, as a killed front-end
            ended = await until(watcher, lambda got: "conversation.ended" in types(got), timeout=10)
            assert ended[-1]["conversation_id"] == "c1"


async def test_partials_are_relayed_only_while_another_front_end_watches_their_tenant(
    postgres_server: PostgresServer,
) -> None:
    """Partials (the bulk of the messages) cross to another front-end only while it has a watcher
    of their tenant. B beats every 60 s here (once at start): only the beat B sends at once when
    its first watcher of tenant A subscribes can tell A to send them."""
    url = postgres_server.create_database()
    async with front_end(url, heartbeat_s=60.0) as a, front_end(url, heartbeat_s=60.0) as b:
        other_tenant = b.hub.subscribe(READER_B)
        await asyncio.sleep(0.5)  # both listening, and each has had the other's first beat
        live = session("s1", "c1")
        emit(a.hub, live, ready(live), SpeechStarted("c1:0", 0.5))
        for n in range(5):
            emit(a.hub, live, Partial("c1:0", f"hello {n}", "hello", f" {n}", 0.5, 1.0 + n))
        assert a.relay.partials_held_back == 5

        watcher = b.hub.subscribe(READER_A)
        await asyncio.sleep(0.5)  # B's beat naming tenant A reaches A
        emit(a.hub, live, Partial("c1:0", "hello again", "hello", " again", 0.5, 7.0))
        got = await until(watcher, lambda got: "partial" in types(got))
        assert got[-1]["conversation_id"] == "c1" and got[-1]["text"] == "hello again"
        assert a.relay.partials_held_back == 5
        await asyncio.sleep(0.3)
        leaked = [json.loads(t) for t in [await other_tenant.get() for _ in range(other_tenant.pending())]]
        assert "partial" not in types(leaked), "a partial crossed to another tenant's watcher"
