"""The final latency, and when a live session's audio arrived to measure it.

**Final latency** (one definition, used by the `palabre_final_latency_seconds` metric, the
`final_latency_ms` of `/v1/watch` and the dashboard): from the moment the audio that ends an
utterance reached the server to the moment its `final` is sent to the client. It therefore
includes the pause the segmenter waits for before it ends an utterance, the recognition, and
committing the final to the store. A final sent to no one (the client is gone) has none.

A `SessionTiming` keeps a short history of (seconds of session audio received so far, arrival
time); when the segmenter ends an utterance (`speech_stopped`, within about `min_silence_ms` of
that audio arriving) the arrival time of its end is looked up and kept until the final is
delivered. Cost: one deque append per audio frame, a bisection per utterance.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from stream.events import Final

MAX_PENDING = 256
"""Utterances whose final is awaited that are remembered; older ones are forgotten."""
TAIL_S = 0.25


class SessionTiming:
    """Arrival times of one session's audio, and of its utterance ends."""

    def __init__(self, capacity: int = 256, coalesce_s: float = 0.005) -> None:
        self.capacity = capacity
        self.coalesce_s = coalesce_s
        self._ends: deque[float] = deque()
        """Seconds of session audio received up to and including each entry, increasing."""
        self._times: deque[float] = deque()
        """When each entry arrived (time.monotonic())."""
        self._floor = 0.0
        """Audio before this (seconds) has been forgotten."""
        self._stopped: dict[str, float] = {}
        """Utterance id → when the audio of its end arrived."""
        self._last_partial: tuple[str, float] | None = None
        self._last_final: tuple[str, float] | None = None
        """The utterance id and final latency of the final being delivered."""

    def audio_arrived(self, audio_end_s: float, now: float) -> None:
        """Audio up to `audio_end_s` seconds of the session has arrived at `now`.

        Entries less than `coalesce_s` apart are merged (their audio is dated by the first), so
        the history covers at least `capacity x coalesce_s` seconds however small the frames.
        """
        if self._times and now - self._times[-1] < self.coalesce_s:
            self._ends[-1] = audio_end_s
            return
        if len(self._ends) >= self.capacity:
            self._floor = self._ends.popleft()
            self._times.popleft()
        self._ends.append(audio_end_s)
        self._times.append(now)

    def arrival(self, audio_s: float) -> float | None:
        """When the audio at `audio_s` seconds of the session arrived (None: not known, or forgotten).

        Up to `TAIL_S` past the last audio counted is dated by the last arrival: audio flushed from
        the decoder at the end of a stream is not counted as it arrives.
        """
        if audio_s < self._floor or not self._ends:
            return None
        i = bisect_left(self._ends, audio_s - 1e-9)
        if i < len(self._times):
            return self._times[i]
        return self._times[-1] if audio_s - self._ends[-1] <= TAIL_S else None

    def speech_stopped(self, utterance_id: str, audio_s: float) -> None:
        """An utterance ended at `audio_s` seconds of the session: remember when that audio arrived."""
        arrived = self.arrival(audio_s)
        if arrived is None:
            return
        if len(self._stopped) >= MAX_PENDING:
            del self._stopped[next(iter(self._stopped))]
        self._stopped[utterance_id] = arrived

    def final_latency(self, utterance_id: str, now: float) -> float | None:
        """Seconds from the arrival of the end of the utterance's audio to `now`, when its final is
        delivered; None when unknown. The first call for an utterance fixes the figure: every
        observer of the same delivery reads the same one.
        """
        last = self._last_final
        if last is not None and last[0] == utterance_id:
            return last[1]
        arrived = self._stopped.pop(utterance_id, None)
        if arrived is None:
            return None
        latency = max(0.0, now - arrived)
        self._last_final = (utterance_id, latency)
        return latency

    def partial_delivered(self, utterance_id: str, now: float) -> float | None:
        """Seconds since the previous partial of the same utterance; None for its first."""
        last = self._last_partial
        self._last_partial = (utterance_id, now)
        if last is None or last[0] != utterance_id:
            return None
        return now - last[1]


class _Outbox(Protocol):
    @property
    def attached(self) -> bool: ...


class TimedSession(Protocol):
    """What `final_latency` reads of a live session (`server.live.LiveSession`)."""

    @property
    def timing(self) -> SessionTiming: ...

    @property
    def outbox(self) -> _Outbox: ...


def final_latency(live: TimedSession, final: Final) -> float | None:
    """The final latency of `final`, which `live`'s outbox is delivering now (see the module's
    docstring); None when it is not known or the final goes to no client."""
    latency = live.timing.final_latency(final.utterance_id, time.monotonic())
    return latency if live.outbox.attached else None
