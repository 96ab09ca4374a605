"""`ConversationStore` on both backends: SQLite (`AsyncStore`) and PostgreSQL (`PostgresStore`).

Every test of the first part runs against both, through the async interface the server uses;
the second part is what only PostgreSQL has: several front-ends writing to one database, its
migrations, and its errors at start (never echoing a password).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from server.store import ConversationNotFound, SchemaTooNew, StoreError, UtteranceConflict
from server.store_interface import ConversationStore, open_store
from server.store_postgresql import SCHEMA_VERSION, PostgresStore, migrate, without_password
from tests.conftest import free_port
from tests.postgresql import PASSWORD, PostgresServer


class FakeClock:
    """A clock that advances one second per reading."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConversationStore]:
    """A new, empty store of each backend."""
    opened: ConversationStore
    if request.param == "sqlite":
        from server.store import AsyncStore

        opened = await AsyncStore.open(tmp_path / "palabre.db", clock=FakeClock())
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        opened = await PostgresStore.open(server.create_database(), clock=FakeClock())
    yield opened
    await opened.close()


async def add(store: ConversationStore, tenant: str, conversation: str, seq: int) -> int:
    row = await store.add_utterance(tenant, conversation, seq, f"words {seq}", seq, seq + 0.5, "en")
    return row.id


# --- both backends --------------------------------------------------------------------------


async def test_conversations_open_resume_and_list(store: ConversationStore) -> None:
    made = await store.open_conversation("t", None, "en")
    assert made.status == "live" and len(made.id) == 32
    for name in ("c1", "c2", "c3"):
        await store.open_conversation("t", name, None)
    await add(store, "t", "c1", 0)
    await add(store, "t", "c1", 1)
    listed = await store.list_conversations("t")
    assert [(c.id, c.utterance_count) for c in listed][:3] == [("c1", 2), ("c3", 0), ("c2", 0)]
    await store.end_conversation("c2")
    ended = await store.get_conversation("t", "c2")
    assert ended is not None and ended.status == "ended" and ended.ended_at is not None
    resumed = await store.open_conversation("t", "c2", "fr")
    assert (resumed.status, resumed.ended_at, resumed.language) == ("live", None, "fr")
    with pytest.raises(ValueError):
        await store.open_conversation("t", "bad id!", "en")


async def test_utterances_seq_idempotency_and_reads(store: ConversationStore) -> None:
    await store.open_conversation("t", "c", "en")
    assert await store.next_seq("c") == 0
    entities = [{"text": "Paris", "label": "LOC", "start": 10, "end": 15}]
    first = await store.add_utterance(
        "t", "c", 0, "I live in Paris", 0.5, 2.0, "en", "inbound", "spk1", entities
    )
    assert (first.public_id, first.seq, first.track, first.speaker, first.entities) == (
        "c:0",
        0,
        "inbound",
        "spk1",
        entities,
    )
    assert await store.add_utterance("t", "c", 0, "I live in Paris", 9.0, 9.5, "en") == first
    with pytest.raises(UtteranceConflict):
        await store.add_utterance("t", "c", 0, "I leave Paris", 0.5, 2.0, "en")
    ids = [first.id] + [await add(store, "t", "c", seq) for seq in range(1, 7)]
    assert ids == sorted(ids) and len(set(ids)) == 7
    assert await store.next_seq("c") == 7
    assert [u.seq for u in await store.utterances("t", "c", after_seq=4)] == [5, 6]
    assert [u.id for u in await store.utterances_by_ids("t", [ids[3], ids[0], 10_000, ids[3]])] == [
        ids[3],
        ids[0],
    ]
    assert [u.id async for u in store.all_utterances("t", page_size=3)] == ids


async def test_utterances_page_by_seq_and_by_time(store: ConversationStore) -> None:
    await store.open_conversation("t", "c", "en")
    starts = [3.0, 1.0, 2.0, 1.0, 0.5]  # two tracks: seq order is not time order
    for seq, start in enumerate(starts):
        await store.add_utterance("t", "c", seq, f"u{seq}", start, start + 0.5, "en")
    assert [u.seq for u in await store.utterances("t", "c", after_seq=0, limit=2)] == [1, 2]
    pages, after = [], None
    while page := await store.utterances_in_time_order("t", "c", after, limit=2):
        pages.append([u.seq for u in page])
        after = (page[-1].start, page[-1].seq)
    assert pages == [[4, 1], [3, 2], [0]]
    assert await store.utterances_in_time_order("other", "c") == []


async def test_an_utterances_words_are_stored_and_read_back(store: ConversationStore) -> None:
    await store.open_conversation("t", "c", "en")
    words = [{"word": "Bonjour", "start": 0.5, "end": 0.9, "probability": 0.91},
             {"word": " à tous.", "start": 0.9, "end": 1.6, "probability": 0.8}]
    stored = await store.add_utterance("t", "c", 0, "Bonjour à tous.", 0.5, 1.6, "fr", words=words)
    plain = await store.add_utterance("t", "c", 1, "Merci.", 2.0, 2.5, "fr")
    assert (stored.words, plain.words) == (words, None)
    assert [u.words for u in await store.utterances("t", "c")] == [words, None]


async def test_last_end_of_a_track(store: ConversationStore) -> None:
    await store.open_conversation("t", "c", "en")
    assert await store.last_end("t", "c") is None
    await store.add_utterance("t", "c", 0, "a", 0.0, 1.5, "en", track="caller")
    await store.add_utterance("t", "c", 1, "b", 1.0, 2.5, "en")
    await store.add_utterance("t", "c", 2, "c", 2.0, 3.5, "en", track="caller")
    assert await store.last_end("t", "c", "caller") == 3.5
    assert await store.last_end("t", "c") == 2.5
    assert await store.last_end("t", "c", "agent") is None
    assert await store.last_end("other", "c", "caller") is None


async def test_summaries_with_items_and_answers(store: ConversationStore) -> None:
    await store.open_conversation("t", "c", "en")
    assert await store.latest_summary("t", "c") is None
    plain = await store.add_summary("t", "c", "first", "extractive", 3)
    assert plain.items == [{"text": "first", "utterance_ids": [], "section": None}]
    items = [{"text": "Ada leads.", "utterance_ids": ["c:2"], "section": "decisions"}]
    structured = await store.add_summary("t", "c", "Decisions:\n- Ada leads.", "generative", 10, items)
    assert await store.latest_summary("t", "c") == structured and structured.items == items
    answer = await store.add_answer("t", "c", "Who?", "Ada.", ["c:2", "c:5"])
    assert answer.citations == ["c:2", "c:5"]
    assert (await store.add_answer("t", None, "Across all?", "Yes.", [])).conversation_id is None
    with pytest.raises(ConversationNotFound):
        await store.add_summary("other", "c", "x", "extractive", 0)


async def test_entity_filter(store: ConversationStore) -> None:
    await store.open_conversation("t", "c", "en")
    await store.open_conversation("t", "d", "en")
    paris, lyon, other = (
        await add(store, "t", "c", 0),
        await add(store, "t", "c", 1),
        await add(store, "t", "d", 0),
    )
    await store.set_entities("t", paris, [{"text": "Paris", "label": "LOC"}, {"text": "Ada", "label": "PER"}])
    await store.set_entities("t", lyon, [{"text": "Lyon", "label": "LOC"}])
    await store.set_entities("t", other, [{"text": "PARIS", "label": "LOC"}])
    await store.set_entities("intruder", lyon, [{"text": "x", "label": "PER"}])  # not its utterance
    assert await store.utterance_row_ids_with_entity("t", text="paris") == [paris, other]
    assert await store.utterance_row_ids_with_entity("t", label="LOC") == [paris, lyon, other]
    assert await store.utterance_row_ids_with_entity("t", text="paris", conversation_id="d") == [other]
    assert await store.utterance_row_ids_with_entity("t", label="PER") == [paris]
    assert await store.utterance_row_ids_with_entity("intruder", label="PER") == []
    await store.set_entities("t", lyon, [{"text": "Élodie Noël", "label": "PER"}])
    for asked in ("élodie noël", "ELODIE NOEL", "Elodie Noel"):  # any case, any accent
        assert await store.utterance_row_ids_with_entity("t", text=asked) == [lyon], asked


async def test_erase_a_conversation_and_log_its_vectors(store: ConversationStore) -> None:
    await store.open_conversation("t", "c", "en")
    await store.open_conversation("t", "d", "en")
    ids = [await add(store, "t", "c", 0), await add(store, "t", "c", 1)]
    kept = await add(store, "t", "d", 0)
    await store.add_summary("t", "c", "first", "extractive", 1)
    await store.add_answer("t", "c", "Who?", "Ada.", ["c:0"])
    await store.add_answer("t", None, "Across?", "Yes.", ["c:1", "d:0"])
    await store.add_answer("t", None, "Other?", "No.", ["d:0"])
    assert await store.erase_conversation("other", "c") is None  # another tenant's id
    erased = await store.erase_conversation("t", "c")
    assert erased is not None
    assert (erased.utterances, erased.summaries, erased.answers) == (2, 1, 2)
    assert erased.utterance_ids == tuple(ids)
    assert await store.get_conversation("t", "c") is None
    assert await store.erase_conversation("t", "c") is None  # idempotent
    assert [row_id for _, row_id in await store.erasures_after("t")] == ids
    first_seq = (await store.erasures_after("t"))[0][0]
    assert [row_id for _, row_id in await store.erasures_after("t", first_seq)] == ids[1:]
    assert await store.erasures_after("other") == []
    assert [u.id for u in await store.utterances("t", "d")] == [kept]
    assert await store.conversation_ids("t") == ["d"]


async def test_speaker_names_per_conversation(store: ConversationStore) -> None:
    await store.open_conversation("t", "c", "en")
    await store.open_conversation("t", "d", "en")
    await store.add_utterance("t", "c", 0, "hello", 0.0, 1.0, "en", speaker="S1")
    await store.add_utterance("t", "d", 0, "hi", 0.0, 1.0, "en", speaker="S1")
    assert await store.speaker_names("t", "c") == {}
    assert await store.name_speaker("t", "c", "S1", "Alice") is True
    assert await store.name_speaker("t", "c", "S1", "Alicia") is True  # a new name replaces the old
    assert await store.name_speaker("t", "c", "S2", "Bob") is False  # no utterance of S2
    assert await store.speaker_names("t", "c") == {"S1": "Alicia"}
    assert await store.speaker_names("t", "d") == {}  # names belong to one conversation
    assert await store.speaker_names("other", "c") == {}  # and to its tenant
    c0 = (await store.utterances("t", "c"))[0].id
    d0 = (await store.utterances("t", "d"))[0].id
    assert await store.utterance_row_ids_by_speaker("t", "alicia") == [c0]  # by name, any case
    assert await store.utterance_row_ids_by_speaker("t", "S1") == [c0, d0]  # by label
    assert await store.utterance_row_ids_by_speaker("t", "S1", "d") == [d0]
    assert await store.utterance_row_ids_by_speaker("other", "S1") == []
    with pytest.raises(ConversationNotFound):
        await store.name_speaker("other", "c", "S1", "Eve")
    await store.erase_conversation("t", "c")
    assert await store.speaker_names("t", "c") == {}


async def test_retention_and_idle_conversations(store: ConversationStore) -> None:
    await store.open_conversation("t", "old", "en")
    await add(store, "t", "old", 0)
    await store.open_conversation("u", "new", "en")
    cutoff = FakeClock().now + 1e6  # the fake clock started below this: everything is older
    assert await store.conversations_idle_since(cutoff) == [("t", "old"), ("u", "new")]
    assert await store.conversations_idle_since(cutoff, tenant_id="u") == [("u", "new")]
    assert await store.conversations_idle_since(0.0) == []
    assert await store.retention() == {}
    await store.set_retention("t", 30)
    assert await store.retention() == {"t": 30}
    await store.set_retention("t", None)
    assert await store.retention() == {}
    with pytest.raises(ValueError):
        await store.set_retention("t", 0)


async def test_redaction_kinds_of_a_tenant(store: ConversationStore) -> None:
    assert await store.redaction("t") == ()
    await store.set_redaction("t", ["card", "phone"])
    assert await store.redaction("t") == ("phone", "card")
    await store.set_redaction("t", [])
    assert await store.redaction("t") == ()
    with pytest.raises(ValueError):
        await store.set_redaction("t", ["ssn"])


async def test_vocabulary_of_a_tenant(store: ConversationStore) -> None:
    assert await store.vocabulary("t") == ()
    stored = await store.set_vocabulary("t", ["Zyphrex", "  Kessandra   Vollmer "])
    assert stored == ("Zyphrex", "Kessandra Vollmer")
    assert await store.vocabulary("t") == ("Zyphrex", "Kessandra Vollmer")
    assert await store.vocabulary("other") == ()
    with pytest.raises(ValueError, match="at most 100"):
        await store.set_vocabulary("t", [f"term{i}" for i in range(101)])
    assert await store.vocabulary("t") == ("Zyphrex", "Kessandra Vollmer")  # a refused change loses nothing
    await store.set_vocabulary("t", [])
    assert await store.vocabulary("t") == ()


async def test_audit_rows(store: ConversationStore) -> None:
    await store.ensure_tenant("t")
    first = await store.add_audit("t", "open", "export", "c", {"format": "vtt"})
    second = await store.add_audit("t", "token:3", "erase", "c", {"utterances": 2})
    await store.add_audit("u", "cli", "purge")
    assert [r.id for r in await store.audit("t")] == [second.id, first.id]
    assert (await store.audit("t", before_id=second.id))[0] == first
    assert first.detail == {"format": "vtt"} and first.conversation_id == "c"
    assert len(await store.audit(None)) == 3
    assert len(await store.audit(None, limit=1)) == 1


async def test_another_tenant_sees_nothing(store: ConversationStore) -> None:
    await store.open_conversation("a", "secret", "en")
    ids = [await add(store, "a", "secret", seq) for seq in range(3)]
    await store.ensure_tenant("b")
    with pytest.raises(ConversationNotFound):
        await store.open_conversation("b", "secret", "en")
    with pytest.raises(ConversationNotFound):
        await store.add_utterance("b", "secret", 3, "x", 0, 1, "en")
    assert await store.get_conversation("b", "secret") is None
    assert await store.list_conversations("b") == []
    assert await store.utterances("b", "secret") == []
    assert await store.utterances_by_ids("b", ids) == []
    assert [u async for u in store.all_utterances("b")] == []
    await store.ping()


# --- PostgreSQL: several front-ends, migrations, errors ------------------------------------


async def test_two_front_ends_on_one_conversation_never_store_a_seq_twice(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database()
    a, b = await PostgresStore.open(url), await PostgresStore.open(url)
    try:
        await a.open_conversation("t", "c", "en")
        await b.open_conversation("t", "c", "en")

        async def write(store: PostgresStore, who: str) -> list[str]:
            outcomes = []
            for seq in range(40):
                try:
                    row = await store.add_utterance("t", "c", seq, f"{who} {seq}", seq, seq + 1, "en")
                    outcomes.append(row.text)
                except UtteranceConflict:
                    outcomes.append("conflict")
            return outcomes

        got_a, got_b = await asyncio.gather(write(a, "A"), write(b, "B"))
        stored = await a.utterances("t", "c")
        assert [u.seq for u in stored] == list(range(40))
        for seq, row in enumerate(stored):  # each seq stored once; its writer saw it, the other a conflict
            mine, theirs = (got_a, got_b) if row.text.startswith("A") else (got_b, got_a)
            assert (mine[seq], theirs[seq]) == (row.text, "conflict")
        assert await b.next_seq("c") == 40
    finally:
        await a.close()
        await b.close()


async def test_front_ends_creating_one_conversation_at_once_share_it(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    stores = [await PostgresStore.open(url) for _ in range(4)]
    try:
        rows = await asyncio.gather(*(s.open_conversation("t", "same", "en") for s in stores))
        assert {r.id for r in rows} == {"same"}
        assert len(await stores[0].list_conversations("t")) == 1
    finally:
        for s in stores:
            await s.close()


async def test_migrations_run_once_and_a_newer_schema_is_refused(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    stores = await asyncio.gather(*(PostgresStore.open(url) for _ in range(3)))  # start together
    for s in stores:
        await s.close()
    conn = await asyncpg.connect(url)
    try:
        assert await migrate(conn) == SCHEMA_VERSION
        assert await conn.fetchval("SELECT count(*) FROM palabre_schema") == SCHEMA_VERSION
        await conn.execute("INSERT INTO palabre_schema (version) VALUES ($1)", SCHEMA_VERSION + 1)
    finally:
        await conn.close()
    with pytest.raises(SchemaTooNew, match="newer"):
        await PostgresStore.open(url)


async def test_a_wrong_password_is_reported_without_the_password(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database().replace(PASSWORD, "s3cret-wrong")
    with pytest.raises(StoreError) as error:
        await open_store(url, Path("unused"))
    assert "s3cret-wrong" not in str(error.value) and "password" in str(error.value).lower()
    assert without_password(url) in str(error.value)


async def test_an_unreachable_server_is_reported_clearly() -> None:
    url = f"postgresql://palabre:hunter2@127.0.0.1:{free_port()}/palabre"
    with pytest.raises(StoreError) as error:
        await PostgresStore.open(url, timeout_s=2.0)
    assert "hunter2" not in str(error.value)
    assert str(error.value).startswith(
        "cannot use the PostgreSQL store at postgresql://palabre:***@127.0.0.1:"
    )


def test_without_password() -> None:
    assert without_password("postgresql://u:p@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert without_password("postgresql://u:p:q@x@h/db") == "postgresql://u:***@h/db"
    assert without_password("postgresql://u@h/db") == "postgresql://u@h/db"
    assert without_password("postgresql://h/db") == "postgresql://h/db"


def test_db_migrate_command_and_config_never_show_the_password(
    postgres_server: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.cli import main
    from server.settings import format_config, resolve

    url = postgres_server.create_database()
    assert main(["db", "migrate"], env={"PALABRE_STORE": url}) == 0
    assert main(["db", "migrate", "--store", url.replace(PASSWORD, "s3cret-wrong")], env={}) == 2
    assert main(["db", "migrate", "--store", "mysql://u:s3cret@h/db"], env={}) == 2
    shown = capsys.readouterr()
    assert "schema up to date" in shown.out and "password authentication failed" in shown.err
    assert PASSWORD not in shown.out + shown.err and "s3cret" not in shown.out + shown.err
    assert PASSWORD not in format_config(resolve(None, {"PALABRE_STORE": url}))
