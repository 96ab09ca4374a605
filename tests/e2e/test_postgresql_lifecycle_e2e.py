"""The data lifecycle on PostgreSQL: two front-ends A and B (`palabre serve --store postgresql://…`,
memory on, each its own data dir and vector index) on one database.

* Erase: a conversation streamed on A, indexed on B through the change feed, erased on B, is at
  once absent from list, read, search and answers on both; still absent on A restarted; audited
  without its text; a second DELETE is 404.
* Redaction: a synthesised call streamed with `redact: ["phone","email","card"]` leaves its numbers
  nowhere in the database (a `pg_dump` of it), the front-ends' data dirs or the events.
* Retention: the server's retention job erases, at start, a conversation older than the
  configured `retention_days` (aged by moving its timestamps back in the database), and only that
  one; then `palabre purge --store URL` beside the running front-ends erases the rest.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from palabre_client import PalabreError, ask, stream_file
from tests.conftest import PalabreServer, start_server
from tests.e2e.test_lifecycle_e2e import PACED, palabre, request, search
from tests.e2e.test_redaction_e2e import KINDS, synthesised_call
from tests.postgresql import PostgresServer

pytestmark = pytest.mark.slow

RETENTION_DAYS = 30
QUERIES = ("quick brown fox", "lazy dog", "red parrot green turtle")


@dataclass
class Cluster:
    """Front-ends A and B on the database `url`; A can be restarted on its own data dir."""

    url: str
    database: str
    workdir: Path
    a: PalabreServer
    b: PalabreServer

    @staticmethod
    def args(url: str, data_dir: Path, config: Path) -> tuple[str, ...]:
        return ("--store", url, "--data-dir", str(data_dir), "--config", str(config), *PACED)

    def start(self, name: str) -> PalabreServer:
        args = self.args(self.url, self.workdir / f"{name}-data", self.workdir / "palabre.toml")
        return start_server("tiny.en", args, self.workdir)

    def restart_a(self) -> None:
        """A fresh process for A, on A's data dir (its index file loaded and caught up)."""
        self.a.stop()
        self.a = self.start("a")


@pytest.fixture(scope="module")
def cluster(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("pglife")
    (workdir / "palabre.toml").write_text(f'retention_days = ["default={RETENTION_DAYS}"]\n')
    url = postgres_server.create_database()
    config = workdir / "palabre.toml"
    a = start_server("tiny.en", Cluster.args(url, workdir / "a-data", config), workdir)
    try:
        b = start_server("tiny.en", Cluster.args(url, workdir / "b-data", config), workdir)
    except BaseException:
        a.stop()
        raise
    running = Cluster(url, url.rsplit("/", 1)[1], workdir, a, b)
    try:
        yield running
    finally:
        running.a.stop()
        running.b.stop()


def streamed(server: PalabreServer, wav: Path, **options: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = asyncio.run(stream_file(server.url, wav, speed=0, **options))
    assert events[-1]["type"] == "closed", events[-1]
    return events


def wait_searchable(server: PalabreServer, q: str, conversation_id: str, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while not any(h["conversation_id"] == conversation_id for h in search(server, q)):
        assert time.monotonic() < deadline, f"{conversation_id} never searchable on {server.url}"
        time.sleep(0.25)


def absent(server: PalabreServer, conversation_id: str) -> None:
    """The conversation is in no list, read, search or answer of the server."""
    listed = server.get_json("/v1/conversations")["conversations"]
    assert conversation_id not in {c["id"] for c in listed}
    assert request(server, "GET", f"/v1/conversations/{conversation_id}")[0] == 404
    for q in QUERIES:
        hits = search(server, q)
        assert all(h["conversation_id"] != conversation_id for h in hits), (server.url, hits)
    done = asyncio.run(ask("What did the fox jump over?", url=server.url, scope="tenant"))
    assert all(not c.startswith(f"{conversation_id}:") for c in done["citations"]), done
    assert all(p["utterance_id"].split(":")[0] != conversation_id for p in done.get("passages", []))
    with pytest.raises(PalabreError) as refused:
        asyncio.run(ask("What jumped?", url=server.url, conversation_id=conversation_id))
    assert refused.value.code == "conversation_not_found"


def test_a_conversation_erased_on_b_is_gone_from_both_at_once_and_after_a_restart(
    cluster: Cluster, speech_dir: Path
) -> None:
    erased_id = streamed(cluster.a, speech_dir / "en_fox.wav")[0]["conversation_id"]
    kept_id = streamed(cluster.a, speech_dir / "en_speaker_a.wav")[0]["conversation_id"]
    wait_searchable(cluster.b, "quick brown fox", erased_id)  # B indexed A's finals (change feed)
    wait_searchable(cluster.a, "quick brown fox", erased_id)

    status, body = request(cluster.b, "DELETE", f"/v1/conversations/{erased_id}")
    assert status == 200 and body["erased"]["conversation_id"] == erased_id, body
    assert body["erased"]["utterances"] >= 1, body
    for server in (cluster.a, cluster.b):  # at once: no waiting for a feed or a timer
        absent(server, erased_id)
        assert any(h["conversation_id"] == kept_id for h in search(server, "red parrot green turtle"))

    cluster.restart_a()
    absent(cluster.a, erased_id)
    assert any(h["conversation_id"] == kept_id for h in search(cluster.a, "red parrot green turtle"))

    for server in (cluster.a, cluster.b):
        audit = server.get_json("/v1/audit?limit=1000")["audit"]
        erasures = [a for a in audit if a["action"] == "erase" and a["conversation_id"] == erased_id]
        assert len(erasures) == 1 and erasures[0]["detail"]["utterances"] >= 1, audit
        text = json.dumps(audit).lower()
        assert "fox" not in text and "parrot" not in text, audit  # no transcript text, no query
    status, body = request(cluster.a, "DELETE", f"/v1/conversations/{erased_id}")  # documented: 404
    assert (status, body["error"]["code"]) == (404, "conversation_not_found"), body


def test_redacted_numbers_are_nowhere_in_the_database_or_on_the_wire(
    cluster: Cluster, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    wav, secrets = asyncio.run(synthesised_call(tmp_path))
    events = streamed(cluster.a, wav, language="en", redact=KINDS)
    finals = [e for e in events if e["type"] == "final"]
    assert any("[PHONE]" in e["text"] for e in finals), finals
    conversation_id = events[0]["conversation_id"]
    wait_searchable(cluster.b, "support line", conversation_id)  # embedded and indexed on both
    wait_searchable(cluster.a, "support line", conversation_id)
    dump = postgres_server.dump(cluster.database)
    assert "[PHONE]" in dump  # the dump holds the redacted transcript
    wire = repr(events)
    files = [p for server in (cluster.a, cluster.b) for p in server.data_dir.rglob("*") if p.is_file()]
    for secret in secrets:
        assert secret not in wire, secret
        assert secret not in dump, secret
        for path in files:
            data = path.read_bytes()
            assert secret.encode() not in data and secret.encode("utf-16-le") not in data, (secret, path)


def test_the_retention_job_erases_exactly_the_older_conversations(
    cluster: Cluster, postgres_server: PostgresServer, speech_dir: Path
) -> None:
    old_id = streamed(cluster.a, speech_dir / "en_fox.wav")[0]["conversation_id"]
    recent_id = streamed(cluster.b, speech_dir / "en_fox.wav")[0]["conversation_id"]
    wait_searchable(cluster.b, "quick brown fox", old_id)
    aged = (RETENTION_DAYS + 1) * 86_400
    postgres_server.psql(
        f"UPDATE utterances SET created_at = created_at - {aged} WHERE conversation_id = '{old_id}';"
        f" UPDATE conversations SET created_at = created_at - {aged} WHERE id = '{old_id}'",
        cluster.database,
    )
    cluster.restart_a()  # the job runs at start
    deadline = time.monotonic() + 60
    while request(cluster.b, "GET", f"/v1/conversations/{old_id}")[0] != 404:
        assert time.monotonic() < deadline, "the retention job never erased the old conversation"
        time.sleep(0.5)
    for server in (cluster.a, cluster.b):
        absent(server, old_id)
        assert server.get_json(f"/v1/conversations/{recent_id}")["utterances"]
    audit = cluster.b.get_json("/v1/audit?limit=1000")["audit"]
    purges = [a for a in audit if a["action"] == "purge"]
    assert [(a["conversation_id"], a["actor"]) for a in purges] == [(old_id, "retention")], purges
    assert purges[0]["detail"]["retention_days"] == RETENTION_DAYS

    purged = palabre("purge", "--store", cluster.url, "--before", "2100-01-01")
    assert purged.returncode == 0 and "purged " in purged.stdout, purged
    for server in (cluster.a, cluster.b):
        absent(server, recent_id)
        assert server.get_json("/v1/conversations")["conversations"] == []
