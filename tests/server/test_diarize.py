"""Diarized sessions: each final's speaker is decided before it is stored and sent; merges are
announced. Real `LiveSession`s and the real speaker micro-batcher around a fake encoder that
hears a tone's pitch as a voice (400 Hz → 0°, 650 Hz → 50° in a plane of unit vectors)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import numpy as np
import pytest

from server.engines import speaker_service
from server.live import LiveSession, SessionServices
from stream.errors import ErrorCode, ProtocolError
from stream.events import Final, ServerEvent, Speakers, Start
from stream.interfaces import SAMPLE_RATE, Audio, SpeakerVector
from tests.stream.fakes import pcm16, silence


class PitchEncoder:
    """A `SpeakerEncoder` whose voice is the pitch of a tone."""

    name = "pitch"
    dim = 3
    device = "cpu"
    min_samples = SAMPLE_RATE // 2

    def embed(self, audios: Sequence[Audio]) -> list[SpeakerVector | None]:
        out: list[SpeakerVector | None] = []
        for audio in audios:
            if len(audio) < self.min_samples:
                out.append(None)
                continue
            spectrum = np.abs(np.fft.rfft(audio))
            hz = float(np.argmax(spectrum)) * SAMPLE_RATE / len(audio)
            angle = np.radians((hz - 400) / 5)
            out.append(np.array([np.cos(angle), np.sin(angle), 0], dtype=np.float32))
        return out


def tone(hz: float, seconds: float = 1.0) -> Audio:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture
async def diarizing(services: SessionServices) -> AsyncIterator[SessionServices]:
    speaker = speaker_service(PitchEncoder())
    speaker.start()
    yield replace(services, speaker=speaker)
    await speaker.close()


async def run(services: SessionServices, start: Start, pitches: Sequence[float]) -> list[ServerEvent]:
    sent: list[ServerEvent] = []

    async def send(event: ServerEvent) -> None:
        sent.append(event)

    live = LiveSession(services, "default", send=send)
    await live.open(start)
    live.feed(pcm16(np.concatenate([part for hz in pitches for part in (tone(hz), silence(1.0))])))
    live.stop()
    await asyncio.wait_for(live.wait_closed(), 20)
    return sent


def finals(events: list[ServerEvent]) -> list[Final]:
    return [e for e in events if isinstance(e, Final)]


async def test_each_final_carries_its_speaker_label_and_it_is_stored(diarizing: SessionServices) -> None:
    start = Start(16000, language="en", diarize=True, track="room")
    events = await run(diarizing, start, [400, 650, 400, 655])
    labels = [f.speaker for f in finals(events)]
    assert labels == ["S1", "S2", "S1", "S2"]
    conversation_id = finals(events)[0].utterance_id.split(":")[0]
    rows = await diarizing.store.utterances("default", conversation_id)
    assert [r.speaker for r in rows] == labels
    assert all(r.track == "room" for r in rows)


async def test_without_diarize_the_speaker_is_the_track(diarizing: SessionServices) -> None:
    events = await run(diarizing, Start(16000, language="en", track="Alice"), [400, 800])
    assert [f.speaker for f in finals(events)] == ["Alice", "Alice"]
    events = await run(diarizing, Start(16000, language="en"), [400])
    assert [f.speaker for f in finals(events)] == [None]


async def test_a_merge_is_announced_after_the_final_that_caused_it(diarizing: SessionServices) -> None:
    # S1 at 0°, S2 at 50° (cos 0.64, below the 0.75 threshold), then a voice between at 27°,
    # nearer S2, pulls S2's centroid towards S1 until both are one speaker (cos ≥ 0.82)
    events = await run(diarizing, Start(16000, language="en", diarize=True), [400, 650] + [535] * 4)
    merges = [e for e in events if isinstance(e, Speakers)]
    assert len(merges) == 1
    assert merges[0].merged == {"S2": "S1"} and merges[0].labels == ["S1"]
    at = events.index(merges[0])
    before, after = finals(events[:at]), finals(events[at:])
    assert before[-1] is events[at - 1] and before[-1].speaker == "S1"  # the final that merged
    assert [f.speaker for f in before[:2]] == ["S1", "S2"]  # sent finals keep their label
    assert all(f.speaker == "S1" for f in after)


async def test_a_server_without_speaker_model_refuses_diarize(services: SessionServices) -> None:
    live = LiveSession(services, "default")
    with pytest.raises(ProtocolError) as refused:
        await live.open(Start(16000, diarize=True))
    assert refused.value.code is ErrorCode.BAD_START and "speaker" in str(refused.value)


class BrokenEncoder(PitchEncoder):
    def embed(self, audios: Sequence[Audio]) -> list[SpeakerVector | None]:
        raise RuntimeError("the speaker model failed")


async def test_a_failing_speaker_model_loses_no_final(services: SessionServices) -> None:
    speaker = speaker_service(BrokenEncoder())
    speaker.start()
    try:
        events = await run(replace(services, speaker=speaker), Start(16000, language="en", diarize=True),
                           [400, 650])
    finally:
        await speaker.close()
    sent = finals(events)
    assert [f.text for f in sent] == ["hello", "hello"] and [f.speaker for f in sent] == [None, None]
    rows = await services.store.utterances("default", sent[0].utterance_id.split(":")[0])
    assert len(rows) == 2
