"""GPU → CPU failover: the primary ASR engine fails mid-stream (`--inject-asr-fault-after` wraps it
in the test seam `FaultyAsr`, which fails as a lost GPU would), the fallback engine takes over, and
no final is lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from palabre_client import stream_file

pytestmark = pytest.mark.slow


async def test_fallback_takes_over_mid_stream_without_losing_a_final(
    palabre_server: Any, speech_dir: Path, speech_manifest: dict[str, Any]
) -> None:
    server = palabre_server(
        "tiny.en", "--no-memory", "--inject-asr-fault-after", "2", "--asr-fallback", "cpu"
    )
    assert server.get_json("/v1/stats")["asr"]["failover"]["active"] == "primary"

    events = await stream_file(server.url, speech_dir / "en_meeting.wav", language="en", speed=3.0)

    finals = [e for e in events if e["type"] == "final"]
    expected = len(speech_manifest["files"]["en_meeting.wav"]["utterances"])
    assert len(finals) == expected, [e for e in events if e["type"] in ("final", "error")]
    assert all(f["text"] for f in finals), finals
    assert not [e for e in events if e["type"] == "error"]
    assert events[-1]["type"] == "closed"
    status = server.get_json("/v1/stats")["asr"]
    assert status["device"] == "cpu"
    assert status["failover"]["active"] == "fallback"
    assert status["failover"]["switches"] == 1
    assert "injected" in status["failover"]["last_error"]
