"""The idle timer every transport uses."""

from __future__ import annotations

import asyncio

from server.transports.idle import IdleTimer


async def test_fires_once_after_the_timeout_without_touch() -> None:
    fired: list[float] = []
    timer = IdleTimer(0.1, lambda: fired.append(1.0))
    await asyncio.sleep(0.3)
    assert fired == [1.0] and timer.fired
    assert timer.message == "nothing received for 0.1 s"


async def test_touch_and_busy_postpone_it() -> None:
    fired: list[str] = []
    busy = [True]
    timer = IdleTimer(0.1, lambda: fired.append("idle"), busy=lambda: busy[0])
    for _ in range(4):
        await asyncio.sleep(0.05)
        timer.touch()
    await asyncio.sleep(0.25)
    assert fired == []  # busy all along
    busy[0] = False
    await asyncio.sleep(0.3)
    assert fired == ["idle"]


async def test_cancel_and_zero_never_fire() -> None:
    fired: list[str] = []
    cancelled = IdleTimer(0.05, lambda: fired.append("cancelled"))
    cancelled.cancel()
    IdleTimer(0, lambda: fired.append("zero"))
    await asyncio.sleep(0.15)
    assert fired == []
