"""Redaction in live sessions: `start.redact` and the tenant's kinds (`palabre tenant set --redact`)
applied to partials and finals before the store and the client see them (fake recogniser)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from server.cli import main as palabre
from server.config import LimitsConfig, ServerConfig
from server.live import LiveSession, SessionServices
from server.sessions import SessionHub
from server.store import Store
from stream.events import Final, Partial, ServerEvent, Start
from stream.interfaces import Entity
from tests.server.asr_fakes import hearing
from tests.stream.fakes import pcm16, silence, tone

SAID = "John Smith, call me at 06 12 34 56 78 or john dot smith at gmail dot com"


class Names:
    name = "names"

    def entities(self, text: str, language: str) -> list[Entity]:
        at = text.find("John Smith")
        return [Entity("John Smith", "person", at, at + 10)] if at >= 0 else []


@pytest.fixture
async def said(services: SessionServices) -> AsyncIterator[SessionServices]:
    """The conftest's services, with a recogniser that hears `SAID` and a names recogniser."""
    asr = hearing(SAID)
    asr.start()
    yield replace(services, asr=asr, ner=Names())
    await asr.close()


async def stream(services: SessionServices, start: Start, tenant: str = "default") -> list[ServerEvent]:
    hub = SessionHub(LimitsConfig(), per_tenant_caps=True)
    hub.serve(services)
    events: list[ServerEvent] = []

    async def send(event: ServerEvent) -> None:
        events.append(event)

    live: LiveSession = await hub.open(tenant, start, send)
    audio = pcm16(np.concatenate([silence(0.3), tone(2.0), silence(1.0)]))
    for at in range(0, len(audio), 3200):  # 100 ms at a time, so partials are asked and answered
        live.feed(audio[at : at + 3200])
        await asyncio.sleep(0.01)
    live.stop()
    await asyncio.wait_for(live.wait_closed(), 10)
    rows = await services.store.utterances(tenant, live.conversation_id)
    return [*events, *(Final(r.public_id, r.text, r.start, r.end, "", r.seq) for r in rows)]


def texts(events: list[ServerEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, Partial | Final)]


async def test_start_redact_reaches_neither_the_store_nor_the_client(said: SessionServices) -> None:
    events = await stream(said, Start(16000, language="en", redact=("phone", "email", "person")))
    shown = texts(events)
    assert any(isinstance(e, Partial) for e in events) and len(shown) >= 3  # partials, final, stored
    assert set(shown) == {"[PERSON], call me at [PHONE] or [EMAIL]"}


async def test_without_redact_the_text_is_kept(said: SessionServices) -> None:
    assert set(texts(await stream(said, Start(16000, language="en")))) == {SAID}


async def test_the_tenants_kinds_apply_on_top_of_the_sessions(said: SessionServices) -> None:
    await said.store.set_redaction("acme", ["phone"])
    assert await said.store.redaction("acme") == ("phone",)
    shown = texts(await stream(said, Start(16000, language="en", redact=("email",)), tenant="acme"))
    assert set(shown) == {"John Smith, call me at [PHONE] or [EMAIL]"}


def test_palabre_tenant_set_redact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = ServerConfig(data_dir=tmp_path).database_path
    with Store.open(database) as store:
        store.ensure_tenant("acme")
    data = ["--data-dir", str(tmp_path)]
    assert palabre(["tenant", "set", "acme", *data, "--redact", "phone, email"]) == 0
    assert "redacts phone, email" in capsys.readouterr().out
    with Store.open(database) as store:
        assert store.redaction("acme") == ("phone", "email") and store.retention() == {}
    with pytest.raises(SystemExit):
        palabre(["tenant", "set", "acme", *data, "--redact", "phone,ssn"])
    assert "unknown kind 'ssn'" in capsys.readouterr().err
    assert palabre(["tenant", "set", "acme", *data]) == 2
    assert palabre(["tenant", "set", "acme", *data, "--redact", ""]) == 0
    with Store.open(database) as store:
        assert store.redaction("acme") == ()
