"""Feeding a transport's audio under the connection limits (`server.limits`)."""

from __future__ import annotations

import asyncio
import time

from server.limits import ConnectionLimits
from server.live import LiveSession


async def feed_within_rate(live: LiveSession, rates: ConnectionLimits, audio: bytes) -> None:
    """Feed `audio` to `live` under the connection's audio rate: too fast raises `rate_limited`,
    or with `audio_rate_policy` "pace" the caller is held (reading nothing more) until the
    connection is back within the rate."""
    delay = rates.audio(len(audio), time.monotonic())
    live.feed(audio)
    if delay > 0:
        await asyncio.sleep(delay)
