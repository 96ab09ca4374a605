"""Who is calling: a `Principal` (tenant and scopes) for every request and connection.

`OpenAccess` is the embedded default for a server bound to loopback: every caller is the
configured tenant with every scope. Token authentication plugs in as another `Authenticator`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Scope(StrEnum):
    STREAM = "stream"
    """Send audio, ask questions."""
    READ = "read"
    """Read conversations, search, watch."""
    ADMIN = "admin"
    """Metrics, operations."""


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes


class Authenticator(Protocol):
    def authenticate(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Principal | None:
        """The caller, or None when the credentials are missing or wrong."""
        ...


class OpenAccess:
    """No authentication: everyone is `tenant_id` with every scope (loopback-only servers)."""

    def __init__(self, tenant_id: str) -> None:
        self.principal = Principal(tenant_id, frozenset(Scope))

    def authenticate(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Principal | None:
        return self.principal
