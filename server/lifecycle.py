"""The data lifecycle of conversations: erasing one, with everything derived from it.

`erase_conversation` is what `DELETE /v1/conversations/{id}` and the retention job run inside the
server: its live sessions are closed first (`conversation_erased`), so nothing more of it is
stored; the finals still being indexed are waited for; then the store deletes the conversation,
its utterances, summaries and answers in one transaction and logs the utterances' row ids, which
the tenant's vector index replays to drop their vectors (server/memory/index.py).

`palabre erase` and `palabre purge` work on the store directly (server/cli.py): a server running
beside them notices at its next search (the erasure log) and, for a session still streaming into
an erased conversation, at its next final (the store refuses it: `conversation_erased`).
"""

from __future__ import annotations

from server.sessions import SessionHub
from server.store import ErasedConversation

__all__ = ["erase_conversation"]


async def erase_conversation(
    hub: SessionHub, tenant_id: str, conversation_id: str
) -> ErasedConversation | None:
    """Erase the tenant's conversation: close its live sessions, delete it from the store, drop its
    vectors from the index. None when the tenant has no such conversation (erased already)."""
    services = hub.services
    assert services is not None, "erase before the server is ready"
    store = services.store
    if await store.get_conversation(tenant_id, conversation_id) is None:
        return None
    await hub.erase_conversation(tenant_id, conversation_id)
    knowledge = services.knowledge
    if knowledge is not None:
        await knowledge.indexes.flush(conversation_id)
    erased = await store.erase_conversation(tenant_id, conversation_id)
    if knowledge is not None:
        await knowledge.indexes.catch_up_erasures(tenant_id)
    return erased
