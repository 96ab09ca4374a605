"""The native WebSocket transport: `/v1/stream` (JSON control messages + binary audio)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from server.codecs.native import parse_client_text, serialize_event
from server.live import LiveSession
from stream.errors import CloseCode, ErrorCode, ProtocolError
from stream.events import Ask, Error, ServerEvent, Start, Stop

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
        await ws.close(CloseCode.POLICY_VIOLATION, "unauthorized")
        return
    asks: set[asyncio.Task[None]] = set()

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
            try:
                if isinstance(message, str):
                    msg = parse_client_text(message, limits.max_text_bytes)
                    if isinstance(msg, Start):
                        if live is not None:
                            raise ProtocolError(ErrorCode.ALREADY_STARTED, "this connection already started")
                        if app.active_sessions() >= limits.max_sessions:
                            raise ProtocolError(
                                ErrorCode.OVERLOADED,
                                "too many sessions; try again later",
                                CloseCode.TRY_AGAIN_LATER,
                            )
                        candidate = app.new_session(principal)
                        ready = await candidate.open(msg)
                        live = candidate
                        app.register(live)
                        live.outbox.send = send
                        live.outbox.put(ready)
                    elif isinstance(msg, Ask):
                        task = asyncio.create_task(answer(msg))
                        asks.add(task)
                        task.add_done_callback(asks.discard)
                    elif isinstance(msg, Stop):
                        if live is None:
                            raise ProtocolError(ErrorCode.NOT_STARTED, "stop before start")
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
                    live.feed(message)
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
        for task in asks:
            task.cancel()
        if live is not None and not live.outbox.closed.is_set():
            live.detach()
