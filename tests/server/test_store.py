"""The durable store: migrations, idempotent finals, tenant isolation, crash durability, AsyncStore."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    AsyncStore,
    ConversationNotFound,
    SchemaTooNew,
    Store,
    StoreError,
    UtteranceConflict,
    migrate,
    schema_version,
)

REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    """A clock that advances one second per reading."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "palabre.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    with Store.open(db, clock=FakeClock()) as s:
        yield s


def add(store: Store, tenant: str, conversation: str, seq: int, text: str | None = None) -> int:
    row = store.add_utterance(tenant, conversation, seq, text or f"words {seq}", seq, seq + 0.5, "en")
    return row.id


# --- schema and migrations --------------------------------------------------------------------


def test_open_creates_current_schema_in_wal_mode(db: Path) -> None:
    Store.open(db).close()
    conn = sqlite3.connect(db)
    assert schema_version(conn) == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"tenants", "conversations", "utterances", "summaries", "answers", "api_tokens"} <= tables


def test_opening_a_v1_database_upgrades_it_and_keeps_its_data(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO tenants VALUES ('acme', 'Acme', 1.0)")
    conn.execute(
        "INSERT INTO conversations (id, tenant_id, language, created_at, updated_at) "
        "VALUES ('c1', 'acme', 'fr', 1.0, 1.0)"
    )
    conn.execute(
        'INSERT INTO utterances (public_id, conversation_id, tenant_id, seq, text, start, "end", '
        "language, created_at) VALUES ('c1:0', 'c1', 'acme', 0, 'bonjour', 0.0, 1.2, 'fr', 1.0)"
    )
    conn.close()

    with Store.open(db) as store:
        assert schema_version(store._conn) == SCHEMA_VERSION
        [row] = store.utterances("acme", "c1")
        assert (row.public_id, row.text, row.end, row.entities) == ("c1:0", "bonjour", 1.2, None)
        assert store.next_seq("c1") == 1
        summary = store.add_summary("acme", "c1", "Greetings.", "extractive", 0)  # a v2 table
        assert store.latest_summary("acme", "c1") == summary


def test_a_summary_stored_before_items_reads_as_one_item(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    migrate(conn, MIGRATIONS[:3])
    conn.execute("INSERT INTO tenants VALUES ('acme', 'Acme', 1.0)")
    conn.execute(
        "INSERT INTO conversations (id, tenant_id, created_at, updated_at) VALUES ('c1', 'acme', 1.0, 1.0)"
    )
    conn.execute(
        "INSERT INTO summaries (conversation_id, tenant_id, text, method, utterance_seq_upto, created_at)"
        " VALUES ('c1', 'acme', '- Hello.', 'extractive', 0, 1.0)"
    )
    conn.close()
    with Store.open(db) as store:
        summary = store.latest_summary("acme", "c1")
        assert summary is not None
        assert summary.items == [{"text": "- Hello.", "utterance_ids": [], "section": None}]


def test_a_database_newer_than_the_code_is_refused(db: Path) -> None:
    Store.open(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNew, match="newer"):
        Store.open(db)


def test_a_failing_migration_step_is_rolled_back_whole(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    broken = (MIGRATIONS[0], ("CREATE TABLE half_done (a)", "SELECT * FROM no_such_table"))
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        migrate(conn, broken)
    assert schema_version(conn) == 1
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchone() is None
    assert not conn.in_transaction
    assert migrate(conn) == SCHEMA_VERSION


def test_reopening_a_current_database_changes_nothing(db: Path) -> None:
    with Store.open(db) as store:
        add(store, "t", store.open_conversation("t", "c", "en").id, 0)
    with Store.open(db) as store:
        assert [u.text for u in store.utterances("t", "c")] == ["words 0"]


def test_the_schema_refuses_an_utterance_under_another_tenant(store: Store) -> None:
    store.open_conversation("a", "conv-a", "en")
    store.ensure_tenant("b")
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        store._conn.execute(
            'INSERT INTO utterances (public_id, conversation_id, tenant_id, seq, text, start, "end", '
            "created_at) VALUES ('conv-a:0', 'conv-a', 'b', 0, 'x', 0, 1, 0)"
        )


# --- conversations --------------------------------------------------------------------------


def test_open_conversation_creates_with_a_new_or_given_id(store: Store) -> None:
    new = store.open_conversation("t", None, None)
    assert len(new.id) == 32 and int(new.id, 16) >= 0
    assert (new.tenant_id, new.status, new.utterance_count, new.ended_at) == ("t", "live", 0, None)
    named = store.open_conversation("t", "CA1234.call-7", "de")
    assert (named.id, named.language) == ("CA1234.call-7", "de")


@pytest.mark.parametrize("bad", ["", "a:b", "../x", "-x", "x" * 129, "é"])
def test_open_conversation_refuses_malformed_ids(store: Store, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid conversation id"):
        store.open_conversation("t", bad, None)


def test_resuming_a_conversation_reopens_it_and_keeps_its_language(store: Store) -> None:
    first = store.open_conversation("t", "c", "en")
    add(store, "t", "c", 0)
    store.end_conversation("c")
    ended = store.get_conversation("t", "c")
    assert ended is not None and ended.status == "ended" and ended.ended_at is not None

    resumed = store.open_conversation("t", "c", "fr")
    assert (resumed.status, resumed.ended_at, resumed.language) == ("live", None, "en")
    assert resumed.created_at == first.created_at
    assert resumed.utterance_count == 1
    assert store.next_seq("c") == 1


def test_list_conversations_most_recent_first_with_counts(store: Store) -> None:
    for name in ("c1", "c2", "c3"):
        store.open_conversation("t", name, "en")
    add(store, "t", "c1", 0)
    add(store, "t", "c1", 1)
    listed = store.list_conversations("t")
    assert [(c.id, c.utterance_count) for c in listed] == [("c1", 2), ("c3", 0), ("c2", 0)]
    assert [c.id for c in store.list_conversations("t", limit=1)] == ["c1"]


# --- utterances -----------------------------------------------------------------------------


def test_add_utterance_returns_the_stored_row(store: Store) -> None:
    store.open_conversation("t", "c", "en")
    entities = [{"text": "Paris", "label": "LOC", "start": 10, "end": 15}]
    row = store.add_utterance("t", "c", 0, "I live in Paris", 0.5, 2.0, "en", "inbound", "spk1", entities)
    assert (row.public_id, row.seq, row.track, row.speaker, row.entities) == (
        "c:0",
        0,
        "inbound",
        "spk1",
        entities,
    )
    assert store.utterances("t", "c") == [row]
    assert store.next_seq("c") == 1


def test_adding_the_same_seq_again_is_idempotent(store: Store) -> None:
    store.open_conversation("t", "c", "en")
    first = store.add_utterance("t", "c", 0, "hello", 0.0, 1.0, "en")
    again = store.add_utterance("t", "c", 0, "hello", 0.1, 1.1, "en")
    assert again == first
    assert len(store.utterances("t", "c")) == 1
    with pytest.raises(UtteranceConflict):
        store.add_utterance("t", "c", 0, "yellow", 0.0, 1.0, "en")
    assert [u.text for u in store.utterances("t", "c")] == ["hello"]


def test_utterance_ids_are_never_reused(store: Store) -> None:
    store.open_conversation("t", "c", "en")
    last = add(store, "t", "c", 0)
    store._conn.execute("DELETE FROM utterances WHERE id = ?", (last,))
    assert add(store, "t", "c", 1) > last


def test_reads_by_seq_and_by_id(store: Store) -> None:
    store.open_conversation("t", "c", "en")
    ids = [add(store, "t", "c", seq) for seq in range(7)]
    assert [u.seq for u in store.utterances("t", "c", after_seq=4)] == [5, 6]
    picked = store.utterances_by_ids("t", [ids[3], ids[0], 10_000, ids[3]])
    assert [u.id for u in picked] == [ids[3], ids[0]]
    assert [u.id for u in store.all_utterances("t", page_size=3)] == ids
    many = store.utterances_by_ids("t", list(range(-600, 1200)))
    assert [u.id for u in many] == ids


# --- summaries and answers ------------------------------------------------------------------


def test_latest_summary_and_answers(store: Store) -> None:
    store.open_conversation("t", "c", "en")
    assert store.latest_summary("t", "c") is None
    store.add_summary("t", "c", "first", "extractive", 3)
    latest = store.add_summary("t", "c", "second", "generative", 9)
    assert store.latest_summary("t", "c") == latest
    items = [{"text": "Ada leads.", "utterance_ids": ["c:2"], "section": "decisions"}]
    structured = store.add_summary("t", "c", "Decisions:\n- Ada leads.", "generative", 10, items)
    assert store.latest_summary("t", "c") == structured and structured.items == items
    assert latest.items == [{"text": "second", "utterance_ids": [], "section": None}]
    answer = store.add_answer("t", "c", "Who?", "Ada.", ["c:2", "c:5"])
    assert answer.citations == ["c:2", "c:5"]
    assert store.add_answer("t", None, "Across all?", "Yes.", []).conversation_id is None


# --- tenant isolation -----------------------------------------------------------------------


def test_another_tenant_sees_nothing_of_a_conversation(store: Store) -> None:
    store.open_conversation("a", "secret", "en")
    ids = [add(store, "a", "secret", seq) for seq in range(3)]
    store.add_summary("a", "secret", "private", "extractive", 2)
    store.ensure_tenant("b")

    with pytest.raises(ConversationNotFound) as other_tenant:
        store.open_conversation("b", "secret", "en")
    with pytest.raises(ConversationNotFound) as missing:
        store.add_utterance("b", "no-such-conversation", 0, "x", 0, 1, "en")
    with pytest.raises(ConversationNotFound) as foreign:
        store.add_utterance("b", "secret", 3, "injected", 0, 1, "en")
    assert str(other_tenant.value) == str(foreign.value) == "no conversation 'secret'"
    assert str(missing.value) == "no conversation 'no-such-conversation'"
    with pytest.raises(ConversationNotFound):
        store.add_summary("b", "secret", "x", "extractive", 0)
    with pytest.raises(ConversationNotFound):
        store.add_answer("b", "secret", "q", "a", [])

    assert store.get_conversation("b", "secret") is None
    assert store.list_conversations("b") == []
    assert store.utterances("b", "secret") == []
    assert store.utterances_by_ids("b", ids) == []
    assert store.utterances_by_ids("b", range(0, 1000)) == []
    assert list(store.all_utterances("b")) == []
    assert store.latest_summary("b", "secret") is None
    # A's data is untouched by B's attempts.
    assert [u.text for u in store.utterances("a", "secret")] == ["words 0", "words 1", "words 2"]


# --- durability -----------------------------------------------------------------------------

CHILD = """
import asyncio, os, signal, sys
from pathlib import Path
from server.store import AsyncStore, Store

path, mode, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])

def ack(row):
    print(row.id, row.public_id, flush=True)

async def main():
    store = await AsyncStore.open(path)
    conversation = await store.open_conversation("t", "call", "en")
    for seq in range(n):
        ack(await store.add_utterance("t", conversation.id, seq, f"words {seq}", seq, seq + 0.5, "en"))
    os.kill(os.getpid(), signal.SIGKILL)

if mode == "sync":
    store = Store.open(path)
    conversation = store.open_conversation("t", "call", "en")
    for seq in range(n):
        ack(store.add_utterance("t", conversation.id, seq, f"words {seq}", seq, seq + 0.5, "en"))
    os.kill(os.getpid(), signal.SIGKILL)
else:
    asyncio.run(main())
"""


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_every_acknowledged_utterance_survives_kill_9(db: Path, mode: str) -> None:
    n = 150
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(db), mode, str(n)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    acknowledged = [line.split() for line in child.stdout.splitlines()]
    assert len(acknowledged) == n
    assert db.with_name(db.name + "-wal").exists()  # not closed: recovery goes through the WAL

    with Store.open(db) as store:
        found = store.utterances_by_ids("t", [int(i) for i, _ in acknowledged])
        assert [(str(u.id), u.public_id) for u in found] == [(i, p) for i, p in acknowledged]
        assert store.next_seq("call") == n


# --- asyncio --------------------------------------------------------------------------------


async def test_async_store_serializes_calls_in_order(db: Path) -> None:
    async with await AsyncStore.open(db, clock=FakeClock()) as store:
        conversation = await store.open_conversation("t", None, "en")
        rows = await asyncio.gather(
            *(store.add_utterance("t", conversation.id, s, f"w{s}", s, s + 1, "en") for s in range(40))
        )
        assert [r.id for r in rows] == sorted(r.id for r in rows)
        assert await store.next_seq(conversation.id) == 40
        again = await store.add_utterance("t", conversation.id, 5, "w5", 5, 6, "en")
        assert again == rows[5]
        assert [u.id async for u in store.all_utterances("t", page_size=7)] == [r.id for r in rows]
        assert await store.utterances_by_ids("t", [rows[9].id]) == [rows[9]]
        with pytest.raises(ConversationNotFound):
            await store.add_utterance("other", conversation.id, 40, "x", 0, 1, "en")
        await store.end_conversation(conversation.id)
        [listed] = await store.list_conversations("t")
        assert (listed.status, listed.utterance_count) == ("ended", 40)
    with Store.open(db) as reopened:
        assert len(reopened.utterances("t", conversation.id)) == 40


# --- API tokens -------------------------------------------------------------------------------


def test_api_tokens_create_list_lookup_revoke(store: Store) -> None:
    """Tokens are stored by hash; a revoked one is no longer found; listing filters by tenant."""
    a = store.create_token("acme", "hash-a", ["stream", "read", "stream"])
    b = store.create_token("beta", "hash-b", ["admin"])
    assert (a.tenant_id, a.scopes, a.revoked_at) == ("acme", ("read", "stream"), None)
    assert store.lookup_token("hash-a") == a
    assert store.lookup_token("hash-x") is None
    assert store.list_tokens() == [a, b]
    assert store.list_tokens("beta") == [b]
    assert store.get_conversation("beta", "nothing") is None  # the tenant was created with its token

    revoked = store.revoke_token(a.id)
    assert revoked is not None and revoked.revoked_at is not None
    assert store.lookup_token("hash-a") is None
    again = store.revoke_token(a.id)
    assert again == revoked, "revoking again keeps the first revocation time"
    assert store.revoke_token(999) is None
    assert store.list_tokens("acme") == [revoked]

    with pytest.raises(StoreError):
        store.create_token("beta", "hash-b", ["read"])


def test_last_end_of_a_track(store: Store) -> None:
    conversation = store.open_conversation("t", "c", "en").id
    assert store.last_end("t", conversation) is None
    store.add_utterance("t", conversation, 0, "one", 0.0, 1.5, "en")
    store.add_utterance("t", conversation, 1, "two", 2.0, 3.25, "en", "inbound")
    assert store.last_end("t", conversation) == 1.5
    assert store.last_end("t", conversation, "inbound") == 3.25
    assert store.last_end("other", conversation) is None  # another tenant sees nothing


# --- erasure ------------------------------------------------------------------------------------


def test_erase_conversation_deletes_everything_derived_and_logs_the_row_ids(store: Store) -> None:
    store.open_conversation("acme", "gone", "en")
    store.open_conversation("acme", "kept", "en")
    gone_ids = [add(store, "acme", "gone", seq, f"secret words {seq}") for seq in range(3)]
    kept_id = add(store, "acme", "kept", 0)
    store.add_summary("acme", "gone", "a summary", "extractive", 2)
    store.add_answer("acme", "gone", "q?", "about gone", ["gone:0"])
    store.add_answer("acme", None, "q across?", "cites gone", ["kept:0", "gone:1"])
    store.add_answer("acme", None, "q across?", "cites kept only", ["kept:0"])
    erased = store.erase_conversation("acme", "gone")
    assert erased is not None
    assert (erased.utterances, erased.summaries, erased.answers) == (3, 1, 2)
    assert list(erased.utterance_ids) == gone_ids
    assert store.get_conversation("acme", "gone") is None
    assert store.utterances("acme", "gone") == []
    assert store.latest_summary("acme", "gone") is None
    assert [r.id for r in store.utterances_by_ids("acme", [*gone_ids, kept_id])] == [kept_id]
    assert [c.id for c in store.list_conversations("acme")] == ["kept"]
    assert [i for _, i in store.erasures_after("acme")] == gone_ids
    assert store.erasures_after("other") == []
    seqs = [s for s, _ in store.erasures_after("acme")]
    assert store.erasures_after("acme", seqs[0]) == store.erasures_after("acme")[1:]
    # Erasing again (or another tenant's conversation) finds nothing.
    assert store.erase_conversation("acme", "gone") is None
    assert store.erase_conversation("other", "kept") is None
    assert store.get_conversation("acme", "kept") is not None
    # The id can be used again: a new, empty conversation (row ids are never reused).
    store.open_conversation("acme", "gone", "en")
    assert add(store, "acme", "gone", 0) > max([*gone_ids, kept_id])


def test_erased_text_leaves_the_database_files(db: Path) -> None:
    with Store.open(db) as store:
        store.open_conversation("acme", "c", "en")
        store.add_utterance("acme", "c", 0, "my card is 4970 1012 3456 7890", 0, 1, "en")
        store.erase_conversation("acme", "c")
        files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
        assert all(b"4970 1012" not in p.read_bytes() for p in files), files


def test_conversation_tenant_and_ids(store: Store) -> None:
    store.open_conversation("acme", "a", None)
    store.open_conversation("acme", "b", None)
    store.open_conversation("other", "c", None)
    assert store.conversation_tenant("c") == "other" and store.conversation_tenant("x") is None
    assert store.conversation_ids("acme") == ["a", "b"]


def test_audit_rows_per_tenant_newest_first_and_paged(store: Store) -> None:
    store.add_audit("acme", "token:3", "erase", "c1", {"utterances": 4})
    store.add_audit("acme", "open", "search", None, {"k": 5})
    store.add_audit("other", "cli", "purge", "c9")
    rows = store.audit("acme")
    assert [(r.actor, r.action, r.conversation_id) for r in rows] == [
        ("open", "search", None),
        ("token:3", "erase", "c1"),
    ]
    assert rows[1].detail == {"utterances": 4} and rows[0].at > rows[1].at
    assert [r.action for r in store.audit("acme", before_id=rows[0].id)] == ["erase"]
    assert [r.tenant_id for r in store.audit(None, limit=2)] == ["other", "acme"]


def test_retention_and_conversations_idle_since(store: Store) -> None:
    store.open_conversation("acme", "old", None)  # clock: +1 s per reading
    add(store, "acme", "old", 0)
    store.open_conversation("acme", "empty", None)
    cutoff = store._clock()
    store.open_conversation("acme", "new", None)
    add(store, "acme", "new", 0)
    add(store, "acme", "old", 1)  # "old" spoke again after the cutoff: kept
    store.open_conversation("other", "x", None)
    assert store.conversations_idle_since(cutoff) == [("acme", "empty")]
    assert store.conversations_idle_since(store._clock(), "acme") == [
        ("acme", "empty"),
        ("acme", "new"),
        ("acme", "old"),
    ]
    assert store.conversations_idle_since(store._clock(), "acme", limit=1) == [("acme", "empty")]
    assert store.retention() == {}
    store.set_retention("acme", 30)
    store.set_retention("fresh", 7)
    assert store.retention() == {"acme": 30, "fresh": 7}
    store.set_retention("acme", None)
    assert store.retention() == {"fresh": 7}
    with pytest.raises(ValueError):
        store.set_retention("acme", 0)
