"""The native WebSocket transport: `/v1/stream` (JSON control messages + binary audio)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from server.auth import Scope, ask_allowed
from server.codecs.native import parse_client_text, serialize_event
from server.limits import ConnectionLimits
from server.live import LiveSession
from server.transports.receive import feed_within_rate
from server.transports.webrtc import WebRtcIngest
from stream.errors import CloseCode, ErrorCode, ProtocolError
from stream.events import Ask, Error, ServerEvent, Start, Stop, WebRtcCandidate, WebRtcOffer

if TYPE_CHECKING:
    from server.app import App

log = logging.getLogger(__name__)


async def handle_stream(ws: ServerConnection, app: App) -> None:
    """Serve one `/v1/stream` connection until `closed` is sent or the client leaves."""

    async def send(event: ServerEvent) -> None:
        await ws.send(serialize_event(event))

    live: LiveSession | None = None
    limits = app.config.limits
    assert ws.request is not None
    principal = app.authenticate(ws.request)
    if principal is None:
        with contextlib.suppress(ConnectionClosed):
            await send(Error(ErrorCode.UNAUTHORIZED, "a valid API token is required"))
            await ws.close(CloseCode.POLICY_VIOLATION, ErrorCode.UNAUTHORIZED.value)
        return
    asks: set[asyncio.Task[None]] = set()
    rates = ConnectionLimits(limits, time.monotonic())
    last_message = time.monotonic()

    async def close_when_idle() -> None:
        """Close the connection once the client sent nothing for `limits.idle_timeout_s`.

        Audio counts however it comes (binary frames, or WebRTC, which bypasses the socket);
        waiting for an answer, or for the last finals after `stop`, is not idleness.
        """
        timeout = limits.idle_timeout_s
        audio_seen, active_at = 0.0, time.monotonic()
        while True:
            idle_until = max(last_message, active_at) + timeout
            await asyncio.sleep(min(1.0, max(0.05, idle_until - time.monotonic())))
            stopping = live is not None and live.session is not None and live.session.stopped
            if asks or stopping or (live is not None and live.audio_seconds != audio_seen):
                audio_seen = live.audio_seconds if live is not None else audio_seen
                active_at = time.monotonic()
                continue
            if time.monotonic() - max(last_message, active_at) >= timeout:
                error = Error(ErrorCode.IDLE_TIMEOUT, f"nothing received for {timeout:g} s")
                with contextlib.suppress(ConnectionClosed):
                    if live is not None:
                        live.outbox.put(error)
                        await asyncio.sleep(0)  # let the writer send the error first
                    else:
                        await send(error)
                    await ws.close(CloseCode.POLICY_VIOLATION, ErrorCode.IDLE_TIMEOUT.value)
                return

    idle_watch = asyncio.create_task(close_when_idle()) if limits.idle_timeout_s > 0 else None
    rtc: WebRtcIngest | None = None
    """The session's WebRTC audio, once a `webrtc.offer` was answered."""

    async def answer(ask: Ask) -> None:
        """Stream one answer; through the session's outbox when started, so events stay ordered."""
        conversation_id = ask.conversation_id or (live.conversation_id if live is not None else None)
        session = live

        async def deliver(event: ServerEvent) -> None:
            if session is not None:
                session.outbox.put(event)
            else:
                await send(event)

        try:
            if app.knowledge is None:
                raise ProtocolError(ErrorCode.UNAVAILABLE, "this server keeps no conversation memory")
            async for event in app.knowledge.answer(principal.tenant_id, ask, conversation_id):
                await deliver(event)
        except ProtocolError as error:
            await deliver(Error(error.code, error.message))
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("answer failed")
            await deliver(Error(ErrorCode.INTERNAL, "the answer failed"))

    try:
        async for message in ws:
            last_message = time.monotonic()
            try:
                rates.message(last_message)
                if isinstance(message, str):
                    msg = parse_client_text(message, limits.max_text_bytes)
                    if isinstance(msg, Start):
                        if live is not None:
                            raise ProtocolError(ErrorCode.ALREADY_STARTED, "this connection already started")
                        if not principal.allows(Scope.STREAM):
                            raise ProtocolError(ErrorCode.FORBIDDEN, "streaming needs a token with 'stream'")
                        app.admit(principal.tenant_id)
                        if msg.resume_after is not None and msg.conversation_id is not None:
                            app.supersede(principal.tenant_id, msg.conversation_id, msg.track)
                        candidate = app.new_session(principal)
                        ready = await candidate.open(msg)
                        rates.started(msg)
                        live = candidate
                        app.register(live)
                        live.outbox.send = send
                        live.outbox.on_overflow = lambda: _close_slow_consumer(ws)
                        live.on_superseded = lambda: _close_superseded(ws)
                        live.outbox.put(ready)
                        for final in live.replayed:
                            live.outbox.put(final)
                    elif isinstance(msg, Ask):
                        if not ask_allowed(principal, msg, live.conversation_id if live else None):
                            raise ProtocolError(
                                ErrorCode.FORBIDDEN,
                                "asking about other conversations needs a token with 'read'",
                            )
                        task = asyncio.create_task(answer(msg))
                        asks.add(task)
                        task.add_done_callback(asks.discard)
                    elif isinstance(msg, WebRtcOffer):
                        if live is None:
                            raise ProtocolError(ErrorCode.NOT_STARTED, "webrtc.offer before start")
                        rtc = rtc or WebRtcIngest(live)
                        live.outbox.put(await rtc.accept(msg))
                    elif isinstance(msg, WebRtcCandidate):
                        pass  # the offer and the answer carry every candidate: no trickle ICE
                    elif isinstance(msg, Stop):
                        if live is None:
                            raise ProtocolError(ErrorCode.NOT_STARTED, "stop before start")
                        if rtc is not None:
                            await rtc.close()
                        live.stop()
                        await live.wait_closed()
                        await ws.close(CloseCode.NORMAL, "closed")
                        return
                else:
                    if live is None:
                        raise ProtocolError(ErrorCode.NOT_STARTED, "audio before start")
                    if len(message) > limits.max_frame_bytes:
                        raise ProtocolError(
                            ErrorCode.FRAME_TOO_LARGE,
                            f"audio frame of {len(message)} bytes exceeds {limits.max_frame_bytes}",
                            CloseCode.MESSAGE_TOO_BIG,
                        )
                    await feed_within_rate(live, rates, message)
            except ProtocolError as error:
                event = Error(error.code, error.message)
                if live is not None:
                    live.outbox.put(event)
                else:
                    await send(event)
                if error.close is not None:
                    if live is not None:
                        await asyncio.sleep(0)  # let the writer send the error first
                    await ws.close(error.close, error.code.value)
                    return
    except ConnectionClosed:
        pass
    except Exception:
        log.exception("stream connection failed")
        try:
            await send(Error(ErrorCode.INTERNAL, "internal error; the session was stopped"))
            await ws.close(CloseCode.INTERNAL_ERROR, "internal")
        except ConnectionClosed:
            pass
    finally:
        if idle_watch is not None:
            idle_watch.cancel()
        for task in asks:
            task.cancel()
        if rtc is not None:
            await rtc.close()
        if live is not None and not live.outbox.closed.is_set():
            live.detach()


def _close_slow_consumer(ws: ServerConnection) -> None:
    """The client stopped reading its events: close it (its finals are still stored)."""
    log.warning("closing a client that does not read its events (slow consumer)")
    task = asyncio.get_running_loop().create_task(
        ws.close(CloseCode.TRY_AGAIN_LATER, ErrorCode.SLOW_CONSUMER.value)
    )
    _closing.add(task)
    task.add_done_callback(_closing.discard)


def _close_superseded(ws: ServerConnection) -> None:
    """A resuming client took this connection's stream over: close it (in the background, since
    a dead connection only closes at the close timeout)."""
    task = asyncio.get_running_loop().create_task(_send_and_close(ws, ErrorCode.SUPERSEDED))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def _send_and_close(ws: ServerConnection, code: ErrorCode) -> None:
    with contextlib.suppress(ConnectionClosed):
        await ws.send(serialize_event(Error(code, "a client resumed this conversation and track")))
        await ws.close(CloseCode.POLICY_VIOLATION, code.value)


_closing: set[asyncio.Task[None]] = set()
"""Close handshakes in flight (kept referenced until done)."""
