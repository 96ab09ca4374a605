"""The browser pages: the meeting page at `/`, the dashboard at `/dashboard`, their files at `/static/`.

Plain files from `clients/web/` (no build step), read at each request so an edit shows at the
next reload. Only files directly in that folder with a known type are served.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from server.http import HttpRequest, HttpResponse, Route, Router, error_response

WEB_DIR = Path(__file__).resolve().parent.parent / "clients" / "web"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

PAGES = {"/": "index.html", "/dashboard": "dashboard.html"}


def add_page_routes(router: Router, web_dir: Path = WEB_DIR) -> None:
    """GET / (meeting), /dashboard, /static/{file}."""

    def page(name: str) -> Route:
        async def serve(_request: HttpRequest) -> HttpResponse:
            return await _file(web_dir, name)

        return serve

    async def static(request: HttpRequest) -> HttpResponse:
        if len(request.params) != 1:
            return error_response(404, "not_found", "no such file")
        return await _file(web_dir, request.params[0])

    for path, name in PAGES.items():
        router.add(path, page(name), scope=None)  # pages hold no data: the sockets authenticate
    router.add("/static/", static, scope=None)


async def _file(web_dir: Path, name: str) -> HttpResponse:
    """One file of `web_dir` by name (no sub-folders, no hidden files, known types only)."""
    content_type = CONTENT_TYPES.get(Path(name).suffix)
    if content_type is None or name.startswith(".") or "/" in name or "\\" in name:
        return error_response(404, "not_found", "no such file")
    path = web_dir / name
    try:
        body = await asyncio.to_thread(path.read_bytes)
    except (FileNotFoundError, IsADirectoryError):
        return error_response(404, "not_found", "no such file")
    return HttpResponse(200, body, content_type)
