"""`palabre erase` and `palabre audit`: the data lifecycle, administered on the server's database.

Like `palabre token`, the commands work on the SQLite file directly (`--data-dir`), so they run
beside a live server (SQLite's WAL lets both write). A running server notices an erasure at its
next search of the tenant (the erasure log replayed into its vector index) and closes a session
still streaming into an erased conversation at its next final (`conversation_erased`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from server.audit import AuditAction
from server.config import ServerConfig
from server.store import ErasedConversation, Store, StoreError


def add_data_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `erase` and `audit` to the `palabre` command's subcommands."""
    erase = sub.add_parser(
        "erase",
        help="erase a conversation, or every conversation of a tenant",
        description="Erase a conversation (--conversation) or all of a tenant's (--tenant alone): its "
        "utterances, summaries, answers and their vectors. Prints what was erased, never the text.",
    )
    erase.add_argument("--data-dir", type=Path, required=True, help="the server's data dir")
    erase.add_argument("--conversation", help="the conversation to erase")
    erase.add_argument("--tenant", help="the tenant (alone: erase every conversation of it)")
    audit = sub.add_parser(
        "audit",
        help="print the audit log (exports, erasures, purges, reads across conversations)",
        description="Print the audit log, newest first, one JSON object a line (never transcript text).",
    )
    audit.add_argument("--data-dir", type=Path, required=True, help="the server's data dir")
    audit.add_argument("--tenant", help="only this tenant's actions")
    audit.add_argument("--limit", type=int, default=100, help="at most this many rows (default: 100)")


def run_data_command(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run `palabre erase` or `palabre audit`; exit status 0, 1 (nothing to erase), or 2 (bad
    arguments, bad store)."""
    database = ServerConfig(data_dir=args.data_dir).database_path
    if not database.exists():
        print(f"palabre: no database in {args.data_dir}", file=err)
        return 2
    try:
        with Store.open(database) as store:
            if args.command == "audit":
                for row in store.audit(args.tenant, max(args.limit, 1)):
                    print(json.dumps(asdict(row), ensure_ascii=False), file=out)
                return 0
            return _erase(store, args.conversation, args.tenant, out, err)
    except (StoreError, ValueError) as error:
        print(f"palabre: {error}", file=err)
        return 2


def _erase(store: Store, conversation_id: str | None, tenant_id: str | None, out: TextIO, err: TextIO) -> int:
    if conversation_id is None and tenant_id is None:
        print("palabre: erase needs --conversation, --tenant, or both", file=err)
        return 2
    if conversation_id is not None:
        tenant = tenant_id or store.conversation_tenant(conversation_id)
        erased = store.erase_conversation(tenant, conversation_id) if tenant is not None else None
        if erased is None:
            print(f"palabre: no conversation {conversation_id!r}", file=err)
            return 1
        _audit_erased(store, erased)
        print(_erased_line(erased), file=out)
        return 0
    assert tenant_id is not None
    count = 0
    for cid in store.conversation_ids(tenant_id):
        erased = store.erase_conversation(tenant_id, cid)
        if erased is not None:
            _audit_erased(store, erased)
            print(_erased_line(erased), file=out)
            count += 1
    print(f"erased {count} conversations of tenant {tenant_id}", file=out)
    return 0


def _erased_line(erased: ErasedConversation) -> str:
    return (
        f"erased conversation {erased.conversation_id} of tenant {erased.tenant_id}: "
        f"{erased.utterances} utterances, {erased.summaries} summaries, {erased.answers} answers"
    )


def _audit_erased(store: Store, erased: ErasedConversation, action: AuditAction = AuditAction.ERASE) -> None:
    counts = {"utterances": erased.utterances, "summaries": erased.summaries, "answers": erased.answers}
    store.add_audit(erased.tenant_id, "cli", action.value, erased.conversation_id, counts)
