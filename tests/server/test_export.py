"""server/export.py: exports streamed page by page through the real HTTP layer (chunked transfer
encoding), over a real store, parsed back by independent parsers (webvtt-py, srt, json)."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import urllib.request
from pathlib import Path

import pytest
import srt
import webvtt
from websockets.asyncio.server import serve

from server.app import App
from server.config import ServerConfig
from server.export import export_chunks, transcript_of
from server.live import SessionServices
from server.llm_queue import LlmQueue
from server.store import UTTERANCE_COLUMNS, Store, utterance_id
from stream.transcript_formats import render
from tests.server.memory_fakes import ScriptedLlm

LONG = 20_000


def fill(path: Path, conversation_id: str, count: int) -> None:
    """`count` finals on two tracks whose seq order is not their time order, some with words
    (written in one transaction: `Store.add_utterance` commits each)."""
    with Store.open(path) as store:
        store.open_conversation("default", conversation_id, "en")
    rows = []
    for seq in range(count):
        start = (seq // 2) * 2.0 + (1.0 if seq % 2 == 0 else 0.0)  # "bob" (odd seqs) speaks first
        words = [{"word": " final", "start": start, "end": start + 0.4, "probability": 0.9},
                 {"word": f" {seq}", "start": start + 0.5, "end": start + 0.9, "probability": 0.8}]
        rows.append((utterance_id(conversation_id, seq), conversation_id, "default", seq, f"final {seq}",
                     start, start + 0.9, "en", None, "bob" if seq % 2 else "alice", None, 0.0,
                     json.dumps(words) if seq % 3 == 0 else None))
    with sqlite3.connect(path) as conn:
        conn.executemany(f"INSERT INTO utterances ({UTTERANCE_COLUMNS}) VALUES (NULL{', ?' * 13})", rows)


def get(url: str) -> tuple[dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=120) as response:
        return dict(response.headers), response.read()


async def test_a_long_conversation_exports_whole_and_valid_in_every_format(
    services: SessionServices, tmp_path: Path
) -> None:
    await asyncio.to_thread(fill, tmp_path / "palabre.db", "long", LONG)
    app = App(ServerConfig())
    app.hub.serve(services)
    async with serve(app.handler, "127.0.0.1", 0, process_request=app.process_request) as server:
        port = server.sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}/v1/conversations/long/transcript?format="
        bodies = {}
        for fmt in ("vtt", "srt", "txt", "md", "json"):
            headers, bodies[fmt] = await asyncio.to_thread(get, base + fmt)
            assert headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in headers
    in_time = sorted(range(LONG), key=lambda seq: ((seq // 2) * 2.0 + (1.0 if seq % 2 == 0 else 0.0), seq))
    captions = webvtt.from_buffer(io.StringIO(bodies["vtt"].decode())).captions
    assert [c.identifier for c in captions] == [f"long:{seq}" for seq in in_time]
    assert captions[-1].text == f"final {in_time[-1]}"
    subtitles = list(srt.parse(bodies["srt"].decode()))
    assert [s.index for s in subtitles] == list(range(1, LONG + 1))
    assert [s.content for s in subtitles][:2] == ["bob: final 1", "alice: final 0"]
    assert len(bodies["txt"].decode().splitlines()) == LONG
    md = bodies["md"].decode()
    assert "- Utterances: 20000" in md and "| alice | 10000 |" in md and md.count("**[") == LONG
    exported = json.loads(bodies["json"])
    assert [u["seq"] for u in exported["utterances"]] == list(range(LONG))
    assert exported["conversation"]["utterance_count"] == LONG and exported["summary"] is None


async def test_streamed_pages_are_the_whole_render(services: SessionServices, tmp_path: Path) -> None:
    await asyncio.to_thread(fill, tmp_path / "palabre.db", "c", 23)
    store = services.store
    row = await store.get_conversation("default", "c")
    assert row is not None
    whole = transcript_of(row, await store.utterances("default", "c"), None)
    for fmt in ("vtt", "srt", "txt", "md"):
        chunks = [c async for c in export_chunks(store, row, None, fmt, page_size=4)]
        assert b"".join(chunks).decode() == render(whole, fmt), fmt  # type: ignore[arg-type]
        assert len(chunks) == 2 + 6  # head, six pages, tail
    [utterance_seqs] = [[u["seq"] for u in json.loads(b"".join(
        [c async for c in export_chunks(store, row, None, "json", page_size=5)]))["utterances"]]]
    assert utterance_seqs == list(range(23))


@pytest.mark.parametrize("fmt", ["vtt", "json"])
async def test_an_empty_conversation_exports(services: SessionServices, fmt: str) -> None:
    await services.store.open_conversation("default", "empty", "en")
    row = await services.store.get_conversation("default", "empty")
    assert row is not None
    body = b"".join([c async for c in export_chunks(services.store, row, None, fmt)])
    assert body == b"WEBVTT\n" if fmt == "vtt" else json.loads(body)["utterances"] == []


async def test_the_minutes_list_the_grounded_decisions_and_actions_of_the_model(
    services: SessionServices,
) -> None:
    store = services.store
    await store.open_conversation("default", "m", "en")
    said = ["We decided to hire two engineers next quarter.", "I will send the budget to finance on Monday."]
    for seq, text in enumerate(said):
        await store.add_utterance("default", "m", seq, text, seq * 5.0, seq * 5.0 + 4, "en", track="alice")
    row = await store.get_conversation("default", "m")
    assert row is not None
    reply = ("- Hire two engineers next quarter [1]\n- Move to Paris [1]\n"
             "Action items:\n- Send the budget to finance on Monday [2]\n")
    engine = ScriptedLlm(lambda _request: reply, chat=False)
    llm = LlmQueue(engine)
    llm.start()
    try:
        md = b"".join([c async for c in export_chunks(store, row, None, "md", llm=llm)]).decode()
    finally:
        await llm.close()
    [request] = engine.requests
    assert request.prompt is not None and request.prompt.endswith("Decisions:\n")
    assert "## Decisions\n\n- Hire two engineers next quarter (m:0)\n" in md
    assert "## Action items\n\n- Send the budget to finance on Monday (m:1)\n" in md
    assert "Paris" not in md
    without = b"".join([c async for c in export_chunks(store, row, None, "md")]).decode()
    assert "## Decisions" not in without and "## Action items" not in without
