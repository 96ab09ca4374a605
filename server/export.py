"""`GET /v1/conversations/{id}/transcript?format=vtt|srt|txt|md|json` (scope `read`).

The store's rows become a `stream.transcript_formats.Transcript`, rendered by the pure formatters
there; `json` is the conversation as `GET /v1/conversations/{id}` shows it (every field). Every
export is audited (`export`, with its format).
"""

from __future__ import annotations

import json
from dataclasses import asdict

from server.audit import AuditAction, record
from server.http import HttpRequest, HttpResponse, Router, error_response
from server.routes import conversation_json, principal_of, utterance_json
from server.sessions import SessionHub
from server.store import ConversationRow, SummaryRow, UtteranceRow
from stream.events import Word
from stream.transcript_formats import FORMATS, MEDIA_TYPES, Transcript, TranscriptUtterance, render

__all__ = ["add_export_route", "transcript_of"]

EXPORT_FORMATS = (*FORMATS, "json")


def transcript_of(
    conversation: ConversationRow, utterances: list[UtteranceRow], summary: SummaryRow | None
) -> Transcript:
    """What the formatters need of a stored conversation."""
    return Transcript(
        conversation_id=conversation.id,
        title=conversation.title,
        language=conversation.language,
        created_at=conversation.created_at,
        utterances=[
            TranscriptUtterance(u.public_id, u.seq, u.text, u.start, u.end, u.speaker, u.track,
                                None if u.words is None else [Word(**w) for w in u.words])
            for u in utterances
        ],
        summary=[str(item.get("text", "")) for item in summary.items] if summary is not None else (),
        summary_method=summary.method if summary is not None else None,
    )


def add_export_route(router: Router, hub: SessionHub) -> None:
    """GET /v1/conversations/{id}/transcript."""

    async def export(request: HttpRequest) -> HttpResponse:
        services = hub.services
        if services is None:
            return error_response(503, "unavailable", "loading")
        fmt = request.query.get("format", "vtt")
        if fmt not in EXPORT_FORMATS:
            return error_response(400, "bad_request", f"format must be one of {', '.join(EXPORT_FORMATS)}")
        store, tenant = services.store, request.tenant_id
        row = await store.get_conversation(tenant, request.params[0])
        if row is None:
            return error_response(404, "conversation_not_found", "no such conversation")
        utterances = await store.utterances(tenant, row.id)
        summary = await store.latest_summary(tenant, row.id)
        if fmt == "json":
            payload = {
                "conversation": conversation_json(row),
                "utterances": [utterance_json(u) for u in utterances],
                "summary": asdict(summary) if summary is not None else None,
            }
            body = json.dumps(payload, ensure_ascii=False)
        else:
            body = render(transcript_of(row, utterances, summary), fmt)  # type: ignore[arg-type]
        detail = {"format": fmt, "utterances": len(utterances)}
        await record(store, principal_of(request), AuditAction.EXPORT, row.id, detail)
        return HttpResponse(200, body.encode(), MEDIA_TYPES[fmt])

    router.add("/v1/conversations/{id}/transcript", export)
