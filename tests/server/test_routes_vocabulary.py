"""A tenant's vocabulary: GET and PUT /v1/vocabulary?terms=A,B (scope admin), and what a session
opened afterwards gives the recogniser (its own terms first, then the tenant's, then the config's)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from server.auth import Principal, Scope
from server.config import LimitsConfig
from server.http import Router
from server.live import LiveSession, SessionServices
from server.routes import add_memory_routes
from server.sessions import SessionHub
from stream.events import ServerEvent, Start


async def call(router: Router, target: str, method: str = "GET") -> tuple[int, Any]:
    matched = router.match(target, method)
    assert matched is not None
    route, request = matched
    assert request.required_scope is Scope.ADMIN
    response = await route(replace(request, principal=Principal("default", frozenset({Scope.ADMIN}))))
    return response.status, json.loads(response.body)


def routes(services: SessionServices) -> Router:
    hub = SessionHub(LimitsConfig(), per_tenant_caps=True)
    hub.serve(services)
    router = Router()
    add_memory_routes(router, hub)
    return router


async def test_put_and_get_the_tenant_vocabulary(services: SessionServices) -> None:
    router = routes(services)
    assert await call(router, "/v1/vocabulary") == (200, {"vocabulary": []})
    status, body = await call(router, "/v1/vocabulary?terms=Zyphrex,%20Kessandra%20Vollmer,,Palabre", "PUT")
    assert (status, body) == (200, {"vocabulary": ["Zyphrex", "Kessandra Vollmer", "Palabre"]})
    assert await call(router, "/v1/vocabulary") == (200, body)
    for bad, says in ((",".join(f"t{i}" for i in range(101)), "at most 100"), ("x" * 101, "1-100 printable")):
        status, body = await call(router, f"/v1/vocabulary?terms={bad}", "PUT")
        assert status == 400 and says in body["error"]["message"], body
    status, body = await call(router, "/v1/vocabulary", "PUT")
    assert status == 400 and "terms=" in body["error"]["message"]
    assert (await call(router, "/v1/vocabulary"))[1]["vocabulary"][0] == "Zyphrex"  # a refusal loses nothing
    assert await call(router, "/v1/vocabulary?terms=", "PUT") == (200, {"vocabulary": []})
    assert not Principal("default", frozenset({Scope.STREAM, Scope.READ})).allows(Scope.ADMIN)


async def test_a_session_gives_its_terms_then_the_tenants_then_the_configs(services: SessionServices) -> None:
    await services.store.set_vocabulary("default", ["Kessandra Vollmer", "zyphrex"])
    services = replace(services, vocabulary=("Palabre",))
    sent: list[ServerEvent] = []

    async def send(event: ServerEvent) -> None:
        sent.append(event)

    live = LiveSession(services, "default", send=send)
    await live.open(Start(sample_rate=16000, language="en", vocabulary=("Zyphrex", "Lyon")))
    assert live.session is not None
    assert live.session.prompt == "Zyphrex, Lyon, Kessandra Vollmer, Palabre"
    await live.abort()


def test_the_config_vocabulary_is_checked() -> None:
    from server.settings import ConfigError, load_config

    assert load_config(None, {}, {"vocabulary": "Zyphrex,Lyon"}).vocabulary == ("Zyphrex", "Lyon")
    with pytest.raises(ConfigError, match=r"vocabulary.*at most 100 printable terms"):
        load_config(None, {}, {"vocabulary": ",".join(f"t{i}" for i in range(101))})
