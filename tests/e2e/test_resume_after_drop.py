"""The SDK resumes after its connection drops while the server keeps running: nothing twice.

A TCP proxy between the SDK and the server drops the connection while an utterance is being
spoken, after two finals. The server's session loses its client mid-utterance: it finishes that
utterance with the audio it had and stores it. When the drop is one the server does not notice
(a half-open connection), the resuming client's `start` takes the stream over: the old
connection is closed (`superseded`) and its session finished the same way. The SDK reconnects
through the proxy with `resume_after`; the server waits for the old session's last final,
replays it, and says in `ready` where the stored transcript ends; the SDK resends its audio from
there. So the stored transcript covers the file once: no utterance stored twice, none lost,
times in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path
from typing import Any

import jiwer
import pytest

from bench.common import normalise
from palabre_client import Event, stream_file
from server.store import Store
from tests.conftest import start_server

pytestmark = pytest.mark.slow

MEETING = "en_meeting.wav"
CUT_AFTER_FINALS = 2


class CuttingProxy:
    """Forwards TCP connections to `port`. `cut()` aborts the open ones (a network drop both ends
    see); `freeze()` aborts only the client's side and leaves the server's open and silent (a
    drop the server does not notice: a half-open connection)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.listen_port = 0
        self._transports: list[asyncio.StreamWriter] = []
        self._upstream: list[asyncio.StreamWriter] = []
        self._frozen: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.listen_port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._transports += [writer, up_writer]
        self._upstream.append(up_writer)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    if dst in self._frozen:
                        return
                    dst.write(data)
                    await dst.drain()
            if dst not in self._frozen:
                with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                    dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def cut(self) -> None:
        for writer in self._transports:
            writer.transport.abort()
        self._transports.clear()

    def freeze(self) -> None:
        self._frozen += self._upstream
        for writer in self._transports:
            if writer not in self._upstream:
                writer.transport.abort()
        self._transports.clear()
        self._upstream.clear()

    async def close(self) -> None:
        self.cut()
        for writer in self._frozen:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()


@pytest.mark.parametrize("drop", ["cut", "freeze"])
def test_resume_after_a_dropped_connection_stores_each_utterance_once(
    drop: str, speech_dir: Path, speech_manifest: dict[str, Any], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = start_server("tiny.en", ("--data-dir", str(data_dir), "--no-memory"), tmp_path)
    finals: list[Event] = []
    readies: list[Event] = []

    async def run() -> list[Event]:
        proxy = CuttingProxy(server.port)
        await proxy.start()
        cut = False

        def seen(event: Event) -> None:
            nonlocal cut
            if event["type"] == "ready":
                readies.append(event)
            elif event["type"] == "final":
                finals.append(event)
            elif event["type"] == "partial" and len(finals) >= CUT_AFTER_FINALS and not cut:
                # A partial: the server is inside an utterance whose final the client has not had
                # (by the event, not after a delay a loaded machine may overrun).
                cut = True
                asyncio.get_running_loop().call_soon(getattr(proxy, drop))

        try:
            return await stream_file(
                f"ws://127.0.0.1:{proxy.listen_port}/v1/stream",
                speech_dir / MEETING,
                speed=2,
                on_event=seen,
                max_reconnects=2,
            )
        finally:
            await proxy.close()

    try:
        events = asyncio.run(run())
    finally:
        server.stop()
    assert events[-1]["type"] == "closed", events[-1]
    assert len(readies) == 2, "no reconnection happened"
    assert readies[1]["conversation_id"] == readies[0]["conversation_id"]
    assert isinstance(readies[1]["resume_from"], float)
    assert any(f.get("replayed") for f in finals), "the utterance cut by the drop was not replayed"
    assert len({f["seq"] for f in finals}) == len(finals)

    with Store.open(data_dir / "palabre.db") as store:
        stored = store.utterances("default", readies[0]["conversation_id"])
    assert [row.seq for row in stored] == sorted(f["seq"] for f in finals if f["text"])
    for before, after in itertools.pairwise(stored):
        assert after.start >= before.end - 0.05, (before, after)  # no stretch of audio twice
    reference = normalise(" ".join(u["text"] for u in speech_manifest["files"][MEETING]["utterances"]))
    heard = normalise(" ".join(row.text for row in stored))
    measures = jiwer.process_words(reference, heard)
    assert measures.insertions <= 2, (reference, heard)  # an utterance stored twice inserts its words
    assert measures.wer < 0.3, (reference, heard)
