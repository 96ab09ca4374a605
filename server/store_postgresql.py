"""The durable store on a PostgreSQL server, shared by several front-ends (asyncpg, a pool).

Same semantics as the SQLite store (`server.store`, `server.store_interface.ConversationStore`);
the differences are how they are obtained:

Schema. `MIGRATIONS` is the history of the PostgreSQL schema; table `palabre_schema` holds the
number of steps applied. `migrate` takes a transaction-scoped advisory lock, so front-ends that
start together apply each step once; each step commits together with its new version. A
database of a higher version is refused (`SchemaTooNew`). A released step is never edited.

Several writers. Every write is one transaction on a pooled connection, committed before the
call returns. `(conversation_id, seq)` is unique, and `add_utterance` inserts with `ON CONFLICT
DO NOTHING` and reads the stored row back: two front-ends storing one seq get one row, the second
`UtteranceConflict` when the texts differ; no row is ever overwritten or stored twice. Row ids
come from an identity column (a sequence: never reused, safe across connections).
`open_conversation` with a new client-chosen id inserts with `ON CONFLICT DO NOTHING` and reads the
owner back, so two front-ends creating one id race safely.

Change feed. A trigger notifies `UTTERANCE_CHANNEL` of every inserted utterance (delivered when
its transaction commits, to every listening front-end); `PostgresStore.utterance_feed` listens on a
connection of its own and reconnects when it is lost. Notifications are not stored: one sent
while a front-end was not listening is lost, so listeners also catch up from the table.
`PostgresStore.broadcast` shares other texts between front-ends the same way (the watch relay).

Times are seconds since the Unix epoch (double precision); JSON columns are `jsonb`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg

from server.store import (
    CONVERSATION_SELECT,
    SUMMARY_COLUMNS,
    UTTERANCE_COLUMNS,
    WRITE_OPS,
    AnswerRow,
    AuditRow,
    ConversationNotFound,
    ConversationRow,
    ErasedConversation,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
    SummaryMethod,
    SummaryRow,
    TokenRow,
    UtteranceConflict,
    UtteranceRow,
)
from stream.events import CONVERSATION_ID_RE, utterance_id
from stream.redaction import check_redaction
from stream.vocabulary import check_vocabulary

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_P = ParamSpec("_P")

UtteranceNotified = Callable[[str, int], None]
"""Told (tenant id, utterance row id) of an utterance committed by any front-end."""

UTTERANCE_CHANNEL = "palabre_utterance"
"""The channel on which every inserted utterance is notified, at its commit: "<row id> <tenant id>"."""

_ACCENTED = "àáâãäåāçćčèéêëēėęìíîïīñńòóôõöōùúûüūýÿžšÀÁÂÃÄÅĀÇĆČÈÉÊËĒĖĘÌÍÎÏĪÑŃÒÓÔÕÖŌÙÚÛÜŪÝŸŽŠ’"
_UNACCENTED = "aaaaaaaccceeeeeeeiiiiinnoooooouuuuuyyzsaaaaaaaccceeeeeeeiiiiinnoooooouuuuuyyzs'"
"""`palabre_fold`: the accented letters of Latin-script names (either case: `lower` leaves them
alone under the C locale) and their plain lower-case letters, as `stream.language.fold` folds them."""
_UNACCENTED_SQL = _UNACCENTED.replace("'", "''")

NOTIFY_MAX_BYTES = 7999
"""The longest payload PostgreSQL's NOTIFY takes (in the default configuration), in bytes."""

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: tenants, conversations, utterances, summaries, answers, API tokens (SQLite's steps 1-4).
    (
        """
        CREATE TABLE tenants (
            id text PRIMARY KEY,
            name text NOT NULL,
            created_at double precision NOT NULL
        )
        """,
        """
        CREATE TABLE conversations (
            id text PRIMARY KEY,
            tenant_id text NOT NULL REFERENCES tenants (id),
            title text,
            language text,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            ended_at double precision,
            status text NOT NULL DEFAULT 'live' CHECK (status IN ('live', 'ended')),
            UNIQUE (id, tenant_id)
        )
        """,
        "CREATE INDEX conversations_by_tenant ON conversations (tenant_id, updated_at)",
        """
        CREATE TABLE utterances (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            public_id text NOT NULL UNIQUE,
            conversation_id text NOT NULL,
            tenant_id text NOT NULL,
            seq integer NOT NULL CHECK (seq >= 0),
            text text NOT NULL,
            start double precision NOT NULL,
            "end" double precision NOT NULL,
            language text,
            speaker text,
            track text,
            entities jsonb,
            created_at double precision NOT NULL,
            UNIQUE (conversation_id, seq),
            FOREIGN KEY (conversation_id, tenant_id) REFERENCES conversations (id, tenant_id)
        )
        """,
        "CREATE INDEX utterances_by_tenant ON utterances (tenant_id, id)",
        """
        CREATE TABLE summaries (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            conversation_id text NOT NULL,
            tenant_id text NOT NULL,
            text text NOT NULL,
            method text NOT NULL CHECK (method IN ('generative', 'extractive')),
            utterance_seq_upto integer NOT NULL,
            created_at double precision NOT NULL,
            items jsonb,
            FOREIGN KEY (conversation_id, tenant_id) REFERENCES conversations (id, tenant_id)
        )
        """,
        "CREATE INDEX summaries_by_conversation ON summaries (conversation_id, id)",
        """
        CREATE TABLE answers (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            conversation_id text,
            tenant_id text NOT NULL REFERENCES tenants (id),
            question text NOT NULL,
            text text NOT NULL,
            citations jsonb NOT NULL DEFAULT '[]',
            created_at double precision NOT NULL,
            FOREIGN KEY (conversation_id, tenant_id) REFERENCES conversations (id, tenant_id)
        )
        """,
        "CREATE INDEX answers_by_conversation ON answers (conversation_id, id)",
        "CREATE INDEX answers_by_tenant ON answers (tenant_id, id)",
        """
        CREATE TABLE api_tokens (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tenant_id text NOT NULL REFERENCES tenants (id),
            token_hash text NOT NULL UNIQUE,
            scopes jsonb NOT NULL DEFAULT '[]',
            created_at double precision NOT NULL,
            revoked_at double precision
        )
        """,
        "CREATE INDEX api_tokens_by_tenant ON api_tokens (tenant_id)",
    ),
    # 2: the erasure log, the audit log, retention per tenant (SQLite's steps 5-7).
    (
        """
        CREATE TABLE erasures (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tenant_id text NOT NULL,
            utterance_id bigint NOT NULL,
            erased_at double precision NOT NULL
        )
        """,
        "CREATE INDEX erasures_by_tenant ON erasures (tenant_id, seq)",
        """
        CREATE TABLE audit_log (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tenant_id text NOT NULL,
            at double precision NOT NULL,
            actor text NOT NULL,
            action text NOT NULL,
            conversation_id text,
            detail jsonb NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id)",
        "ALTER TABLE tenants ADD COLUMN retention_days integer"
        " CHECK (retention_days IS NULL OR retention_days > 0)",
    ),
    # 3: the names given to a conversation's speakers (SQLite's step 8).
    (
        """
        CREATE TABLE speaker_names (
            conversation_id text NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            label text NOT NULL,
            name text NOT NULL,
            named_at double precision NOT NULL,
            PRIMARY KEY (conversation_id, label)
        )
        """,
    ),
    # 4: what a tenant's sessions always redact (SQLite's step 9).
    ("ALTER TABLE tenants ADD COLUMN redact jsonb NOT NULL DEFAULT '[]'",),
    # 5: every committed utterance is announced on `UTTERANCE_CHANNEL` (the change feed).
    (
        f"""
        CREATE FUNCTION palabre_utterance_stored() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{UTTERANCE_CHANNEL}', NEW.id::text || ' ' || NEW.tenant_id);
            RETURN NULL;
        END
        $$
        """,
        """
        CREATE TRIGGER utterance_stored AFTER INSERT ON utterances
        FOR EACH ROW EXECUTE FUNCTION palabre_utterance_stored()
        """,
    ),
    # 6: the words of an utterance with their times (SQLite's step 10).
    ("ALTER TABLE utterances ADD COLUMN words jsonb",),
    # 7: the names and terms a tenant's sessions give the recogniser (SQLite's step 11).
    ("ALTER TABLE tenants ADD COLUMN vocabulary jsonb NOT NULL DEFAULT '[]'",),
    # 8: entity names matched case- and accent-insensitively, as SQLite's `fold` (no SQLite step).
    (
        f"""
        CREATE FUNCTION palabre_fold(name text) RETURNS text
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        AS $$ SELECT translate(lower(name), '{_ACCENTED}', '{_UNACCENTED_SQL}') $$
        """,
    ),
)
"""The schema's history; step N (from 1) is `MIGRATIONS[N - 1]`, a sequence of SQL statements."""

SCHEMA_VERSION = len(MIGRATIONS)

_MIGRATION_LOCK = 0x70616C61  # "pala": the advisory lock key that serializes migrations
_IDS_PER_QUERY = 500
_TOKEN_COLUMNS = "id, tenant_id, scopes, created_at, revoked_at"


_UNREACHABLE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

_LOST = (
    OSError,  # refused, reset, timed out
    asyncpg.PostgresConnectionError,  # the connection broke
    asyncpg.OperatorInterventionError,  # the server shuts down or is starting up
    asyncpg.InsufficientResourcesError,  # too many connections, a full disk
    asyncpg.InterfaceError,  # "connection is closed"
)
"""What a call gets while the server is lost (and may get past once it is back)."""

POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")
"""How a store location names a PostgreSQL server (libpq connection URIs)."""


def without_password(location: str) -> str:
    """The location with the password of its user part replaced by `***` (for messages and logs)."""
    scheme, sep, rest = location.partition("://")
    authority, slash, path = rest.partition("/")
    user, at, host = authority.rpartition("@")
    if not sep or not at or ":" not in user:
        return location
    return f"{scheme}://{user.split(':', 1)[0]}:***@{host}{slash}{path}"


def is_postgresql(location: str) -> bool:
    """Whether a store location is a PostgreSQL connection URI (else: SQLite)."""
    return location.startswith(POSTGRESQL_SCHEMES)


async def schema_version(conn: asyncpg.Connection) -> int:
    """The number of migration steps applied (0 for an empty database)."""
    await conn.execute("CREATE TABLE IF NOT EXISTS palabre_schema (version integer NOT NULL)")
    version = await conn.fetchval("SELECT max(version) FROM palabre_schema")
    return int(version or 0)


async def migrate(conn: asyncpg.Connection, migrations: Sequence[Sequence[str]] = MIGRATIONS) -> int:
    """Apply the steps the database lacks, each in its own transaction; return the version after.

    A transaction-scoped advisory lock serializes front-ends migrating at once. Raises
    `SchemaTooNew` for a database of a higher version than `migrations` knows.
    """
    target = len(migrations)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        version = await schema_version(conn)
    if version > target:
        raise SchemaTooNew(
            f"database schema version {version} is newer than this Palabre's ({target}); "
            "upgrade Palabre or use another database"
        )
    for number in range(version + 1, target + 1):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            if await schema_version(conn) >= number:
                continue
            for statement in migrations[number - 1]:
                await conn.execute(statement)
            await conn.execute("INSERT INTO palabre_schema (version) VALUES ($1)", number)
    return await schema_version(conn)


def _describe(dsn: str, error: BaseException) -> str:
    """Why the server cannot be used, naming it without its password."""
    reason = str(error).replace(dsn, without_password(dsn)) or type(error).__name__
    return f"cannot use the PostgreSQL store at {without_password(dsn)}: {reason}"


async def _set_json_codecs(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def _unavailable_when_lost(
    method: Callable[Concatenate[PostgresStore, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[PostgresStore, _P], Coroutine[Any, Any, _T]]:
    """A store method that raises `StoreUnavailable` when the server is lost (the methods a live
    session calls: it holds its finals and retries, and refuses to open with `unavailable`)."""

    @functools.wraps(method)
    async def call(self: PostgresStore, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(self, *args, **kwargs)
        except _LOST as error:
            raise StoreUnavailable(_describe(self._dsn, error)) from error

    return call


class PostgresStore:
    """The durable store on a PostgreSQL server (`ConversationStore`); open with `PostgresStore.open`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        clock: Callable[[], float],
        on_write: Callable[[str, float], None] | None,
    ) -> None:
        self._pool = pool
        self._dsn = dsn
        self._clock = clock
        self.location = without_password(dsn)
        """The server's URI, without its password."""
        self.on_write = on_write
        """Called with (method name, seconds) after each write of `server.store.WRITE_OPS`."""

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        clock: Callable[[], float] = time.time,
        on_write: Callable[[str, float], None] | None = None,
        min_size: int = 2,
        max_size: int = 16,
        timeout_s: float = 10.0,
    ) -> PostgresStore:
        """Connect a pool to the server at `dsn` and migrate its schema to `SCHEMA_VERSION`.

        Raises `StoreError` (naming the server, never its password) when it cannot be reached,
        refuses the credentials, or holds a newer schema.
        """
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, timeout=timeout_s, init=_set_json_codecs
            )
        except (*_UNREACHABLE, ValueError) as error:
            raise StoreError(_describe(dsn, error)) from None
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
        except StoreError:
            await pool.close()
            raise
        except _UNREACHABLE as error:
            await pool.close()
            raise StoreError(_describe(dsn, error)) from None
        return cls(pool, dsn, clock, on_write)

    async def close(self) -> None:
        """Close the pool once the calls in progress have finished."""
        await self._pool.close()

    async def ping(self) -> None:
        """One trivial query: raises when the server cannot be reached (readiness)."""
        await self._pool.fetchval("SELECT 1")

    def utterance_feed(self, on_stored: UtteranceNotified, on_connected: Callable[[], None]) -> UtteranceFeed:
        """A feed of the utterances every front-end commits (call its `start`)."""
        return UtteranceFeed(self._dsn, on_stored, on_connected)

    def broadcast(
        self, channel: str, on_message: Callable[[str], None], on_connected: Callable[[], None]
    ) -> Broadcast:
        """Texts shared by the front-ends on `channel` (call its `start`)."""
        return Broadcast(self._pool, self._dsn, channel, on_message, on_connected)

    def _written(self, name: str, started: float) -> None:
        if self.on_write is not None and name in WRITE_OPS:
            self.on_write(name, time.perf_counter() - started)

    # --- writes ---

    @_unavailable_when_lost
    async def ensure_tenant(self, tenant_id: str) -> None:
        """Create the tenant if it does not exist yet (named after its id)."""
        started = time.perf_counter()
        async with self._pool.acquire() as conn:
            await _ensure_tenant(conn, tenant_id, self._clock())
        self._written("ensure_tenant", started)

    @_unavailable_when_lost
    async def open_conversation(
        self, tenant_id: str, conversation_id: str | None, language: str | None
    ) -> ConversationRow:
        """Create or resume a conversation and mark it live (see `Store.open_conversation`)."""
        if conversation_id is not None and not CONVERSATION_ID_RE.fullmatch(conversation_id):
            raise ValueError(
                f"invalid conversation id {conversation_id!r}: 1-128 letters, digits, '_', '.' or '-'"
            )
        started = time.perf_counter()
        now = self._clock()
        chosen = conversation_id if conversation_id is not None else uuid.uuid4().hex
        async with self._pool.acquire() as conn, conn.transaction():
            await _ensure_tenant(conn, tenant_id, now)
            created = await conn.fetchval(
                "INSERT INTO conversations (id, tenant_id, language, created_at, updated_at, status)"
                " VALUES ($1, $2, $3, $4, $4, 'live') ON CONFLICT (id) DO NOTHING RETURNING id",
                chosen,
                tenant_id,
                language,
                now,
            )
            if created is None:
                owner = await conn.fetchval(
                    "SELECT tenant_id FROM conversations WHERE id = $1 FOR UPDATE", chosen
                )
                if owner != tenant_id:
                    raise ConversationNotFound(chosen)
                await conn.execute(
                    "UPDATE conversations SET status = 'live', ended_at = NULL, updated_at = $1,"
                    " language = COALESCE(language, $2) WHERE id = $3",
                    now,
                    language,
                    chosen,
                )
            row = await conn.fetchrow(f"{CONVERSATION_SELECT} WHERE c.id = $1", chosen)
        self._written("open_conversation", started)
        return ConversationRow(**dict(row))

    @_unavailable_when_lost
    async def next_seq(self, conversation_id: str) -> int:
        """The seq the next utterance of the conversation gets: its highest seq + 1, or 0."""
        seq = await self._pool.fetchval(
            "SELECT COALESCE(MAX(seq) + 1, 0) FROM utterances WHERE conversation_id = $1", conversation_id
        )
        return int(seq)

    @_unavailable_when_lost
    async def last_end(self, tenant_id: str, conversation_id: str, track: str | None = None) -> float | None:
        """The `end` of the track's last stored utterance in the conversation (None: it has none)."""
        end = await self._pool.fetchval(
            'SELECT "end" FROM utterances WHERE conversation_id = $1 AND tenant_id = $2'
            " AND track IS NOT DISTINCT FROM $3 ORDER BY seq DESC LIMIT 1",
            conversation_id,
            tenant_id,
            track,
        )
        return None if end is None else float(end)

    @_unavailable_when_lost
    async def add_utterance(
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
        """Store a final utterance, committed on return (see `Store.add_utterance`)."""
        if seq < 0:
            raise ValueError(f"seq must be >= 0, got {seq}")
        started = time.perf_counter()
        public_id = utterance_id(conversation_id, seq)
        entities_list = None if entities is None else [dict(e) for e in entities]
        now = self._clock()
        async with self._pool.acquire() as conn, conn.transaction():
            await _require_conversation(conn, tenant_id, conversation_id)
            row = await conn.fetchrow(
                f"INSERT INTO utterances ({UTTERANCE_COLUMNS.replace('id,', '', 1)})"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                # Any unique key: two writers of one seq also collide on `public_id`, and which of
                # the two indexes reports the collision depends on timing.
                f" ON CONFLICT DO NOTHING RETURNING {UTTERANCE_COLUMNS}",
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
                entities_list,
                now,
                None if words is None else [dict(w) for w in words],
            )
            if row is not None:
                await conn.execute(
                    "UPDATE conversations SET updated_at = $1 WHERE id = $2", now, conversation_id
                )
            else:
                row = await conn.fetchrow(
                    f"SELECT {UTTERANCE_COLUMNS} FROM utterances WHERE conversation_id = $1 AND seq = $2",
                    conversation_id,
                    seq,
                )
        self._written("add_utterance", started)
        stored = _utterance(row)
        if stored.text != text:
            raise UtteranceConflict(f"utterance {public_id} is already stored with a different text")
        return stored

    async def set_entities(
        self, tenant_id: str, utterance_row_id: int, entities: Sequence[Mapping[str, Any]]
    ) -> None:
        """Record the named entities found in a stored utterance (of this tenant), by its row id."""
        await self._pool.execute(
            "UPDATE utterances SET entities = $1 WHERE id = $2 AND tenant_id = $3",
            [dict(e) for e in entities],
            utterance_row_id,
            tenant_id,
        )

    async def utterance_row_ids_with_entity(
        self,
        tenant_id: str,
        *,
        text: str | None = None,
        label: str | None = None,
        conversation_id: str | None = None,
    ) -> list[int]:
        """Row ids of the tenant's utterances with an entity matching `text` (any case, any accent:
        `palabre_fold`) and/or `label`."""
        query = (
            "SELECT DISTINCT u.id FROM utterances u, jsonb_array_elements(u.entities) e"
            " WHERE u.tenant_id = $1 AND u.entities IS NOT NULL"
        )
        args: list[Any] = [tenant_id]
        if text is not None:
            args.append(text)
            query += f" AND palabre_fold(e.value ->> 'text') = palabre_fold(${len(args)})"
        if label is not None:
            args.append(label)
            query += f" AND e.value ->> 'label' = ${len(args)}"
        if conversation_id is not None:
            args.append(conversation_id)
            query += f" AND u.conversation_id = ${len(args)}"
        rows = await self._pool.fetch(query + " ORDER BY u.id", *args)
        return [int(row[0]) for row in rows]

    async def utterance_row_ids_by_speaker(
        self, tenant_id: str, speaker: str, conversation_id: str | None = None
    ) -> list[int]:
        """Row ids of the tenant's utterances whose speaker has this label, or this name (any case)."""
        rows = await self._pool.fetch(
            "SELECT u.id FROM utterances AS u LEFT JOIN speaker_names AS n"
            " ON n.conversation_id = u.conversation_id AND n.label = u.speaker"
            " WHERE u.tenant_id = $1 AND (u.speaker = $2 OR lower(n.name) = lower($2))"
            " AND ($3::text IS NULL OR u.conversation_id = $3) ORDER BY u.id",
            tenant_id,
            speaker,
            conversation_id,
        )
        return [int(row[0]) for row in rows]

    async def end_conversation(self, conversation_id: str) -> None:
        """Mark a live conversation ended (it can be resumed by `open_conversation`)."""
        started = time.perf_counter()
        now = self._clock()
        await self._pool.execute(
            "UPDATE conversations SET status = 'ended', ended_at = $1, updated_at = $1"
            " WHERE id = $2 AND status = 'live'",
            now,
            conversation_id,
        )
        self._written("end_conversation", started)

    async def add_summary(
        self,
        tenant_id: str,
        conversation_id: str,
        text: str,
        method: SummaryMethod,
        utterance_seq_upto: int,
        items: Sequence[Mapping[str, Any]] | None = None,
    ) -> SummaryRow:
        """Store a summary of the conversation's utterances up to seq `utterance_seq_upto`."""
        started = time.perf_counter()
        item_list = [dict(item) for item in items] if items is not None else _one_item(text)
        now = self._clock()
        async with self._pool.acquire() as conn, conn.transaction():
            await _require_conversation(conn, tenant_id, conversation_id)
            row_id = await conn.fetchval(
                "INSERT INTO summaries (conversation_id, tenant_id, text, method, utterance_seq_upto,"
                " created_at, items) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                conversation_id,
                tenant_id,
                text,
                method,
                utterance_seq_upto,
                now,
                item_list,
            )
        self._written("add_summary", started)
        return SummaryRow(
            row_id, conversation_id, tenant_id, text, method, utterance_seq_upto, now, item_list
        )

    async def add_answer(
        self,
        tenant_id: str,
        conversation_id: str | None,
        question: str,
        text: str,
        citations: Sequence[Any],
    ) -> AnswerRow:
        """Store an answer; `citations` is a list of JSON values (e.g. utterance public ids)."""
        started = time.perf_counter()
        citations_list = list(citations)
        now = self._clock()
        async with self._pool.acquire() as conn, conn.transaction():
            await _ensure_tenant(conn, tenant_id, now)
            if conversation_id is not None:
                await _require_conversation(conn, tenant_id, conversation_id)
            row_id = await conn.fetchval(
                "INSERT INTO answers (conversation_id, tenant_id, question, text, citations, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                conversation_id,
                tenant_id,
                question,
                text,
                citations_list,
                now,
            )
        self._written("add_answer", started)
        return AnswerRow(row_id, conversation_id, tenant_id, question, text, citations_list, now)

    # --- reads (each filtered by tenant) ---

    async def get_conversation(self, tenant_id: str, conversation_id: str) -> ConversationRow | None:
        """The tenant's conversation with this id, or None."""
        row = await self._pool.fetchrow(
            f"{CONVERSATION_SELECT} WHERE c.id = $1 AND c.tenant_id = $2", conversation_id, tenant_id
        )
        return None if row is None else ConversationRow(**dict(row))

    async def list_conversations(self, tenant_id: str, limit: int = 100) -> list[ConversationRow]:
        """The tenant's conversations, most recently updated first."""
        rows = await self._pool.fetch(
            f"{CONVERSATION_SELECT} WHERE c.tenant_id = $1 ORDER BY c.updated_at DESC, c.id DESC LIMIT $2",
            tenant_id,
            limit,
        )
        return [ConversationRow(**dict(row)) for row in rows]

    @_unavailable_when_lost
    async def utterances(
        self, tenant_id: str, conversation_id: str, after_seq: int = -1, limit: int | None = None
    ) -> list[UtteranceRow]:
        """The conversation's utterances with seq above `after_seq`, in seq order (the first
        `limit` of them when given)."""
        rows = await self._pool.fetch(
            f"SELECT {UTTERANCE_COLUMNS} FROM utterances"
            " WHERE conversation_id = $1 AND tenant_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
            conversation_id,
            tenant_id,
            after_seq,
            limit,
        )
        return [_utterance(row) for row in rows]

    async def utterances_in_time_order(
        self,
        tenant_id: str,
        conversation_id: str,
        after: tuple[float, int] | None = None,
        limit: int = 1000,
    ) -> list[UtteranceRow]:
        """A page of the conversation's utterances in time order (start, then seq)."""
        start, seq = after if after is not None else (float("-inf"), -1)
        rows = await self._pool.fetch(
            f"SELECT {UTTERANCE_COLUMNS} FROM utterances"
            " WHERE conversation_id = $1 AND tenant_id = $2 AND (start, seq) > ($3::float8, $4::bigint)"
            " ORDER BY start, seq LIMIT $5",
            conversation_id,
            tenant_id,
            start,
            seq,
            limit,
        )
        return [_utterance(row) for row in rows]

    async def utterances_by_ids(self, tenant_id: str, row_ids: Sequence[int]) -> list[UtteranceRow]:
        """The tenant's utterances with these row ids, in the order of `row_ids`, each once."""
        wanted = list(dict.fromkeys(row_ids))
        found: dict[int, UtteranceRow] = {}
        for i in range(0, len(wanted), _IDS_PER_QUERY):
            rows = await self._pool.fetch(
                f"SELECT {UTTERANCE_COLUMNS} FROM utterances"
                " WHERE tenant_id = $1 AND id = ANY($2::bigint[])",
                tenant_id,
                wanted[i : i + _IDS_PER_QUERY],
            )
            for row in rows:
                found[row["id"]] = _utterance(row)
        return [found[i] for i in wanted if i in found]

    async def utterance_page(
        self, tenant_id: str, after_id: int = 0, limit: int = 1000
    ) -> list[UtteranceRow]:
        """Up to `limit` of the tenant's utterances with id above `after_id`, in id order."""
        rows = await self._pool.fetch(
            f"SELECT {UTTERANCE_COLUMNS} FROM utterances"
            " WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            tenant_id,
            after_id,
            limit,
        )
        return [_utterance(row) for row in rows]

    async def all_utterances(self, tenant_id: str, page_size: int = 1000) -> AsyncIterator[UtteranceRow]:
        """Every utterance of the tenant in id order, one query per page."""
        after_id = 0
        while page := await self.utterance_page(tenant_id, after_id, page_size):
            for row in page:
                yield row
            after_id = page[-1].id

    async def latest_summary(self, tenant_id: str, conversation_id: str) -> SummaryRow | None:
        """The summary of the conversation stored last, or None."""
        row = await self._pool.fetchrow(
            f"SELECT {SUMMARY_COLUMNS} FROM summaries WHERE conversation_id = $1 AND tenant_id = $2"
            " ORDER BY id DESC LIMIT 1",
            conversation_id,
            tenant_id,
        )
        if row is None:
            return None
        fields = dict(row)
        items = fields.pop("items")
        return SummaryRow(**fields, items=_one_item(fields["text"]) if items is None else items)

    async def name_speaker(self, tenant_id: str, conversation_id: str, label: str, name: str) -> bool:
        """Call the conversation's speaker `label` `name` (see `Store.name_speaker`)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await _require_conversation(conn, tenant_id, conversation_id)
            spoke = await conn.fetchval(
                "SELECT 1 FROM utterances WHERE conversation_id = $1 AND speaker = $2 LIMIT 1",
                conversation_id,
                label,
            )
            if spoke is None:
                return False
            await conn.execute(
                "INSERT INTO speaker_names (conversation_id, label, name, named_at) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (conversation_id, label) DO UPDATE SET name = excluded.name,"
                " named_at = excluded.named_at",
                conversation_id,
                label,
                name,
                self._clock(),
            )
        return True

    async def speaker_names(self, tenant_id: str, conversation_id: str) -> dict[str, str]:
        """The names given to the conversation's speakers: {label: name}."""
        rows = await self._pool.fetch(
            "SELECT n.label, n.name FROM speaker_names AS n JOIN conversations AS c"
            " ON c.id = n.conversation_id WHERE n.conversation_id = $1 AND c.tenant_id = $2",
            conversation_id,
            tenant_id,
        )
        return {str(row["label"]): str(row["name"]) for row in rows}

    # --- data lifecycle ---

    async def erase_conversation(self, tenant_id: str, conversation_id: str) -> ErasedConversation | None:
        """Delete the conversation and everything derived from it (see `Store.erase_conversation`;
        PostgreSQL reuses freed space itself: there is no write-ahead log to truncate here)."""
        now = self._clock()
        async with self._pool.acquire() as conn, conn.transaction():
            found = await conn.fetchval(
                "SELECT 1 FROM conversations WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
                conversation_id,
                tenant_id,
            )
            if found is None:
                return None
            ids = tuple(
                int(row["id"])
                for row in await conn.fetch(
                    "SELECT id FROM utterances WHERE conversation_id = $1 ORDER BY id", conversation_id
                )
            )
            await conn.executemany(
                "INSERT INTO erasures (tenant_id, utterance_id, erased_at) VALUES ($1, $2, $3)",
                [(tenant_id, i, now) for i in ids],
            )
            answers = await conn.fetchval(
                "WITH gone AS (DELETE FROM answers WHERE tenant_id = $1 AND (conversation_id = $2"
                " OR (conversation_id IS NULL AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(citations)"
                " AS c WHERE starts_with(c, $3)))) RETURNING 1) SELECT count(*) FROM gone",
                tenant_id,
                conversation_id,
                f"{conversation_id}:",
            )
            summaries = await conn.fetchval(
                "WITH gone AS (DELETE FROM summaries WHERE conversation_id = $1 RETURNING 1)"
                " SELECT count(*) FROM gone",
                conversation_id,
            )
            await conn.execute("DELETE FROM utterances WHERE conversation_id = $1", conversation_id)
            await conn.execute("DELETE FROM speaker_names WHERE conversation_id = $1", conversation_id)
            await conn.execute("DELETE FROM conversations WHERE id = $1", conversation_id)
        return ErasedConversation(conversation_id, tenant_id, len(ids), int(summaries), int(answers), ids)

    async def erasures_after(
        self, tenant_id: str, after_seq: int = 0, limit: int = 10_000
    ) -> list[tuple[int, int]]:
        """`(seq, utterance row id)` of the tenant's erasures logged after `after_seq`, in order."""
        rows = await self._pool.fetch(
            "SELECT seq, utterance_id FROM erasures WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            tenant_id,
            after_seq,
            limit,
        )
        return [(int(row["seq"]), int(row["utterance_id"])) for row in rows]

    async def conversation_ids(self, tenant_id: str) -> list[str]:
        """Every conversation id of the tenant (oldest first)."""
        rows = await self._pool.fetch(
            "SELECT id FROM conversations WHERE tenant_id = $1 ORDER BY created_at, id", tenant_id
        )
        return [str(row["id"]) for row in rows]

    async def conversation_tenant(self, conversation_id: str) -> str | None:
        """The tenant a conversation belongs to, or None (for administration, not for requests)."""
        value = await self._pool.fetchval(
            "SELECT tenant_id FROM conversations WHERE id = $1", conversation_id
        )
        return None if value is None else str(value)

    async def set_retention(self, tenant_id: str, days: int | None) -> None:
        """Keep the tenant's conversations `days` days after their last utterance (None: for ever)."""
        if days is not None and days <= 0:
            raise ValueError(f"retention days must be positive, not {days}")
        async with self._pool.acquire() as conn, conn.transaction():
            await _ensure_tenant(conn, tenant_id, self._clock())
            await conn.execute("UPDATE tenants SET retention_days = $1 WHERE id = $2", days, tenant_id)

    async def set_redaction(self, tenant_id: str, kinds: Sequence[str]) -> None:
        """Redact `kinds` in every session of the tenant (see `Store.set_redaction`)."""
        kinds = check_redaction(list(kinds))
        async with self._pool.acquire() as conn, conn.transaction():
            await _ensure_tenant(conn, tenant_id, self._clock())
            await conn.execute("UPDATE tenants SET redact = $1 WHERE id = $2", list(kinds), tenant_id)

    @_unavailable_when_lost
    async def redaction(self, tenant_id: str) -> tuple[str, ...]:
        """The kinds every session of the tenant redacts (none for an unknown tenant)."""
        value = await self._pool.fetchval("SELECT redact FROM tenants WHERE id = $1", tenant_id)
        return () if value is None else tuple(value)

    async def set_vocabulary(self, tenant_id: str, terms: Sequence[str]) -> tuple[str, ...]:
        """The tenant's vocabulary (see `Store.set_vocabulary`); returns the terms stored."""
        checked = check_vocabulary(list(terms))
        async with self._pool.acquire() as conn, conn.transaction():
            await _ensure_tenant(conn, tenant_id, self._clock())
            await conn.execute("UPDATE tenants SET vocabulary = $1 WHERE id = $2", list(checked), tenant_id)
        return checked

    @_unavailable_when_lost
    async def vocabulary(self, tenant_id: str) -> tuple[str, ...]:
        """The tenant's vocabulary (none for an unknown tenant)."""
        value = await self._pool.fetchval("SELECT vocabulary FROM tenants WHERE id = $1", tenant_id)
        return () if value is None else tuple(value)

    async def retention(self) -> dict[str, int]:
        """Tenant → retention days, for the tenants that have one."""
        rows = await self._pool.fetch(
            "SELECT id, retention_days FROM tenants WHERE retention_days IS NOT NULL"
        )
        return {str(row["id"]): int(row["retention_days"]) for row in rows}

    async def conversations_idle_since(
        self, cutoff: float, tenant_id: str | None = None, limit: int = 100
    ) -> list[tuple[str, str]]:
        """`(tenant, conversation id)` of up to `limit` conversations idle since before `cutoff`."""
        rows = await self._pool.fetch(
            "SELECT c.tenant_id, c.id, COALESCE(MAX(u.created_at), c.created_at) AS last"
            " FROM conversations AS c LEFT JOIN utterances AS u ON u.conversation_id = c.id"
            " WHERE ($1::text IS NULL OR c.tenant_id = $1) GROUP BY c.id"
            " HAVING COALESCE(MAX(u.created_at), c.created_at) < $2 ORDER BY last LIMIT $3",
            tenant_id,
            cutoff,
            limit,
        )
        return [(str(row["tenant_id"]), str(row["id"])) for row in rows]

    async def add_audit(
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
        row_id = await self._pool.fetchval(
            "INSERT INTO audit_log (tenant_id, at, actor, action, conversation_id, detail)"
            " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            tenant_id,
            now,
            actor,
            action,
            conversation_id,
            detail_dict,
        )
        return AuditRow(int(row_id), tenant_id, now, actor, action, conversation_id, detail_dict)

    async def audit(
        self, tenant_id: str | None, limit: int = 100, before_id: int | None = None
    ) -> list[AuditRow]:
        """The latest audited actions (one tenant's, or every tenant's), newest first."""
        rows = await self._pool.fetch(
            "SELECT id, tenant_id, at, actor, action, conversation_id, detail FROM audit_log"
            " WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::bigint IS NULL OR id < $2)"
            " ORDER BY id DESC LIMIT $3",
            tenant_id,
            before_id,
            limit,
        )
        return [AuditRow(**dict(row)) for row in rows]
    # --- API tokens (only their hashes are stored; server/auth.py makes and hashes them) ---

    async def create_token(self, tenant_id: str, token_hash: str, scopes: Sequence[str]) -> TokenRow:
        """Store a new token's hash with its scopes (the tenant is created if needed).

        Raises `StoreError` when the hash is already stored.
        """
        scope_list = sorted(set(scopes))
        now = self._clock()
        async with self._pool.acquire() as conn, conn.transaction():
            await _ensure_tenant(conn, tenant_id, now)
            try:
                row = await conn.fetchrow(
                    "INSERT INTO api_tokens (tenant_id, token_hash, scopes, created_at)"
                    f" VALUES ($1, $2, $3, $4) RETURNING {_TOKEN_COLUMNS}",
                    tenant_id,
                    token_hash,
                    scope_list,
                    now,
                )
            except asyncpg.UniqueViolationError:
                raise StoreError("cannot store the token: its hash is already stored") from None
        return _token(row)

    async def list_tokens(self, tenant_id: str | None = None) -> list[TokenRow]:
        """The tokens of one tenant (or of every tenant), revoked ones included, oldest first."""
        rows = await self._pool.fetch(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY id",
            tenant_id,
        )
        return [_token(row) for row in rows]

    async def revoke_token(self, token_id: int) -> TokenRow | None:
        """Revoke a token (again: no change); returns it as revoked, or None when there is none."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                self._clock(),
                token_id,
            )
            row = await conn.fetchrow(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE id = $1", token_id)
        return None if row is None else _token(row)

    async def lookup_token(self, token_hash: str) -> TokenRow | None:
        """The valid (not revoked) token with this hash, or None (one lookup in a unique index)."""
        row = await self._pool.fetchrow(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
            token_hash,
        )
        return None if row is None else _token(row)


class BlockingTokenLookup:
    """`PostgresStore.lookup_token` for synchronous callers (`server.auth.TokenAuthenticator`,
    which runs on the event loop's thread): a store of its own, on a thread with its own event
    loop. A call blocks its caller for one query (a round trip), at most `timeout_s`."""

    def __init__(self, dsn: str, *, timeout_s: float = 2.0) -> None:
        """Connect (raises `StoreError` when the database cannot be used)."""
        self.timeout_s = timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="palabre-tokens", daemon=True)
        self._thread.start()
        try:
            self._store = self._run(PostgresStore.open(dsn, min_size=1, max_size=4), 30.0)
        except BaseException:
            self._stop()
            raise

    def _run(self, work: Coroutine[Any, Any, _T], timeout_s: float) -> _T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout_s)

    def __call__(self, token_hash: str) -> TokenRow | None:
        """The valid token with this hash, or None; `StoreError` when the database did not answer."""
        try:
            return self._run(self._store.lookup_token(token_hash), self.timeout_s)
        except (*_UNREACHABLE, TimeoutError) as error:
            raise StoreError(f"token lookup failed: {type(error).__name__}") from None

    def close(self) -> None:
        """Close the pool and stop the thread."""
        try:
            self._run(self._store.close(), 10.0)
        except (*_UNREACHABLE, TimeoutError):
            log.warning("the token store did not close cleanly")
        self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


class ChannelListener:
    """LISTEN on one channel on a connection of its own, reconnecting while it runs.

    `on_payload(text)` is called for each notification; `on_connected()` after each
    (re)connection, when notifications sent while it was not listening may have been missed.
    """

    def __init__(
        self,
        dsn: str,
        channel: str,
        on_payload: Callable[[str], None],
        on_connected: Callable[[], None],
        *,
        retry_s: float = 1.0,
    ) -> None:
        self._dsn = dsn
        self.channel = channel
        self._on_payload = on_payload
        self._on_connected = on_connected
        self.retry_s = retry_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start listening in the background."""
        self._task = asyncio.get_running_loop().create_task(self._listen(), name=f"listen-{self.channel}")

    async def close(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._dsn, timeout=10)
            except _UNREACHABLE as error:  # TimeoutError is an OSError
                log.warning("%s; retrying in %.0f s", _describe(self._dsn, error), self.retry_s)
                await asyncio.sleep(self.retry_s)
                continue
            try:
                conn.add_termination_listener(lambda _conn, event=lost: event.set())
                await conn.add_listener(self.channel, self._notified)
                self._on_connected()
                await lost.wait()
                log.warning("%s of %s lost; reconnecting", self.channel, without_password(self._dsn))
            except _UNREACHABLE as error:
                log.warning("%s: %s", self.channel, _describe(self._dsn, error))
            finally:
                conn.terminate()
            await asyncio.sleep(self.retry_s)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            self._on_payload(str(payload))
        except Exception:
            log.exception("%s: handling %r failed", self.channel, payload)


class UtteranceFeed(ChannelListener):
    """The change feed: `on_stored(tenant_id, row_id)` for each utterance any front-end commits."""

    def __init__(self, dsn: str, on_stored: UtteranceNotified, on_connected: Callable[[], None]) -> None:
        def parse(payload: str) -> None:
            row_id, _, tenant_id = payload.partition(" ")
            on_stored(tenant_id, int(row_id))

        super().__init__(dsn, UTTERANCE_CHANNEL, parse, on_connected)


class Broadcast(ChannelListener):
    """Texts sent to every front-end sharing the database (itself included) on one channel:
    `send` notifies, the listener hands each text received to `on_message`. Nothing is stored:
    a text sent while a front-end is not listening never reaches it."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        channel: str,
        on_message: Callable[[str], None],
        on_connected: Callable[[], None],
    ) -> None:
        super().__init__(dsn, channel, on_message, on_connected)
        self._pool = pool

    async def send(self, text: str) -> None:
        """Notify every listener of `text` (at most `NOTIFY_MAX_BYTES` bytes encoded)."""
        await self._pool.execute("SELECT pg_notify($1, $2)", self.channel, text)


async def _ensure_tenant(conn: asyncpg.Connection, tenant_id: str, now: float) -> None:
    if not tenant_id:
        raise ValueError("tenant id must not be empty")
    await conn.execute(
        "INSERT INTO tenants (id, name, created_at) VALUES ($1, $1, $2) ON CONFLICT (id) DO NOTHING",
        tenant_id,
        now,
    )


async def _require_conversation(conn: asyncpg.Connection, tenant_id: str, conversation_id: str) -> None:
    found = await conn.fetchval(
        "SELECT 1 FROM conversations WHERE id = $1 AND tenant_id = $2", conversation_id, tenant_id
    )
    if found is None:
        raise ConversationNotFound(conversation_id)


def _one_item(text: str) -> list[dict[str, Any]]:
    return [{"text": text, "utterance_ids": [], "section": None}]


def _token(row: asyncpg.Record) -> TokenRow:
    return TokenRow(row["id"], row["tenant_id"], tuple(row["scopes"]), row["created_at"], row["revoked_at"])


def _utterance(row: asyncpg.Record) -> UtteranceRow:
    return UtteranceRow(**dict(row))
