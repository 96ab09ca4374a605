"""A server killed (SIGKILL) mid-stream keeps every final its client received.

The server stores a final before it sends it, so whatever a client was told is final must be in
the store after a crash: same seq, same text, once. The conversation is checked in the data dir
directly (server.store.Store) after a restart on the same data dir, which must come up cleanly.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from palabre_client import Event, PalabreError, stream_file
from server.store import Store
from tests.conftest import PalabreServer, start_server

pytestmark = pytest.mark.slow

MEETING = "en_meeting.wav"
KILL_AFTER_FINALS = 2


def server_on(data_dir: Path, workdir: Path) -> PalabreServer:
    """A tiny.en server on `data_dir` (the later `--data-dir` wins over conftest's own)."""
    return start_server("tiny.en", ("--data-dir", str(data_dir), "--no-memory"), workdir)


def test_acknowledged_finals_survive_sigkill(speech_dir: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = server_on(data_dir, tmp_path)
    finals: list[Event] = []
    ready: list[Event] = []
    try:

        def seen(event: Event) -> None:
            if event["type"] == "ready":
                ready.append(event)
            if event["type"] == "final":
                finals.append(event)
                if len(finals) == KILL_AFTER_FINALS:
                    server.proc.kill()  # SIGKILL: no shutdown, no flushing

        with pytest.raises(PalabreError):
            asyncio.run(
                stream_file(server.url, speech_dir / MEETING, speed=2, reconnect=False, on_event=seen)
            )
        assert server.proc.wait(10) == -9
    finally:
        server.stop()
    assert len(finals) >= KILL_AFTER_FINALS
    conversation_id = ready[0]["conversation_id"]

    restarted = server_on(data_dir, tmp_path)
    try:
        assert restarted.alive()
        with Store.open(data_dir / "palabre.db") as store:
            stored = store.utterances("default", conversation_id)
    finally:
        restarted.stop()
    by_seq: dict[int, Any] = {row.seq: row for row in stored}
    assert len(by_seq) == len(stored), "a seq is stored twice"
    for final in finals:
        row = by_seq.get(final["seq"])
        assert row is not None, f"acknowledged final {final['seq']} {final['text']!r} is lost"
        assert row.text == final["text"]
    texts = [row.text for row in stored]
    assert len(set(texts)) == len(texts), f"duplicated utterances: {texts}"
