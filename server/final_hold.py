"""Holding a session's finals while the store cannot be reached: the policy, without I/O.

A final is sent to its client only once its row is committed, so while the database is lost a
session's writer holds the final it could not commit (and the events queued behind it) and
retries the commit with a growing, jittered delay (sessions held by one outage do not all retry at
the same instants when it ends). The hold is bounded: once the oldest held final has
waited `HoldLimits.seconds`, or more than `HoldLimits.finals` finals wait, the session is told
(`unavailable`) and closed; its held finals are still retried, so a client that resumes the
conversation once the database is back gets them replayed. `FinalHold` keeps the count of one
session's hold; `server/live.py` drives it with the real clock, tests with a fake one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FinalHold", "HoldLimits"]


@dataclass(frozen=True, slots=True)
class HoldLimits:
    """How long and how much a session holds while the store cannot be reached."""

    finals: int = 32
    """Most finals a session holds (waiting for their commit) before it is told and closed."""
    seconds: float = 30.0
    """Longest a final is held before the session is told and closed."""
    first_retry_s: float = 0.1
    """Delay before the first retry; each further one doubles it, up to `max_retry_s`."""
    max_retry_s: float = 2.0
    retry_jitter: float = 0.5
    """Each retry's delay is shortened by a random fraction of itself, up to this (0: none), so
    that the sessions one outage held spread their retries instead of retrying together."""
    attempt_s: float = 10.0
    """Longest one commit may take before it counts as failed (a database that stopped
    answering without closing its connections); a commit that went through meanwhile is not
    stored twice (the store ignores a second row of the same seq)."""


class FinalHold:
    """One session's hold: when it began, how many retries, whether the bound was passed."""

    def __init__(self, limits: HoldLimits, uniform: Callable[[], float] = random.random) -> None:
        """`uniform` draws the jitter (a float in [0, 1)); tests give a fixed one."""
        self.limits = limits
        self._uniform = uniform
        self.since: float | None = None
        """When the first commit of the current hold failed (None: not holding)."""
        self.retries = 0
        """Failed commits in the current hold."""
        self.exceeded = False
        """The bound was passed (once per session: a session is told and closed only once)."""

    @property
    def holding(self) -> bool:
        return self.since is not None

    def attempt_timeout(self, now: float, began: float) -> float:
        """How long the next commit attempt may take, for a final whose first attempt began at
        `began`: `attempt_s`, but no later than the hold's time bound (counted from `began` when
        not yet holding), so that a commit that hangs rather than fails cannot keep the session
        from being told in time. At least 50 ms; `attempt_s` once the bound was passed."""
        if self.exceeded:
            return self.limits.attempt_s
        since = began if self.since is None else self.since
        left = self.limits.seconds - (now - since)
        return max(0.05, min(self.limits.attempt_s, left))

    def failed(self, now: float, began: float | None = None) -> float:
        """A commit failed (or timed out) at `now`: returns the seconds to wait before retrying
        it (the backoff, less up to `retry_jitter` of it). The hold counts from `began`, when its
        first attempt began, if given (an attempt that timed out held the final all along)."""
        if self.since is None:
            self.since = now if began is None else began
        delay = min(self.limits.first_retry_s * 2**self.retries, self.limits.max_retry_s)
        self.retries += 1
        return delay * (1.0 - self.limits.retry_jitter * self._uniform())

    def over_bound(self, now: float, waiting: int) -> bool:
        """Whether the hold just passed its bound, with `waiting` finals held (the one being
        retried included). True once: the session is then told and closed."""
        if self.since is None or self.exceeded:
            return False
        if now - self.since >= self.limits.seconds or waiting > self.limits.finals:
            self.exceeded = True
            return True
        return False

    def committed(self, now: float) -> float:
        """A commit succeeded: the hold (if any) ends. Returns how long it lasted (0: none)."""
        held = 0.0 if self.since is None else now - self.since
        self.since = None
        self.retries = 0
        return held
