"""Questions and search over what was said: `ask()` over the WebSocket, `search()` over HTTP."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from palabre_client.client import DEFAULT_URL, ClientErrorCode, Event, PalabreError


def http_base(url: str) -> str:
    """The server's HTTP root for a stream URL (ws://h:p/v1/stream → http://h:p)."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urllib.parse.urlunsplit((scheme, parts.netloc, "", "", ""))


async def ask(
    question: str,
    *,
    url: str = DEFAULT_URL,
    conversation_id: str | None = None,
    scope: str = "conversation",
    token: str | None = None,
    on_delta: Callable[[str], None] | None = None,
    timeout: float = 120.0,
) -> Event:
    """Ask a question about a conversation (or, with scope "tenant", all of them).

    Streams the answer's text pieces to `on_delta` and returns the `answer.done` event: its
    `text`, `citations` (utterance ids) and `passages` (the cited utterances with their text).
    Raises `PalabreError` on an `error` event.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else None
    message: dict[str, Any] = {"type": "ask", "question": question, "scope": scope}
    if conversation_id is not None:
        message["conversation_id"] = conversation_id
    try:
        async with asyncio.timeout(timeout):
            async with connect(url, additional_headers=headers, max_size=None) as ws:
                await ws.send(json.dumps(message))
                async for raw in ws:
                    event = json.loads(raw)
                    kind = event.get("type")
                    if kind == "answer.delta" and on_delta is not None:
                        on_delta(event.get("text", ""))
                    elif kind == "answer.done":
                        return dict(event)
                    elif kind == "error":
                        raise PalabreError.from_event(event)
    except TimeoutError as exc:
        raise PalabreError(ClientErrorCode.TIMEOUT, f"no answer within {timeout:g} s") from exc
    except (OSError, ConnectionClosed) as exc:
        raise PalabreError(ClientErrorCode.CONNECTION_FAILED, f"cannot reach {url}: {exc}") from exc
    raise PalabreError(ClientErrorCode.CONNECTION_CLOSED, "the server closed before answering")


async def search(
    query: str,
    *,
    url: str = DEFAULT_URL,
    conversation_id: str | None = None,
    k: int = 5,
    token: str | None = None,
) -> list[dict[str, Any]]:
    """The `k` utterances closest in meaning to `query` (optionally in one conversation)."""
    params = {"q": query, "k": str(k)}
    if conversation_id is not None:
        params["conversation"] = conversation_id
    target = f"{http_base(url)}/v1/search?{urllib.parse.urlencode(params)}"
    body = await asyncio.to_thread(_get_json, target, token)
    return list(body["results"])


EXPORT_FORMATS = ("vtt", "srt", "txt", "md", "json")
"""The transcript formats `export` asks for: WebVTT, SRT, plain text, Markdown minutes, JSON."""


async def export(
    conversation_id: str, *, format: str = "vtt", url: str = DEFAULT_URL, token: str | None = None
) -> str:
    """A conversation's transcript as a file's text in `format` (one of `EXPORT_FORMATS`)."""
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}")
    path = urllib.parse.quote(conversation_id, safe="")
    target = f"{http_base(url)}/v1/conversations/{path}/transcript?format={format}"
    body: bytes = await asyncio.to_thread(_get, target, token)
    return body.decode("utf-8")


def _get_json(target: str, token: str | None) -> Any:
    return json.loads(_get(target, token))


def _get(target: str, token: str | None) -> bytes:
    request = urllib.request.Request(target)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        try:
            error = json.load(exc).get("error", {})
        except (ValueError, AttributeError):
            error = {}
        raise PalabreError(error.get("code", f"http_{exc.code}"), error.get("message", str(exc))) from exc
    except OSError as exc:
        raise PalabreError(ClientErrorCode.CONNECTION_FAILED, f"cannot reach {target}: {exc}") from exc
