"""The SDK resumes a stream whose server was killed mid-stream, on another server.

Two servers share one data dir (SQLite WAL); `stream_file` gets a URL provider that names the
first, then the second. The first is SIGKILLed after two finals: the SDK reconnects to the second
with the same conversation id and resends the audio from just before the last acknowledged final.
Every utterance of the file must then reach the caller once and be stored once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from palabre_client import Event, stream_file
from server.store import Store
from tests.conftest import start_server

pytestmark = pytest.mark.slow

MEETING = "en_meeting.wav"
KILL_AFTER_FINALS = 2


def test_stream_file_resumes_after_a_crash(
    speech_dir: Path, speech_manifest: dict[str, Any], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    args = ("--data-dir", str(data_dir), "--no-memory")
    first = start_server("tiny.en", args, tmp_path)
    second = start_server("tiny.en", args, tmp_path)
    urls = iter([first.url, second.url])
    finals: list[Event] = []
    readies: list[Event] = []
    try:

        def seen(event: Event) -> None:
            if event["type"] == "ready":
                readies.append(event)
            if event["type"] == "final":
                finals.append(event)
                if len(finals) == KILL_AFTER_FINALS:
                    first.proc.kill()

        events = asyncio.run(
            stream_file(lambda: next(urls), speech_dir / MEETING, speed=2, on_event=seen, max_reconnects=1)
        )
    finally:
        first.stop()
        second.stop()
    assert events[-1]["type"] == "closed", events[-1]
    assert len(readies) == 2, "no reconnection happened"
    conversation_id = readies[0]["conversation_id"]
    assert readies[1]["conversation_id"] == conversation_id

    expected = len(speech_manifest["files"][MEETING]["utterances"])
    texts = [f["text"] for f in finals]
    assert len(texts) == expected, [(f["seq"], f["start"], f["end"], f["text"]) for f in finals]
    assert len(set(texts)) == len(texts), texts
    assert len({f["seq"] for f in finals}) == len(finals)

    with Store.open(data_dir / "palabre.db") as store:
        stored = store.utterances("default", conversation_id)
    assert [row.text for row in stored] == texts
