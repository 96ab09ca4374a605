"""HTTP reads of conversation memory: conversations, their utterances and summary, search."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from server.audit import AuditAction, record
from server.auth import Principal
from server.http import HttpRequest, HttpResponse, Router, error_response, json_response
from server.sessions import SessionHub
from server.store import ConversationRow, UtteranceRow

ENTITY_LABELS = ("person", "organization", "place", "date", "amount", "other")


def conversation_json(row: ConversationRow) -> dict[str, Any]:
    return asdict(row)


def utterance_json(row: UtteranceRow) -> dict[str, Any]:
    """An utterance as the API shows it: `utterance_id` is the wire id."""
    out = asdict(row)
    out["utterance_id"] = out.pop("public_id")
    out.pop("tenant_id", None)
    return out


def principal_of(request: HttpRequest) -> Principal:
    assert request.principal is not None, "route called without authentication"
    return request.principal
def speakers_json(utterances: Iterable[UtteranceRow]) -> list[dict[str, Any]]:
    """Who spoke in a conversation, in order of first appearance: each `speaker` of its utterances
    (a diarization label, or a track's name) with its talk time and number of utterances.

    `name` is what the speaker is called (null until speakers can be named)."""
    speakers: dict[str, dict[str, Any]] = {}
    for row in utterances:
        if row.speaker is None:
            continue
        entry = speakers.setdefault(row.speaker, {"label": row.speaker, "name": None, "talk_time_s": 0.0,
                                                  "utterances": 0})
        entry["talk_time_s"] += max(0.0, row.end - row.start)
        entry["utterances"] += 1
    for entry in speakers.values():
        entry["talk_time_s"] = round(entry["talk_time_s"], 3)
    return list(speakers.values())


def add_memory_routes(router: Router, hub: SessionHub) -> None:
    """GET /v1/conversations, /v1/conversations/{id}, /v1/search (over the hub's services)."""

    async def conversations(request: HttpRequest) -> HttpResponse:
        services = hub.services
        if services is None:
            return error_response(503, "unavailable", "loading")
        try:
            limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
        except ValueError:
            return error_response(400, "bad_request", "limit must be an integer")
        rows = await services.store.list_conversations(request.tenant_id, limit)
        await record(services.store, principal_of(request), AuditAction.LIST, detail={"count": len(rows)})
        return json_response(200, {"conversations": [conversation_json(r) for r in rows]})

    async def conversation(request: HttpRequest) -> HttpResponse:
        services = hub.services
        if services is None:
            return error_response(503, "unavailable", "loading")
        if len(request.params) != 1:
            return error_response(404, "not_found", "no such resource")
        store, tenant = services.store, request.tenant_id
        row = await store.get_conversation(tenant, request.params[0])
        if row is None:
            return error_response(404, "conversation_not_found", "no such conversation")
        utterances = await store.utterances(tenant, row.id)
        summary = await store.latest_summary(tenant, row.id)
        await record(store, principal_of(request), AuditAction.READ, row.id)
        return json_response(
            200,
            {
                "conversation": conversation_json(row),
                "utterances": [utterance_json(u) for u in utterances],
                "speakers": speakers_json(utterances),
                "summary": asdict(summary) if summary is not None else None,
                "live": hub.conversation_live(row.id),
            },
        )

    async def search(request: HttpRequest) -> HttpResponse:
        services = hub.services
        knowledge = services.knowledge if services is not None else None
        if services is None or knowledge is None:
            return error_response(503, "unavailable", "this server keeps no conversation memory")
        query = request.query.get("q", "").strip()
        if not query or len(query) > 1000:
            return error_response(400, "bad_request", "q must be 1-1000 characters")
        try:
            k = min(max(int(request.query.get("k", "5")), 1), 100)
        except ValueError:
            return error_response(400, "bad_request", "k must be an integer")
        conversation_id = request.query.get("conversation") or None
        if conversation_id is not None:
            if await services.store.get_conversation(request.tenant_id, conversation_id) is None:
                return error_response(404, "conversation_not_found", "no such conversation")
        entity = request.query.get("entity") or None
        label = request.query.get("entity_label") or None
        if label is not None and label not in ENTITY_LABELS:
            return error_response(
                400, "bad_request", f"entity_label must be one of {', '.join(ENTITY_LABELS)}"
            )
        hits = await knowledge.search(
            request.tenant_id, query, conversation_id, k, entity=entity, entity_label=label
        )
        results = [{**utterance_json(h.utterance), "score": round(h.score, 4)} for h in hits]
        detail = {"k": k, "results": len(results), "entity_label": label}
        await record(services.store, principal_of(request), AuditAction.SEARCH, conversation_id, detail)
        return json_response(200, {"query": query, "results": results})

    router.add("/v1/conversations", conversations)
    router.add("/v1/conversations/", conversation)
    router.add("/v1/search", search)
