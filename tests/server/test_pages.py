"""server/pages.py: the meeting page, the dashboard and their static files."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.http import HttpResponse, Router
from server.pages import WEB_DIR, add_page_routes


async def get(router: Router, path: str) -> HttpResponse:
    matched = router.match(path)
    assert matched is not None, path
    route, request = matched
    assert request.required_scope is None  # pages hold no data: open
    return await route(request)


@pytest.fixture
def router() -> Router:
    r = Router()
    add_page_routes(r)
    return r


@pytest.mark.parametrize(
    ("path", "name", "content_type"),
    [
        ("/", "index.html", "text/html; charset=utf-8"),
        ("/?transport=socket", "index.html", "text/html; charset=utf-8"),
        ("/dashboard", "dashboard.html", "text/html; charset=utf-8"),
        ("/static/meeting.js", "meeting.js", "text/javascript; charset=utf-8"),
        ("/static/style.css", "style.css", "text/css; charset=utf-8"),
    ],
)
async def test_pages_and_files(router: Router, path: str, name: str, content_type: str) -> None:
    response = await get(router, path)
    assert response.status == 200
    assert response.content_type == content_type
    assert response.body == (WEB_DIR / name).read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/static/missing.js",
        "/static/..%2Fpyproject.toml",
        "/static/.hidden.js",
        "/static/app.py",
        "/static/a/b.js",
    ],
)
async def test_nothing_else(router: Router, path: str) -> None:
    assert (await get(router, path)).status == 404


def test_slash_is_not_a_prefix(router: Router) -> None:
    assert router.match("/v1/unknown") is None


def test_every_page_file_exists() -> None:
    names = {path.name for path in Path(WEB_DIR).iterdir()}
    assert {
        "index.html",
        "dashboard.html",
        "common.js",
        "meeting.js",
        "dashboard.js",
        "pcm-worklet.js",
    } <= names
