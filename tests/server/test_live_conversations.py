"""`LiveConversations.settle`: a resuming client waits for the sessions that lost their client."""

from __future__ import annotations

import asyncio

from server.live import LiveConversations


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
