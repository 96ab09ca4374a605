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

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from server.auth import Authenticator, Scope
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
from server.config import LimitsConfig
from server.limits import ConnectionLimits
from server.live import LiveSession
from server.sessions import SessionHub
from server.transports.background import in_background
from server.transports.handshake import principal_of
from server.transports.idle import IdleTimer
from server.transports.receive import feed_within_rate
from stream.errors import CloseCode, ErrorCode, ProtocolError
from stream.events import ServerEvent

__all__ = ["handle_realtime"]

log = logging.getLogger(__name__)


async def handle_realtime(
    ws: ServerConnection, hub: SessionHub, auth: Authenticator, limits: LimitsConfig
) -> None:
    """Serve one `/v1/realtime` connection until the client leaves."""
    assert ws.request is not None and hub.services is not None
    services = hub.services
    translator = RealtimeTranslator(
        parse_handshake(ws.request.path, ws.request.headers),
        vad=services.session_config.segmenter,
        multilingual=services.asr.multilingual,
    )
    principal = principal_of(auth, ws.request)
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
    await _RealtimeSocket(ws, hub, principal.tenant_id, translator, limits).serve()


class _RealtimeSocket:
    """The I/O of one authorised `/v1/realtime` connection."""

    def __init__(
        self,
        ws: ServerConnection,
        hub: SessionHub,
        tenant_id: str,
        translator: RealtimeTranslator,
        limits: LimitsConfig,
    ) -> None:
        self.ws = ws
        self.hub = hub
        self.tenant_id = tenant_id
        self.translator = translator
        self.max_text = max(limits.max_text_bytes, limits.max_frame_bytes)
        """An append carries base64 audio: text messages may be as large as the socket allows."""
        self.rates = ConnectionLimits(limits, time.monotonic())
        self.idle = IdleTimer(limits.idle_timeout_s, lambda: in_background(self._close_idle()))
        self.live: LiveSession | None = None

    async def serve(self) -> None:
        try:
            await self.ws.send(dumps(self.translator.session_created()))
            async for message in self.ws:
                self.idle.touch()
                try:
                    await self._receive(message)
                except ProtocolError as error:
                    await self.ws.send(dumps(self.translator.error(error)))
                    if error.close is not None:
                        await self.ws.close(error.close, error.code.value)
                        return
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("realtime connection failed")
            with contextlib.suppress(ConnectionClosed):
                internal = ProtocolError(ErrorCode.INTERNAL, "internal error; the session was stopped")
                await self.ws.send(dumps(self.translator.error(internal)))
                await self.ws.close(CloseCode.INTERNAL_ERROR, "internal")
        finally:
            self.idle.cancel()
            if self.live is not None and not self.live.closed:
                self.live.detach()

    async def _receive(self, message: str | bytes) -> None:
        self.rates.message(time.monotonic())
        if not isinstance(message, str):
            raise RealtimeError(
                ErrorCode.BAD_JSON,
                "binary messages are not part of the Realtime protocol: "
                "send audio in input_audio_buffer.append events",
            )
        event = parse_client_event(message, self.max_text)
        live = self.live
        if isinstance(event, AppendAudio):
            if live is None:
                live = self.live = await self._open_session()
            if event.audio:
                await feed_within_rate(live, self.rates, event.audio)
        elif isinstance(event, CommitAudio):
            if live is None or live.session is None or not live.session.speaking:
                raise commit_empty_error(event.event_id)
            live.commit()
        elif isinstance(event, ClearAudio):
            if live is not None:
                live.clear()
            await self.ws.send(dumps(self.translator.cleared()))
        elif isinstance(event, SessionUpdate):
            await self.ws.send(dumps(self.translator.apply(event)))

    async def _open_session(self) -> LiveSession:
        start, turn_detection = self.translator.start()
        live = await self.hub.open(self.tenant_id, start, self._send_events, turn_detection=turn_detection)
        self.translator.audio_started = True
        self.rates.started(start)
        return live

    async def _send_events(self, event: ServerEvent) -> None:
        for out in self.translator.translate(event):
            await self.ws.send(dumps(out))

    async def _close_idle(self) -> None:
        error = ProtocolError(ErrorCode.IDLE_TIMEOUT, self.idle.message)
        await self.ws.send(dumps(self.translator.error(error)))
        await self.ws.close(CloseCode.POLICY_VIOLATION, ErrorCode.IDLE_TIMEOUT.value)
