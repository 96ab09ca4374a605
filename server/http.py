"""Plain HTTP routes served beside the WebSocket endpoints (GET; DELETE and PUT where said)."""

from __future__ import annotations

import http
import json
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from websockets.asyncio.server import ServerConnection

from server.auth import Principal, Scope


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    content_type: str = "application/json"
    stream: AsyncIterable[bytes] | None = None
    """A body written as it is made (`send_streamed`), in place of `body`."""


OPEN_TIMEOUT_S = 60.0
"""websockets' `open_timeout`: a connection's request must arrive, and a plain HTTP response (a
streamed export included, `send_streamed`) be sent, within this; the same as nginx's default
`client_header_timeout`. (websockets' own default, 10 s, is short for a long export.)"""


async def send_streamed(connection: ServerConnection, response: HttpResponse) -> None:
    """Write `response` with its `stream` as the body, chunk by chunk, then close the connection.

    websockets answers a plain HTTP request with one `Response` whose body is bytes, all in
    memory. A streamed body is written here instead, straight onto the connection's transport with
    chunked transfer encoding: each chunk is written, then the write waits while the transport's
    buffer is above its high-water mark (`drain`), so memory stays bounded by a chunk and that
    buffer whatever the body's length. The connection is closed afterwards (`Connection: close`);
    websockets then has nothing left to send. An error while the body is made leaves it without
    its last (empty) chunk, which an HTTP client reports as an incomplete body.

    The whole of it runs within websockets' opening-handshake timeout (`OPEN_TIMEOUT_S`): a
    body that takes longer to make and send is cut (incomplete, as above).
    """
    assert response.stream is not None
    transport = connection.transport
    head = (
        f"HTTP/1.1 {response.status} {http.HTTPStatus(response.status).phrase}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    transport.write(head.encode("ascii"))
    try:
        async for chunk in response.stream:
            if transport.is_closing():
                return
            if chunk:
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                await connection.drain()
        transport.write(b"0\r\n\r\n")
    finally:
        transport.close()
        await connection.wait_closed()


def json_response(status: int, payload: Any) -> HttpResponse:
    return HttpResponse(status, json.dumps(payload, ensure_ascii=False).encode())


def error_response(status: int, code: str, message: str) -> HttpResponse:
    return json_response(status, {"error": {"code": code, "message": message}})


@dataclass(frozen=True, slots=True)
class HttpRequest:
    path: str
    query: dict[str, str]
    params: tuple[str, ...] = ()
    """Path segments matched by a prefix route (e.g. the id in /v1/conversations/{id})."""
    principal: Principal | None = None
    """The authenticated caller (set by the app before the route runs; None on open routes)."""
    required_scope: Scope | None = None
    """The scope the matched route needs (None: open to anyone, e.g. /healthz)."""

    @property
    def tenant_id(self) -> str:
        assert self.principal is not None, "route called without authentication"
        return self.principal.tenant_id


Route = Callable[[HttpRequest], Awaitable[HttpResponse]]


class Router:
    """Maps (method, path) to handlers: exact paths, patterns with `{name}` segments (e.g.
    `/v1/conversations/{id}/transcript`: each `{…}` segment is a param), and prefixes ending in
    '/' that take the rest as params; tried in that order. A known path asked with another
    method gets 405 `method_not_allowed`.

    Each route names the scope its caller needs (`read` unless said otherwise; None: open).
    Requests carry no body (the server reads none): parameters go in the path and query.
    """

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, tuple[Route, Scope | None]]] = {}
        self._prefix: list[tuple[str, dict[str, tuple[Route, Scope | None]]]] = []
        self._patterns: dict[tuple[str, ...], dict[str, tuple[Route, Scope | None]]] = {}

    def add(self, path: str, handler: Route, scope: Scope | None = Scope.READ, method: str = "GET") -> None:
        if "{" in path:
            self._patterns.setdefault(tuple(path.split("/")), {})[method] = (handler, scope)
        elif path.endswith("/") and path != "/":  # "/" itself is an exact path (the meeting page)
            for prefix, methods in self._prefix:
                if prefix == path:
                    methods[method] = (handler, scope)
                    return
            self._prefix.append((path, {method: (handler, scope)}))
        else:
            self._exact.setdefault(path, {})[method] = (handler, scope)

    def match(self, target: str, method: str = "GET") -> tuple[Route, HttpRequest] | None:
        path, _, query_string = target.partition("?")
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        found = self._find(path)
        if found is None:
            return None
        methods, params = found
        handler, scope = methods.get(method, (_method_not_allowed(methods), None))
        return handler, HttpRequest(path, query, params, required_scope=scope)

    def _find(self, path: str) -> tuple[dict[str, tuple[Route, Scope | None]], tuple[str, ...]] | None:
        """The routes of a path, by method, and the params it gives them."""
        exact = self._exact.get(path)
        if exact is not None:
            return exact, ()
        segments = path.split("/")
        for pattern, methods in self._patterns.items():
            pairs = list(zip(pattern, segments, strict=False))
            if len(pattern) == len(segments) and all(p == s or (p[:1] == "{" and s) for p, s in pairs):
                return methods, tuple(unquote(s) for p, s in pairs if p[:1] == "{")
        for prefix, methods in self._prefix:
            if path.startswith(prefix) and len(path) > len(prefix):
                return methods, tuple(unquote(p) for p in path[len(prefix) :].split("/"))
        return None


def _method_not_allowed(methods: dict[str, tuple[Route, Scope | None]]) -> Route:
    """A route answering 405 and naming the methods the path takes."""
    allowed = ", ".join(sorted(methods))

    async def refuse(request: HttpRequest) -> HttpResponse:
        return error_response(405, "method_not_allowed", f"{request.path} takes {allowed}")

    return refuse
