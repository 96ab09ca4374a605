"""The audit log: who exported, erased, purged or read across conversations, and when.

Each action is one row in the store (`Store.add_audit`), per tenant: the actor (`token:<id>`,
`open` under open access, `cli` for a `palabre` command, `retention` for the retention job), the
action, the conversation and a few parameters or counts. Never transcript text, never a search
query or question (they may quote what was said). Read with `GET /v1/audit` (scope `admin`) or
`palabre audit --data-dir D`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from server.auth import Principal
from server.store_interface import ConversationStore

__all__ = ["AuditAction", "actor_of", "record"]


class AuditAction(StrEnum):
    LIST = "list"
    """`GET /v1/conversations`."""
    READ = "read"
    """`GET /v1/conversations/{id}`."""
    SEARCH = "search"
    """`GET /v1/search`."""
    ASK = "ask"
    """An `ask` across the tenant's conversations (scope `tenant`)."""
    EXPORT = "export"
    """`GET /v1/conversations/{id}/transcript`."""
    ERASE = "erase"
    """`DELETE /v1/conversations/{id}`, `palabre erase`."""
    PURGE = "purge"
    """A conversation erased by retention (`palabre purge`, `retention_days`)."""


def actor_of(principal: Principal) -> str:
    """Who a caller is in the audit log: its token, or `open` under open access."""
    return "open" if principal.token_id is None else f"token:{principal.token_id}"


async def record(
    store: ConversationStore,
    principal: Principal,
    action: AuditAction,
    conversation_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Record what `principal` did (committed before the caller answers)."""
    await store.add_audit(principal.tenant_id, actor_of(principal), action.value, conversation_id, detail)
