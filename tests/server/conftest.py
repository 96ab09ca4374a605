"""Fixtures of the server's unit tests: session services and conversation memory without models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from server.engines import embed_service
from server.live import LiveConversations, SessionServices
from server.model_service import ModelService
from server.store import AsyncStore
from stream.session import SessionConfig
from tests.server.asr_fakes import hearing
from tests.server.memory_fakes import TENANT, WordEmbedder
from tests.stream.fakes import EnergyVad


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[SessionServices]:
    """Session services without models: energy VAD, a recogniser that always hears "hello"."""

    lanes = hearing("hello")
    lanes.start()
    store = await AsyncStore.open(tmp_path / "palabre.db")
    await store.ensure_tenant("default")
    yield SessionServices(
        asr=lanes,
        vad=EnergyVad(),  # type: ignore[arg-type]
        store=store,
        session_config=SessionConfig(),
        conversations=LiveConversations(),
    )
    await lanes.close()
    await store.close()


@pytest.fixture
async def memory_store(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    """A real SQLite store in a temporary folder, with the tenant `TENANT`."""
    store = await AsyncStore.open(tmp_path / "palabre.db")
    await store.ensure_tenant(TENANT)
    yield store
    await store.close()


@pytest.fixture
def embedder() -> WordEmbedder:
    return WordEmbedder()


@pytest.fixture
async def embed(embedder: WordEmbedder) -> AsyncIterator[ModelService[str, np.ndarray]]:
    """The real embedding micro-batcher around the fake embedder."""
    service = embed_service(embedder)
    service.start()
    yield service
    await service.close()
