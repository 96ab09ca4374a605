"""The database restarted during a stream (`pg_ctl stop -m fast`, then start), through the real
server (`palabre serve --store postgresql://…`) and a real PostgreSQL of its own.

A long hold (`limits.store_hold_s`): the session holds its finals while the database is down and
goes on once it is back; every final the client received is stored exactly once. A short hold:
the session gets `unavailable`, and its held finals are still stored once the database is back.
After a restart, a final committed on front-end A is searchable on front-end B (B's change feed
listens again and catches up).
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from palabre_client import Event, stream_file
from server.store_postgresql import UTTERANCE_CHANNEL, PostgresStore
from tests.conftest import PalabreServer, free_port, start_server
from tests.postgresql import PostgresServer, postgresql_bin, start_postgres
from tests.requirements import missing

pytestmark = pytest.mark.slow

MEETING = "en_meeting.wav"
DOWN_S = 7.0
SEARCHABLE_S = 20.0
"""How soon B must find A's final after the restart: a bound a loaded 2-core machine meets (B
embeds it after its listening connection is back, or by the catch-up by id every 2 s); the
delay itself is measured by bench/store_write.py."""


@pytest.fixture(scope="module")
def restartable_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this module's own (its tests stop and restart it)."""
    if postgresql_bin() is None:
        missing("PostgreSQL is not installed (./dev setup installs the postgresql package)")
    server = start_postgres(free_port())
    yield server
    server.stop()


def serve(url: str, workdir: Path, hold_s: float, *memory: str) -> PalabreServer:
    config = workdir / "palabre.toml"
    workdir.mkdir(parents=True, exist_ok=True)
    config.write_text(f"[limits]\nstore_hold_s = {hold_s}\n")
    return start_server("tiny.en", ("--store", url, "--config", str(config), *memory), workdir)


def outage(postgres: PostgresServer, down_s: float) -> threading.Thread:
    """Stop the database now (in the background), start it again `down_s` seconds later."""

    def run() -> None:
        postgres.shut_down()
        time.sleep(down_s)
        postgres.start_again()

    thread = threading.Thread(target=run, name="outage")
    thread.start()
    return thread


def stream_with_outage(
    server: PalabreServer, audio: Path, postgres: PostgresServer
) -> tuple[list[Event], threading.Thread]:
    """Stream `audio` in real time; the database goes down when the first final arrives."""
    threads: list[threading.Thread] = []

    def seen(event: Event) -> None:
        if event["type"] == "final" and not threads:
            threads.append(outage(postgres, DOWN_S))

    events = asyncio.run(stream_file(server.url, audio, speed=1, on_event=seen, reconnect=False))
    assert threads, "no final arrived"
    return events, threads[0]


def stored(url: str, conversation_id: str) -> list[tuple[int, str]]:
    async def read() -> list[tuple[int, str]]:
        store = await PostgresStore.open(url)
        try:
            return [(row.seq, row.text) for row in await store.utterances("default", conversation_id)]
        finally:
            await store.close()

    return asyncio.run(read())


def received(events: list[Event]) -> list[tuple[int, str]]:
    return [(e["seq"], e["text"]) for e in events if e["type"] == "final" and e["text"]]


def test_a_long_hold_rides_out_a_database_restart(
    restartable_postgres: PostgresServer, speech_dir: Path, speech_manifest: dict[str, Any], tmp_path: Path
) -> None:
    url = restartable_postgres.create_database()
    server = serve(url, tmp_path, 60.0, "--no-memory")
    try:
        events, thread = stream_with_outage(server, speech_dir / MEETING, restartable_postgres)
        thread.join()
        log = server.log_tail()
    finally:
        server.stop()
    assert events[-1]["type"] == "closed", events[-3:]
    assert not [e for e in events if e["type"] == "error"]
    finals = received(events)
    assert len(finals) == len(speech_manifest["files"][MEETING]["utterances"]), finals
    assert stored(url, events[0]["conversation_id"]) == finals  # each once, in order
    assert "holding it and retrying" in log and "the store is back" in log, log


def test_a_short_hold_tells_the_session_and_still_stores_its_finals(
    restartable_postgres: PostgresServer, speech_dir: Path, tmp_path: Path
) -> None:
    url = restartable_postgres.create_database()
    server = serve(url, tmp_path, 1.0, "--no-memory")
    try:
        events, thread = stream_with_outage(server, speech_dir / MEETING, restartable_postgres)
        assert events[-1]["type"] == "error" and events[-1]["code"] == "unavailable", events[-3:]
        assert not [e for e in events if e["type"] == "closed"]
        thread.join()  # the database is back: the held finals are committed
        conversation_id = events[0]["conversation_id"]
        finals = received(events)
        deadline = time.monotonic() + 30
        rows = stored(url, conversation_id)
        while len(rows) <= len(finals) and time.monotonic() < deadline:
            time.sleep(0.5)
            rows = stored(url, conversation_id)
    finally:
        server.stop()
    assert rows[: len(finals)] == finals  # every final received, stored once
    assert len(rows) > len(finals), "the held finals were not stored"
    assert [seq for seq, _ in rows] == list(range(len(rows)))


def test_after_a_database_restart_b_finds_a_final_committed_on_a(
    restartable_postgres: PostgresServer, speech_dir: Path, tmp_path: Path
) -> None:
    url = restartable_postgres.create_database()
    a = serve(url, tmp_path / "a", 30.0)
    try:
        b = serve(url, tmp_path / "b", 30.0)
    except BaseException:
        a.stop()
        raise
    try:
        outage(restartable_postgres, 2.0).join()
        events = asyncio.run(stream_file(a.url, speech_dir / MEETING, speed=4, reconnect=False))
        assert events[-1]["type"] == "closed", events[-3:]
        competitor = next(f for f in events if f["type"] == "final" and "competitor" in f["text"].lower())
        committed = time.monotonic()
        query = "/v1/search?" + urllib.parse.urlencode({"q": "competitor"})
        while not any(
            hit["utterance_id"] == competitor["utterance_id"] for hit in b.get_json(query)["results"]
        ):
            assert time.monotonic() - committed < SEARCHABLE_S, "not searchable on B after the restart"
            time.sleep(0.1)
        log_b = b.log_path.read_text(errors="replace")  # all of it: the reconnection is early
    finally:
        a.stop()
        b.stop()
    assert f"{UTTERANCE_CHANNEL} of postgresql://" in log_b and "lost; reconnecting" in log_b, log_b
