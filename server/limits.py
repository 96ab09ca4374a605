"""Per-connection and per-tenant limits: message and audio rates, sessions per tenant.

Pure (a clock value is passed in), so every rule is tested with plain calls:

* `TokenBucket`: `rate` units per second, up to `capacity` saved up.
* `ConnectionLimits`: one connection's message rate and audio rate (every transport). A client
  that goes over the message rate is refused with `rate_limited` and the connection closes
  (1008). One that sends audio faster than `LimitsConfig.audio_rate` times real time (beyond a
  burst of `audio_burst_s` seconds) is refused the same way, or with `audio_rate_policy`
  "pace" told how long to wait: the transport stops reading from it for that long. Either way
  the server never transcribes audio faster than the rate.
* `admit_sessions`: the process-wide and per-tenant session caps (`overloaded`, 1013). The
  per-tenant cap applies to authenticated tenants: open access has one tenant only.

Defaults are in `server.config.LimitsConfig`; docs/security.md lists them.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.config import LimitsConfig
from stream.audio import BYTES_PER_SAMPLE
from stream.errors import CloseCode, ErrorCode, ProtocolError
from stream.events import Start


class TokenBucket:
    """`rate` tokens per second accrue up to `capacity`; `take` spends them (rate 0: unlimited)."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def wait(self, amount: float, now: float) -> float:
        """Spend `amount` tokens even if that runs into debt; the seconds until the debt is paid
        (0.0 when there were enough)."""
        if self.rate <= 0:
            return 0.0
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= amount
        return max(0.0, -self.tokens / self.rate)

    def take(self, amount: float, now: float) -> bool:
        """Spend `amount` tokens; False (nothing spent) when there are not enough."""
        if self.rate <= 0:
            return True
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        if amount > self.tokens:
            return False
        self.tokens -= amount
        return True


class ConnectionLimits:
    """The rate limits of one connection: call `message()` for each message, `audio()` for each frame."""

    def __init__(self, limits: LimitsConfig, now: float) -> None:
        self.limits = limits
        self.messages = TokenBucket(limits.message_rate, limits.message_burst, now)
        self.audio_seconds = TokenBucket(limits.audio_rate, limits.audio_burst_s, now)
        self.bytes_per_second = 0.0
        """Of the announced audio format (0 until `started`)."""

    def started(self, start: Start) -> None:
        """Audio in `start`'s format follows (a connection carrying several streams, such as the
        two tracks of a Twilio call, calls this once per stream: their rates add up)."""
        self.bytes_per_second += float(BYTES_PER_SAMPLE[start.encoding] * start.channels * start.sample_rate)

    def message(self, now: float) -> None:
        """One message arrived; raises `rate_limited` when the message rate is exceeded."""
        if not self.messages.take(1.0, now):
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"more than {self.limits.message_rate:g} messages per second",
                CloseCode.POLICY_VIOLATION,
            )

    def audio(self, size: int, now: float, *, can_pace: bool = True) -> float:
        """An audio frame of `size` bytes arrived. Within the rate: 0.0. Too fast: raises
        `rate_limited`, or with the "pace" policy (and a transport that `can_pace`) returns the
        seconds to stop reading from the connection (the frame is counted and may be used)."""
        if self.bytes_per_second <= 0:
            return 0.0
        seconds = size / self.bytes_per_second
        if self.limits.audio_rate_policy == "pace" and can_pace:
            return self.audio_seconds.wait(seconds, now)
        if not self.audio_seconds.take(seconds, now):
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"audio sent faster than {self.limits.audio_rate:g}x real time "
                f"(beyond a burst of {self.limits.audio_burst_s:g} s); pace the audio",
                CloseCode.POLICY_VIOLATION,
            )
        return 0.0


def admit_sessions(
    limits: LimitsConfig,
    tenant_id: str,
    live_tenants: Iterable[str],
    count: int = 1,
    *,
    per_tenant: bool = True,
) -> None:
    """Raise `overloaded` (close 1013) unless `count` more sessions of `tenant_id` fit.

    `live_tenants` is the tenant of every live session of the process. `per_tenant` False (open
    access) or `max_sessions_per_tenant` 0 leaves only the process-wide cap.
    """
    tenants = list(live_tenants)
    if len(tenants) + count > limits.max_sessions:
        raise ProtocolError(
            ErrorCode.OVERLOADED, "too many sessions; try again later", CloseCode.TRY_AGAIN_LATER
        )
    cap = limits.max_sessions_per_tenant if per_tenant else 0
    if cap > 0 and sum(1 for t in tenants if t == tenant_id) + count > cap:
        raise ProtocolError(
            ErrorCode.OVERLOADED,
            f"this tenant already has {cap} live sessions; try again later",
            CloseCode.TRY_AGAIN_LATER,
        )
