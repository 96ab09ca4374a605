"""The Twilio Media Streams transport: `/v1/telephony/twilio` (TwiML `<Stream url=…>`).

The socket side only; `server/codecs/twilio.py` parses the messages. A stream is one call: at
its `start`, each announced track (`inbound`, `outbound`) becomes a `LiveSession` of the same
conversation (`customParameters.conversation_id`, else the call's `callSid`), and each `media`
message feeds its track's session. Nothing is sent back: finals go to the store. `stop`, or the
socket closing, stops both sessions (their pending finals are still stored).

A bad message is logged and ignored; after `MAX_BAD_MESSAGES` of them, or at a `start` that
cannot be served, the socket is closed with 1008 (1013 when the server is full). The connection
limits apply (`[limits]`): message rate, audio rate (both tracks together) and idle timeout.

Twilio cannot send headers: the API token (scope `stream`) travels as the `<Parameter
name="token">` of the `<Stream>`, i.e. `customParameters.token` of `start`, and names the tenant.
A start without a valid one closes the socket with 1008 (reason `unauthorized` or `forbidden`).
"""

from __future__ import annotations

import logging
import time

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from server.auth import Authenticator, Scope, authenticate_token
from server.codecs.twilio import Media, StreamStart, StreamStop, parse_message, session_start
from server.config import LimitsConfig
from server.limits import ConnectionLimits
from server.live import LiveSession
from server.sessions import SessionHub
from server.transports.background import in_background
from server.transports.idle import IdleTimer
from server.transports.receive import feed_within_rate
from stream.errors import CloseCode, ErrorCode, ProtocolError

__all__ = ["handle_twilio"]

log = logging.getLogger(__name__)

MAX_BAD_MESSAGES = 20
"""Bad messages tolerated on one stream before it is closed."""


async def handle_twilio(
    ws: ServerConnection, hub: SessionHub, auth: Authenticator, limits: LimitsConfig, diarize: bool = False
) -> None:
    """Serve one Twilio Media Stream until `stop` or until Twilio closes the socket; `diarize`: the
    server's default for its tracks (`telephony_diarize`), which `customParameters.diarize` overrides."""
    rates = ConnectionLimits(limits, time.monotonic())
    sessions: dict[str, LiveSession] = {}
    started: StreamStart | None = None
    bad_messages = 0
    idle = IdleTimer(limits.idle_timeout_s, lambda: _close_idle(ws, idle))
    try:
        async for message in ws:
            idle.touch()
            try:
                rates.message(time.monotonic())
                if not isinstance(message, str):
                    raise ProtocolError(ErrorCode.BAD_JSON, "Twilio sends text messages only")
                msg = parse_message(message, limits.max_text_bytes)
                if isinstance(msg, Media):
                    live = sessions.get(msg.track)
                    if live is None:
                        raise ProtocolError(
                            ErrorCode.NOT_STARTED, f"media of track {msg.track!r} before its start"
                        )
                    await feed_within_rate(live, rates, msg.payload)
                elif isinstance(msg, StreamStart):
                    if started is not None:
                        raise ProtocolError(ErrorCode.ALREADY_STARTED, "a second start on this stream")
                    started = msg
                    await _open_sessions(hub, auth, msg, sessions, diarize)
                    for live in sessions.values():
                        if live.start is not None:
                            rates.started(live.start)
                    log.info(
                        "twilio call %s: stream %s, tracks %s, conversation %s",
                        msg.call_sid,
                        msg.stream_sid,
                        ",".join(msg.tracks),
                        msg.conversation_id,
                    )
                elif isinstance(msg, StreamStop):
                    for live in sessions.values():
                        live.stop()
                    await ws.close(CloseCode.NORMAL, "stopped")
                    return
                else:
                    log.debug("twilio stream: %s", msg)
            except ProtocolError as error:
                if error.code is ErrorCode.BAD_START or error.close is not None:
                    # A start that cannot be served (or a full server): no use going on.
                    log.warning("twilio stream: cannot start: %s", error)
                    await ws.close(error.close or CloseCode.POLICY_VIOLATION, error.code.value)
                    return
                bad_messages += 1
                log.warning(
                    "twilio call %s: ignored message (%d/%d): %s",
                    started.call_sid if started is not None else "?",
                    bad_messages,
                    MAX_BAD_MESSAGES,
                    error,
                )
                if bad_messages >= MAX_BAD_MESSAGES:
                    await ws.close(CloseCode.POLICY_VIOLATION, "too many bad messages")
                    return
    except ConnectionClosed:
        pass
    except Exception:
        log.exception("twilio stream failed")
        try:
            await ws.close(CloseCode.INTERNAL_ERROR, "internal")
        except ConnectionClosed:
            pass
    finally:
        idle.cancel()
        for live in sessions.values():
            live.detach()


async def _open_sessions(
    hub: SessionHub, auth: Authenticator, start: StreamStart, sessions: dict[str, LiveSession], diarize: bool
) -> None:
    """Open one session per track of the stream into `sessions` (those opened stay there on error)."""
    principal = authenticate_token(auth, start.custom_parameters.get("token"))
    if principal is None:
        raise ProtocolError(
            ErrorCode.UNAUTHORIZED, "customParameters.token is missing or invalid", CloseCode.POLICY_VIOLATION
        )
    if not principal.allows(Scope.STREAM):
        raise ProtocolError(ErrorCode.FORBIDDEN, "the token lacks 'stream'", CloseCode.POLICY_VIOLATION)
    hub.admit(principal.tenant_id, len(start.tracks))
    for track in start.tracks:
        # Nobody reads events on this socket: results go to the store.
        sessions[track] = await hub.open(
            principal.tenant_id, session_start(start, track, diarize), None, admitted=True
        )


def _close_idle(ws: ServerConnection, idle: IdleTimer) -> None:
    log.warning("twilio stream: closing: %s: %s", ErrorCode.IDLE_TIMEOUT.value, idle.message)
    in_background(ws.close(CloseCode.POLICY_VIOLATION, ErrorCode.IDLE_TIMEOUT.value))
