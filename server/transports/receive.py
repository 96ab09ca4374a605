"""Reading a WebSocket transport's messages under the connection limits (`server.limits`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosedOK

from stream.errors import CloseCode, ErrorCode, ProtocolError


async def messages_until_idle(ws: ServerConnection, idle_timeout_s: float) -> AsyncIterator[str | bytes]:
    """The connection's messages, like `async for message in ws`, but raising `idle_timeout`
    (close 1008) when nothing arrives for `idle_timeout_s` seconds (0: wait for ever)."""
    while True:
        try:
            if idle_timeout_s > 0:
                async with asyncio.timeout(idle_timeout_s):
                    message = await ws.recv()
            else:
                message = await ws.recv()
        except ConnectionClosedOK:
            return
        except TimeoutError:
            message_text = f"nothing received for {idle_timeout_s:g} s"
            raise ProtocolError(ErrorCode.IDLE_TIMEOUT, message_text, CloseCode.POLICY_VIOLATION) from None
        yield message
