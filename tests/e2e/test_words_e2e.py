"""End-to-end: `start.word_timestamps` through the real server (tiny.en, SQLite store): each final
carries its words inside the utterance, they are stored (GET /v1/conversations/{id}) and the
WebVTT export parses, its cues inside the audio."""

from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from palabre_client import stream_file
from tests.e2e.test_vocabulary_e2e import espeak, write_wav
from tests.requirements import require_module

webvtt = require_module("webvtt")

pytestmark = pytest.mark.slow

SENTENCE = "Please send me the quarterly report before the meeting on Friday."


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read().decode("utf-8")
    return body if url.endswith("format=vtt") else json.loads(body)


async def test_finals_carry_stored_words_used_by_the_export(palabre_server: Any, tmp_path: Path) -> None:
    server = palabre_server("tiny.en")
    pcm = espeak(SENTENCE, 16_000)
    wav = write_wav(tmp_path / "words.wav", pcm, 16_000)
    events = await stream_file(server.url, wav, language="en", speed=4.0, word_timestamps=True)
    finals = [e for e in events if e["type"] == "final" and e["text"]]
    assert finals and all(e["type"] != "partial" or "words" not in e for e in events)
    for final in finals:
        words = final["words"]
        assert words and "".join(w["word"] for w in words) == final["text"]
        assert all(final["start"] <= w["start"] <= w["end"] <= final["end"] for w in words)
        assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    conversation_id = events[0]["conversation_id"]
    stored = get(f"{server.http}/v1/conversations/{conversation_id}")
    for utterance, final in zip(stored["utterances"], finals, strict=True):  # the wire rounds to 3 decimals
        assert [w["word"] for w in utterance["words"]] == [w["word"] for w in final["words"]]
        assert [w["start"] for w in utterance["words"]] == pytest.approx([w["start"] for w in final["words"]],
                                                                         abs=1e-3)
    vtt = get(f"{server.http}/v1/conversations/{conversation_id}/transcript?format=vtt")
    captions = webvtt.from_buffer(io.StringIO(vtt)).captions
    assert captions
    assert all(0 <= c.start_in_seconds < c.end_in_seconds <= len(pcm) / 16_000 + 0.01 for c in captions)
    plain = await stream_file(server.url, wav, language="en", speed=4.0)
    assert all("words" not in e for e in plain if e["type"] == "final")
