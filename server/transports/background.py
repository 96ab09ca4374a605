"""Sends and close handshakes that a transport starts from a callback and does not await."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from websockets.exceptions import ConnectionClosed

__all__ = ["in_background"]

_running: set[asyncio.Task[None]] = set()
"""Kept referenced until done (the loop holds only weak references to tasks)."""


def in_background(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` (a send or a close whose connection may already be gone) without awaiting it."""
    task = asyncio.get_running_loop().create_task(_quietly(work))
    _running.add(task)
    task.add_done_callback(_running.discard)


async def _quietly(work: Coroutine[Any, Any, None]) -> None:
    with contextlib.suppress(ConnectionClosed):
        await work
