"""The watch channel: `/v1/watch`, a WebSocket that pushes live conversations to dashboards.

The socket side only; `server/watch.py` decides what is sent (docs/protocol.md, "Watch"). The
caller needs the `read` scope and sees its own tenant only; `?conversation_id=` narrows it to one
conversation (the meeting page follows its other participants so). Messages from the client are
read and ignored. A watcher too slow to keep up is closed with 1013 (try again later): it reconnects
and starts again from a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import parse_qs

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from server.auth import Authenticator, Scope
from server.transports.handshake import principal_of
from server.watch import WatchHub
from stream.errors import CloseCode

__all__ = ["handle_watch"]

log = logging.getLogger(__name__)


async def handle_watch(ws: ServerConnection, watch: WatchHub, auth: Authenticator) -> None:
    """Send the snapshot, then every message of the hub, until the watcher leaves."""
    assert ws.request is not None
    principal = principal_of(auth, ws.request)
    if principal is None or not principal.allows(Scope.READ):
        await ws.close(CloseCode.POLICY_VIOLATION, "unauthorized")
        return
    conversation_id = parse_qs(ws.request.path.partition("?")[2]).get("conversation_id", [None])[0]
    subscriber = watch.subscribe(principal, conversation_id or None)
    reader = asyncio.create_task(_drain(ws), name="watch-reader")
    try:
        while True:
            getter = asyncio.ensure_future(subscriber.get())
            await asyncio.wait([getter, reader], return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():  # the watcher left
                getter.cancel()
                return
            text = getter.result()
            if text is None:
                log.info("watcher too slow (%d messages dropped): closing", subscriber.dropped)
                await ws.close(CloseCode.TRY_AGAIN_LATER, "too slow")
                return
            await ws.send(text)
    except ConnectionClosed:
        pass
    finally:
        watch.unsubscribe(subscriber)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _drain(ws: ServerConnection) -> None:
    """Read (and ignore) what the watcher sends; returns when the connection closes."""
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass
