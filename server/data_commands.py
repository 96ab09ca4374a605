"""`palabre erase|purge|audit` and `palabre tenant set`: the data lifecycle, on the server's database.

Like `palabre token`, the commands work on the store directly — the SQLite file of `--data-dir`,
or the PostgreSQL database of `--store` — so they run beside live servers (SQLite's WAL lets both
write; PostgreSQL is shared by every front-end anyway). A running server notices an erasure at its
next search of the tenant (the erasure log replayed into its vector index) and closes a session
still streaming into an erased conversation at its next final (`conversation_erased`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from server.audit import AuditAction
from server.config import ServerConfig
from server.store import AsyncStore, ErasedConversation, StoreError
from server.store_interface import ConversationStore
from server.store_postgresql import PostgresStore, is_postgresql
from stream.redaction import REDACTION_KINDS, check_redaction


def add_data_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `erase`, `purge`, `tenant set` and `audit` to the `palabre` command's subcommands."""
    erase = sub.add_parser(
        "erase",
        help="erase a conversation, or every conversation of a tenant",
        description="Erase a conversation (--conversation) or all of a tenant's (--tenant alone): its "
        "utterances, summaries, answers and their vectors. Prints what was erased, never the text.",
    )
    _add_store_arguments(erase)
    erase.add_argument("--conversation", help="the conversation to erase")
    erase.add_argument("--tenant", help="the tenant (alone: erase every conversation of it)")
    purge = sub.add_parser(
        "purge",
        help="erase the conversations whose last utterance is older than a date",
        description="Erase every conversation (of --tenant, or of all tenants) whose last utterance is "
        "older than --before, one conversation per transaction so a server beside it keeps going.",
    )
    _add_store_arguments(purge)
    purge.add_argument(
        "--before", required=True, type=_date, help="a date or time, ISO 8601 (UTC if no zone)"
    )
    purge.add_argument("--tenant", help="only this tenant's conversations")
    tenant = sub.add_parser("tenant", help="tenant settings")
    tenant_sub = tenant.add_subparsers(dest="tenant_command", required=True)
    tenant_set = tenant_sub.add_parser("set", help="set a tenant's retention and redaction")
    tenant_set.add_argument("tenant", help="the tenant id")
    _add_store_arguments(tenant_set)
    tenant_set.add_argument(
        "--retention-days",
        type=int,
        help="erase conversations this many days after their last utterance (0: none of its own;"
        " the configuration's retention_days then applies)",
    )
    tenant_set.add_argument(
        "--redact",
        type=_kinds,
        help=f"kinds every session of the tenant redacts, comma-separated ({','.join(REDACTION_KINDS)}); "
        "'' for none (sessions redact only what they ask)",
    )
    audit = sub.add_parser(
        "audit",
        help="print the audit log (exports, erasures, purges, reads across conversations)",
        description="Print the audit log, newest first, one JSON object a line (never transcript text).",
    )
    _add_store_arguments(audit)
    audit.add_argument("--tenant", help="only this tenant's actions")
    audit.add_argument("--limit", type=int, default=100, help="at most this many rows (default: 100)")


def _add_store_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", type=Path, help="the server's data dir (its SQLite store)")
    where.add_argument(
        "--store", help="the servers' PostgreSQL store: postgresql://USER:PASSWORD@HOST:PORT/DB"
    )


def run_data_command(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run `palabre erase|purge|audit|tenant`; exit status 0, 1 (nothing to erase), or 2 (bad
    arguments, bad store)."""
    return asyncio.run(_run(args, out or sys.stdout, err or sys.stderr))


async def _open(args: argparse.Namespace) -> ConversationStore:
    """The store the command names: PostgreSQL (`--store`) or the SQLite file of `--data-dir`."""
    if args.store is not None:
        if not is_postgresql(args.store):
            raise ValueError(f"--store: expected a postgresql:// URI, got {args.store.split(':', 1)[0]!r}…")
        return await PostgresStore.open(args.store, min_size=1, max_size=1)
    database = ServerConfig(data_dir=args.data_dir).database_path
    if not database.exists():
        raise ValueError(f"no database in {args.data_dir}")
    return await AsyncStore.open(database)


async def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        store = await _open(args)
    except (StoreError, ValueError) as error:
        print(f"palabre: {error}", file=err)
        return 2
    try:
        if args.command == "purge":
            return await _purge(store, args.before.timestamp(), args.tenant, out)
        if args.command == "tenant":
            return await _tenant_set(store, args, out, err)
        if args.command == "audit":
            for row in await store.audit(args.tenant, max(args.limit, 1)):
                print(json.dumps(asdict(row), ensure_ascii=False), file=out)
            return 0
        return await _erase(store, args.conversation, args.tenant, out, err)
    except (StoreError, ValueError) as error:
        print(f"palabre: {error}", file=err)
        return 2
    finally:
        await store.close()


async def _tenant_set(store: ConversationStore, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.retention_days is None and args.redact is None:
        print("palabre: tenant set needs --retention-days, --redact, or both", file=err)
        return 2
    if args.retention_days is not None:
        days = args.retention_days or None
        await store.set_retention(args.tenant, days)
        kept = f"{days} days after their last utterance" if days else "for ever"
        print(f"tenant {args.tenant} keeps its conversations {kept}", file=out)
    if args.redact is not None:
        await store.set_redaction(args.tenant, args.redact)
        redacted = ", ".join(args.redact) or "only what sessions ask"
        print(f"tenant {args.tenant} redacts {redacted}", file=out)
    return 0


def _kinds(value: str) -> tuple[str, ...]:
    """`--redact phone,email` → the kinds (argparse reports a bad one)."""
    try:
        return check_redaction([k.strip() for k in value.split(",") if k.strip()])
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


async def _erase(
    store: ConversationStore, conversation_id: str | None, tenant_id: str | None, out: TextIO, err: TextIO
) -> int:
    if conversation_id is None and tenant_id is None:
        print("palabre: erase needs --conversation, --tenant, or both", file=err)
        return 2
    if conversation_id is not None:
        tenant = tenant_id or await store.conversation_tenant(conversation_id)
        erased = await store.erase_conversation(tenant, conversation_id) if tenant is not None else None
        if erased is None:
            print(f"palabre: no conversation {conversation_id!r}", file=err)
            return 1
        await _audit_erased(store, erased)
        print(_erased_line(erased), file=out)
        return 0
    assert tenant_id is not None
    count = 0
    for cid in await store.conversation_ids(tenant_id):
        erased = await store.erase_conversation(tenant_id, cid)
        if erased is not None:
            await _audit_erased(store, erased)
            print(_erased_line(erased), file=out)
            count += 1
    print(f"erased {count} conversations of tenant {tenant_id}", file=out)
    return 0


def _erased_line(erased: ErasedConversation) -> str:
    return (
        f"erased conversation {erased.conversation_id} of tenant {erased.tenant_id}: "
        f"{erased.utterances} utterances, {erased.summaries} summaries, {erased.answers} answers"
    )


async def _audit_erased(
    store: ConversationStore, erased: ErasedConversation, action: AuditAction = AuditAction.ERASE
) -> None:
    counts = {"utterances": erased.utterances, "summaries": erased.summaries, "answers": erased.answers}
    await store.add_audit(erased.tenant_id, "cli", action.value, erased.conversation_id, counts)


def _date(text: str) -> datetime:
    """`--before`: an ISO 8601 date or time; UTC when it names no zone."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


async def _purge(store: ConversationStore, cutoff: float, tenant_id: str | None, out: TextIO) -> int:
    """Erase the conversations idle since before `cutoff`, in batches, one transaction each."""
    count = 0
    while batch := await store.conversations_idle_since(cutoff, tenant_id, limit=100):
        for tenant, conversation_id in batch:
            erased = await store.erase_conversation(tenant, conversation_id)
            if erased is not None:
                await _audit_erased(store, erased, AuditAction.PURGE)
                count += 1
    print(f"purged {count} conversations", file=out)
    return 0
