"""The OpenAI Realtime transcription transport: `/v1/realtime` (JSON events, base64 audio).

The socket side only: `server/codecs/realtime.py` parses the client's events and turns Palabre's
events into Realtime ones. The `LiveSession` is created at the first `input_audio_buffer.append`,
so that `session.update` may still choose the audio format and the turn detection before audio;
`input_audio_buffer.commit` / `.clear` map to `LiveSession.commit()` / `.clear()`, and closing the
socket detaches the session (its pending finals are still stored).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from server.auth import Scope
from server.codecs.realtime import (
    AppendAudio,
    ClearAudio,
    CommitAudio,
    RealtimeError,
    RealtimeTranslator,
    SessionUpdate,
    commit_empty_error,
    dumps,
    parse_client_event,
    parse_handshake,
)
from server.limits import ConnectionLimits
from server.live import LiveSession
from server.transports.receive import feed_within_rate, messages_until_idle
from stream.errors import CloseCode, ErrorCode, ProtocolError
from stream.events import ServerEvent

if TYPE_CHECKING:
    from server.app import App

log = logging.getLogger(__name__)


async def handle_realtime(ws: ServerConnection, app: App) -> None:
    """Serve one `/v1/realtime` connection until the client leaves."""
    assert ws.request is not None and app.services is not None
    services = app.services
    translator = RealtimeTranslator(
        parse_handshake(ws.request.path, ws.request.headers),
        vad=services.session_config.segmenter,
        multilingual=services.multilingual,
    )
    limits = app.config.limits
    # An append carries base64 audio: allow text messages as large as the socket does.
    max_text = max(limits.max_text_bytes, limits.max_frame_bytes)
    live: LiveSession | None = None
    principal = app.authenticate(ws.request)
    if principal is None or not principal.allows(Scope.STREAM):
        refusal = (
            ProtocolError(ErrorCode.UNAUTHORIZED, "a valid API token is required")
            if principal is None
            else ProtocolError(ErrorCode.FORBIDDEN, "this endpoint needs a token with 'stream'")
        )
        with contextlib.suppress(ConnectionClosed):
            await ws.send(dumps(translator.error(refusal)))
            await ws.close(CloseCode.POLICY_VIOLATION, refusal.code.value)
        return

    async def send_events(event: ServerEvent) -> None:
        for out in translator.translate(event):
            await ws.send(dumps(out))

    async def open_session() -> LiveSession:
        app.admit(principal.tenant_id)
        start, turn_detection = translator.start()
        candidate = app.new_session(principal)
        await candidate.open(start, turn_detection=turn_detection)
        translator.audio_started = True
        app.register(candidate)
        candidate.outbox.send = send_events
        return candidate

    rates = ConnectionLimits(limits, time.monotonic())
    try:
        await ws.send(dumps(translator.session_created()))
        async for message in messages_until_idle(ws, limits.idle_timeout_s):
            try:
                rates.message(time.monotonic())
                if not isinstance(message, str):
                    raise RealtimeError(
                        ErrorCode.BAD_JSON,
                        "binary messages are not part of the Realtime protocol: "
                        "send audio in input_audio_buffer.append events",
                    )
                event = parse_client_event(message, max_text)
                if isinstance(event, AppendAudio):
                    if live is None:
                        live = await open_session()
                        if live.start is not None:
                            rates.started(live.start)
                    if event.audio:
                        await feed_within_rate(live, rates, event.audio)
                elif isinstance(event, CommitAudio):
                    if live is None or live.session is None or not live.session.speaking:
                        raise commit_empty_error(event.event_id)
                    live.commit()
                elif isinstance(event, ClearAudio):
                    if live is not None:
                        live.clear()
                    await ws.send(dumps(translator.cleared()))
                elif isinstance(event, SessionUpdate):
                    await ws.send(dumps(translator.apply(event)))
            except ProtocolError as error:
                await ws.send(dumps(translator.error(error)))
                if error.close is not None:
                    await ws.close(error.close, error.code.value)
                    return
    except ProtocolError as error:  # idle timeout
        with contextlib.suppress(ConnectionClosed):
            await ws.send(dumps(translator.error(error)))
            await ws.close(error.close or CloseCode.POLICY_VIOLATION, error.code.value)
    except ConnectionClosed:
        pass
    except Exception:
        log.exception("realtime connection failed")
        try:
            internal = ProtocolError(ErrorCode.INTERNAL, "internal error; the session was stopped")
            await ws.send(dumps(translator.error(internal)))
            await ws.close(CloseCode.INTERNAL_ERROR, "internal")
        except ConnectionClosed:
            pass
    finally:
        if live is not None and not live.outbox.closed.is_set():
            live.detach()
