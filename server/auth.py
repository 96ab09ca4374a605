"""Who is calling: a `Principal` (tenant and scopes) for every request and connection.

Two `Authenticator`s:

* `OpenAccess`, the default for a server bound to loopback: every caller is the configured
  tenant with every scope.
* `TokenAuthenticator` (`palabre serve --auth`): the caller presents an API token made by
  `palabre token create`, as `Authorization: Bearer <token>` or, for browsers (which cannot set
  headers on a WebSocket), as the `?token=` query parameter. The store keeps only the token's
  SHA-256; a token is found by looking its hash up in a unique index, so no secret is ever
  compared byte by byte (timing reveals nothing about a stored token). Lookups are cached for
  `ttl_s` seconds, so a revoked token stops working within that time.

`startup_refusal` refuses configurations that would expose open access to a network, and
`origin_allowed` is the WebSocket Origin check (cross-site WebSocket hijacking).
docs/security.md describes the threat model and which endpoint needs which scope.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from server.store import StoreError

if TYPE_CHECKING:
    from server.config import ServerConfig
    from server.store import Store, TokenRow
    from stream.events import Ask

log = logging.getLogger(__name__)

TOKEN_PREFIX = "plb_"
"""Every API token starts with this (so that secret scanners and people recognise one)."""
MAX_TOKEN_CHARS = 256
"""Longer credentials are refused without a lookup."""
TENANT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""A tenant id a token may name (it also names the tenant's index file)."""


class Scope(StrEnum):
    STREAM = "stream"
    """Send audio (and ask about the conversation being streamed)."""
    READ = "read"
    """Read conversations, search, ask about any conversation, watch."""
    DELETE = "delete"
    """Erase conversations (`DELETE /v1/conversations/{id}`)."""
    ADMIN = "admin"
    """Metrics, operations; implies every other scope."""


_SCOPE_NAMES = frozenset(s.value for s in Scope)


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    scopes: frozenset[Scope]
    token_id: int | None = None
    """The API token that authenticated the caller (None: open access)."""

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes


class Authenticator(Protocol):
    def authenticate(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Principal | None:
        """The caller, or None when the credentials are missing or wrong.

        `headers` have lower-case names; `query` is the request's query parameters.
        """
        ...

    def close(self) -> None:
        """Release what it holds (at shutdown)."""
        ...


class OpenAccess:
    """No authentication: everyone is `tenant_id` with every scope (loopback-only servers)."""

    def __init__(self, tenant_id: str) -> None:
        self.principal = Principal(tenant_id, frozenset(Scope))

    def authenticate(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Principal | None:
        return self.principal

    def close(self) -> None:
        pass


# --- tokens ---------------------------------------------------------------------------------


def new_token() -> str:
    """A fresh API token: `plb_` and 32 random bytes, URL-safe base64 (43 characters)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the store keeps of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def parse_scopes(names: Iterable[str]) -> frozenset[Scope]:
    """Scope names (`stream`, `read`, `delete`, `admin`) → scopes; ValueError names an unknown one."""
    scopes = set()
    for name in names:
        try:
            scopes.add(Scope(name))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise ValueError(f"unknown scope {name!r} (scopes: {known})") from None
    return frozenset(scopes)


def presented_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The token a request carries: `Authorization: Bearer <token>`, else `?token=`."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        return None
    token = query.get("token")
    return token or None


def token_credentials(token: str | None) -> dict[str, str]:
    """Headers carrying `token` (for transports that receive it in-band, e.g. Twilio)."""
    return {"authorization": f"Bearer {token}"} if token else {}


class TokenAuthenticator:
    """API tokens from the store, looked up by hash and cached for `ttl_s` seconds.

    `lookup` maps a token hash to its valid (not revoked) row; `open()` makes it a read on a
    connection of its own to the database. The lookup runs on the caller's thread (the event
    loop): one query on a unique index, tens of microseconds, once per token per `ttl_s`.
    Failed lookups are cached too, so that guessing tokens does not hit the database harder.
    """

    def __init__(
        self,
        lookup: Callable[[str], TokenRow | None],
        *,
        ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        max_cached: int = 10_000,
        close: Callable[[], None] | None = None,
    ) -> None:
        self._lookup = lookup
        self.ttl_s = ttl_s
        self._clock = clock
        self._max_cached = max_cached
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        self._close = close

    @classmethod
    def open(cls, database_path: Path, *, ttl_s: float = 5.0) -> TokenAuthenticator:
        """An authenticator over the SQLite store at `database_path` (created and migrated if needed)."""
        from server.store import Store

        database_path.parent.mkdir(parents=True, exist_ok=True)
        store: Store = Store.open(database_path)
        return cls(store.lookup_token, ttl_s=ttl_s, close=store.close)

    @classmethod
    def open_postgresql(cls, location: str, *, ttl_s: float = 5.0) -> TokenAuthenticator:
        """An authenticator over the PostgreSQL store at `location` that front-ends share: a
        token created once works on each, and each sees a revocation within `ttl_s`. A lookup
        blocks the event loop for one query, once per token per `ttl_s`; when the database does
        not answer (within 2 s) the request is refused and nothing is cached.
        """
        from server.store_postgresql import BlockingTokenLookup

        lookup = BlockingTokenLookup(location)
        return cls(lookup, ttl_s=ttl_s, close=lookup.close)

    def close(self) -> None:
        """Close the database connection of `open()`."""
        if self._close is not None:
            self._close()
            self._close = None

    def authenticate(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Principal | None:
        token = presented_token(headers, query)
        if token is None or not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
            return None
        return self.principal_of(token)

    def principal_of(self, token: str) -> Principal | None:
        """The principal of a token, from the cache while it is fresh."""
        key = hash_token(token)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            row = self._lookup(key)
        except StoreError as error:  # not cached: the next request asks again
            log.warning("authentication refused: %s", error)
            return None
        principal = None
        if row is not None:
            scopes = frozenset(Scope(s) for s in row.scopes if s in _SCOPE_NAMES)
            principal = Principal(row.tenant_id, scopes, row.id)
        if len(self._cache) >= self._max_cached:
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
        self._cache[key] = (principal, now + self.ttl_s)
        return principal


def authenticate_token(auth: Authenticator, token: str | None) -> Principal | None:
    """The caller a token given in-band (Twilio `customParameters`, configuration) stands for."""
    return auth.authenticate(token_credentials(token), {})


def build_authenticator(config: ServerConfig) -> Authenticator:
    """`TokenAuthenticator` over the server's database with `config.auth`, else `OpenAccess`."""
    if config.auth:
        if config.store is not None:
            return TokenAuthenticator.open_postgresql(config.store, ttl_s=config.auth_cache_s)
        return TokenAuthenticator.open(config.database_path, ttl_s=config.auth_cache_s)
    return OpenAccess(config.tenant)


# --- exposure -------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine (`127.0.0.1`, `::1`, `localhost`)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or "" (every interface): assume reachable from outside


def startup_refusal(config: ServerConfig) -> str | None:
    """Why the server must not start with this configuration, or None."""
    if not config.auth and not is_loopback(config.host):
        return (
            f"refusing to serve on {config.host}: without --auth every caller would have full "
            "access. Start with --auth (create tokens with `palabre token create`), or bind "
            "to 127.0.0.1 behind a proxy that authenticates."
        )
    if config.auth and config.audiosocket_port is not None and not config.audiosocket_token:
        return (
            "AudioSocket carries no credentials: with --auth, give the token its calls run under "
            "(--audiosocket-token, a token with the stream scope) and keep the port reachable "
            "from Asterisk only."
        )
    if config.auth and config.sip_port is not None and not config.sip_token:
        return (
            "SIP calls carry no Palabre credentials: with --auth, give the token they run under "
            "(--sip-token, a token with the stream scope) and keep the SIP port reachable from "
            "your PBX or network only."
        )
    return None


def origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    """The WebSocket Origin check: any origin when `allowed` is empty; no Origin (not a browser) passes."""
    allowed_set = {a.strip().rstrip("/").lower() for a in allowed}
    if not allowed_set or origin is None:
        return True
    return origin.strip().rstrip("/").lower() in allowed_set


def ask_allowed(principal: Principal, ask: Ask, own_conversation: str | None) -> bool:
    """Whether the caller may ask this question on `/v1/stream`.

    `read` may ask about any conversation of its tenant, or all of them. `stream` alone may
    only ask about the conversation its own connection streams (`own_conversation`).
    """
    if principal.allows(Scope.READ):
        return True
    if not principal.allows(Scope.STREAM) or own_conversation is None or ask.scope != "conversation":
        return False
    return ask.conversation_id in (None, own_conversation)
