"""Reading a transport's messages and audio under the connection limits (`server.limits`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosedOK

from server.limits import ConnectionLimits
from server.live import LiveSession
from stream.errors import CloseCode, ErrorCode, ProtocolError


async def feed_within_rate(live: LiveSession, rates: ConnectionLimits, audio: bytes) -> None:
    """Feed `audio` to `live` under the connection's audio rate: too fast raises `rate_limited`,
    or with `audio_rate_policy` "pace" the caller is held (reading nothing more) until the
    connection is back within the rate."""
    delay = rates.audio(len(audio), time.monotonic())
    live.feed(audio)
    if delay > 0:
        await asyncio.sleep(delay)


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
