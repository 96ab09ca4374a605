"""Plain HTTP routes served beside the WebSocket endpoints (GET only)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    content_type: str = "application/json"


def json_response(status: int, payload: Any) -> HttpResponse:
    return HttpResponse(status, json.dumps(payload, ensure_ascii=False).encode())


Route = Callable[[dict[str, str]], HttpResponse]


class Router:
    """Maps exact GET paths to handlers taking the query parameters."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    def add(self, path: str, handler: Route) -> None:
        self._routes[path] = handler

    def get(self, path: str) -> Route | None:
        return self._routes.get(path)
