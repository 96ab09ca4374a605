"""The cross-session micro-batcher: one per model, shared by every session.

Rules, all in this file:

* Finals before partials. Finals run in arrival order; partials oldest first.
* A session has at most one pending partial: a newer one replaces it (the replaced one is
  returned to the caller as dropped).
* A batch holds compatible requests only (same `key`: language and task) of similar length,
  since the engine pads a batch to its longest item.
* The batch size is chosen from measurements: the scheduler keeps, per batch size, the compute
  seconds per second of audio it observed, tries larger sizes when enough work is queued, and
  settles on the cheapest per audio second (on CPU that is usually 1; on a GPU, larger).
* Batch only when backlogged: a batch never takes more than its share of the queued compatible
  requests per free worker, so an idle CPU runs requests one by one at their lowest latency and
  batching starts when work queues up (or when the device, like a GPU, is cheaper per item in
  batches and the queue is long).
* Bounded wait: when a batch could grow to the chosen size, it waits at most `max_wait_s` for
  more requests; it never waits when the chosen size is already reached or is 1.
* A worker is kept for finals: while there are several workers, batches of partials may occupy
  all but `reserve_for_finals` of them, so a final never waits behind partials.
* Finals get the device to themselves: no batch of partials starts while a final is queued or
  running (`partials_beside_finals` False), so the partial cadence gives way under load instead
  of the finals' latency (a running partial is not interrupted).
* Under overload partials are shed, never finals: a partial older than `partial_max_age_s` is
  dropped, and partials are held back while the queued finals' estimated work exceeds
  `shed_partials_above_s`.

The scheduler is sans-I/O: callers submit requests and ask for batches with the current time;
an adapter in server/ runs the batches on threads and reports their cost with `complete()`.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from stream.interfaces import RequestKind

__all__ = [
    "Batch",
    "Request",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerStats",
    "SizeCost",
]

PayloadT = TypeVar("PayloadT")


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Limits of the micro-batcher."""

    max_batch: int = 8
    """Largest batch ever formed."""
    max_wait_s: float = 0.015
    """Longest a request waits for its batch to fill when a worker is free."""
    length_ratio: float = 1.6
    """A batch's longest item is at most this many times its head's length (plus 1 s)."""
    partial_max_age_s: float = 2.5
    """A partial not started within this time is stale and dropped."""
    shed_partials_above_s: float = 1.2
    """Partials wait while queued finals hold more estimated compute seconds than this."""
    explore_every: int = 200
    """Batches between re-measurements of batch sizes that were not chosen."""
    reserve_for_finals: int = 1
    """Workers that batches of partials leave free for finals (when there are more workers)."""
    partials_beside_finals: bool = False
    """Whether a batch of partials may start while a batch holding a final runs."""
    sequential: bool = False
    """Baseline mode: one request at a time, in arrival order, no replacement and no shedding."""


@dataclass(slots=True)
class Request(Generic[PayloadT]):
    """A unit of model work from one session."""

    session_id: str
    kind: RequestKind
    key: Hashable
    """Requests batch together only when their keys are equal."""
    seconds: float
    """Length of the input in seconds: the request's cost follows it."""
    payload: PayloadT
    submitted_at: float = 0.0
    id: int = 0


@dataclass(slots=True)
class Batch(Generic[PayloadT]):
    requests: list[Request[PayloadT]]
    formed_at: float
    target_size: int

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.requests)


@dataclass(slots=True)
class SizeCost:
    """Running estimate of compute seconds per audio second at one batch size."""

    per_audio_second: float = 0.0
    samples: int = 0

    def add(self, value: float, alpha: float = 0.2) -> None:
        self.per_audio_second = (
            value if self.samples == 0 else (1 - alpha) * self.per_audio_second + alpha * value
        )
        self.samples += 1


@dataclass(slots=True)
class SchedulerStats:
    submitted: dict[str, int] = field(default_factory=lambda: {"final": 0, "partial": 0})
    batches: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    replaced_partials: int = 0
    dropped_partials: int = 0
    queue_wait_s: deque[float] = field(default_factory=lambda: deque(maxlen=2048))


class Scheduler(Generic[PayloadT]):
    """Merges the requests of all sessions into batches for one model."""

    def __init__(self, config: SchedulerConfig | None = None, initial_cost: float = 0.1) -> None:
        self.config = config or SchedulerConfig()
        self._finals: deque[Request[PayloadT]] = deque()
        self._partials: dict[str, Request[PayloadT]] = {}
        """Pending partial per session, insertion-ordered (oldest first)."""
        self._fifo: deque[Request[PayloadT]] = deque()
        """Sequential mode's single queue."""
        self._ids = itertools.count(1)
        self._initial_cost = initial_cost
        self.costs: dict[int, SizeCost] = {}
        self.stats = SchedulerStats()
        self._since_explore = 0
        self._running_partial_batches = 0
        self._running_final_batches = 0

    # --- submitting ---------------------------------------------------------------------

    def submit(self, request: Request[PayloadT], now: float) -> list[Request[PayloadT]]:
        """Queue a request; returns the requests it displaced (a session's older partial)."""
        request.id = next(self._ids)
        request.submitted_at = now
        self.stats.submitted[request.kind] += 1
        if self.config.sequential:
            self._fifo.append(request)
            return []
        if request.kind == "final":
            self._finals.append(request)
            # A final supersedes the pending partial of the same session: its utterance is over.
            old = self._partials.pop(request.session_id, None)
            if old is not None:
                self.stats.replaced_partials += 1
                return [old]
            return []
        old = self._partials.pop(request.session_id, None)
        self._partials[request.session_id] = request
        if old is not None:
            self.stats.replaced_partials += 1
            return [old]
        return []

    def cancel(self, session_id: str) -> list[Request[PayloadT]]:
        """Forget a session's pending requests (it went away); returns them."""
        gone = [r for r in (*self._finals, *self._fifo) if r.session_id == session_id]
        self._finals = deque(r for r in self._finals if r.session_id != session_id)
        self._fifo = deque(r for r in self._fifo if r.session_id != session_id)
        partial = self._partials.pop(session_id, None)
        if partial is not None:
            gone.append(partial)
        return gone

    @property
    def pending(self) -> int:
        return len(self._finals) + len(self._partials) + len(self._fifo)

    def pending_finals_seconds(self) -> float:
        """Estimated compute seconds of the queued finals."""
        return sum(self.cost_of(r.seconds) for r in self._finals)

    # --- batching -----------------------------------------------------------------------

    def cost_of(self, seconds: float, batch_size: int = 1) -> float:
        """Estimated compute seconds for `seconds` of audio at a batch size."""
        cost = self.costs.get(batch_size) or self.costs.get(1)
        per_second = cost.per_audio_second if cost and cost.samples else self._initial_cost
        return per_second * seconds

    def shed_stale(self, now: float) -> list[Request[PayloadT]]:
        """Drop partials that waited too long; returns them."""
        if self.config.sequential:
            return []
        stale = [r for r in self._partials.values() if now - r.submitted_at > self.config.partial_max_age_s]
        for r in stale:
            del self._partials[r.session_id]
        self.stats.dropped_partials += len(stale)
        return stale

    def next_batch(self, now: float, free_workers: int = 1, workers: int = 1) -> Batch[PayloadT] | None:
        """The batch a free worker should run now, or None (nothing ready, or worth waiting).

        `free_workers` of `workers` are idle (the caller's worker pool).
        """
        if self.config.sequential:
            if not self._fifo:
                return None
            return self._form([self._fifo.popleft()], now, 1)

        candidates = self._candidates()
        if not candidates:
            return None
        head = candidates[0]
        if head.kind == "partial":
            if self._running_final_batches and not self.config.partials_beside_finals:
                return None
            if workers > self.config.reserve_for_finals:
                if self._running_partial_batches >= workers - self.config.reserve_for_finals:
                    return None
        available = sum(1 for r in candidates if r.key == head.key)
        share = -(-available // max(1, free_workers))
        target = min(self.choose_batch_size(available), max(1, share))
        members = self._fill(head, candidates, target)
        oldest_wait = now - min(r.submitted_at for r in members)
        if len(members) < target and oldest_wait < self.config.max_wait_s:
            return None
        for r in members:
            if r.kind == "final":
                self._finals.remove(r)
            else:
                del self._partials[r.session_id]
        return self._form(members, now, target)

    def wake_at(self, now: float) -> float | None:
        """When `next_batch` may next return a batch without new submissions (bounded wait)."""
        if self.pending == 0:
            return None
        oldest = min(r.submitted_at for r in self._candidates() or [*self._finals, *self._fifo])
        return max(now, oldest + self.config.max_wait_s)

    def _candidates(self) -> list[Request[PayloadT]]:
        finals = list(self._finals)
        if finals and self.pending_finals_seconds() > self.config.shed_partials_above_s:
            return finals
        return finals + list(self._partials.values())

    def _fill(
        self, head: Request[PayloadT], candidates: list[Request[PayloadT]], target: int
    ) -> list[Request[PayloadT]]:
        limit = head.seconds * self.config.length_ratio + 1.0
        members = [head]
        for r in candidates[1:]:
            if len(members) >= target:
                break
            if (
                r.key == head.key
                and r.seconds <= limit
                and head.seconds <= r.seconds * self.config.length_ratio + 1.0
            ):
                members.append(r)
        return members

    def _form(self, members: list[Request[PayloadT]], now: float, target: int) -> Batch[PayloadT]:
        if all(r.kind == "partial" for r in members):
            self._running_partial_batches += 1
        else:
            self._running_final_batches += 1
        self.stats.batches += 1
        size = len(members)
        self.stats.batch_sizes[size] = self.stats.batch_sizes.get(size, 0) + 1
        for r in members:
            self.stats.queue_wait_s.append(now - r.submitted_at)
        return Batch(members, now, target)

    # --- measuring ----------------------------------------------------------------------

    def choose_batch_size(self, available: int) -> int:
        """The batch size to aim for, given `available` compatible requests queued.

        Sizes are powers of two up to `max_batch`. A size never measured is tried as soon as
        enough work is queued for it, and every `explore_every` batches sizes are re-tried so
        that the estimate follows the device; otherwise the cheapest measured size wins.
        """
        if self.config.sequential:
            return 1
        sizes = [1]
        while sizes[-1] * 2 <= self.config.max_batch:
            sizes.append(sizes[-1] * 2)
        measured = {b: c for b, c in self.costs.items() if c.samples}
        if 1 not in measured:
            return 1
        best = min(measured, key=lambda b: measured[b].per_audio_second)
        explore = self._since_explore >= self.config.explore_every
        for b in sizes:
            if b > available:
                break
            if b not in measured or (explore and b != best):
                if explore:
                    self._since_explore = 0
                return b
        return best

    def finished(self, batch: Batch[PayloadT]) -> None:
        """A batch left its worker (done or failed): its worker is free again."""
        if all(r.kind == "partial" for r in batch.requests):
            self._running_partial_batches = max(0, self._running_partial_batches - 1)
        else:
            self._running_final_batches = max(0, self._running_final_batches - 1)

    def complete(self, batch: Batch[PayloadT], compute_seconds: float) -> None:
        """Report what a batch cost; feeds the batch-size choice."""
        seconds = batch.seconds
        if seconds <= 0:
            return
        self._since_explore += 1
        self.costs.setdefault(len(batch.requests), SizeCost()).add(compute_seconds / seconds)
