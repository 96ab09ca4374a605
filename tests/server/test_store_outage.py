"""Live sessions while the store is lost: finals held and retried, sent once committed, in order;
the session told (`unavailable`) and closed past the hold's bound; a start refused meanwhile.

Real `LiveSession`s and the real SQLite store, behind a fake that loses the database on demand.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from server.config import LimitsConfig
from server.final_hold import HoldLimits
from server.live import LiveSession, SessionServices
from server.sessions import SessionHub
from server.store import StoreUnavailable
from stream.errors import CloseCode, ErrorCode, ProtocolError
from stream.events import Final, ServerEvent, Start
from tests.stream.fakes import pcm16, silence, tone

UTTERANCES = 3


class LosableStore:
    """A real store whose session calls raise `StoreUnavailable` while `lost` (or, `hangs`,
    never answer), as the PostgreSQL store does while its server is down."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.lost = False
        self.hangs = False
        self.attempts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def add_utterance(self, *args: Any, **kwargs: Any) -> Any:
        self.attempts += 1
        if self.hangs:
            await asyncio.Event().wait()
        if self.lost:
            raise StoreUnavailable("cannot use the PostgreSQL store: connection refused")
        return await self._store.add_utterance(*args, **kwargs)

    async def open_conversation(self, *args: Any, **kwargs: Any) -> Any:
        if self.lost:
            raise StoreUnavailable("cannot use the PostgreSQL store: connection refused")
        return await self._store.open_conversation(*args, **kwargs)


class Client:
    def __init__(self) -> None:
        self.events: list[ServerEvent] = []
        self.evicted: list[ErrorCode] = []

    async def send(self, event: ServerEvent) -> None:
        self.events.append(event)

    @property
    def finals(self) -> list[Final]:
        return [e for e in self.events if isinstance(e, Final)]


@pytest.fixture
def losable(services: SessionServices) -> tuple[SessionServices, LosableStore]:
    store = LosableStore(services.store)
    return replace(services, store=store), store  # type: ignore[arg-type]


def speech(utterances: int) -> bytes:
    parts = [silence(0.3)]
    for _ in range(utterances):
        parts += [tone(0.8), silence(0.8)]
    return pcm16(np.concatenate(parts))


async def until(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def open_session(services: SessionServices, client: Client, **limits: Any) -> LiveSession:
    hub = SessionHub(LimitsConfig(**limits), per_tenant_caps=True)
    hub.serve(services)
    return await hub.open(
        "default", Start(16000, language="en"), client.send, on_evicted=client.evicted.append
    )


async def stored_seqs(services: SessionServices, live: LiveSession) -> list[int]:
    return [u.seq for u in await services.store.utterances("default", live.conversation_id)]


async def test_held_finals_are_sent_once_committed_in_order(
    losable: tuple[SessionServices, LosableStore],
) -> None:
    services, store = losable
    client = Client()
    live = await open_session(services, client, store_hold_s=30.0)
    store.lost = True
    live.feed(speech(UTTERANCES))
    live.stop()
    await until(lambda: store.attempts >= 3)  # retried while lost
    assert client.finals == [] and live.hold.holding
    store.lost = False
    await asyncio.wait_for(live.wait_closed(), 10)
    assert [f.seq for f in client.finals] == list(range(UTTERANCES))
    assert await stored_seqs(services, live) == list(range(UTTERANCES))
    assert client.evicted == [] and client.events[-1].type == "closed"
    assert not live.hold.holding


async def test_past_the_bound_the_session_is_told_and_its_finals_still_stored(
    losable: tuple[SessionServices, LosableStore],
) -> None:
    services, store = losable
    client = Client()
    live = await open_session(services, client, store_hold_s=0.3)
    store.lost = True
    live.feed(speech(UTTERANCES))
    await until(lambda: client.evicted != [])
    assert client.evicted == [ErrorCode.UNAVAILABLE]
    assert not live.outbox.attached and live.session is not None and live.session.stopped
    assert client.finals == []
    store.lost = False  # the database is back: the held finals are stored, never sent
    await asyncio.wait_for(live.wait_closed(), 10)
    assert await stored_seqs(services, live) == list(range(UTTERANCES))
    assert client.finals == []


async def test_a_commit_that_hangs_still_tells_the_session_at_the_bound(
    losable: tuple[SessionServices, LosableStore],
) -> None:
    """No attempt fails (each would take `attempt_s`, 10 s, to time out): the session is still
    told at the hold's bound (0.3 s), since an attempt may not run past it."""
    services, store = losable
    client = Client()
    live = await open_session(services, client, store_hold_s=0.3)
    store.hangs = True
    live.feed(speech(1))
    live.stop()
    await until(lambda: client.evicted != [], timeout=3.0)
    assert client.evicted == [ErrorCode.UNAVAILABLE] and client.finals == []
    store.hangs = False  # the hanging attempt times out after attempt_s; the next one commits
    await asyncio.wait_for(live.wait_closed(), 15)
    assert await stored_seqs(services, live) == [0]


async def test_the_bound_in_finals(losable: tuple[SessionServices, LosableStore]) -> None:
    services, store = losable
    client = Client()
    live = await open_session(services, client, store_hold_s=60.0, store_hold_finals=1)
    store.lost = True
    live.feed(speech(UTTERANCES))
    await until(lambda: client.evicted != [])
    assert client.evicted == [ErrorCode.UNAVAILABLE]
    store.lost = False
    await asyncio.wait_for(live.wait_closed(), 10)
    assert await stored_seqs(services, live) == list(range(UTTERANCES))


async def test_a_commit_that_never_answers_counts_as_failed(
    losable: tuple[SessionServices, LosableStore],
) -> None:
    services, store = losable
    client = Client()
    live = LiveSession(
        services, "default", send=client.send, hold=HoldLimits(attempt_s=0.1, first_retry_s=0.01)
    )
    client.events.append(await live.open(Start(16000, language="en")))
    store.hangs = True
    live.feed(speech(1))
    live.stop()
    await until(lambda: store.attempts >= 2)
    assert live.hold.holding and client.finals == []
    store.hangs = False
    await asyncio.wait_for(live.wait_closed(), 10)
    assert [f.seq for f in client.finals] == [0]


async def test_a_start_while_the_store_is_lost_is_refused_unavailable(
    losable: tuple[SessionServices, LosableStore],
) -> None:
    services, store = losable
    store.lost = True
    hub = SessionHub(LimitsConfig(), per_tenant_caps=True)
    hub.serve(services)
    with pytest.raises(ProtocolError) as refused:
        await hub.open("default", Start(16000, language="en", conversation_id="call-1"), None)
    assert refused.value.code is ErrorCode.UNAVAILABLE
    assert refused.value.close is CloseCode.TRY_AGAIN_LATER
    assert len(hub) == 0 and "call-1" not in services.conversations
