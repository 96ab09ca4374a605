"""When a live conversation's rolling summary is due: the whole policy, with an explicit clock.

A conversation gets a new summary

* after every `every_finals` finals stored since its last summary (`final_stored` says so), or
* once `every_s` seconds have passed since its last summary (or since it went live), provided a
  final was stored meanwhile (`due`): a quiet conversation is not summarised again and again;
* and a final one when its last live session stops, whatever the counts, so that the stored
  summary covers the whole conversation (the session hub knows when that is and asks for it).

`SummarySchedule` holds one conversation's counts; the caller passes the time (`time.monotonic()`
in the server, a fake clock in tests) and tells it when a summary was made (`summarized`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SummaryCadence:
    """How often a live conversation is summarised."""

    every_finals: int = 4
    """A summary after this many new finals (0: never by count)."""
    every_s: float = 30.0
    """A summary after this many seconds with at least one new final (0: never by time)."""


class SummarySchedule:
    """The rolling-summary counts of one live conversation."""

    def __init__(self, cadence: SummaryCadence, now: float) -> None:
        self.cadence = cadence
        self.finals_since = 0
        """Finals stored since the last summary."""
        self.last_at = now
        """When the last summary was made (or the conversation went live)."""

    def final_stored(self) -> bool:
        """Count a stored final; True when it makes a summary due by count."""
        self.finals_since += 1
        every = self.cadence.every_finals
        return every > 0 and self.finals_since >= every

    def due(self, now: float) -> bool:
        """Whether a summary is due by time: `every_s` elapsed and something new was said."""
        every = self.cadence.every_s
        return every > 0 and self.finals_since > 0 and now - self.last_at >= every

    def summarized(self, now: float) -> None:
        """A summary covering every final stored so far was made at `now`."""
        self.finals_since = 0
        self.last_at = now

