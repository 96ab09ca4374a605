"""HTTP reads of conversation memory: conversations, their utterances and summary, search."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from server.audit import AuditAction, record
from server.auth import Principal, Scope
from server.http import HttpRequest, HttpResponse, Router, error_response, json_response
from server.sessions import SessionHub
from server.speakers import SpeakerNames, speaker_name_error
from server.store import ConversationNotFound, ConversationRow, UtteranceRow

ENTITY_LABELS = ("person", "organization", "place", "date", "amount", "other")


def conversation_json(row: ConversationRow) -> dict[str, Any]:
    return asdict(row)


def utterance_json(row: UtteranceRow, names: SpeakerNames | None = None) -> dict[str, Any]:
    """An utterance as the API shows it: `utterance_id` is the wire id; `speaker_name` is what its
    speaker was named (null when not named)."""
    out = asdict(row)
    out["utterance_id"] = out.pop("public_id")
    out.pop("tenant_id", None)
    out["speaker_name"] = names.name(row) if names is not None else None
    return out


def principal_of(request: HttpRequest) -> Principal:
    assert request.principal is not None, "route called without authentication"
    return request.principal


def speakers_json(
    utterances: Iterable[UtteranceRow], names: SpeakerNames | None = None
) -> list[dict[str, Any]]:
    """Who spoke in a conversation, in order of first appearance: each `speaker` of its utterances
    (a diarization label, or a track's name) with its talk time and number of utterances.

    `name` is what the speaker was named (`PUT /v1/conversations/{id}/speakers/{label}`), or null."""
    speakers: dict[str, dict[str, Any]] = {}
    for row in utterances:
        if row.speaker is None:
            continue
        name = names.name(row) if names is not None else None
        entry = speakers.setdefault(row.speaker, {"label": row.speaker, "name": name, "talk_time_s": 0.0,
                                                  "utterances": 0})
        entry["talk_time_s"] += max(0.0, row.end - row.start)
        entry["utterances"] += 1
    for entry in speakers.values():
        entry["talk_time_s"] = round(entry["talk_time_s"], 3)
    return list(speakers.values())


def add_memory_routes(router: Router, hub: SessionHub) -> None:
    """GET /v1/conversations, /v1/conversations/{id}, /v1/search, and naming speakers (over the hub's
    services)."""

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
        names = SpeakerNames.of_conversation(row.id, await store.speaker_names(tenant, row.id))
        summary = await store.latest_summary(tenant, row.id)
        await record(store, principal_of(request), AuditAction.READ, row.id)
        return json_response(
            200,
            {
                "conversation": conversation_json(row),
                "utterances": [utterance_json(u, names) for u in utterances],
                "speakers": speakers_json(utterances, names),
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
        speaker = request.query.get("speaker") or None
        hits = await knowledge.indexes.search(
            request.tenant_id, query, conversation_id, k, entity=entity, entity_label=label, speaker=speaker
        )
        names = await SpeakerNames.of(services.store, request.tenant_id, [h.utterance for h in hits])
        results = [{**utterance_json(h.utterance, names), "score": round(h.score, 4)} for h in hits]
        detail = {"k": k, "results": len(results), "entity_label": label}
        await record(services.store, principal_of(request), AuditAction.SEARCH, conversation_id, detail)
        return json_response(200, {"query": query, "results": results})

    router.add("/v1/conversations", conversations)
    router.add("/v1/conversations/", conversation)
    router.add("/v1/search", search)
    add_speaker_routes(router, hub)
    add_vocabulary_routes(router, hub)


def add_speaker_routes(router: Router, hub: SessionHub) -> None:
    """PUT /v1/conversations/{id}/speakers/{label}?name=… (scope `stream`; `read` is not enough)."""

    async def name_speaker(request: HttpRequest) -> HttpResponse:
        services = hub.services
        if services is None:
            return error_response(503, "unavailable", "loading")
        conversation_id, label = request.params
        name = request.query.get("name", "")
        problem = speaker_name_error(name)
        if problem is not None:
            return error_response(400, "bad_request", problem)
        name = name.strip()
        try:
            named = await services.store.name_speaker(request.tenant_id, conversation_id, label, name)
        except ConversationNotFound:
            return error_response(404, "conversation_not_found", "no such conversation")
        if not named:
            return error_response(404, "speaker_not_found", f"no speaker {label!r} in this conversation")
        services.conversations.named(conversation_id, label, name)
        return json_response(200, {"speaker": {"label": label, "name": name}})

    router.add("/v1/conversations/{id}/speakers/{label}", name_speaker, scope=Scope.STREAM, method="PUT")


def add_vocabulary_routes(router: Router, hub: SessionHub) -> None:
    """GET and PUT /v1/vocabulary?terms=A,B (scope `admin`): the tenant's vocabulary, the names and
    terms every session of the tenant gives the recogniser after its own `start.vocabulary`.

    The terms travel in the query string, comma-separated (the server reads no request bodies);
    `terms=` (empty) clears them. A session reads its tenant's vocabulary when it opens."""

    async def get_vocabulary(request: HttpRequest) -> HttpResponse:
        services = hub.services
        if services is None:
            return error_response(503, "unavailable", "loading")
        return json_response(200, {"vocabulary": list(await services.store.vocabulary(request.tenant_id))})

    async def set_vocabulary(request: HttpRequest) -> HttpResponse:
        services = hub.services
        if services is None:
            return error_response(503, "unavailable", "loading")
        if "terms" not in request.query:
            return error_response(400, "bad_request", "give the terms: PUT /v1/vocabulary?terms=A,B")
        terms = [term for term in request.query["terms"].split(",") if term.strip()]
        try:
            stored = await services.store.set_vocabulary(request.tenant_id, terms)
        except ValueError as error:
            return error_response(400, "bad_request", str(error))
        return json_response(200, {"vocabulary": list(stored)})

    router.add("/v1/vocabulary", get_vocabulary, scope=Scope.ADMIN)
    router.add("/v1/vocabulary", set_vocabulary, scope=Scope.ADMIN, method="PUT")
