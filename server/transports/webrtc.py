"""WebRTC audio for `/v1/stream` sessions: signalling on the socket, the audio over a peer connection.

A client starts with `{"type":"start","transport":"webrtc",...}`, then sends `webrtc.offer`;
`WebRtcIngest.accept` answers it with aiortc. aiortc gathers its host candidates before it
answers, so the answer carries them all and no trickle ICE is needed (`webrtc.candidate`
messages are accepted and ignored by the socket transport). No STUN or TURN server is used:
the client must reach one of the server's host addresses.

The received audio track (Opus, decoded by aiortc to 48 kHz stereo s16, 960 samples a frame) is
down-mixed here to 48 kHz mono PCM16 — the format a WebRTC `start` announces — and fed to the
`LiveSession`, whose `AudioConverter` resamples it to 16 kHz like any socket audio. Events go
back on the WebSocket as usual. If the connection fails after the answer, the session gets a
`webrtc_failed` error and stays open: the client may send its audio on the socket instead, or
a new offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from server.codecs.native import WEBRTC_SAMPLE_RATE
from server.live import LiveSession
from stream.errors import ErrorCode, ProtocolError
from stream.events import Error, WebRtcAnswer, WebRtcOffer

if TYPE_CHECKING:
    from aiortc import MediaStreamTrack, RTCPeerConnection

log = logging.getLogger(__name__)


class WebRtcIngest:
    """The peer connection of one session: receives one audio track, sends nothing."""

    def __init__(self, live: LiveSession) -> None:
        self.live = live
        self.frames = 0
        """Audio frames fed to the session so far."""
        self._pc: RTCPeerConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def accept(self, offer: WebRtcOffer) -> WebRtcAnswer:
        """Answer the client's offer; the audio flows once ICE and DTLS complete.

        Raises `ProtocolError` BAD_OFFER (no WebRTC `start`, a second offer, an offer aiortc
        cannot answer) or UNAVAILABLE (aiortc is not installed).
        """
        start = self.live.start
        if start is None or start.transport != "webrtc":
            raise ProtocolError(
                ErrorCode.BAD_OFFER, 'send webrtc.offer after a start with "transport":"webrtc"'
            )
        if self._pc is not None:
            raise ProtocolError(ErrorCode.BAD_OFFER, "this session already has a WebRTC connection")
        try:
            from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
        except ImportError:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE, "this server has no WebRTC support (aiortc is not installed)"
            ) from None
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no public STUN: host candidates only
        self._pc = pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and self._reader is None:
                self._reader = asyncio.create_task(
                    self._receive(track), name=f"webrtc-{self.live.session_id}"
                )

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("session %s: WebRTC %s", self.live.session_id, pc.connectionState)
            if pc.connectionState == "failed" and self._pc is pc:
                self.live.outbox.put(
                    Error(
                        ErrorCode.WEBRTC_FAILED, "the WebRTC connection failed; send the audio on the socket"
                    )
                )
                await self.close()

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as error:  # aiortc raises ValueError and others for offers it cannot take
            await self.close()
            raise ProtocolError(ErrorCode.BAD_OFFER, f"cannot answer this offer: {error}") from None
        if self._receivers(pc) == 0:
            await self.close()
            raise ProtocolError(ErrorCode.BAD_OFFER, "the offer sends no audio track")
        return WebRtcAnswer(pc.localDescription.sdp)

    async def close(self) -> None:
        """Stop receiving and close the peer connection (the session stays open; a new offer may follow)."""
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        pc, self._pc = self._pc, None
        if pc is not None:
            await pc.close()

    @staticmethod
    def _receivers(pc: Any) -> int:
        """Audio transceivers that receive (the client's track)."""
        return sum(
            1
            for t in pc.getTransceivers()
            if t.kind == "audio" and t.currentDirection in ("recvonly", "sendrecv")
        )

    async def _receive(self, track: MediaStreamTrack) -> None:
        """Feed every decoded frame to the session, down-mixed to mono PCM16 at 48 kHz."""
        import av
        from aiortc.mediastreams import MediaStreamError

        resampler = av.AudioResampler(format="s16", layout="mono", rate=WEBRTC_SAMPLE_RATE)
        try:
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue
                for mono in resampler.resample(frame):
                    self.live.feed(mono.to_ndarray().tobytes())
                    self.frames += 1
        except MediaStreamError:  # the track ended: the peer closed or the connection failed
            log.info("session %s: WebRTC track ended after %d frames", self.live.session_id, self.frames)
        except ProtocolError as error:
            log.warning("session %s: WebRTC audio refused: %s", self.live.session_id, error.message)
        except Exception:
            log.exception("session %s: WebRTC audio failed", self.live.session_id)
