"""`palabre token create|list|revoke`: API tokens, administered on the server's database.

The commands work on the SQLite file directly (`--data-dir`), so they run beside a live server
(SQLite's WAL lets both write), or on the PostgreSQL database that front-ends share (`--store
postgresql://…`); a running `--auth` server (every front-end of that database) sees a new token
at once and stops accepting a revoked one within `auth_cache_s` seconds.

`create` prints the token once, alone on its last line (only its hash is stored: it cannot be
shown again); `list` never prints tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from server.auth import TENANT_ID_RE, Scope, hash_token, new_token, parse_scopes
from server.config import ServerConfig
from server.store import Store, StoreError, TokenRow
from server.store_postgresql import PostgresStore, is_postgresql


def add_token_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `token create|list|revoke` to the `palabre` command's subcommands."""
    token = sub.add_parser("token", help="create, list and revoke API tokens (for --auth)")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    scopes = ", ".join(s.value for s in Scope)

    create = token_sub.add_parser(
        "create",
        help="create a token; prints it once, alone on the last line",
        description=f"Create an API token for a tenant. Scopes: {scopes} (admin implies the others).",
    )
    _add_location(create)
    create.add_argument("--tenant", required=True, help="the tenant the token acts for")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=[s.value for s in Scope],
        help="a scope to grant (repeatable)",
    )

    listing = token_sub.add_parser("list", help="list tokens (ids, tenants, scopes; never the tokens)")
    _add_location(listing)
    listing.add_argument("--tenant", help="only this tenant's tokens")

    revoke = token_sub.add_parser("revoke", help="revoke a token by id")
    _add_location(revoke)
    revoke.add_argument("id", type=int, help="the token's id (see `palabre token list`)")


def _add_location(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", type=Path, help="the server's data dir (its SQLite database)")
    where.add_argument(
        "--store", metavar="URL", help="the PostgreSQL database front-ends share (postgresql://…)"
    )


def run_token_command(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run `palabre token …`; exit status 0, 1 (no such token), or 2 (bad arguments, bad store)."""
    try:
        if args.token_command == "create":
            tenant = args.tenant
            if not TENANT_ID_RE.fullmatch(tenant):
                print(
                    f"palabre: --tenant must be 1-64 of [A-Za-z0-9_.-], alphanumeric first: {tenant!r}",
                    file=err,
                )
                return 2
            scopes = [s.value for s in parse_scopes(args.scopes)]
            token = new_token()
            if args.store is not None:
                row = asyncio.run(
                    _on_postgresql(args.store, "create_token", tenant, hash_token(token), scopes)
                )
            else:
                args.data_dir.mkdir(parents=True, exist_ok=True)
                with Store.open(ServerConfig(data_dir=args.data_dir).database_path) as store:
                    row = store.create_token(tenant, hash_token(token), scopes)
            print(f"created token {row.id} for tenant {row.tenant_id}: {', '.join(row.scopes)}", file=out)
            print("store it now: it is not kept and cannot be shown again", file=out)
            print(token, file=out)
            return 0
        if args.store is not None:
            if args.token_command == "list":
                print(_table(asyncio.run(_on_postgresql(args.store, "list_tokens", args.tenant))), file=out)
                return 0
            return _revoked(
                asyncio.run(_on_postgresql(args.store, "revoke_token", args.id)), args.id, out, err
            )
        data_dir: Path = args.data_dir
        database = ServerConfig(data_dir=data_dir).database_path
        if not database.exists():
            print(f"palabre: no database in {data_dir}", file=err)
            return 2
        with Store.open(database) as store:
            if args.token_command == "list":
                print(_table(store.list_tokens(args.tenant)), file=out)
                return 0
            if args.token_command == "revoke":
                return _revoked(store.revoke_token(args.id), args.id, out, err)
    except (StoreError, ValueError) as error:
        print(f"palabre: {error}", file=err)
        return 2
    return 2


async def _on_postgresql(location: str, method: str, *args: object) -> Any:
    """Call a token method of the PostgreSQL store at `location` (migrated if needed)."""
    if not is_postgresql(location):
        raise ValueError(f"--store: expected a postgresql:// URI, got {location.split(':', 1)[0]!r}…")
    store = await PostgresStore.open(location, min_size=1, max_size=1)
    try:
        return await getattr(store, method)(*args)
    finally:
        await store.close()


def _revoked(revoked: TokenRow | None, token_id: int, out: TextIO, err: TextIO) -> int:
    if revoked is None:
        print(f"palabre: no token {token_id}", file=err)
        return 1
    print(f"revoked token {revoked.id} of tenant {revoked.tenant_id}", file=out)
    return 0


def _table(rows: list[TokenRow]) -> str:
    """Tokens as aligned columns: id, tenant, scopes, created, revoked (UTC)."""
    lines = [("id", "tenant", "scopes", "created", "revoked")]
    for row in rows:
        revoked = _when(row.revoked_at) if row.revoked_at is not None else "-"
        lines.append((str(row.id), row.tenant_id, ",".join(row.scopes), _when(row.created_at), revoked))
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
