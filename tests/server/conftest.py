"""Fixtures of the server's unit tests: session services without models."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from server.live import LiveConversations, SessionServices
from server.model_service import ModelService
from server.store import AsyncStore
from stream.interfaces import AsrOutput
from stream.scheduler import Scheduler, SchedulerConfig
from stream.session import AsrJob, SessionConfig
from tests.stream.fakes import EnergyVad


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[SessionServices]:
    """Session services without models: energy VAD, a recogniser that always hears "hello"."""

    def recognise(jobs: Sequence[AsrJob]) -> list[AsrOutput]:
        return [AsrOutput(text="hello", language="en") for _ in jobs]

    asr = ModelService[AsrJob, AsrOutput](
        "asr", recognise, Scheduler[AsrJob](SchedulerConfig(max_wait_s=0)), 1
    )
    asr.start()
    store = await AsyncStore.open(tmp_path / "palabre.db")
    await store.ensure_tenant("default")
    yield SessionServices(
        asr=asr,
        vad=EnergyVad(),  # type: ignore[arg-type]
        store=store,
        model_name="fake",
        multilingual=False,
        session_config=SessionConfig(),
        conversations=LiveConversations(),
    )
    await asr.close()
    await store.close()
