"""The idle timeout of every transport: one timer per connection (or call).

A transport calls `touch()` whenever its client shows life (a message, an audio frame, an RTP
packet). When `timeout_s` passes without one, and the connection is not `busy` (waiting for an
answer or for its last finals is not idleness), `on_idle` is called once, from the event loop;
the transport closes the connection there. A timeout of 0 (or less) never fires.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["IdleTimer"]

MIN_CHECK_S = 0.05


class IdleTimer:
    """Fires `on_idle` once after `timeout_s` seconds without `touch()` while not `busy()`."""

    def __init__(
        self,
        timeout_s: float,
        on_idle: Callable[[], None],
        *,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.timeout_s = timeout_s
        self._on_idle = on_idle
        self._busy = busy
        self._last = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None
        self.fired = False
        if timeout_s > 0:
            self._handle = asyncio.get_running_loop().call_later(timeout_s, self._check)

    def touch(self) -> None:
        """The client showed life now."""
        self._last = time.monotonic()

    def cancel(self) -> None:
        """The connection ended: never fire."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        now = time.monotonic()
        if self._busy():
            self._last = now
        left = self._last + self.timeout_s - now
        if left > 0:
            self._handle = asyncio.get_running_loop().call_later(max(left, MIN_CHECK_S), self._check)
            return
        self._handle = None
        self.fired = True
        self._on_idle()

    @property
    def message(self) -> str:
        """The `idle_timeout` error's text."""
        return f"nothing received for {self.timeout_s:g} s"
