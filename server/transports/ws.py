"""The native WebSocket transport: `/v1/stream` (JSON control messages + binary audio).

The socket side only: `server.codecs.stream_connection.StreamConnection` decides what each
message means; this module reads messages, performs the actions it returns (open the session
through the hub, feed audio, answer, WebRTC, stop, send errors, close) and writes events back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from server.audit import AuditAction, record
from server.auth import Authenticator
from server.codecs.native import serialize_event
from server.codecs.stream_connection import (
    AcceptOffer,
    Action,
    AnswerQuestion,
    CloseConnection,
    FeedAudio,
    OpenSession,
    SendError,
    StopSession,
    StreamConnection,
)
from server.config import LimitsConfig
from server.live import LiveSession
from server.sessions import SessionHub
from server.transports.background import in_background
from server.transports.handshake import principal_of
from server.transports.idle import IdleTimer
from server.transports.webrtc import WebRtcIngest
from stream.errors import CloseCode, ErrorCode, ProtocolError
from stream.events import Error, ServerEvent

__all__ = ["handle_stream"]

log = logging.getLogger(__name__)

EVICTED_MESSAGES = {
    ErrorCode.SUPERSEDED: "a client resumed this conversation and track",
    ErrorCode.UNAVAILABLE: (
        "the database cannot be reached: finals not received are stored once it is back;"
        " resume the conversation (resume_after) later"
    ),
    ErrorCode.CONVERSATION_ERASED: "this conversation was erased",
}
"""The `error` message a connection whose session was taken from it gets, by code."""


async def handle_stream(
    ws: ServerConnection, hub: SessionHub, auth: Authenticator, limits: LimitsConfig
) -> None:
    """Serve one `/v1/stream` connection until `closed` is sent or the client leaves."""
    assert ws.request is not None
    connection = StreamConnection(principal_of(auth, ws.request), limits, time.monotonic())
    await _StreamSocket(ws, hub, connection).serve()


class _StreamSocket:
    """The I/O of one `/v1/stream` connection around its `StreamConnection`."""

    def __init__(self, ws: ServerConnection, hub: SessionHub, connection: StreamConnection) -> None:
        self.ws = ws
        self.hub = hub
        self.connection = connection
        self.live: LiveSession | None = None
        self.rtc: WebRtcIngest | None = None
        """The session's WebRTC audio, once a `webrtc.offer` was answered."""
        self.asks: set[asyncio.Task[None]] = set()
        self.done = False
        """A close or the end of the session was performed: read no more."""
        self.idle = IdleTimer(connection.limits.idle_timeout_s, self._on_idle, busy=self._busy)
        self._audio_seen = 0.0

    async def serve(self) -> None:
        try:
            await self.perform(self.connection.connected())
            if self.done:
                return
            async for message in self.ws:
                self.idle.touch()
                now = time.monotonic()
                if isinstance(message, str):
                    actions = self.connection.receive_text(message, now)
                else:
                    actions = self.connection.receive_binary(message, now)
                await self.perform(actions)
                if self.done:
                    return
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("stream connection failed")
            with contextlib.suppress(ConnectionClosed):
                await self.send(Error(ErrorCode.INTERNAL, "internal error; the session was stopped"))
                await self.ws.close(CloseCode.INTERNAL_ERROR, "internal")
        finally:
            await self._finish()

    async def perform(self, actions: list[Action]) -> None:
        """Carry out the connection's actions in order; a failed one is reported through it."""
        for action in actions:
            try:
                await self._perform(action)
            except ProtocolError as error:
                await self.perform(self.connection.fail(error))
                return
            if self.done:
                return

    async def _perform(self, action: Action) -> None:
        if isinstance(action, FeedAudio):
            assert self.live is not None
            self.live.feed(action.data)
            if action.pause_s > 0:
                await asyncio.sleep(action.pause_s)
        elif isinstance(action, OpenSession):
            await self._open(action)
        elif isinstance(action, SendError):
            await self.deliver(action.event)
        elif isinstance(action, CloseConnection):
            self.done = True
            if self.live is not None:
                await asyncio.sleep(0)  # let the writer send the error first
            await self.ws.close(action.code, action.reason)
        elif isinstance(action, AnswerQuestion):
            task = asyncio.create_task(self._answer(action))
            self.asks.add(task)
            task.add_done_callback(self.asks.discard)
        elif isinstance(action, AcceptOffer):
            assert self.live is not None
            self.rtc = self.rtc or WebRtcIngest(self.live)
            self.live.outbox.put(await self.rtc.accept(action.offer))
        elif isinstance(action, StopSession):
            await self._stop()

    async def _open(self, action: OpenSession) -> None:
        principal = self.connection.principal
        assert principal is not None
        self.live = await self.hub.open(
            principal.tenant_id,
            action.start,
            self.send,
            on_overflow=self._close_slow_consumer,
            on_evicted=self._close_evicted,
        )
        self.connection.session_opened(action.start, self.live.conversation_id)

    async def _stop(self) -> None:
        assert self.live is not None
        self.done = True
        if self.rtc is not None:
            await self.rtc.close()
        self.live.stop()
        await self.live.wait_closed()
        await self.ws.close(CloseCode.NORMAL, "closed")

    async def _answer(self, action: AnswerQuestion) -> None:
        """Stream one answer, through the session's outbox when started, so events stay ordered."""
        principal = self.connection.principal
        assert principal is not None
        try:
            services = self.hub.services
            memory = services.knowledge if services is not None else None
            if memory is None:
                raise ProtocolError(ErrorCode.UNAVAILABLE, "this server keeps no conversation memory")
            if action.ask.scope == "tenant" and services is not None:  # a read across conversations
                await record(services.store, principal, AuditAction.ASK)
            async for event in memory.answer(principal.tenant_id, action.ask, action.conversation_id):
                await self.deliver(event)
        except ProtocolError as error:
            await self.deliver(Error(error.code, error.message))
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("answer failed")
            await self.deliver(Error(ErrorCode.INTERNAL, "the answer failed"))

    async def send(self, event: ServerEvent) -> None:
        await self.ws.send(serialize_event(event))

    async def deliver(self, event: ServerEvent) -> None:
        """Send an event after the session's queued ones (at once when there is no session)."""
        if self.live is not None:
            self.live.outbox.put(event)
        else:
            await self.send(event)

    # --- closing --------------------------------------------------------------------------

    def _busy(self) -> bool:
        """Not idle: an answer is streaming, the last finals are coming, or WebRTC audio flows."""
        live = self.live
        if live is None:
            return bool(self.asks)
        flowing = live.audio_seconds != self._audio_seen
        self._audio_seen = live.audio_seconds
        return bool(self.asks) or flowing or (live.session is not None and live.session.stopped)

    def _on_idle(self) -> None:
        error = Error(ErrorCode.IDLE_TIMEOUT, self.idle.message)
        if self.live is not None:
            self.live.outbox.put(error)
            in_background(self._close_after_events(CloseCode.POLICY_VIOLATION, ErrorCode.IDLE_TIMEOUT))
        else:
            in_background(self._send_and_close(error))

    def _close_slow_consumer(self) -> None:
        """The client stopped reading its events: close it (its finals are still stored)."""
        log.warning("closing a client that does not read its events (slow consumer)")
        in_background(self.ws.close(CloseCode.TRY_AGAIN_LATER, ErrorCode.SLOW_CONSUMER.value))

    def _close_evicted(self, code: ErrorCode) -> None:
        """The session was taken from this connection (a resuming client took its stream over,
        or its conversation is being erased): close it (in the background, since a dead
        connection only closes at the close timeout)."""
        error = Error(code, EVICTED_MESSAGES.get(code, code.value))
        in_background(self._send_and_close(error))  # directly: the session stops sending

    async def _send_and_close(self, error: Error) -> None:
        await self.send(error)
        code = (
            CloseCode.TRY_AGAIN_LATER if error.code is ErrorCode.UNAVAILABLE else CloseCode.POLICY_VIOLATION
        )
        await self.ws.close(code, error.code.value)

    async def _close_after_events(self, code: CloseCode, error: ErrorCode) -> None:
        await asyncio.sleep(0)  # let the writer send the error first
        await self.ws.close(code, error.value)

    async def _finish(self) -> None:
        self.idle.cancel()
        for task in self.asks:
            task.cancel()
        if self.rtc is not None:
            await self.rtc.close()
        if self.live is not None and not self.live.closed:
            self.live.detach()
