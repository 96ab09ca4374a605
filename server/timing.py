"""When a live session's audio arrived, for latencies measured from the speaker's side.

The final latency of an utterance runs from the moment the audio of its end reached the server
to the moment its final is sent. A `SessionTiming` keeps a short history of (seconds of session
audio received so far, arrival time); when the segmenter ends an utterance (`speech_stopped`,
within about `min_silence_ms` of that audio arriving) the arrival time of its end is looked up
and kept until the final is delivered. Cost: one deque append per audio frame, a bisection per
utterance.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque

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

    def final_delivered(self, utterance_id: str, now: float) -> float | None:
        """Seconds from the end of the utterance's audio arriving to `now`; None when unknown."""
        arrived = self._stopped.pop(utterance_id, None)
        return None if arrived is None else max(0.0, now - arrived)

    def partial_delivered(self, utterance_id: str, now: float) -> float | None:
        """Seconds since the previous partial of the same utterance; None for its first."""
        last = self._last_partial
        self._last_partial = (utterance_id, now)
        if last is None or last[0] != utterance_id:
            return None
        return now - last[1]
