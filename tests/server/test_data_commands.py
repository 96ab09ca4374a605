"""`palabre erase|purge|tenant set|audit` on both stores: the SQLite file of `--data-dir` and the
PostgreSQL database of `--store`."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from server.cli import main
from server.config import ServerConfig
from server.store import AsyncStore
from server.store_interface import ConversationStore
from server.store_postgresql import PostgresStore
from tests.postgresql import PostgresServer


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """The command-line arguments naming a new, empty store of each backend."""
    if request.param == "sqlite":
        return ["--data-dir", str(tmp_path)]
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return ["--store", server.create_database()]


async def opened(where: list[str]) -> ConversationStore:
    if where[0] == "--store":
        return await PostgresStore.open(where[1])
    return await AsyncStore.open(ServerConfig(data_dir=Path(where[1])).database_path)


def on_store(where: list[str], work: str, *args: object) -> object:
    """Call a store method on the store of `where`."""

    async def call() -> object:
        store = await opened(where)
        try:
            return await getattr(store, work)(*args)
        finally:
            await store.close()

    return asyncio.run(call())


def palabre(*argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `palabre ARGV` run in this process."""
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def test_erase_purge_tenant_set_and_audit(where: list[str]) -> None:
    for conversation in ("kept", "erased"):
        on_store(where, "open_conversation", "acme", conversation, "en")
        on_store(where, "add_utterance", "acme", conversation, 0, "my card is secret", 0.0, 1.0, "en")

    status, out, _ = palabre("erase", *where, "--conversation", "erased")
    assert status == 0 and out.startswith("erased conversation erased of tenant acme: 1 utterances"), out
    assert "secret" not in out
    assert palabre("erase", *where, "--conversation", "erased")[0] == 1  # again: nothing to erase

    status, out, _ = palabre("tenant", "set", "acme", *where, "--retention-days", "30", "--redact", "card")
    assert status == 0 and "30 days" in out, out
    assert on_store(where, "retention") == {"acme": 30}
    assert on_store(where, "redaction", "acme") == ("card",)

    status, out, _ = palabre("purge", *where, "--before", "2100-01-01")
    assert (status, out) == (0, "purged 1 conversations\n")
    assert on_store(where, "conversation_ids", "acme") == []

    status, out, _ = palabre("audit", *where, "--tenant", "acme")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["actor"], r["action"], r["conversation_id"]) for r in rows] == [
        ("cli", "purge", "kept"),
        ("cli", "erase", "erased"),
    ]
    assert "secret" not in out


def test_a_store_that_is_not_postgresql_or_a_data_dir_without_a_database_is_refused(tmp_path: Path) -> None:
    status, _, err = palabre("audit", "--store", "mysql://x@y/z")
    assert status == 2 and "postgresql://" in err
    status, _, err = palabre("audit", "--data-dir", str(tmp_path / "none"))
    assert status == 2 and "no database" in err
    with pytest.raises(SystemExit):  # one store or the other, not both
        palabre("audit", "--data-dir", str(tmp_path), "--store", "postgresql://x@y/z")
