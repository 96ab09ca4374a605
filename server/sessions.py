"""The session hub: every live session of the process passes through here.

Transports know the hub and the authenticator, never the application. A transport is its codec,
a socket loop and one call, `hub.open(principal, start, send)`, which:

1. admits the session (`admit`: the process-wide and per-tenant caps, `overloaded` otherwise);
2. on a resuming `start` (`resume_after` with a `conversation_id`), supersedes the sessions still
   attached to that conversation and track (their connection presumably dropped unnoticed);
3. creates and opens a `LiveSession` (conversation, offsets, replayed finals);
4. registers it in the live registry and queues `ready` and the replayed finals for `send`.

When a session's last event (`closed`) is delivered, it leaves the registry; when it was the
conversation's last session, the conversation is ended in the store and its memory is told.
`publish` sends an event to every live session of a conversation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Literal

from server.config import LimitsConfig
from server.final_hold import HoldLimits
from server.limits import admit_sessions
from server.live import LiveSession, Send, SessionServices
from stream.errors import ErrorCode, ProtocolError
from stream.events import ServerEvent, Start

log = logging.getLogger(__name__)

__all__ = ["SessionHub"]

Refused = Callable[[ErrorCode], None]
"""Told of every refusal the hub makes before a session exists (the metrics count them)."""


class SessionHub:
    """Admission, opening and closing, resume and supersede, publishing, the live registry."""

    def __init__(
        self,
        limits: LimitsConfig,
        *,
        per_tenant_caps: bool,
        on_refused: Refused | None = None,
    ) -> None:
        self.limits = limits
        self.per_tenant_caps = per_tenant_caps
        """False under open access: only the process-wide cap applies."""
        self._on_refused = on_refused
        self.services: SessionServices | None = None
        """What sessions share; None while the models load (`serve` sets it once)."""
        self._sessions: dict[str, LiveSession] = {}
        self._background: set[asyncio.Task[None]] = set()

    # --- lifecycle ------------------------------------------------------------------------

    def serve(self, services: SessionServices) -> None:
        """The models are loaded: sessions may open from now on."""
        self.services = services

    @property
    def loading(self) -> bool:
        return self.services is None

    async def close(self) -> None:
        """Drop every live session (server shutdown)."""
        for live in list(self._sessions.values()):
            await live.abort()
        for task in list(self._background):
            await task

    # --- sessions -------------------------------------------------------------------------

    def admit(self, tenant_id: str, count: int = 1) -> None:
        """Raise `overloaded` unless `count` more sessions of the tenant fit (server/limits.py).

        Each track counts as a session: a multichannel session (`start.channels`) as many."""
        try:
            admit_sessions(
                self.limits,
                tenant_id,
                (live.tenant_id for live in self._sessions.values() for _ in live.tracks or (None,)),
                count,
                per_tenant=self.per_tenant_caps,
            )
        except ProtocolError as refusal:
            self._refused(refusal.code)
            raise

    async def open(
        self,
        tenant_id: str,
        start: Start,
        send: Send | None,
        *,
        turn_detection: Literal["vad", "manual"] | None = None,
        on_overflow: Callable[[], None] | None = None,
        on_evicted: Callable[[ErrorCode], None] | None = None,
        admitted: bool = False,
    ) -> LiveSession:
        """Admit, open and register a session of `tenant_id`; its events go to `send` (None: to
        the store only). Raises `ProtocolError` (`unavailable` while loading, `overloaded`,
        `bad_start`) and then no session exists.

        `admitted`: the caller already admitted it (a connection opening several at once). A
        multichannel `start` is admitted as one session per channel (each is a track).
        `on_overflow`: the client stopped reading (close it). `on_evicted`: the session was
        taken from its client, with the code to close its connection with (`superseded`: a
        resuming client took its conversation and track over; `conversation_erased`).
        """
        services = self.services
        if services is None:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "models are loading; try again shortly")
        if not admitted:
            self.admit(tenant_id, start.channels)
        if start.resume_after is not None and start.conversation_id is not None:
            self.supersede(tenant_id, start.conversation_id, start.track, start.client_id)
        live = LiveSession(
            services,
            tenant_id,
            send=send,
            max_events=self.limits.outbox_events,
            on_overflow=on_overflow,
            on_evicted=on_evicted,
            on_closed=self._closed,
            hold=HoldLimits(finals=self.limits.store_hold_finals, seconds=self.limits.store_hold_s),
        )
        ready = await live.open(start, turn_detection=turn_detection)
        self._sessions[live.session_id] = live
        live.outbox.put(ready)
        for final in live.replayed:
            live.outbox.put(final)
        return live

    def supersede(
        self, tenant_id: str, conversation_id: str, track: str | None, client_id: str | None = None
    ) -> int:
        """A client resumes this conversation and track: the sessions it still streams into them
        (same `start.client_id`: another client on the same track is left alone) are closed and
        finished, so the resumed session does not transcribe their audio twice. Returns how many."""
        taken = [
            live
            for live in self._sessions.values()
            if live.tenant_id == tenant_id
            and live.conversation_id == conversation_id
            and live.start is not None
            and live.start.track == track
            and live.start.client_id == client_id
            and not live.closed
        ]
        for live in taken:
            live.supersede()
        return len(taken)

    async def erase_conversation(self, tenant_id: str, conversation_id: str) -> int:
        """The conversation is being erased: close its live sessions (`conversation_erased`) and
        drop them at once, so nothing more of it is stored. Returns how many."""
        taken = [
            live
            for live in self._sessions.values()
            if live.tenant_id == tenant_id and live.conversation_id == conversation_id
        ]
        for live in taken:
            await live.erase()
            self._forget(live)
        return len(taken)

    def publish(self, conversation_id: str, event: ServerEvent, besides: str | None = None) -> None:
        """Send an event to every live session of a conversation (but the session `besides`)."""
        for live in self._sessions.values():
            if live.conversation_id == conversation_id and live.session_id != besides:
                live.outbox.put(event)

    # --- the registry ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[LiveSession]:
        return iter(list(self._sessions.values()))

    def conversation_live(self, conversation_id: str) -> bool:
        """Whether a session streams into the conversation now."""
        return self.services is not None and conversation_id in self.services.conversations

    # --- internals ------------------------------------------------------------------------

    def _refused(self, code: ErrorCode) -> None:
        if self._on_refused is not None:
            self._on_refused(code)

    def _closed(self, live: LiveSession) -> None:
        """A session delivered its last event: forget it; end its conversation if it was the last."""
        services = self.services
        if services is None or not self._forget(live):
            return
        task = asyncio.get_running_loop().create_task(services.store.end_conversation(live.conversation_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _forget(self, live: LiveSession) -> bool:
        """Take a session out of the registry; True when it was its conversation's last (whose
        memory is then told the conversation ended)."""
        self._sessions.pop(live.session_id, None)
        services = self.services
        if services is None or not services.conversations.leave(live.conversation_id):
            return False
        if services.knowledge is not None:
            services.knowledge.conversation_ended(live.conversation_id)
        return True
