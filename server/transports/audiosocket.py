"""The Asterisk AudioSocket transport: a TCP listener (`palabre serve --audiosocket-port`).

The socket side only; `server/codecs/audiosocket.py` frames the bytes. One connection is one
call: its first frame, the call's UUID, names the conversation (the UUID's 32 hex digits), and
its audio frames feed a `LiveSession` of track "caller". Nothing is sent back to Asterisk:
finals go to the store. A hangup frame, an error frame, the socket closing or a bad frame stop
the session (its pending finals are still stored), and so do audio faster than `limits.audio_rate`
(or, with `audio_rate_policy = "pace"`, reading stops for a while) and `limits.idle_timeout_s`
without a byte.

AudioSocket carries no credentials. Without `--auth` calls go to the server's tenant; with
`--auth` they run under the configured `audiosocket_token` (its tenant, and it needs `stream`),
checked at each call so that revoking it refuses new calls. Either way anyone who can reach the
port can stream: keep it reachable from Asterisk only (docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from server.auth import Scope, authenticate_token
from server.codecs.audiosocket import SAMPLE_RATE, Audio, AudioSocketParser, CallId, Digit, ErrorFrame, Hangup
from server.limits import ConnectionLimits
from server.live import LiveSession
from server.transports.receive import feed_within_rate
from stream.errors import ErrorCode, ProtocolError
from stream.events import Start

if TYPE_CHECKING:
    from server.app import App

log = logging.getLogger(__name__)

READ_BYTES = 4096
TRACK = "caller"


async def serve_audiosocket(app: App, host: str, port: int) -> asyncio.Server:
    """Listen for AudioSocket connections from Asterisk; close the returned server to stop."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handle_audiosocket(reader, writer, app)

    server = await asyncio.start_server(on_connection, host, port)
    log.info("listening for AudioSocket on %s:%d", host, port)
    return server


async def handle_audiosocket(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, app: App) -> None:
    """Serve one AudioSocket call until hangup, an error or the end of the stream."""
    peer = writer.get_extra_info("peername")
    parser = AudioSocketParser()
    live: LiveSession | None = None
    limits = app.config.limits
    rates = ConnectionLimits(limits, time.monotonic())
    try:
        while data := await _read(reader, limits.idle_timeout_s):
            for frame in parser.feed(data):
                if isinstance(frame, Audio):
                    if live is None:
                        raise ProtocolError(ErrorCode.NOT_STARTED, "audio before the UUID frame")
                    await feed_within_rate(live, rates, frame.pcm)  # "pace": TCP pushes back
                elif isinstance(frame, CallId):
                    if live is not None:
                        raise ProtocolError(ErrorCode.ALREADY_STARTED, "a second UUID frame")
                    live = await _open_session(app, frame.id.hex)
                    if live.start is not None:
                        rates.started(live.start)
                    log.info("audiosocket call %s from %s", frame.id, peer)
                elif isinstance(frame, Hangup):
                    return
                elif isinstance(frame, ErrorFrame):
                    log.warning("audiosocket %s: Asterisk reports error %s", peer, frame.code.hex() or "-")
                    return
                elif isinstance(frame, Digit):
                    log.debug("audiosocket %s: DTMF %s", peer, frame.digit)
            if parser.error is not None:  # a bad frame after good ones: do not wait for more bytes
                raise parser.error
    except ProtocolError as error:
        log.warning("audiosocket %s: closing: %s", peer, error)
    except ConnectionError:
        pass
    except Exception:
        log.exception("audiosocket connection %s failed", peer)
    finally:
        if live is not None:
            live.detach()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _read(reader: asyncio.StreamReader, idle_timeout_s: float) -> bytes:
    """The next bytes of the call; `idle_timeout` when none come for `idle_timeout_s` (0: never)."""
    if idle_timeout_s <= 0:
        return await reader.read(READ_BYTES)
    try:
        async with asyncio.timeout(idle_timeout_s):
            return await reader.read(READ_BYTES)
    except TimeoutError:
        raise ProtocolError(ErrorCode.IDLE_TIMEOUT, f"nothing received for {idle_timeout_s:g} s") from None


async def _open_session(app: App, conversation_id: str) -> LiveSession:
    if app.services is None:
        raise ProtocolError(ErrorCode.UNAVAILABLE, "models are loading")
    principal = authenticate_token(app.auth, app.config.audiosocket_token)
    if principal is None or not principal.allows(Scope.STREAM):
        raise ProtocolError(
            ErrorCode.UNAUTHORIZED, "the AudioSocket token is invalid, revoked or lacks 'stream'"
        )
    app.admit(principal.tenant_id)
    live = app.new_session(principal)
    await live.open(
        Start(
            sample_rate=SAMPLE_RATE,
            encoding="pcm_s16le",
            conversation_id=conversation_id,
            partials=False,
            track=TRACK,
        )
    )
    app.register(live)
    live.outbox.send = None  # nothing goes back to Asterisk: results go to the store
    return live
