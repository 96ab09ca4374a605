"""The data lifecycle of conversations: erasing one, with everything derived from it; the audit log.

Routes: `DELETE /v1/conversations/{id}` (scope `delete`), `GET /v1/audit` (scope `admin`), and the
exports (server/export.py).

`erase_conversation` is what `DELETE /v1/conversations/{id}` and the retention job run inside the
server: its live sessions are closed first (`conversation_erased`), so nothing more of it is
stored; the finals still being indexed are waited for; then the store deletes the conversation,
its utterances, summaries and answers in one transaction and logs the utterances' row ids, which
the tenant's vector index replays to drop their vectors (server/memory/index.py).

`palabre erase` and `palabre purge` work on the store directly (server/cli.py): a server running
beside them notices at its next search (the erasure log) and, for a session still streaming into
an erased conversation, at its next final (the store refuses it: `conversation_erased`).

`RetentionJob` enforces each tenant's `retention_days` (`palabre tenant set T --retention-days N`,
else the configuration's `retention_days` entry for it):
at start and then every `every_s`, it erases the conversations whose last utterance is older,
one conversation per store transaction with a yield between, so live sessions keep committing
their finals during a large purge; a conversation streamed into now is left for the next pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from server.audit import AuditAction, record
from server.auth import Scope
from server.export import add_export_route
from server.http import HttpRequest, HttpResponse, Router, error_response, json_response
from server.routes import principal_of
from server.sessions import SessionHub
from server.store import AuditRow, ErasedConversation

__all__ = ["RetentionJob", "add_lifecycle_routes", "erase_conversation"]

log = logging.getLogger(__name__)

DAY_S = 86_400.0


async def erase_conversation(
    hub: SessionHub, tenant_id: str, conversation_id: str
) -> ErasedConversation | None:
    """Erase the tenant's conversation: close its live sessions, delete it from the store, drop its
    vectors from the index. None when the tenant has no such conversation (erased already)."""
    services = hub.services
    assert services is not None, "erase before the server is ready"
    store = services.store
    if await store.get_conversation(tenant_id, conversation_id) is None:
        return None
    await hub.erase_conversation(tenant_id, conversation_id)
    knowledge = services.knowledge
    if knowledge is not None:
        await knowledge.indexes.flush(conversation_id)
    erased = await store.erase_conversation(tenant_id, conversation_id)
    if knowledge is not None:
        await knowledge.indexes.catch_up_erasures(tenant_id)
    return erased


def audit_json(row: AuditRow) -> dict[str, Any]:
    """An audit row as the API shows it (the tenant is the caller's)."""
    out = asdict(row)
    out.pop("tenant_id")
    return out


def add_lifecycle_routes(router: Router, hub: SessionHub) -> None:
    """DELETE /v1/conversations/{id}, GET /v1/audit, GET /v1/conversations/{id}/transcript (over
    the hub's services)."""

    async def erase(request: HttpRequest) -> HttpResponse:
        services = hub.services
        if services is None:
            return error_response(503, "unavailable", "loading")
        if len(request.params) != 1:
            return error_response(404, "not_found", "no such resource")
        erased = await erase_conversation(hub, request.tenant_id, request.params[0])
        if erased is None:
            return error_response(404, "conversation_not_found", "no such conversation")
        counts = {"utterances": erased.utterances, "summaries": erased.summaries, "answers": erased.answers}
        principal = principal_of(request)
        await record(services.store, principal, AuditAction.ERASE, erased.conversation_id, counts)
        return json_response(200, {"erased": {"conversation_id": erased.conversation_id, **counts}})

    async def audit(request: HttpRequest) -> HttpResponse:
        services = hub.services
        if services is None:
            return error_response(503, "unavailable", "loading")
        try:
            limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
            before = request.query.get("before")
            before_id = int(before) if before else None
        except ValueError:
            return error_response(400, "bad_request", "limit and before must be integers")
        rows = await services.store.audit(request.tenant_id, limit, before_id)
        return json_response(200, {"audit": [audit_json(r) for r in rows]})

    router.add("/v1/conversations/", erase, scope=Scope.DELETE, method="DELETE")
    router.add("/v1/audit", audit, scope=Scope.ADMIN)
    add_export_route(router, hub)


class RetentionJob:
    """Erases, at start and every `every_s` seconds, the conversations past their tenant's
    `retention_days`, auditing each as `purge` by `retention`.

    A tenant's days are its own in the store (`palabre tenant set T --retention-days N`) when it
    has some, else `configured` (the configuration's `retention_days`): the store takes
    precedence, so a tenant can be given other days than the file's without a restart; clearing
    its own (`--retention-days 0`) brings the file's back.
    """

    def __init__(
        self,
        hub: SessionHub,
        *,
        configured: Mapping[str, int] | None = None,
        every_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hub = hub
        self.configured = dict(configured or {})
        """Tenant → retention days from the configuration file."""
        self.every_s = every_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="retention")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                purged = await self.run_once()
                if purged:
                    log.info("retention: %d conversations erased", purged)
            except Exception:
                log.exception("retention pass failed (retried at the next one)")
            await asyncio.sleep(self.every_s)

    async def run_once(self, batch: int = 100) -> int:
        """One pass over every tenant with a retention; returns how many conversations it erased."""
        services = self.hub.services
        if services is None:
            return 0
        store, erased_count = services.store, 0
        for tenant_id, days in {**self.configured, **await store.retention()}.items():
            cutoff = self._clock() - days * DAY_S
            skipped: set[str] = set()
            while True:
                page = await store.conversations_idle_since(cutoff, tenant_id, limit=batch + len(skipped))
                todo = [cid for _, cid in page if cid not in skipped]
                if not todo:
                    break
                for conversation_id in todo:
                    if self.hub.conversation_live(conversation_id):
                        skipped.add(conversation_id)
                        continue
                    erased = await erase_conversation(self.hub, tenant_id, conversation_id)
                    if erased is not None:
                        counts = {"utterances": erased.utterances, "retention_days": days}
                        action = AuditAction.PURGE.value
                        await store.add_audit(tenant_id, "retention", action, conversation_id, counts)
                        erased_count += 1
                    await asyncio.sleep(0)  # let live sessions' writes through
        return erased_count
