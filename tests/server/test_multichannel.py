"""A multichannel `/v1/stream` session: one track per channel (its own utterances), not a mix.

Real `LiveSession`s and the hub over session services without models (tests/server/conftest.py):
the energy VAD hears a tone as speech, the recogniser hears "hello".
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from server.config import LimitsConfig
from server.engines import speaker_service
from server.live import LiveSession, SessionServices
from server.sessions import SessionHub
from stream.errors import ErrorCode, ProtocolError
from stream.events import Closed, Final, ServerEvent, Start
from tests.server.test_diarize import PitchEncoder
from tests.server.test_diarize import tone as pitch_tone
from tests.stream.fakes import silence, tone


def interleaved(*channels: np.ndarray) -> bytes:
    """PCM16 frames of these channels (float in [-1, 1], same length), interleaved."""
    stacked = np.stack(channels, axis=1)
    return (np.clip(stacked, -1, 1) * 32767).astype("<i2").tobytes()


def stereo_turns() -> bytes:
    """Left speaks in the first second, right in the third; each is silent while the other speaks."""
    left = np.concatenate([tone(1.0), silence(3.0)])
    right = np.concatenate([silence(2.0), tone(1.0), silence(1.0)])
    return interleaved(left, right)


async def run(
    services: SessionServices, start: Start, frames: list[bytes]
) -> tuple[LiveSession, list[ServerEvent]]:
    sent: list[ServerEvent] = []

    async def send(event: ServerEvent) -> None:
        sent.append(event)

    live = LiveSession(services, "default", send=send)
    await live.open(start)
    for frame in frames:
        live.feed(frame)
    live.stop()
    await asyncio.wait_for(live.wait_closed(), 20)
    return live, sent


def finals(events: list[ServerEvent]) -> list[Final]:
    return [e for e in events if isinstance(e, Final)]


async def test_each_channel_is_a_track_with_its_own_finals_stored_in_time_order(
    services: SessionServices,
) -> None:
    live, events = await run(services, Start(16000, channels=2), [stereo_turns()])
    got = finals(events)
    assert [(f.track, f.speaker) for f in got] == [("ch1", "ch1"), ("ch2", "ch2")]
    assert got[0].end < got[1].start  # the right channel's utterance is where it was spoken
    assert abs(got[1].start - 2.0) < 0.3
    assert len({f.seq for f in got}) == 2  # one conversation, distinct seqs
    assert isinstance(events[-1], Closed) and events[-1].utterances == 2
    rows = await services.store.utterances("default", live.conversation_id)
    assert [(r.track, r.speaker) for r in rows] == [("ch1", "ch1"), ("ch2", "ch2")]
    assert live.tracks == ("ch1", "ch2")
    assert live.audio_seconds == pytest.approx(4.0)  # seconds of the source, not of its channels


async def test_channel_tracks_name_the_tracks_and_a_track_prefixes_the_default(
    services: SessionServices,
) -> None:
    _, named = await run(
        services, Start(16000, channels=2, channel_tracks=("Alice", "Bob")), [stereo_turns()]
    )
    assert [f.speaker for f in finals(named)] == ["Alice", "Bob"]
    _, prefixed = await run(services, Start(16000, channels=2, track="room"), [stereo_turns()])
    assert [f.track for f in finals(prefixed)] == ["room-ch1", "room-ch2"]


async def test_a_frame_of_partial_sample_frames_is_refused_and_the_stream_goes_on(
    services: SessionServices,
) -> None:
    audio = stereo_turns()
    live = LiveSession(services, "default")
    await live.open(Start(16000, channels=2))
    live.feed(audio[:4000])
    with pytest.raises(ProtocolError) as refused:
        live.feed(audio[4000:4003])  # 3 bytes: not whole stereo PCM16 sample frames
    assert refused.value.code is ErrorCode.BAD_AUDIO and refused.value.close is None
    live.feed(audio[4000:])  # the channels are still aligned: nothing of the bad frame was used
    live.stop()
    await asyncio.wait_for(live.wait_closed(), 20)
    rows = await services.store.utterances("default", live.conversation_id)
    assert [r.track for r in rows] == ["ch1", "ch2"]


async def test_frames_need_not_hold_both_turns(services: SessionServices) -> None:
    audio = stereo_turns()
    frames = [audio[i : i + 1280] for i in range(0, len(audio), 1280)]  # 20 ms stereo frames
    _, events = await run(services, Start(16000, channels=2, encoding="pcm_s16le"), frames)
    assert [f.track for f in finals(events)] == ["ch1", "ch2"]


async def test_a_multichannel_start_is_admitted_as_one_session_per_channel(services: SessionServices) -> None:
    hub = SessionHub(LimitsConfig(max_sessions=3), per_tenant_caps=True)
    hub.serve(services)
    live = await hub.open("default", Start(16000, channels=2), None)
    with pytest.raises(ProtocolError) as refused:
        await hub.open("default", Start(16000, channels=2), None)  # 2 + 2 tracks > 3
    assert refused.value.code is ErrorCode.OVERLOADED
    mono = await hub.open("default", Start(16000), None)  # 2 + 1 fits
    for session in (live, mono):
        session.stop()
        await asyncio.wait_for(session.wait_closed(), 10)


async def test_a_resuming_multichannel_client_gets_the_finals_of_its_tracks(
    services: SessionServices,
) -> None:
    first, _ = await run(services, Start(16000, channels=2, conversation_id="call-1"), [stereo_turns()])
    resumed = LiveSession(services, "default")
    ready = await resumed.open(Start(16000, channels=2, conversation_id="call-1", resume_after=-1))
    assert [f.track for f in resumed.replayed] == ["ch1", "ch2"]
    rows = await services.store.utterances("default", first.conversation_id)
    assert ready.resume_from == pytest.approx(max(r.end for r in rows))
    resumed.stop()
    await asyncio.wait_for(resumed.wait_closed(), 10)


async def test_a_diarized_multichannel_session_labels_each_channel_voice(services: SessionServices) -> None:
    speaker = speaker_service(PitchEncoder())
    speaker.start()
    try:
        diarizing = replace(services, speaker=speaker)
        left = np.concatenate([pitch_tone(400), silence(3.0)])
        right = np.concatenate([silence(2.0), pitch_tone(650), silence(1.0)])
        _, events = await run(diarizing, Start(16000, channels=2, diarize=True), [interleaved(left, right)])
    finally:
        await speaker.close()
    assert [(f.track, f.speaker) for f in finals(events)] == [("ch1", "S1"), ("ch2", "S2")]
