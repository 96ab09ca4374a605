"""Fixtures of the conversation-memory unit tests (tests/server/test_memory_*.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from server.engines import embed_service
from server.model_service import ModelService
from server.store import AsyncStore
from tests.server.memory_fakes import TENANT, WordEmbedder


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
