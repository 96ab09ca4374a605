"""The session hub: admission, open and register, close and end, supersede, erase, publish.

Real `LiveSession`s over session services without models (tests/server/conftest.py).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from server.config import LimitsConfig
from server.live import LiveSession, SessionServices
from server.sessions import SessionHub
from stream.errors import ErrorCode, ProtocolError
from stream.events import Error, ServerEvent, Start
from tests.stream.fakes import pcm16, silence, tone


class Client:
    """Collects what a session sends to its client."""

    def __init__(self) -> None:
        self.events: list[ServerEvent] = []

    async def send(self, event: ServerEvent) -> None:
        self.events.append(event)

    @property
    def types(self) -> list[str]:
        return [e.type for e in self.events]


def hub_with(services: SessionServices | None, **limits: int) -> tuple[SessionHub, list[ErrorCode]]:
    refused: list[ErrorCode] = []
    hub = SessionHub(LimitsConfig(**limits), per_tenant_caps=True, on_refused=refused.append)  # type: ignore[arg-type]
    if services is not None:
        hub.serve(services)
    return hub, refused


async def speak(live: LiveSession) -> None:
    audio = np.concatenate([silence(0.3), tone(1.0), silence(1.0)])
    live.feed(pcm16(audio))
    live.stop()
    await asyncio.wait_for(live.wait_closed(), 10)


async def test_a_loading_hub_refuses_sessions() -> None:
    hub, _ = hub_with(None)
    assert hub.loading
    with pytest.raises(ProtocolError) as refused:
        await hub.open("default", Start(16000), None)
    assert refused.value.code is ErrorCode.UNAVAILABLE


async def test_open_registers_sends_ready_and_closing_forgets(services: SessionServices) -> None:
    hub, _ = hub_with(services)
    client = Client()
    live = await hub.open("default", Start(16000, language="en"), client.send)
    assert len(hub) == 1 and list(hub) == [live]
    assert hub.conversation_live(live.conversation_id)
    await speak(live)
    assert client.types[0] == "ready" and client.types[-1] == "closed" and "final" in client.types
    await asyncio.sleep(0.05)  # the conversation is ended in the background
    assert len(hub) == 0 and not hub.conversation_live(live.conversation_id)
    row = await services.store.get_conversation("default", live.conversation_id)
    assert row is not None and row.ended_at is not None


async def test_admission_caps_are_counted(services: SessionServices) -> None:
    hub, refused = hub_with(services, max_sessions=3, max_sessions_per_tenant=1)
    await hub.open("default", Start(16000), None)
    with pytest.raises(ProtocolError) as error:
        await hub.open("default", Start(16000), None)
    assert error.value.code is ErrorCode.OVERLOADED and refused == [ErrorCode.OVERLOADED]
    await services.store.ensure_tenant("other")
    await hub.open("other", Start(16000), None)
    with pytest.raises(ProtocolError):
        hub.admit("third", count=2)
    assert len(hub) == 2


async def test_a_resuming_start_supersedes_the_same_track_only(services: SessionServices) -> None:
    hub, _ = hub_with(services)
    superseded: list[str] = []
    first = await hub.open(
        "default", Start(16000, track="alice"), None, on_evicted=lambda code: superseded.append("alice")
    )
    other = await hub.open(
        "default",
        Start(16000, conversation_id=first.conversation_id, track="bob"),
        None,
        on_evicted=lambda code: superseded.append("bob"),
    )
    resumed = Start(16000, conversation_id=first.conversation_id, track="alice", resume_after=-1)
    again = await hub.open("default", resumed, None)
    assert superseded == ["alice"]
    await asyncio.wait_for(first.wait_closed(), 10)
    assert not other.closed and not again.closed
    assert set(hub) == {other, again}


async def test_a_resuming_start_supersedes_its_own_client_only(services: SessionServices) -> None:
    """Two participants on one track (e.g. both on the null track): the one that reconnects takes
    over its own session, never the other's."""
    hub, _ = hub_with(services)
    superseded: list[str] = []
    mine = await hub.open(
        "default", Start(16000, client_id="page-a"), None, on_evicted=lambda code: superseded.append("a")
    )
    cid = mine.conversation_id
    theirs = await hub.open(
        "default", Start(16000, conversation_id=cid, client_id="page-b"), None,
        on_evicted=lambda code: superseded.append("b"),
    )
    resumed = Start(16000, conversation_id=cid, client_id="page-a", resume_after=-1)
    again = await hub.open("default", resumed, None)
    assert superseded == ["a"]
    await asyncio.wait_for(mine.wait_closed(), 10)
    assert not theirs.closed and not again.closed
    assert hub.supersede("default", cid, None, "page-c") == 0


async def test_erasing_a_conversation_closes_its_sessions_at_once(services: SessionServices) -> None:
    hub, _ = hub_with(services)
    evicted: list[ErrorCode] = []
    live = await hub.open("default", Start(16000, language="en"), None, on_evicted=evicted.append)
    other = await hub.open("default", Start(16000, language="en"), None)
    live.feed(pcm16(np.concatenate([silence(0.3), tone(1.0)])))
    assert await hub.erase_conversation("default", live.conversation_id) == 1
    assert evicted == [ErrorCode.CONVERSATION_ERASED] and live.erased
    assert list(hub) == [other] and not hub.conversation_live(live.conversation_id)
    with pytest.raises(ProtocolError) as refused:
        live.feed(pcm16(silence(0.1)))
    assert refused.value.code is ErrorCode.CONVERSATION_ERASED
    assert await hub.erase_conversation("default", live.conversation_id) == 0


async def test_a_session_whose_conversation_another_process_erased_closes_at_its_next_final(
    services: SessionServices,
) -> None:
    hub, _ = hub_with(services)
    evicted: list[ErrorCode] = []
    live = await hub.open("default", Start(16000, language="en"), None, on_evicted=evicted.append)
    await services.store.erase_conversation("default", live.conversation_id)  # `palabre erase`
    await speak(live)  # it still reaches `closed`, storing nothing
    assert evicted == [ErrorCode.CONVERSATION_ERASED]
    assert await services.store.get_conversation("default", live.conversation_id) is None


async def test_publish_reaches_every_session_of_the_conversation(services: SessionServices) -> None:
    hub, _ = hub_with(services)
    a, b, c = Client(), Client(), Client()
    live_a = await hub.open("default", Start(16000, track="a"), a.send)
    await hub.open("default", Start(16000, conversation_id=live_a.conversation_id, track="b"), b.send)
    await hub.open("default", Start(16000), c.send)
    hub.publish(live_a.conversation_id, Error(ErrorCode.INTERNAL, "published"))
    await asyncio.sleep(0.05)
    assert a.types == ["ready", "error"] and b.types == ["ready", "error"] and c.types == ["ready"]


async def test_close_aborts_every_session(services: SessionServices) -> None:
    hub, _ = hub_with(services)
    live = await hub.open("default", Start(16000), None)
    await hub.close()
    assert live._writer is not None and live._writer.done()


async def test_outbox_events_bounds_what_waits_for_a_slow_client(services: SessionServices) -> None:
    """`limits.outbox_events`: that many undroppable events waiting cut a client off."""
    hub, _ = hub_with(services, outbox_events=3)
    never = asyncio.Event()
    overflowed: list[bool] = []

    async def stuck(event: ServerEvent) -> None:
        await never.wait()

    live = await hub.open("default", Start(16000), stuck, on_overflow=lambda: overflowed.append(True))
    await asyncio.sleep(0.01)  # the writer takes `ready` and blocks sending it
    for _ in range(3):
        live.outbox.put(Error(ErrorCode.INTERNAL, "x"))
    assert overflowed == []
    live.outbox.put(Error(ErrorCode.INTERNAL, "x"))
    live.outbox.put(Error(ErrorCode.INTERNAL, "x"))
    assert overflowed == [True] and not live.outbox.attached
    never.set()
