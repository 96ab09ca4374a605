"""server/transports/webrtc.py: an aiortc client's audio track reaches the session as 48 kHz mono PCM16."""

from __future__ import annotations

import asyncio
import fractions
from dataclasses import dataclass, field
from typing import Any, cast

import av
import numpy as np
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)

from server.live import LiveSession
from server.transports.webrtc import WebRtcIngest
from stream.errors import ErrorCode, ProtocolError
from stream.events import ServerEvent, Start, WebRtcOffer

RATE = 48_000
FRAME = 960
TONE_HZ = 440.0


class ToneTrack(MediaStreamTrack):
    """A 440 Hz stereo tone in 20 ms s16 frames, paced in real time (what a browser's Opus carries)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pts = 0

    async def recv(self) -> Any:
        await asyncio.sleep(FRAME / RATE)
        t = (self._pts + np.arange(FRAME)) / RATE
        mono = (0.3 * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME
        return frame


@dataclass
class FakeOutbox:
    events: list[ServerEvent] = field(default_factory=list)

    def put(self, event: ServerEvent) -> None:
        self.events.append(event)


@dataclass
class FakeSession:
    """What the ingest uses of a `LiveSession`."""

    start: Start | None
    session_id: str = "test"
    fed: list[bytes] = field(default_factory=list)
    outbox: FakeOutbox = field(default_factory=FakeOutbox)

    def feed(self, data: bytes) -> None:
        self.fed.append(data)


def webrtc_start() -> Start:
    return Start(sample_rate=RATE, transport="webrtc")


async def offer_from(client: Any) -> WebRtcOffer:
    await client.setLocalDescription(await client.createOffer())
    return WebRtcOffer(client.localDescription.sdp)


async def test_audio_track_is_fed_as_mono_pcm16_at_48k() -> None:
    live = FakeSession(webrtc_start())
    ingest = WebRtcIngest(cast(LiveSession, live))
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTrack(ToneTrack())
    try:
        answer = await ingest.accept(await offer_from(client))
        assert answer.sdp.startswith("v=0") and "a=candidate:" in answer.sdp  # no trickle ICE
        await client.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
        for _ in range(200):
            if sum(len(b) for b in live.fed) >= RATE * 2:  # one second
                break
            await asyncio.sleep(0.05)
        with pytest.raises(ProtocolError) as info:
            await ingest.accept(await offer_from(RTCPeerConnection()))
        assert info.value.code is ErrorCode.BAD_OFFER
    finally:
        await ingest.close()
        await client.close()

    assert all(len(chunk) % 2 == 0 for chunk in live.fed)
    samples = np.frombuffer(b"".join(live.fed), dtype="<i2").astype(np.float64)
    assert len(samples) >= RATE
    tail = samples[-RATE // 2 :]  # past Opus's start-up
    spectrum = np.abs(np.fft.rfft(tail * np.hanning(len(tail))))
    peak_hz = np.argmax(spectrum) * RATE / len(tail)
    assert abs(peak_hz - TONE_HZ) < 10, peak_hz  # a wrong rate or channel count would move it
    assert np.sqrt(np.mean(tail**2)) > 0.1 * 32767 * 0.3
    assert ingest.frames > 0
    assert not live.outbox.events


async def test_offer_needs_a_webrtc_start() -> None:
    ingest = WebRtcIngest(cast(LiveSession, FakeSession(Start(sample_rate=16000))))
    with pytest.raises(ProtocolError) as info:
        await ingest.accept(WebRtcOffer("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"))
    assert info.value.code is ErrorCode.BAD_OFFER


async def test_an_offer_aiortc_cannot_take_is_bad_and_may_be_retried() -> None:
    ingest = WebRtcIngest(cast(LiveSession, FakeSession(webrtc_start())))
    with pytest.raises(ProtocolError) as info:
        await ingest.accept(WebRtcOffer("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"))
    assert info.value.code is ErrorCode.BAD_OFFER
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTrack(ToneTrack())
    try:
        answer = await ingest.accept(await offer_from(client))
        assert "m=audio" in answer.sdp
    finally:
        await ingest.close()
        await client.close()
