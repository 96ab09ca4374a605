"""`GET /v1/conversations/{id}/transcript?format=vtt|srt|txt|md|json` (scope `read`).

The response is streamed: the store's rows are read a page at a time (`EXPORT_PAGE`), made into
`stream.transcript_formats.TranscriptUtterance`s, rendered by the pure writers there and written
as they come (`server.http.send_streamed`, chunked transfer encoding), so an export's memory does
not grow with the conversation. The Markdown minutes read the pages twice: once for the header's
figures (duration, talk time), once for the transcript. `json` is the conversation as
`GET /v1/conversations/{id}` shows it (every field, utterances in seq order). Every export is
audited (`export`, with its format and the number of utterances) before its first byte is sent.

With a generative model configured (`llm`), the minutes also list the decisions and action items
the model finds in the conversation's first `MINUTES_MAX_CHARS` characters, each kept only when
grounded in the utterance it cites (`stream.minutes`); without a model the section is left out.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, replace

from server.audit import AuditAction, record
from server.http import HttpRequest, HttpResponse, Router, error_response
from server.llm_queue import LlmQueue, Priority
from server.routes import conversation_json, principal_of, utterance_json
from server.sessions import SessionHub
from server.store import ConversationRow, SummaryRow, UtteranceRow
from server.store_interface import ConversationStore
from stream.events import Word
from stream.minutes import MINUTES_MAX_CHARS, MinutesLine, MinutesNotes, build_minutes_request, minutes_items
from stream.transcript_formats import (
    FORMATS,
    MEDIA_TYPES,
    MarkdownWriter,
    MinutesItem,
    SrtWriter,
    TalkTime,
    TextWriter,
    Transcript,
    TranscriptFormat,
    TranscriptUtterance,
    TranscriptWriter,
    WebVttWriter,
)

__all__ = ["EXPORT_PAGE", "add_export_route", "export_chunks", "transcript_of"]

EXPORT_FORMATS = (*FORMATS, "json")

EXPORT_PAGE = 500
"""Utterances read from the store, rendered and written at a time."""

MINUTES_TIMEOUT_S = 30.0
"""The longest the minutes wait for the model's decisions and action items (an export must be
sent within `server.http.OPEN_TIMEOUT_S`); past it the section is left out."""

log = logging.getLogger(__name__)


def transcript_utterance(u: UtteranceRow) -> TranscriptUtterance:
    """What the formatters need of a stored utterance."""
    words = None if u.words is None else [Word(**w) for w in u.words]
    return TranscriptUtterance(u.public_id, u.seq, u.text, u.start, u.end, u.speaker, u.track, words)


def transcript_of(
    conversation: ConversationRow, utterances: Sequence[UtteranceRow], summary: SummaryRow | None
) -> Transcript:
    """What the formatters need of a stored conversation (its utterances may be left empty and
    given page by page to a `TranscriptWriter`)."""
    return Transcript(
        conversation_id=conversation.id,
        title=conversation.title,
        language=conversation.language,
        created_at=conversation.created_at,
        utterances=[transcript_utterance(u) for u in utterances],
        summary=[str(item.get("text", "")) for item in summary.items] if summary is not None else (),
        summary_method=summary.method if summary is not None else None,
    )


async def _pages_in_time_order(
    store: ConversationStore, tenant: str, conversation_id: str, page_size: int
) -> AsyncIterator[list[TranscriptUtterance]]:
    after: tuple[float, int] | None = None
    while page := await store.utterances_in_time_order(tenant, conversation_id, after, page_size):
        yield [transcript_utterance(u) for u in page]
        after = (page[-1].start, page[-1].seq)


async def _writer(
    store: ConversationStore,
    tenant: str,
    transcript: Transcript,
    fmt: TranscriptFormat,
    page_size: int,
    llm: LlmQueue | None,
) -> TranscriptWriter:
    if fmt == "vtt":
        return WebVttWriter()
    if fmt == "srt":
        return SrtWriter()
    if fmt == "txt":
        return TextWriter()
    talk, lines, chars = TalkTime(), [], 0
    async for page in _pages_in_time_order(store, tenant, transcript.conversation_id, page_size):
        talk.add(page)
        for u in page:
            if chars <= MINUTES_MAX_CHARS:
                lines.append(MinutesLine(u.utterance_id, u.who, u.text))
                chars += len(u.text) + 16
    notes = await _minutes_notes(llm, lines) if llm is not None and lines else None
    if notes is None:
        return MarkdownWriter(transcript, talk)
    decisions = [MinutesItem(text, uid) for text, uid in notes.decisions]
    actions = [MinutesItem(text, uid) for text, uid in notes.actions]
    return MarkdownWriter(transcript, talk, decisions, actions)


async def _minutes_notes(llm: LlmQueue, lines: list[MinutesLine]) -> MinutesNotes | None:
    """The grounded decisions and action items the model finds in `lines` (None: no answer in
    `MINUTES_TIMEOUT_S`). A chat model is given the same few-shot text as one user message."""
    request = build_minutes_request(lines)
    if llm.engine.chat:
        request = replace(request, prompt=None, messages=(("user", request.prompt or ""),))

    async def generate() -> str:
        return "".join([piece async for piece in llm.generate(request, Priority.SUMMARY)])

    try:
        continuation = await asyncio.wait_for(generate(), MINUTES_TIMEOUT_S)
    except TimeoutError:
        log.warning("minutes: the model gave no decisions in %.0f s; section left out", MINUTES_TIMEOUT_S)
        return None
    return minutes_items(continuation, lines)


async def export_chunks(
    store: ConversationStore,
    row: ConversationRow,
    summary: SummaryRow | None,
    fmt: str,
    page_size: int = EXPORT_PAGE,
    llm: LlmQueue | None = None,
) -> AsyncIterator[bytes]:
    """The export of a conversation in `fmt` (one of `EXPORT_FORMATS`), a page at a time; the
    Markdown minutes have decisions and action items when `llm` is given."""
    tenant = row.tenant_id
    if fmt == "json":
        head = {"conversation": conversation_json(row)}
        yield json.dumps(head, ensure_ascii=False)[:-1].encode() + b', "utterances": ['
        after_seq, sep = -1, b""
        while rows := await store.utterances(tenant, row.id, after_seq, page_size):
            items = (json.dumps(utterance_json(u), ensure_ascii=False) for u in rows)
            yield sep + ", ".join(items).encode()
            after_seq, sep = rows[-1].seq, b", "
        tail = json.dumps(asdict(summary) if summary is not None else None, ensure_ascii=False)
        yield b'], "summary": ' + tail.encode() + b"}"
        return
    transcript = transcript_of(row, (), summary)
    writer = await _writer(store, tenant, transcript, fmt, page_size, llm)  # type: ignore[arg-type]
    yield writer.head().encode()
    async for page in _pages_in_time_order(store, tenant, row.id, page_size):
        yield writer.page(page).encode()
    yield writer.tail().encode()


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
        summary = await store.latest_summary(tenant, row.id)
        detail = {"format": fmt, "utterances": row.utterance_count}
        await record(store, principal_of(request), AuditAction.EXPORT, row.id, detail)
        llm = services.knowledge.llm if services.knowledge is not None else None
        chunks = export_chunks(store, row, summary, fmt, llm=llm)
        return HttpResponse(200, b"", MEDIA_TYPES[fmt], stream=chunks)

    router.add("/v1/conversations/{id}/transcript", export)
