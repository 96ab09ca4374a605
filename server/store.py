"""The durable store: tenants, conversations, utterances, summaries, answers (SQLite).

Every final utterance is committed here *before* its `final` event is sent, so a final a client
has seen is never lost to a crash of the server process.

Durability. The database runs in WAL mode with `synchronous=NORMAL`. A commit appends the
transaction to the `-wal` file with write(2) before `COMMIT` returns; it is not fsync'ed (that
happens at checkpoints). Data handed to the kernel survives `kill -9`, an OOM kill or a crash of
the Python process, and SQLite recovers it from the WAL on the next open. What it does not
survive is a power loss or kernel crash, which can roll back the last few transactions (the
database itself stays consistent). Surviving those too needs `synchronous="FULL"` (an option
of `Store.open`): an fsync per final, on the path between the ASR result and the client.
`bench/store_write.py` measures both.

Schema. `MIGRATIONS` is the history of the schema, one numbered step per entry; the database's
`PRAGMA user_version` is the number of steps applied. `Store.open` applies the missing steps,
each in its own transaction together with the new `user_version`, so a step is applied entirely
or not at all. A database written by newer code (a higher version) is refused with
`SchemaTooNew` rather than used. A released step is never edited: a change is a new step at the
end. (A step that rebuilds a table must keep foreign keys consistent: `PRAGMA foreign_keys`
cannot be switched off inside a transaction, and every step ends with `PRAGMA
foreign_key_check`.)

Tenancy. Every read takes the tenant's id and filters by it (except `next_seq`, called on a
conversation `open_conversation` has already checked); a conversation of another tenant is
reported exactly as a conversation that does not exist (`ConversationNotFound`). Utterances,
summaries and answers reference their conversation by `(conversation_id, tenant_id)`, so the
schema itself refuses a row whose tenant is not its conversation's. One thing does leak:
conversation ids are global, so `open_conversation` with a client-chosen id that another tenant
already uses fails where an unused id would be created. Server-made ids (uuid4) are unguessable;
a client-chosen id tells another tenant only that it is taken.

API tokens. Only a token's SHA-256 is stored (`create_token`); `lookup_token` finds a valid
token by that hash in a unique index. Making and hashing tokens is server/auth.py's business.

Threads. A `Store` is one SQLite connection, used by one thread at a time. The asyncio server
uses `AsyncStore`, which runs every call, in order, on one dedicated thread.

Times are seconds since the Unix epoch (`time.time()`, or the `clock` given to `open`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, Generic, Literal, ParamSpec, TypeVar, overload

from stream.events import CONVERSATION_ID_RE, utterance_id
from stream.language import fold
from stream.redaction import check_redaction
from stream.vocabulary import check_vocabulary

SummaryMethod = Literal["generative", "extractive"]
ConversationStatus = Literal["live", "ended"]
Synchronous = Literal["NORMAL", "FULL"]
_SYNCHRONOUS: dict[str, str] = {"NORMAL": "NORMAL", "FULL": "FULL"}

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: tenants, conversations and their utterances (the transcript).
    (
        """
        CREATE TABLE tenants (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            created_at REAL NOT NULL
        )
        """,
        """
        CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            title TEXT,
            language TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            ended_at REAL,
            status TEXT NOT NULL DEFAULT 'live' CHECK (status IN ('live', 'ended')),
            UNIQUE (id, tenant_id)
        )
        """,
        "CREATE INDEX conversations_by_tenant ON conversations (tenant_id, updated_at)",
        # AUTOINCREMENT: an id is never reused, even after a delete, because vector indexes
        # outside the database refer to utterances by it.
        """
        CREATE TABLE utterances (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            public_id TEXT NOT NULL UNIQUE,
            conversation_id TEXT NOT NULL,
            tenant_id TEXT NOT NULL,
            seq INTEGER NOT NULL CHECK (seq >= 0),
            text TEXT NOT NULL,
            start REAL NOT NULL,
            "end" REAL NOT NULL,
            language TEXT,
            speaker TEXT,
            track TEXT,
            entities TEXT CHECK (entities IS NULL OR json_valid(entities)),
            created_at REAL NOT NULL,
            UNIQUE (conversation_id, seq),
            FOREIGN KEY (conversation_id, tenant_id) REFERENCES conversations (id, tenant_id)
        )
        """,
        "CREATE INDEX utterances_by_tenant ON utterances (tenant_id, id)",
    ),
    # 2: what is derived from a transcript: summaries and answers to questions.
    (
        """
        CREATE TABLE summaries (
            id INTEGER PRIMARY KEY,
            conversation_id TEXT NOT NULL,
            tenant_id TEXT NOT NULL,
            text TEXT NOT NULL,
            method TEXT NOT NULL CHECK (method IN ('generative', 'extractive')),
            utterance_seq_upto INTEGER NOT NULL,
            created_at REAL NOT NULL,
            FOREIGN KEY (conversation_id, tenant_id) REFERENCES conversations (id, tenant_id)
        )
        """,
        "CREATE INDEX summaries_by_conversation ON summaries (conversation_id, id)",
        """
        CREATE TABLE answers (
            id INTEGER PRIMARY KEY,
            conversation_id TEXT,
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            question TEXT NOT NULL,
            text TEXT NOT NULL,
            citations TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(citations)),
            created_at REAL NOT NULL,
            FOREIGN KEY (conversation_id, tenant_id) REFERENCES conversations (id, tenant_id)
        )
        """,
        "CREATE INDEX answers_by_conversation ON answers (conversation_id, id)",
        "CREATE INDEX answers_by_tenant ON answers (tenant_id, id)",
    ),
    # 3: API tokens (only their hashes are stored).
    (
        """
        CREATE TABLE api_tokens (
            id INTEGER PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            token_hash TEXT NOT NULL UNIQUE,
            scopes TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(scopes)),
            created_at REAL NOT NULL,
            revoked_at REAL
        )
        """,
        "CREATE INDEX api_tokens_by_tenant ON api_tokens (tenant_id)",
    ),
    # 4: a summary's items, each with the utterances it comes from (NULL for older summaries).
    ("ALTER TABLE summaries ADD COLUMN items TEXT CHECK (items IS NULL OR json_valid(items))",),
    # 5: the log of erased utterances (row ids only), which vector indexes replay to drop them.
    (
        """
        CREATE TABLE erasures (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            tenant_id TEXT NOT NULL,
            utterance_id INTEGER NOT NULL,
            erased_at REAL NOT NULL
        )
        """,
        "CREATE INDEX erasures_by_tenant ON erasures (tenant_id, seq)",
    ),
    # 6: the audit log: who exported, erased, purged or read across conversations (never text).
    (
        """
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            tenant_id TEXT NOT NULL,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            conversation_id TEXT,
            detail TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(detail))
        )
        """,
        "CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id)",
    ),
    # 7: how long a tenant keeps its conversations (NULL: for ever).
    (
        "ALTER TABLE tenants ADD COLUMN retention_days INTEGER"
        " CHECK (retention_days IS NULL OR retention_days > 0)",
    ),
    # 8: the names given to a conversation's speakers (PUT /v1/conversations/{id}/speakers/{label}).
    (
        """
        CREATE TABLE speaker_names (
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            label TEXT NOT NULL,
            name TEXT NOT NULL,
            named_at REAL NOT NULL,
            PRIMARY KEY (conversation_id, label)
        )
        """,
    ),
    # 9: what a tenant's sessions always redact (a JSON array of `stream.redaction` kinds).
    ("ALTER TABLE tenants ADD COLUMN redact TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(redact))",),
    # 10: the words of an utterance with their times (`start.word_timestamps`; NULL when not asked).
    ("ALTER TABLE utterances ADD COLUMN words TEXT CHECK (words IS NULL OR json_valid(words))",),
    # 11: the names and terms a tenant's sessions give the recogniser (PUT /v1/vocabulary; a JSON array).
    ("ALTER TABLE tenants ADD COLUMN vocabulary TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(vocabulary))",),
)
"""The schema's history; step N (from 1) is `MIGRATIONS[N - 1]`, a sequence of SQL statements."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The `user_version` of a database this code has fully migrated."""


_IDS_PER_QUERY = 500
"""Ids bound into one `IN (...)` query, well below SQLite's limit on bound parameters."""


# --- errors ---------------------------------------------------------------------------------


class StoreError(Exception):
    """A request the store refuses, or a database it cannot use."""


class SchemaTooNew(StoreError):
    """The database was written by a newer Palabre (its schema version is above ours)."""


class ConversationNotFound(StoreError, LookupError):
    """No conversation with this id for this tenant.

    Raised alike whether the conversation does not exist or belongs to another tenant.
    """

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"no conversation {conversation_id!r}")
        self.conversation_id = conversation_id


class UtteranceConflict(StoreError):
    """An utterance with this seq is already stored in the conversation with a different text."""


class StoreUnavailable(StoreError):
    """The database cannot be reached now (a lost connection, a server shutting down or
    restarting, one that stopped answering): the same call may succeed later. Only the
    PostgreSQL store raises it; a live session holds its finals and retries (server/final_hold.py)."""


# --- rows -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationRow:
    """A conversation and how many utterances it holds."""

    id: str
    tenant_id: str
    title: str | None
    language: str | None
    created_at: float
    updated_at: float
    """The last time it was opened, resumed, ended or given an utterance."""
    ended_at: float | None
    status: ConversationStatus
    utterance_count: int


@dataclass(frozen=True, slots=True)
class UtteranceRow:
    """One final utterance."""

    id: int
    """Stable integer id, never reused; the key of vector indexes."""
    public_id: str
    """The wire `utterance_id`: `"<conversation_id>:<seq>"`."""
    conversation_id: str
    tenant_id: str
    seq: int
    """Position in the conversation, from 0."""
    text: str
    start: float
    """Seconds from conversation start."""
    end: float
    language: str | None
    speaker: str | None
    track: str | None
    entities: list[dict[str, Any]] | None
    created_at: float
    words: list[dict[str, Any]] | None = None
    """`{"word","start","end","probability"}` of each word in conversation seconds, when the
    session asked for them (`start.word_timestamps`)."""


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """A summary of a conversation's utterances with seq up to `utterance_seq_upto`."""

    id: int
    conversation_id: str
    tenant_id: str
    text: str
    method: SummaryMethod
    utterance_seq_upto: int
    created_at: float
    items: list[dict[str, Any]]
    """Its points (`stream.events.SummaryItem` as JSON: `text`, `utterance_ids`, `section`); a
    summary stored before schema 4 reads as one item holding its text."""


@dataclass(frozen=True, slots=True)
class AnswerRow:
    """An answer to a question, about one conversation or (`conversation_id` None) all of them."""

    id: int
    conversation_id: str | None
    tenant_id: str
    question: str
    text: str
    citations: list[Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class ErasedConversation:
    """What `erase_conversation` deleted (counts and row ids only: never the text)."""

    conversation_id: str
    tenant_id: str
    utterances: int
    summaries: int
    answers: int
    utterance_ids: tuple[int, ...]
    """The utterances' row ids (their vectors must leave the indexes: see `erasures_after`)."""


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One audited action: who did what, when, to which conversation (never what was said)."""

    id: int
    tenant_id: str
    at: float
    actor: str
    """`token:<id>`, `open` (open access) or `cli` (a `palabre` command)."""
    action: str
    conversation_id: str | None
    detail: dict[str, Any]
    """Counts and parameters (a format, a limit), never transcript text or a search query."""


@dataclass(frozen=True, slots=True)
class TokenRow:
    """An API token as stored: never the token itself, only what it grants."""

    id: int
    tenant_id: str
    scopes: tuple[str, ...]
    created_at: float
    revoked_at: float | None
    """When it was revoked; None while it is valid."""


# --- schema ---------------------------------------------------------------------------------


def schema_version(conn: sqlite3.Connection) -> int:
    """The number of migration steps applied to the database (`PRAGMA user_version`)."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def migrate(conn: sqlite3.Connection, migrations: Sequence[Sequence[str]] = MIGRATIONS) -> int:
    """Apply the steps of `migrations` the database lacks; return its version afterwards.

    `conn` must be in autocommit mode (`isolation_level=None`). Each step runs in its own
    `BEGIN IMMEDIATE` transaction, re-reads the version inside it (another process may have
    migrated meanwhile), and commits together with the new `user_version`. A failing step is
    rolled back and its error raised; the steps before it stay applied.
    """
    target = len(migrations)
    version = schema_version(conn)
    if version > target:
        raise SchemaTooNew(
            f"database schema version {version} is newer than this Palabre's ({target}); "
            "upgrade Palabre or open another database"
        )
    for number in range(version + 1, target + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(conn) >= number:
                conn.execute("ROLLBACK")
                continue
            for statement in migrations[number - 1]:
                conn.execute(statement)
            violations = conn.execute("PRAGMA foreign_key_check").fetchall()
            if violations:
                raise StoreError(f"migration {number} leaves foreign keys broken: {violations[:5]}")
            conn.execute(f"PRAGMA user_version = {number:d}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    version = schema_version(conn)
    if version > target:
        raise SchemaTooNew(f"database schema version {version} is newer than this Palabre's ({target})")
    return version


# --- the store ------------------------------------------------------------------------------

CONVERSATION_SELECT = """
    SELECT c.id, c.tenant_id, c.title, c.language, c.created_at, c.updated_at, c.ended_at,
           c.status,
           (SELECT COUNT(*) FROM utterances AS u WHERE u.conversation_id = c.id) AS utterance_count
    FROM conversations AS c
"""

UTTERANCE_COLUMNS = """
    id, public_id, conversation_id, tenant_id, seq, text, start, "end", language, speaker, track,
    entities, created_at, words
"""

SUMMARY_COLUMNS = "id, conversation_id, tenant_id, text, method, utterance_seq_upto, created_at, items"
"""The columns read from each table: the same SQL on SQLite and PostgreSQL (`store_postgresql`)."""


class Store:
    """The durable store over one SQLite connection; use it from one thread at a time.

    Writes commit before they return. Open with `Store.open`.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, clock: Callable[[], float]) -> None:
        self._conn = conn
        self._clock = clock
        self.path = path

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 5.0,
        synchronous: Synchronous = "NORMAL",
    ) -> Store:
        """Open (creating if needed) the database file at `path` and migrate it to `SCHEMA_VERSION`.

        `busy_timeout_s` is how long a statement waits for a lock held by another connection
        (another process on the same file) before failing. `synchronous="FULL"` fsyncs every
        commit, so that acknowledged finals also survive a power loss (see the module's notes).
        """
        # check_same_thread=False: AsyncStore opens the connection and uses it on its own
        # worker thread; a Store is never used by two threads at once.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000):d}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: SQLite cannot use a write-ahead log here (journal_mode={mode})")
            conn.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[synchronous]}")
            conn.execute("PRAGMA foreign_keys = ON")
            # Deleted content is overwritten with zeros rather than left in free pages (erasure).
            conn.execute("PRAGMA secure_delete = ON")
            # Entity names match case- and accent-insensitively ("elodie" finds "Élodie"), as words do.
            conn.create_function("fold", 1, fold, deterministic=True)
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, clock)

    def close(self) -> None:
        """Close the connection (the last one to close folds the WAL back into the database)."""
        self._conn.close()

    def ping(self) -> None:
        """One trivial query: raises when the database cannot be read (for readiness)."""
        self._conn.execute("SELECT 1").fetchone()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # --- writes ---

    def ensure_tenant(self, tenant_id: str) -> None:
        """Create the tenant if it does not exist yet (named after its id)."""
        with self._transaction() as conn:
            self._ensure_tenant(conn, tenant_id, self._clock())

    def open_conversation(
        self, tenant_id: str, conversation_id: str | None, language: str | None
    ) -> ConversationRow:
        """Create a conversation, or resume one of this tenant, and mark it live.

        With `conversation_id` None a new id (a uuid4 in hex) is made. A given id that does not
        exist yet is created under that id (it must match `CONVERSATION_ID_RE`, else
        `ValueError`). An existing conversation of this tenant is resumed: status back to
        `live`, `ended_at` cleared, its language kept unless it had none. An id that belongs
        to another tenant raises `ConversationNotFound`. The tenant is created if needed.
        """
        if conversation_id is not None and not CONVERSATION_ID_RE.fullmatch(conversation_id):
            raise ValueError(
                f"invalid conversation id {conversation_id!r}: 1-128 letters, digits, '_', '.' or '-'"
            )
        now = self._clock()
        with self._transaction() as conn:
            self._ensure_tenant(conn, tenant_id, now)
            owner = None
            if conversation_id is None:
                conversation_id = uuid.uuid4().hex
            else:
                found = conn.execute(
                    "SELECT tenant_id FROM conversations WHERE id = ?", (conversation_id,)
                ).fetchone()
                owner = None if found is None else found[0]
            if owner is None:
                conn.execute(
                    "INSERT INTO conversations (id, tenant_id, language, created_at, updated_at, status)"
                    " VALUES (?, ?, ?, ?, ?, 'live')",
                    (conversation_id, tenant_id, language, now, now),
                )
            elif owner != tenant_id:
                raise ConversationNotFound(conversation_id)
            else:
                conn.execute(
                    "UPDATE conversations SET status = 'live', ended_at = NULL, updated_at = ?,"
                    " language = COALESCE(language, ?) WHERE id = ?",
                    (now, language, conversation_id),
                )
            row = self._get_conversation(conn, tenant_id, conversation_id)
        assert row is not None
        return row

    def next_seq(self, conversation_id: str) -> int:
        """The seq the next utterance of the conversation gets: its highest seq + 1, or 0."""
        seq: int = self._conn.execute(
            "SELECT COALESCE(MAX(seq) + 1, 0) FROM utterances WHERE conversation_id = ?",
            (conversation_id,),
        ).fetchone()[0]
        return seq

    def last_end(self, tenant_id: str, conversation_id: str, track: str | None = None) -> float | None:
        """The `end` of the track's last stored utterance in the conversation (None: it has none)."""
        row = self._conn.execute(
            'SELECT "end" FROM utterances WHERE conversation_id = ? AND tenant_id = ? AND track IS ?'
            " ORDER BY seq DESC LIMIT 1",
            (conversation_id, tenant_id, track),
        ).fetchone()
        return None if row is None else float(row[0])

    def add_utterance(
        self,
        tenant_id: str,
        conversation_id: str,
        seq: int,
        text: str,
        start: float,
        end: float,
        language: str | None,
        track: str | None = None,
        speaker: str | None = None,
        entities: Sequence[Mapping[str, Any]] | None = None,
        words: Sequence[Mapping[str, Any]] | None = None,
    ) -> UtteranceRow:
        """Store a final utterance (with its `words` when known); it is committed when this returns.

        Idempotent on `(conversation_id, seq)`: storing a seq again with the same text returns
        the row stored first (a client resuming after a reconnect), with a different text it
        raises `UtteranceConflict`; a stored utterance is never overwritten nor duplicated.
        Raises `ConversationNotFound` if the conversation is not this tenant's.
        """
        if seq < 0:
            raise ValueError(f"seq must be >= 0, got {seq}")
        public_id = utterance_id(conversation_id, seq)
        entities_list = None if entities is None else [dict(e) for e in entities]
        entities_json = None if entities_list is None else json.dumps(entities_list, ensure_ascii=False)
        words_list = None if words is None else [dict(w) for w in words]
        words_json = None if words_list is None else json.dumps(words_list, ensure_ascii=False)
        now = self._clock()
        with self._transaction() as conn:
            self._require_conversation(conn, tenant_id, conversation_id)
            cursor = conn.execute(
                f"INSERT INTO utterances ({UTTERANCE_COLUMNS})"
                " VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (conversation_id, seq) DO NOTHING",
                (
                    public_id,
                    conversation_id,
                    tenant_id,
                    seq,
                    text,
                    start,
                    end,
                    language,
                    speaker,
                    track,
                    entities_json,
                    now,
                    words_json,
                ),
            )
            if cursor.rowcount == 1:
                conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
                assert cursor.lastrowid is not None
                stored = UtteranceRow(
                    id=cursor.lastrowid,
                    public_id=public_id,
                    conversation_id=conversation_id,
                    tenant_id=tenant_id,
                    seq=seq,
                    text=text,
                    start=start,
                    end=end,
                    language=language,
                    speaker=speaker,
                    track=track,
                    entities=entities_list,
                    created_at=now,
                    words=words_list,
                )
            else:
                found = conn.execute(
                    f"SELECT {UTTERANCE_COLUMNS} FROM utterances WHERE conversation_id = ? AND seq = ?",
                    (conversation_id, seq),
                ).fetchone()
                stored = _utterance(found)
        if stored.text != text:
            raise UtteranceConflict(f"utterance {public_id} is already stored with a different text")
        return stored

    def set_entities(
        self, tenant_id: str, utterance_row_id: int, entities: Sequence[Mapping[str, Any]]
    ) -> None:
        """Record the named entities found in a stored utterance (of this tenant), by its row id."""
        payload = json.dumps([dict(e) for e in entities], ensure_ascii=False)
        with self._transaction() as conn:
            conn.execute(
                "UPDATE utterances SET entities = ? WHERE id = ? AND tenant_id = ?",
                (payload, utterance_row_id, tenant_id),
            )

    def utterance_row_ids_with_entity(
        self,
        tenant_id: str,
        *,
        text: str | None = None,
        label: str | None = None,
        conversation_id: str | None = None,
    ) -> list[int]:
        """Row ids of the tenant's utterances with an entity matching `text` (case- and
        accent-insensitive, `stream.language.fold`) and/or `label`."""
        query = (
            "SELECT DISTINCT u.id FROM utterances u, json_each(u.entities) e"
            " WHERE u.tenant_id = ? AND u.entities IS NOT NULL"
        )
        args: list[Any] = [tenant_id]
        if text is not None:
            query += " AND fold(json_extract(e.value, '$.text')) = ?"
            args.append(fold(text))
        if label is not None:
            query += " AND json_extract(e.value, '$.label') = ?"
            args.append(label)
        if conversation_id is not None:
            query += " AND u.conversation_id = ?"
            args.append(conversation_id)
        return [int(row[0]) for row in self._conn.execute(query + " ORDER BY u.id", args)]

    def utterance_row_ids_by_speaker(
        self, tenant_id: str, speaker: str, conversation_id: str | None = None
    ) -> list[int]:
        """Row ids of the tenant's utterances whose speaker has this label, or this name (any case),
        in id order."""
        query = (
            "SELECT u.id FROM utterances AS u LEFT JOIN speaker_names AS n"
            " ON n.conversation_id = u.conversation_id AND n.label = u.speaker"
            " WHERE u.tenant_id = ? AND (u.speaker = ? OR lower(n.name) = lower(?))"
        )
        args: list[Any] = [tenant_id, speaker, speaker]
        if conversation_id is not None:
            query += " AND u.conversation_id = ?"
            args.append(conversation_id)
        return [int(row[0]) for row in self._conn.execute(query + " ORDER BY u.id", args)]

    def end_conversation(self, conversation_id: str) -> None:
        """Mark a live conversation ended (it can be resumed by `open_conversation`)."""
        now = self._clock()
        with self._transaction() as conn:
            conn.execute(
                "UPDATE conversations SET status = 'ended', ended_at = ?, updated_at = ?"
                " WHERE id = ? AND status = 'live'",
                (now, now, conversation_id),
            )

    def add_summary(
        self,
        tenant_id: str,
        conversation_id: str,
        text: str,
        method: SummaryMethod,
        utterance_seq_upto: int,
        items: Sequence[Mapping[str, Any]] | None = None,
    ) -> SummaryRow:
        """Store a summary of the conversation's utterances up to seq `utterance_seq_upto`.

        `text` is the summary as plain text; `items` its points (default: one holding `text`).
        """
        item_list = [dict(item) for item in items] if items is not None else _one_item(text)
        now = self._clock()
        with self._transaction() as conn:
            self._require_conversation(conn, tenant_id, conversation_id)
            cursor = conn.execute(
                "INSERT INTO summaries (conversation_id, tenant_id, text, method, utterance_seq_upto,"
                " created_at, items) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    tenant_id,
                    text,
                    method,
                    utterance_seq_upto,
                    now,
                    json.dumps(item_list, ensure_ascii=False),
                ),
            )
        assert cursor.lastrowid is not None
        return SummaryRow(
            cursor.lastrowid, conversation_id, tenant_id, text, method, utterance_seq_upto, now, item_list
        )

    def add_answer(
        self,
        tenant_id: str,
        conversation_id: str | None,
        question: str,
        text: str,
        citations: Sequence[Any],
    ) -> AnswerRow:
        """Store an answer; `citations` is a list of JSON values (e.g. utterance public ids)."""
        citations_list = list(citations)
        citations_json = json.dumps(citations_list, ensure_ascii=False)
        now = self._clock()
        with self._transaction() as conn:
            self._ensure_tenant(conn, tenant_id, now)
            if conversation_id is not None:
                self._require_conversation(conn, tenant_id, conversation_id)
            cursor = conn.execute(
                "INSERT INTO answers (conversation_id, tenant_id, question, text, citations, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (conversation_id, tenant_id, question, text, citations_json, now),
            )
        assert cursor.lastrowid is not None
        return AnswerRow(cursor.lastrowid, conversation_id, tenant_id, question, text, citations_list, now)

    def name_speaker(self, tenant_id: str, conversation_id: str, label: str, name: str) -> bool:
        """Call the conversation's speaker `label` `name` (replacing an earlier name). False when no
        utterance of the conversation has that speaker; `ConversationNotFound` when the tenant has
        no such conversation."""
        with self._transaction() as conn:
            self._require_conversation(conn, tenant_id, conversation_id)
            spoke = conn.execute(
                "SELECT 1 FROM utterances WHERE conversation_id = ? AND speaker = ? LIMIT 1",
                (conversation_id, label),
            ).fetchone()
            if spoke is None:
                return False
            conn.execute(
                "INSERT INTO speaker_names (conversation_id, label, name, named_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (conversation_id, label) DO UPDATE SET name = excluded.name,"
                " named_at = excluded.named_at",
                (conversation_id, label, name, self._clock()),
            )
        return True

    def speaker_names(self, tenant_id: str, conversation_id: str) -> dict[str, str]:
        """The names given to the conversation's speakers: {label: name} ({} for another tenant's)."""
        rows = self._conn.execute(
            "SELECT n.label, n.name FROM speaker_names AS n JOIN conversations AS c"
            " ON c.id = n.conversation_id WHERE n.conversation_id = ? AND c.tenant_id = ?",
            (conversation_id, tenant_id),
        ).fetchall()
        return {str(row[0]): str(row[1]) for row in rows}

    # --- erasure ---

    def erase_conversation(self, tenant_id: str, conversation_id: str) -> ErasedConversation | None:
        """Delete the tenant's conversation and everything derived from it, in one transaction.

        Deleted: its utterances (entities included), summaries, answers about it, and the
        tenant-wide answers that cite one of its utterances. Each utterance's row id is logged
        in `erasures` so that vector indexes drop its vector (`erasures_after`). Deleted pages
        are zeroed (`secure_delete`) and the write-ahead log is truncated afterwards when no
        other connection reads it, so the text does not linger in the database files.
        Returns None when the tenant has no such conversation (erasing again is not an error).
        """
        now = self._clock()
        with self._transaction() as conn:
            found = conn.execute(
                "SELECT 1 FROM conversations WHERE id = ? AND tenant_id = ?", (conversation_id, tenant_id)
            ).fetchone()
            if found is None:
                return None
            ids = tuple(
                int(row[0])
                for row in conn.execute(
                    "SELECT id FROM utterances WHERE conversation_id = ? ORDER BY id", (conversation_id,)
                )
            )
            conn.executemany(
                "INSERT INTO erasures (tenant_id, utterance_id, erased_at) VALUES (?, ?, ?)",
                [(tenant_id, i, now) for i in ids],
            )
            citing = f"{conversation_id}:"
            answers = conn.execute(
                "DELETE FROM answers WHERE tenant_id = ? AND (conversation_id = ? OR (conversation_id IS NULL"
                " AND EXISTS (SELECT 1 FROM json_each(answers.citations) AS c"
                " WHERE substr(c.value, 1, ?) = ?)))",
                (tenant_id, conversation_id, len(citing), citing),
            ).rowcount
            summaries = conn.execute(
                "DELETE FROM summaries WHERE conversation_id = ?", (conversation_id,)
            ).rowcount
            conn.execute("DELETE FROM utterances WHERE conversation_id = ?", (conversation_id,))
            conn.execute("DELETE FROM speaker_names WHERE conversation_id = ?", (conversation_id,))
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        self._truncate_wal()
        return ErasedConversation(conversation_id, tenant_id, len(ids), summaries, answers, ids)

    def erasures_after(
        self, tenant_id: str, after_seq: int = 0, limit: int = 10_000
    ) -> list[tuple[int, int]]:
        """`(seq, utterance row id)` of the tenant's erasures logged after `after_seq`, in order."""
        rows = self._conn.execute(
            "SELECT seq, utterance_id FROM erasures WHERE tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (tenant_id, after_seq, limit),
        ).fetchall()
        return [(int(row[0]), int(row[1])) for row in rows]

    def conversation_tenant(self, conversation_id: str) -> str | None:
        """The tenant a conversation belongs to, or None (for administration, not for requests)."""
        row = self._conn.execute(
            "SELECT tenant_id FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def conversation_ids(self, tenant_id: str) -> list[str]:
        """Every conversation id of the tenant (oldest first)."""
        rows = self._conn.execute(
            "SELECT id FROM conversations WHERE tenant_id = ? ORDER BY created_at, id", (tenant_id,)
        ).fetchall()
        return [str(row[0]) for row in rows]

    def set_retention(self, tenant_id: str, days: int | None) -> None:
        """Keep the tenant's conversations `days` days after their last utterance (None: for ever);
        the tenant is created if needed."""
        if days is not None and days <= 0:
            raise ValueError(f"retention days must be positive, not {days}")
        with self._transaction() as conn:
            self._ensure_tenant(conn, tenant_id, self._clock())
            conn.execute("UPDATE tenants SET retention_days = ? WHERE id = ?", (days, tenant_id))

    def set_redaction(self, tenant_id: str, kinds: Sequence[str]) -> None:
        """Redact `kinds` (`stream.redaction.REDACTION_KINDS`) in every session of the tenant, on top
        of what a session asks; none: only what sessions ask. The tenant is created if needed."""
        kinds = check_redaction(list(kinds))
        with self._transaction() as conn:
            self._ensure_tenant(conn, tenant_id, self._clock())
            conn.execute("UPDATE tenants SET redact = ? WHERE id = ?", (json.dumps(kinds), tenant_id))

    def redaction(self, tenant_id: str) -> tuple[str, ...]:
        """The kinds every session of the tenant redacts (none for an unknown tenant)."""
        row = self._conn.execute("SELECT redact FROM tenants WHERE id = ?", (tenant_id,)).fetchone()
        return () if row is None else tuple(json.loads(row[0]))

    def set_vocabulary(self, tenant_id: str, terms: Sequence[str]) -> tuple[str, ...]:
        """Give `terms` (checked by `stream.vocabulary.check_vocabulary`, which raises ValueError)
        to the recogniser in every session of the tenant, after the session's own; none: only the
        session's. Returns the terms stored. The tenant is created if needed."""
        checked = check_vocabulary(list(terms))
        with self._transaction() as conn:
            self._ensure_tenant(conn, tenant_id, self._clock())
            conn.execute("UPDATE tenants SET vocabulary = ? WHERE id = ?", (json.dumps(checked), tenant_id))
        return checked

    def vocabulary(self, tenant_id: str) -> tuple[str, ...]:
        """The tenant's vocabulary (none for an unknown tenant)."""
        row = self._conn.execute("SELECT vocabulary FROM tenants WHERE id = ?", (tenant_id,)).fetchone()
        return () if row is None else tuple(json.loads(row[0]))

    def retention(self) -> dict[str, int]:
        """Tenant → retention days, for the tenants that have one."""
        rows = self._conn.execute("SELECT id, retention_days FROM tenants WHERE retention_days IS NOT NULL")
        return {str(row[0]): int(row[1]) for row in rows}

    def conversations_idle_since(
        self, cutoff: float, tenant_id: str | None = None, limit: int = 100
    ) -> list[tuple[str, str]]:
        """`(tenant, conversation id)` of up to `limit` conversations whose last utterance (or, with
        none, their creation) is older than `cutoff` (epoch seconds), oldest first."""
        where, args = ("WHERE c.tenant_id = ?", [tenant_id]) if tenant_id is not None else ("", [])
        rows = self._conn.execute(
            "SELECT c.tenant_id, c.id, COALESCE(MAX(u.created_at), c.created_at) AS last"
            f" FROM conversations AS c LEFT JOIN utterances AS u ON u.conversation_id = c.id {where}"
            " GROUP BY c.id HAVING last < ? ORDER BY last LIMIT ?",
            (*args, cutoff, limit),
        ).fetchall()
        return [(str(row[0]), str(row[1])) for row in rows]

    def _truncate_wal(self) -> None:
        """Checkpoint and empty the write-ahead log (a no-op while another connection reads)."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError:
            pass  # busy: the next checkpoint overwrites the log

    # --- audit ---

    def add_audit(
        self,
        tenant_id: str,
        actor: str,
        action: str,
        conversation_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditRow:
        """Record an audited action (committed when this returns)."""
        detail_dict = dict(detail or {})
        now = self._clock()
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO audit_log (tenant_id, at, actor, action, conversation_id, detail)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (tenant_id, now, actor, action, conversation_id, json.dumps(detail_dict, ensure_ascii=False)),
            )
        assert cursor.lastrowid is not None
        return AuditRow(cursor.lastrowid, tenant_id, now, actor, action, conversation_id, detail_dict)

    def audit(self, tenant_id: str | None, limit: int = 100, before_id: int | None = None) -> list[AuditRow]:
        """The latest audited actions of one tenant (or of every tenant), newest first, with id
        below `before_id` when given (to page back)."""
        where: list[str] = ["1 = 1"]
        args: list[Any] = []
        if tenant_id is not None:
            where.append("tenant_id = ?")
            args.append(tenant_id)
        if before_id is not None:
            where.append("id < ?")
            args.append(before_id)
        rows = self._conn.execute(
            "SELECT id, tenant_id, at, actor, action, conversation_id, detail FROM audit_log"
            f" WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [
            AuditRow(
                r["id"],
                r["tenant_id"],
                r["at"],
                r["actor"],
                r["action"],
                r["conversation_id"],
                json.loads(r["detail"]),
            )
            for r in rows
        ]

    # --- reads (each filtered by tenant) ---

    def get_conversation(self, tenant_id: str, conversation_id: str) -> ConversationRow | None:
        """The tenant's conversation with this id, or None."""
        return self._get_conversation(self._conn, tenant_id, conversation_id)

    def list_conversations(self, tenant_id: str, limit: int = 100) -> list[ConversationRow]:
        """The tenant's conversations, most recently updated first."""
        rows = self._conn.execute(
            f"{CONVERSATION_SELECT} WHERE c.tenant_id = ? ORDER BY c.updated_at DESC, c.id DESC LIMIT ?",
            (tenant_id, limit),
        ).fetchall()
        return [_conversation(row) for row in rows]

    def utterances(
        self, tenant_id: str, conversation_id: str, after_seq: int = -1, limit: int | None = None
    ) -> list[UtteranceRow]:
        """The conversation's utterances with seq above `after_seq`, in seq order (the first
        `limit` of them when given: a page).

        Empty if the conversation does not exist or is not this tenant's.
        """
        rows = self._conn.execute(
            f"SELECT {UTTERANCE_COLUMNS} FROM utterances"
            " WHERE conversation_id = ? AND tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (conversation_id, tenant_id, after_seq, -1 if limit is None else limit),
        ).fetchall()
        return [_utterance(row) for row in rows]

    def utterances_in_time_order(
        self,
        tenant_id: str,
        conversation_id: str,
        after: tuple[float, int] | None = None,
        limit: int = 1000,
    ) -> list[UtteranceRow]:
        """A page of the conversation's utterances in time order (start, then seq): the first
        `limit` after `after`, the (start, seq) of the previous page's last one."""
        start, seq = after if after is not None else (float("-inf"), -1)
        rows = self._conn.execute(
            f"SELECT {UTTERANCE_COLUMNS} FROM utterances"
            " WHERE conversation_id = ? AND tenant_id = ? AND (start, seq) > (?, ?)"
            " ORDER BY start, seq LIMIT ?",
            (conversation_id, tenant_id, start, seq, limit),
        ).fetchall()
        return [_utterance(row) for row in rows]

    def utterances_by_ids(self, tenant_id: str, row_ids: Sequence[int]) -> list[UtteranceRow]:
        """The tenant's utterances with these row ids, in the order of `row_ids`, each once.

        Ids that do not exist or belong to another tenant are left out.
        """
        wanted = list(dict.fromkeys(row_ids))
        found: dict[int, UtteranceRow] = {}
        for i in range(0, len(wanted), _IDS_PER_QUERY):
            chunk = wanted[i : i + _IDS_PER_QUERY]
            marks = ", ".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT {UTTERANCE_COLUMNS} FROM utterances WHERE tenant_id = ? AND id IN ({marks})",
                (tenant_id, *chunk),
            ).fetchall()
            for row in rows:
                found[row["id"]] = _utterance(row)
        return [found[i] for i in wanted if i in found]

    def utterance_page(self, tenant_id: str, after_id: int = 0, limit: int = 1000) -> list[UtteranceRow]:
        """Up to `limit` of the tenant's utterances with id above `after_id`, in id order."""
        rows = self._conn.execute(
            f"SELECT {UTTERANCE_COLUMNS} FROM utterances WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?",
            (tenant_id, after_id, limit),
        ).fetchall()
        return [_utterance(row) for row in rows]

    def all_utterances(self, tenant_id: str, page_size: int = 1000) -> Iterator[UtteranceRow]:
        """Every utterance of the tenant in id order (to rebuild an index).

        Read page by page; no transaction stays open between pages, so writes may interleave
        (utterances added meanwhile appear at the end).
        """
        after_id = 0
        while page := self.utterance_page(tenant_id, after_id, page_size):
            yield from page
            after_id = page[-1].id

    def latest_summary(self, tenant_id: str, conversation_id: str) -> SummaryRow | None:
        """The summary of the conversation stored last, or None."""
        row = self._conn.execute(
            f"SELECT {SUMMARY_COLUMNS} FROM summaries WHERE conversation_id = ? AND tenant_id = ?"
            " ORDER BY id DESC LIMIT 1",
            (conversation_id, tenant_id),
        ).fetchone()
        return None if row is None else _summary(row)

    # --- API tokens (only their hashes are stored; server/auth.py makes and hashes them) ---

    def create_token(self, tenant_id: str, token_hash: str, scopes: Sequence[str]) -> TokenRow:
        """Store a new token's hash with its scopes (the tenant is created if needed).

        Raises `StoreError` when the hash is already stored.
        """
        scope_list = sorted(set(scopes))
        now = self._clock()
        with self._transaction() as conn:
            self._ensure_tenant(conn, tenant_id, now)
            try:
                cursor = conn.execute(
                    "INSERT INTO api_tokens (tenant_id, token_hash, scopes, created_at) VALUES (?, ?, ?, ?)",
                    (tenant_id, token_hash, json.dumps(scope_list), now),
                )
            except sqlite3.IntegrityError as error:
                raise StoreError(f"cannot store the token: {error}") from None
        assert cursor.lastrowid is not None
        return TokenRow(cursor.lastrowid, tenant_id, tuple(scope_list), now, None)

    def list_tokens(self, tenant_id: str | None = None) -> list[TokenRow]:
        """The tokens of one tenant (or of every tenant), revoked ones included, oldest first."""
        where, args = ("WHERE tenant_id = ?", (tenant_id,)) if tenant_id is not None else ("", ())
        rows = self._conn.execute(
            f"SELECT id, tenant_id, scopes, created_at, revoked_at FROM api_tokens {where} ORDER BY id", args
        ).fetchall()
        return [_token(row) for row in rows]

    def revoke_token(self, token_id: int) -> TokenRow | None:
        """Revoke a token (again: no change); returns it as revoked, or None when there is none."""
        now = self._clock()
        with self._transaction() as conn:
            conn.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, token_id)
            )
            row = conn.execute(
                "SELECT id, tenant_id, scopes, created_at, revoked_at FROM api_tokens WHERE id = ?",
                (token_id,),
            ).fetchone()
        return None if row is None else _token(row)

    def lookup_token(self, token_hash: str) -> TokenRow | None:
        """The valid (not revoked) token with this hash, or None (one lookup in a unique index)."""
        row = self._conn.execute(
            "SELECT id, tenant_id, scopes, created_at, revoked_at FROM api_tokens"
            " WHERE token_hash = ? AND revoked_at IS NULL",
            (token_hash,),
        ).fetchone()
        return None if row is None else _token(row)

    # --- helpers ---

    @staticmethod
    def _ensure_tenant(conn: sqlite3.Connection, tenant_id: str, now: float) -> None:
        if not tenant_id:
            raise ValueError("tenant id must not be empty")
        conn.execute(
            "INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (tenant_id, tenant_id, now),
        )

    @staticmethod
    def _require_conversation(conn: sqlite3.Connection, tenant_id: str, conversation_id: str) -> None:
        found = conn.execute(
            "SELECT 1 FROM conversations WHERE id = ? AND tenant_id = ?", (conversation_id, tenant_id)
        ).fetchone()
        if found is None:
            raise ConversationNotFound(conversation_id)

    @staticmethod
    def _get_conversation(
        conn: sqlite3.Connection, tenant_id: str, conversation_id: str
    ) -> ConversationRow | None:
        row = conn.execute(
            f"{CONVERSATION_SELECT} WHERE c.id = ? AND c.tenant_id = ?", (conversation_id, tenant_id)
        ).fetchone()
        return None if row is None else _conversation(row)


def _conversation(row: sqlite3.Row) -> ConversationRow:
    return ConversationRow(**dict(row))


def _token(row: sqlite3.Row) -> TokenRow:
    scopes = json.loads(row["scopes"])
    return TokenRow(row["id"], row["tenant_id"], tuple(scopes), row["created_at"], row["revoked_at"])


def _summary(row: sqlite3.Row) -> SummaryRow:
    fields = dict(row)
    items = fields.pop("items")
    return SummaryRow(**fields, items=_one_item(fields["text"]) if items is None else json.loads(items))


def _one_item(text: str) -> list[dict[str, Any]]:
    """A summary without items as one item holding its text."""
    return [{"text": text, "utterance_ids": [], "section": None}]


def _utterance(row: sqlite3.Row) -> UtteranceRow:
    fields = dict(row)
    entities, words = fields.pop("entities"), fields.pop("words")
    return UtteranceRow(**fields, entities=None if entities is None else json.loads(entities),
                        words=None if words is None else json.loads(words))


# --- asyncio --------------------------------------------------------------------------------

_P = ParamSpec("_P")
_T = TypeVar("_T")


WRITE_OPS = frozenset(
    {"ensure_tenant", "open_conversation", "add_utterance", "end_conversation", "add_summary", "add_answer"}
)
"""`Store` methods whose latency `AsyncStore.on_write` reports (the writes of live sessions)."""


class _OnStoreThread(Generic[_P, _T]):
    """A `Store` method as an `AsyncStore` method: same parameters, awaited, run on the store's
    thread (through `AsyncStore._call`). The signature is the `Store` method's, so mypy checks
    every call site against it and nothing is written twice."""

    def __init__(self, method: Callable[Concatenate[Store, _P], _T]) -> None:
        self.method = method
        self.__doc__ = f"`Store.{method.__name__}`, run on the store's thread."

    @overload
    def __get__(self, store: None, owner: type[AsyncStore]) -> _OnStoreThread[_P, _T]: ...

    @overload
    def __get__(
        self, store: AsyncStore, owner: type[AsyncStore]
    ) -> Callable[_P, Coroutine[Any, Any, _T]]: ...

    def __get__(
        self, store: AsyncStore | None, owner: type[AsyncStore]
    ) -> _OnStoreThread[_P, _T] | Callable[_P, Coroutine[Any, Any, _T]]:
        if store is None:
            return self
        method = self.method
        bound = store

        async def call(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            return await bound._call(method, bound._store, *args, **kwargs)

        call.__name__ = call.__qualname__ = method.__name__
        call.__doc__ = self.__doc__
        return call


class AsyncStore:
    """A `Store` for asyncio code: every call runs on one dedicated thread, in call order.

    One thread means writes are serialized in the order they are awaited and the connection
    is only ever touched by that thread; reads take the same queue (one SQLite call is tens of
    microseconds). If the awaiting task is cancelled, a call already queued still runs: a
    cancelled `add_utterance` may have been stored, and retrying it is safe (idempotent).
    Open with `await AsyncStore.open(path)`; close with `await store.close()`.
    """

    def __init__(
        self,
        store: Store,
        executor: ThreadPoolExecutor,
        on_write: Callable[[str, float], None] | None = None,
    ) -> None:
        self._store = store
        self._executor = executor
        self.on_write = on_write
        """Called with (method name, seconds from call to completion, queueing included) after
        each write of `WRITE_OPS` (for metrics)."""

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 5.0,
        synchronous: Synchronous = "NORMAL",
        on_write: Callable[[str, float], None] | None = None,
    ) -> AsyncStore:
        """Open and migrate the database at `path` on the store's thread (see `Store.open`)."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="palabre-store")
        loop = asyncio.get_running_loop()
        opener = functools.partial(
            Store.open, path, clock=clock, busy_timeout_s=busy_timeout_s, synchronous=synchronous
        )
        try:
            store = await loop.run_in_executor(executor, opener)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(store, executor, on_write)

    async def _call(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        on_write = self.on_write
        if on_write is None or fn.__name__ not in WRITE_OPS:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        started = time.perf_counter()
        result = await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        on_write(fn.__name__, time.perf_counter() - started)
        return result

    async def ping(self) -> None:
        """See `Store.ping`."""
        await self._call(self._store.ping)

    async def close(self) -> None:
        """Close the connection after every call queued before this one, and stop the thread."""
        try:
            await self._call(self._store.close)
        finally:
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def path(self) -> Path:
        """The database file."""
        return self._store.path

    # Every other call is the `Store` method of the same name and signature, awaited.
    ensure_tenant = _OnStoreThread(Store.ensure_tenant)
    open_conversation = _OnStoreThread(Store.open_conversation)
    next_seq = _OnStoreThread(Store.next_seq)
    last_end = _OnStoreThread(Store.last_end)
    add_utterance = _OnStoreThread(Store.add_utterance)
    """Stored and committed when the await returns."""
    set_entities = _OnStoreThread(Store.set_entities)
    utterance_row_ids_with_entity = _OnStoreThread(Store.utterance_row_ids_with_entity)
    utterance_row_ids_by_speaker = _OnStoreThread(Store.utterance_row_ids_by_speaker)
    end_conversation = _OnStoreThread(Store.end_conversation)
    add_summary = _OnStoreThread(Store.add_summary)
    add_answer = _OnStoreThread(Store.add_answer)
    get_conversation = _OnStoreThread(Store.get_conversation)
    list_conversations = _OnStoreThread(Store.list_conversations)
    utterances = _OnStoreThread(Store.utterances)
    utterances_in_time_order = _OnStoreThread(Store.utterances_in_time_order)
    utterances_by_ids = _OnStoreThread(Store.utterances_by_ids)
    latest_summary = _OnStoreThread(Store.latest_summary)
    name_speaker = _OnStoreThread(Store.name_speaker)
    speaker_names = _OnStoreThread(Store.speaker_names)
    erase_conversation = _OnStoreThread(Store.erase_conversation)
    erasures_after = _OnStoreThread(Store.erasures_after)
    conversation_ids = _OnStoreThread(Store.conversation_ids)
    conversation_tenant = _OnStoreThread(Store.conversation_tenant)
    add_audit = _OnStoreThread(Store.add_audit)
    retention = _OnStoreThread(Store.retention)
    set_redaction = _OnStoreThread(Store.set_redaction)
    redaction = _OnStoreThread(Store.redaction)
    set_vocabulary = _OnStoreThread(Store.set_vocabulary)
    vocabulary = _OnStoreThread(Store.vocabulary)
    set_retention = _OnStoreThread(Store.set_retention)
    conversations_idle_since = _OnStoreThread(Store.conversations_idle_since)
    audit = _OnStoreThread(Store.audit)
    utterance_page = _OnStoreThread(Store.utterance_page)

    def utterance_feed(self, on_stored: Callable[[str, int], None], on_connected: Callable[[], None]) -> None:
        """None: one process writes a SQLite file, and tells its memory of each final itself."""
        return None

    def broadcast(
        self, channel: str, on_message: Callable[[str], None], on_connected: Callable[[], None]
    ) -> None:
        """None: a SQLite file has one front-end, nobody to share texts with."""
        return None

    async def all_utterances(self, tenant_id: str, page_size: int = 1000) -> AsyncIterator[UtteranceRow]:
        """See `Store.all_utterances`; each page is one call on the store's thread."""
        after_id = 0
        while page := await self._call(self._store.utterance_page, tenant_id, after_id, page_size):
            for row in page:
                yield row
            after_id = page[-1].id
