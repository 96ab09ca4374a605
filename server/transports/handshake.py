"""Who opened a WebSocket: the `Principal` of a handshake's headers and query string."""

from __future__ import annotations

from urllib.parse import parse_qsl

from websockets.http11 import Request

from server.auth import Authenticator, Principal

__all__ = ["principal_of"]


def principal_of(auth: Authenticator, request: Request) -> Principal | None:
    """The caller of an HTTP request or WebSocket handshake (None: refused)."""
    query = dict(parse_qsl(request.path.partition("?")[2]))
    return auth.authenticate({k.lower(): v for k, v in request.headers.raw_items()}, query)
