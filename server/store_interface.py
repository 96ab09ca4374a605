"""`ConversationStore`: what the server asks of its durable store, whichever database holds it.

Two backends implement it: `server.store.AsyncStore` (SQLite, one file in the data dir, the
default) and `server.store_postgresql.PostgresStore` (a PostgreSQL server shared by several
front-ends). `open_store` picks one from the configured location. Rows and errors are the ones of
`server.store`, so callers never see which backend answered.

Semantics every backend keeps (tests/server/test_store.py runs against both):

* a write is committed when its await returns (a final is sent only after that);
* `add_utterance` is idempotent on `(conversation_id, seq)`: the same seq again with the same text
  returns the row stored first, with another text raises `UtteranceConflict`; nothing is
  overwritten or stored twice, whichever front-end writes;
* utterance row ids are never reused (vector indexes refer to them);
* every read is filtered by tenant; another tenant's conversation reads as none;
* the schema is versioned and migrated at open; a database of a newer schema is refused
  (`SchemaTooNew`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from server.store import (
    AnswerRow,
    AsyncStore,
    AuditRow,
    ConversationRow,
    ErasedConversation,
    StoreError,
    SummaryMethod,
    SummaryRow,
    UtteranceRow,
)
from server.store_postgresql import PostgresStore, is_postgresql

UtteranceNotified = Callable[[str, int], None]
"""Told (tenant id, utterance row id) of an utterance committed by any front-end."""

WriteObserver = Callable[[str, float], None]
"""Called with (method name, seconds the write took) after each write of live sessions (metrics)."""


class ChangeFeed(Protocol):
    """Notifications of the utterances committed by every front-end sharing the database."""

    def start(self) -> None:
        """Start listening in the background (reconnecting when the connection is lost)."""

    async def close(self) -> None:
        """Stop listening."""


class Broadcast(Protocol):
    """Texts shared by every front-end of a database (each sender hears its own texts too)."""

    def start(self) -> None:
        """Start listening in the background (reconnecting when the connection is lost)."""

    async def close(self) -> None:
        """Stop listening."""

    async def send(self, text: str) -> None:
        """Send `text` (at most `server.store_postgresql.NOTIFY_MAX_BYTES` bytes) to every
        front-end listening now; nothing is kept for the others."""


class ConversationStore(Protocol):
    """Tenants, conversations, their utterances, entities, summaries and answers, for asyncio code."""

    async def ping(self) -> None:
        """One trivial query: raises when the database cannot be read (readiness)."""

    async def close(self) -> None:
        """Close the connections after the calls already made."""

    async def ensure_tenant(self, tenant_id: str) -> None:
        """Create the tenant if it does not exist yet."""

    async def open_conversation(
        self, tenant_id: str, conversation_id: str | None, language: str | None
    ) -> ConversationRow:
        """Create a conversation or resume one of this tenant, and mark it live.

        See `server.store.Store.open_conversation`.
        """

    async def next_seq(self, conversation_id: str) -> int:
        """Its highest stored seq + 1, or 0."""

    async def last_end(self, tenant_id: str, conversation_id: str, track: str | None = None) -> float | None:
        """The `end` of the track's last stored utterance, or None."""

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
        """Store a final utterance, committed on return; idempotent on `(conversation_id, seq)`."""

    async def set_entities(
        self, tenant_id: str, utterance_row_id: int, entities: Sequence[Mapping[str, Any]]
    ) -> None:
        """Record the named entities of a stored utterance."""

    async def utterance_row_ids_with_entity(
        self,
        tenant_id: str,
        *,
        text: str | None = None,
        label: str | None = None,
        conversation_id: str | None = None,
    ) -> list[int]:
        """Row ids of utterances with an entity of this text (any case) and/or label, in id order."""

    async def utterance_row_ids_by_speaker(
        self, tenant_id: str, speaker: str, conversation_id: str | None = None
    ) -> list[int]:
        """Row ids of utterances whose speaker has this label, or this name (any case), in id order."""

    async def end_conversation(self, conversation_id: str) -> None:
        """Mark a live conversation ended."""

    async def add_summary(
        self,
        tenant_id: str,
        conversation_id: str,
        text: str,
        method: SummaryMethod,
        utterance_seq_upto: int,
        items: Sequence[Mapping[str, Any]] | None = None,
    ) -> SummaryRow:
        """Store a summary of the utterances up to seq `utterance_seq_upto`."""

    async def add_answer(
        self,
        tenant_id: str,
        conversation_id: str | None,
        question: str,
        text: str,
        citations: Sequence[Any],
    ) -> AnswerRow:
        """Store an answer with its citations."""

    async def get_conversation(self, tenant_id: str, conversation_id: str) -> ConversationRow | None:
        """The tenant's conversation with this id, or None."""

    async def list_conversations(self, tenant_id: str, limit: int = 100) -> list[ConversationRow]:
        """The tenant's conversations, most recently updated first."""

    async def utterances(
        self, tenant_id: str, conversation_id: str, after_seq: int = -1, limit: int | None = None
    ) -> list[UtteranceRow]:
        """The conversation's utterances with seq above `after_seq`, in seq order (the first
        `limit` of them when given: a page)."""

    async def utterances_in_time_order(
        self,
        tenant_id: str,
        conversation_id: str,
        after: tuple[float, int] | None = None,
        limit: int = 1000,
    ) -> list[UtteranceRow]:
        """A page of the conversation's utterances in time order (start, then seq): the first
        `limit` after `after`, the (start, seq) of the previous page's last one (the exports)."""

    async def utterances_by_ids(self, tenant_id: str, row_ids: Sequence[int]) -> list[UtteranceRow]:
        """The tenant's utterances with these row ids, in that order, each once."""

    async def latest_summary(self, tenant_id: str, conversation_id: str) -> SummaryRow | None:
        """The summary stored last, or None."""

    async def utterance_page(
        self, tenant_id: str, after_id: int = 0, limit: int = 1000
    ) -> list[UtteranceRow]:
        """Up to `limit` of the tenant's utterances with row id above `after_id`, in id order."""

    def all_utterances(self, tenant_id: str, page_size: int = 1000) -> AsyncIterator[UtteranceRow]:
        """Every utterance of the tenant in id order, page by page (to rebuild an index)."""

    async def name_speaker(self, tenant_id: str, conversation_id: str, label: str, name: str) -> bool:
        """Call the conversation's speaker `label` `name`, replacing an earlier name. False when no
        utterance of it has that speaker; `ConversationNotFound` for no such conversation."""

    async def speaker_names(self, tenant_id: str, conversation_id: str) -> dict[str, str]:
        """The names given to the conversation's speakers, {label: name}."""

    # --- data lifecycle (docs/security.md) ---

    async def erase_conversation(self, tenant_id: str, conversation_id: str) -> ErasedConversation | None:
        """Delete the conversation and everything derived from it in one transaction, logging its
        utterances' row ids for the vector indexes; None when the tenant has no such conversation."""

    async def erasures_after(
        self, tenant_id: str, after_seq: int = 0, limit: int = 10_000
    ) -> list[tuple[int, int]]:
        """`(seq, utterance row id)` of the tenant's erasures logged after `after_seq`, in order."""

    async def conversation_ids(self, tenant_id: str) -> list[str]:
        """Every conversation id of the tenant (oldest first)."""

    async def conversation_tenant(self, conversation_id: str) -> str | None:
        """The tenant a conversation belongs to, or None (for administration, not for requests)."""

    async def set_retention(self, tenant_id: str, days: int | None) -> None:
        """Keep the tenant's conversations `days` days after their last utterance (None: for ever)."""

    async def set_redaction(self, tenant_id: str, kinds: Sequence[str]) -> None:
        """Redact `kinds` (`stream.redaction.REDACTION_KINDS`) in every session of the tenant."""

    async def redaction(self, tenant_id: str) -> tuple[str, ...]:
        """The kinds every session of the tenant redacts (none for an unknown tenant)."""

    async def set_vocabulary(self, tenant_id: str, terms: Sequence[str]) -> tuple[str, ...]:
        """Give `terms` to the recogniser in every session of the tenant, after the session's own
        (`stream.vocabulary.check_vocabulary`: ValueError saying what is wrong); returns them."""

    async def vocabulary(self, tenant_id: str) -> tuple[str, ...]:
        """The tenant's vocabulary (none for an unknown tenant)."""

    async def retention(self) -> dict[str, int]:
        """Tenant → retention days, for the tenants that have one."""

    async def conversations_idle_since(
        self, cutoff: float, tenant_id: str | None = None, limit: int = 100
    ) -> list[tuple[str, str]]:
        """`(tenant, conversation id)` of up to `limit` conversations whose last utterance (or
        creation) is older than `cutoff` (epoch seconds), oldest first."""

    async def add_audit(
        self,
        tenant_id: str,
        actor: str,
        action: str,
        conversation_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditRow:
        """Record an audited action (committed when this returns)."""

    async def audit(
        self, tenant_id: str | None, limit: int = 100, before_id: int | None = None
    ) -> list[AuditRow]:
        """The latest audited actions, newest first, with id below `before_id` when given."""
    def utterance_feed(
        self, on_stored: UtteranceNotified, on_connected: Callable[[], None]
    ) -> ChangeFeed | None:
        """A feed of the utterances other front-ends commit, or None when only this process
        writes the database (SQLite). `on_connected` is called after each (re)connection, when
        notifications may have been missed (the caller then catches up from the store)."""

    def broadcast(
        self, channel: str, on_message: Callable[[str], None], on_connected: Callable[[], None]
    ) -> Broadcast | None:
        """Texts shared on `channel` by every front-end of the database (`on_message` hears each,
        `on_connected` each (re)connection), or None when this process is the only front-end."""


async def open_store(
    location: str | None, database_path: Path, *, on_write: WriteObserver | None = None
) -> ConversationStore:
    """The store at `location`: a `postgresql://…` URI, or None for SQLite at `database_path`.

    Raises `StoreError` (its message never holds a password) when the database cannot be used.
    """
    if location is not None and is_postgresql(location):
        return await PostgresStore.open(location, on_write=on_write)
    if location is not None:
        raise StoreError(f"store: expected a postgresql:// URI, got {location.split(':', 1)[0]!r}…")
    database_path.parent.mkdir(parents=True, exist_ok=True)
    return await AsyncStore.open(database_path, on_write=on_write)
