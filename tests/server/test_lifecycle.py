"""server/lifecycle.py: erasing through the hub and the retention job, over a real store."""

from __future__ import annotations

import time

from server.config import LimitsConfig
from server.lifecycle import DAY_S, RetentionJob, erase_conversation
from server.live import SessionServices
from server.sessions import SessionHub
from stream.errors import ErrorCode
from stream.events import Start


async def test_retention_erases_what_is_older_than_each_tenants_days_but_not_live_sessions(
    services: SessionServices,
) -> None:
    hub = SessionHub(LimitsConfig(), per_tenant_caps=True)
    hub.serve(services)
    store = services.store
    for tenant, cid in (("default", "d1"), ("default", "d2"), ("keep", "k1")):
        await store.open_conversation(tenant, cid, "en")
        await store.add_utterance(tenant, cid, 0, "words", 0, 1, "en")
    evicted: list[ErrorCode] = []
    live = await hub.open(
        "default", Start(16000, conversation_id="d2", language="en"), None, on_evicted=evicted.append
    )
    await store.set_retention("default", 30)
    job = RetentionJob(hub, clock=lambda: time.time() + 31 * DAY_S)
    assert await job.run_once() == 1  # d1; d2 is streamed into now; "keep" has no retention
    assert [c.id for c in await store.list_conversations("default")] == ["d2"]
    assert await store.get_conversation("keep", "k1") is not None
    assert evicted == [] and not live.erased
    [row] = await store.audit("default")
    assert (row.actor, row.action, row.conversation_id) == ("retention", "purge", "d1")
    assert await RetentionJob(hub, clock=time.time).run_once() == 0  # not old enough
    assert await erase_conversation(hub, "default", "d2") is not None
    assert evicted == [ErrorCode.CONVERSATION_ERASED]


async def test_the_configured_retention_applies_unless_the_tenant_has_its_own_in_the_store(
    services: SessionServices,
) -> None:
    hub = SessionHub(LimitsConfig(), per_tenant_caps=True)
    hub.serve(services)
    store = services.store
    for tenant in ("filed", "own", "none"):
        await store.open_conversation(tenant, f"{tenant}-1", "en")
        await store.add_utterance(tenant, f"{tenant}-1", 0, "words", 0, 1, "en")
    await store.set_retention("own", 60)  # `palabre tenant set own --retention-days 60`
    job = RetentionJob(hub, configured={"filed": 30, "own": 30}, clock=lambda: time.time() + 31 * DAY_S)
    assert await job.run_once() == 1
    assert await store.get_conversation("filed", "filed-1") is None  # the file's 30 days
    assert await store.get_conversation("own", "own-1") is not None  # its own 60 days win
    assert await store.get_conversation("none", "none-1") is not None
    [row] = await store.audit("filed")
    assert (row.action, row.detail) == ("purge", {"utterances": 1, "retention_days": 30})
    await store.set_retention("own", None)  # cleared: the file's days apply again
    assert await job.run_once() == 1 and await store.get_conversation("own", "own-1") is None
