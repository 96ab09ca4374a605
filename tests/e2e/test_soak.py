"""A short soak (bench/soak.py): 2 sessions for half a minute, with disconnects and bad messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import run_soak

pytestmark = pytest.mark.slow


def test_short_soak_loses_and_duplicates_nothing(speech_dir: Path) -> None:
    result = run_soak(2, 0.5, audio=speech_dir / "en_fox.wav", speed=2.0)
    summary = result.summary()
    assert result.streams >= 2, summary
    assert result.finals > 0, summary
    assert result.lost == 0, summary
    assert result.duplicated == 0, summary
    assert result.sessions_left == 0, summary
