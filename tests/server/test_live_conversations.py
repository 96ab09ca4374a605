"""`LiveConversations`: a resuming client waits for the sessions that lost their client (`settle`);
seqs never collide when two front-ends stream one conversation (`LiveSession._store_final`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import cast

from server.live import LiveConversations, LiveSession
from server.store import AsyncStore, UtteranceRow
from stream.events import Final


async def test_settle_waits_for_sessions_that_lost_their_client() -> None:
    conversations = LiveConversations()
    closed = asyncio.Event()
    conversations.closing("c", closed)
    asyncio.get_running_loop().call_later(0.05, closed.set)
    assert await conversations.settle("c", timeout=5.0)
    assert closed.is_set()


async def test_settle_gives_up_at_the_deadline_and_remembers_who_is_left() -> None:
    conversations = LiveConversations()
    closed = asyncio.Event()
    conversations.closing("c", closed)
    assert not await conversations.settle("c", timeout=0.01)
    closed.set()
    assert await conversations.settle("c", timeout=0.01)


async def test_settle_of_another_conversation_does_not_wait() -> None:
    conversations = LiveConversations()
    conversations.closing("c", asyncio.Event())
    assert await conversations.settle("d", timeout=5.0)


async def test_a_final_whose_seq_another_front_end_took_is_stored_at_the_next_free_one(
    tmp_path: Path,
) -> None:
    """Two front-ends (two `LiveConversations`) streaming one conversation on one store each count
    seqs from 0: the second writer of seq 0 stores at 1 and continues above; the same final
    stored again (a retried write) is its first row."""
    store = await AsyncStore.open(tmp_path / "palabre.db")
    try:
        conversation = await store.open_conversation("t", None, "en")
        sides = []
        for track in ("alice", "bob"):
            live, _ = await LiveConversations().join(store, "t", conversation.id)
            session = SimpleNamespace(services=SimpleNamespace(store=store), tenant_id="t",
                                      conversation_id=conversation.id, _live=live)
            sides.append((session, live, track))

        async def store_final(side: int, text: str, start: float) -> UtteranceRow:
            session, live, track = sides[side]
            seq = next(live.seqs)
            final = Final(f"{conversation.id}:{seq}", text, start, start + 1.0, "en", seq, track=track)
            return await LiveSession._insert_final(cast(LiveSession, session), final)

        first = await store_final(0, "Alice speaks.", 0.0)
        second = await store_final(1, "Bob speaks.", 0.5)
        third = await store_final(1, "Bob again.", 2.0)
        fourth = await store_final(0, "Alice again.", 3.0)
        assert [(r.seq, r.track) for r in (first, second, third, fourth)] == [
            (0, "alice"), (1, "bob"), (2, "bob"), (3, "alice")]
        again = await LiveSession._insert_final(
            cast(LiveSession, sides[0][0]),
            Final(first.public_id, "Alice speaks.", 0.0, 1.0, "en", 0, track="alice"),
        )
        assert again.id == first.id
        assert [r.text for r in await store.utterances("t", conversation.id)] == [
            "Alice speaks.", "Bob speaks.", "Bob again.", "Alice again."]
    finally:
        await store.close()
