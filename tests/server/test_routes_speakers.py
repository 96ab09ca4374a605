"""The `speakers` list of GET /v1/conversations/{id}: labels by first appearance, talk time, counts."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import numpy as np

from server.auth import Principal, Scope
from server.config import LimitsConfig
from server.http import Router
from server.live import SessionServices
from server.routes import add_memory_routes, speakers_json
from server.sessions import SessionHub
from server.store import UtteranceRow
from stream.events import Final, ServerEvent, Start, event_to_dict
from tests.stream.fakes import pcm16, silence, tone


def row(seq: int, speaker: str | None, start: float, end: float) -> UtteranceRow:
    return UtteranceRow(id=seq + 1, public_id=f"c:{seq}", conversation_id="c", tenant_id="t", seq=seq,
                        text="x", start=start, end=end, language="en", speaker=speaker, track=None,
                        entities=None, created_at=0.0)


def test_speakers_in_order_of_first_appearance_with_talk_time() -> None:
    rows = [row(0, "S2", 0.0, 1.5), row(1, "S1", 2.0, 3.0), row(2, "S2", 3.5, 4.25), row(3, None, 5.0, 6.0)]
    assert speakers_json(rows) == [
        {"label": "S2", "name": None, "talk_time_s": 2.25, "utterances": 2},
        {"label": "S1", "name": None, "talk_time_s": 1.0, "utterances": 1},
    ]


def test_no_speakers() -> None:
    assert speakers_json([row(0, None, 0.0, 1.0)]) == []


# --- naming speakers: PUT /v1/conversations/{id}/speakers/{label}?name=… ---------------------


async def call(router: Router, target: str, method: str = "GET") -> tuple[int, Any]:
    matched = router.match(target, method)
    assert matched is not None
    route, request = matched
    who = Principal("default", frozenset(Scope))
    assert request.required_scope is None or who.allows(request.required_scope)
    response = await route(replace(request, principal=who))
    return response.status, json.loads(response.body)


async def test_naming_a_speaker_shows_in_the_conversation(services: SessionServices) -> None:
    hub = SessionHub(LimitsConfig(), per_tenant_caps=True)
    hub.serve(services)
    router = Router()
    add_memory_routes(router, hub)
    store = services.store
    await store.open_conversation("default", "c", "en")
    await store.add_utterance("default", "c", 0, "the budget", 0.0, 2.0, "en", speaker="S1")
    await store.add_utterance("default", "c", 1, "no", 2.0, 3.0, "en", speaker="S2")
    assert (await call(router, "/v1/conversations/c/speakers/S1?name=%20Alice%20", "PUT"))[0] == 200
    status, body = await call(router, "/v1/conversations/c")
    assert status == 200
    assert [(s["label"], s["name"]) for s in body["speakers"]] == [("S1", "Alice"), ("S2", None)]
    assert [u["speaker_name"] for u in body["utterances"]] == ["Alice", None]
    assert (await call(router, "/v1/conversations/c/speakers/S9?name=Bob", "PUT"))[0] == 404
    assert (await call(router, "/v1/conversations/nope/speakers/S1?name=Bob", "PUT"))[0] == 404
    for bad in ("", "%20%20", "x" * 65, "a%0Ab"):
        status, body = await call(router, f"/v1/conversations/c/speakers/S2?name={bad}", "PUT")
        assert status == 400, bad
    assert (await store.speaker_names("default", "c")) == {"S1": "Alice"}
    matched = router.match("/v1/conversations/c/speakers/S1", "PUT")
    assert matched is not None and matched[1].required_scope is Scope.STREAM  # admin implies it
    assert not Principal("default", frozenset({Scope.READ})).allows(Scope.STREAM)  # read is not enough


async def test_finals_after_a_naming_carry_the_speaker_name(services: SessionServices) -> None:
    hub = SessionHub(LimitsConfig(), per_tenant_caps=True)
    hub.serve(services)
    router = Router()
    add_memory_routes(router, hub)
    sent: list[ServerEvent] = []

    async def send(event: ServerEvent) -> None:
        sent.append(event)

    async def final_count(n: int) -> None:
        for _ in range(200):
            if sum(isinstance(e, Final) for e in sent) >= n:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"no final {n}")

    live = await hub.open("default", Start(16000, conversation_id="m", track="room"), send)
    live.feed(pcm16(np.concatenate([tone(1.0), silence(1.0)])))
    await final_count(1)
    assert (await call(router, "/v1/conversations/m/speakers/room?name=Bob", "PUT"))[0] == 200
    live.feed(pcm16(np.concatenate([tone(1.0), silence(1.0)])))
    live.stop()
    await asyncio.wait_for(live.wait_closed(), 10)
    finals = [e for e in sent if isinstance(e, Final)]
    assert [(f.speaker, f.speaker_name) for f in finals] == [("room", None), ("room", "Bob")]
    assert "speaker_name" not in event_to_dict(finals[0])  # on the wire once named only
    assert event_to_dict(finals[1])["speaker_name"] == "Bob"
    resuming = Start(16000, conversation_id="m", track="room", resume_after=-1)
    resumed = await hub.open("default", resuming, None)
    assert [f.speaker_name for f in resumed.replayed] == ["Bob", "Bob"]  # read back from the store
    resumed.stop()
    await asyncio.wait_for(resumed.wait_closed(), 10)
