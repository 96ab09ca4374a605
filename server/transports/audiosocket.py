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

from server.auth import Authenticator, Scope, authenticate_token
from server.codecs.audiosocket import SAMPLE_RATE, Audio, AudioSocketParser, CallId, Digit, ErrorFrame, Hangup
from server.config import LimitsConfig
from server.limits import ConnectionLimits
from server.live import LiveSession
from server.sessions import SessionHub
from server.transports.idle import IdleTimer
from server.transports.receive import feed_within_rate
from stream.errors import ErrorCode, ProtocolError
from stream.events import Start

__all__ = ["AudioSocketEndpoint", "serve_audiosocket"]

log = logging.getLogger(__name__)

READ_BYTES = 4096
TRACK = "caller"


class AudioSocketEndpoint:
    """What every AudioSocket call shares: the hub, the token its calls run under, the limits."""

    def __init__(
        self,
        hub: SessionHub,
        auth: Authenticator,
        token: str | None,
        limits: LimitsConfig,
        *,
        diarize: bool = False,
    ) -> None:
        self.hub = hub
        self.auth = auth
        self.token = token
        """The configured `audiosocket_token` (None under open access)."""
        self.limits = limits
        self.diarize = diarize
        """Tell the speakers of each call apart (`telephony_diarize`: AudioSocket carries no
        per-call settings)."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one AudioSocket call until hangup, an error, idleness or the end of the stream."""
        peer = writer.get_extra_info("peername")
        parser = AudioSocketParser()
        live: LiveSession | None = None
        rates = ConnectionLimits(self.limits, time.monotonic())
        idle = IdleTimer(self.limits.idle_timeout_s, writer.close)
        try:
            while data := await reader.read(READ_BYTES):
                idle.touch()
                for frame in parser.feed(data):
                    if isinstance(frame, Audio):
                        if live is None:
                            raise ProtocolError(ErrorCode.NOT_STARTED, "audio before the UUID frame")
                        await feed_within_rate(live, rates, frame.pcm)  # "pace": TCP pushes back
                    elif isinstance(frame, CallId):
                        if live is not None:
                            raise ProtocolError(ErrorCode.ALREADY_STARTED, "a second UUID frame")
                        live = await self._open_session(frame.id.hex)
                        if live.start is not None:
                            rates.started(live.start)
                        log.info("audiosocket call %s from %s", frame.id, peer)
                    elif isinstance(frame, Hangup):
                        return
                    elif isinstance(frame, ErrorFrame):
                        log.warning(
                            "audiosocket %s: Asterisk reports error %s", peer, frame.code.hex() or "-"
                        )
                        return
                    elif isinstance(frame, Digit):
                        log.debug("audiosocket %s: DTMF %s", peer, frame.digit)
                if parser.error is not None:  # a bad frame after good ones: do not wait for more bytes
                    raise parser.error
            if idle.fired:
                log.warning(
                    "audiosocket %s: closing: %s: %s", peer, ErrorCode.IDLE_TIMEOUT.value, idle.message
                )
        except ProtocolError as error:
            log.warning("audiosocket %s: closing: %s", peer, error)
        except ConnectionError:
            pass
        except Exception:
            log.exception("audiosocket connection %s failed", peer)
        finally:
            idle.cancel()
            if live is not None:
                live.detach()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _open_session(self, conversation_id: str) -> LiveSession:
        principal = authenticate_token(self.auth, self.token)
        if principal is None or not principal.allows(Scope.STREAM):
            raise ProtocolError(
                ErrorCode.UNAUTHORIZED, "the AudioSocket token is invalid, revoked or lacks 'stream'"
            )
        start = Start(
            sample_rate=SAMPLE_RATE,
            encoding="pcm_s16le",
            conversation_id=conversation_id,
            partials=False,
            track=TRACK,
            diarize=self.diarize,
        )
        # Nothing goes back to Asterisk: results go to the store.
        return await self.hub.open(principal.tenant_id, start, None)


async def serve_audiosocket(endpoint: AudioSocketEndpoint, host: str, port: int) -> asyncio.Server:
    """Listen for AudioSocket connections from Asterisk; close the returned server to stop."""
    server = await asyncio.start_server(endpoint.handle, host, port)
    log.info("listening for AudioSocket on %s:%d", host, port)
    return server
