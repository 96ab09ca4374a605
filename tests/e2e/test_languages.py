"""End-to-end: the default server (no `--model`) serves English on `tiny.en` and every other
language on `base`, each in its own lane; bad languages are a clear `bad_start`.

French with `"fr"` and `"auto"` on the synthesised meeting is in test_stream_e2e.py (it runs on
this same default server); here the English lane, the lanes shown by /v1/stats and /readyz, the
refusals, and recorded French speech (Common Voice, `real_speech`).
"""

from __future__ import annotations

import json
import urllib.request
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from palabre_client import PalabreError, stream_file

pytestmark = pytest.mark.slow


def finals(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "final" and e["text"].strip()]


def heard(server: Any) -> dict[str, float]:
    """Audio seconds each lane transcribed so far."""
    lanes = server.get_json("/v1/stats")["asr"]["lanes"]
    return {lane["model"]: lane["scheduler"]["audio_seconds"] for lane in lanes}


async def test_english_stays_on_tiny_en_next_to_base(palabre_server: Any, speech_dir: Path) -> None:
    server = palabre_server(None)
    lanes = server.get_json("/v1/stats")["asr"]["lanes"]
    assert [(lane["model"], lane["languages"]) for lane in lanes] == [
        ("tiny.en", ["en"]),
        ("base", ["*", "auto"]),
    ], lanes
    assert all(lane["scheduler"]["workers"] >= 1 for lane in lanes)
    with urllib.request.urlopen(server.http + "/readyz", timeout=10) as response:
        ready = json.loads(response.read())
    assert [lane["model"] for lane in ready["services"]["asr"]["lanes"]] == ["tiny.en", "base"]

    before = heard(server)
    events = await stream_file(server.url, speech_dir / "en_fox.wav", language="en", speed=2)
    assert events[0]["type"] == "ready" and events[0]["model"] == "tiny.en", events[0]
    spoken = finals(events)
    assert spoken and {f["language"] for f in spoken} == {"en"}, spoken
    assert "fox" in " ".join(f["text"] for f in spoken).lower(), spoken
    after = heard(server)
    assert after["tiny.en"] > before["tiny.en"] and after["base"] == before["base"], (before, after)


async def test_a_language_whisper_does_not_know_is_a_bad_start(
    palabre_server: Any, tmp_path: Path
) -> None:
    wav = tmp_path / "short.wav"
    _write_silence(wav)
    with pytest.raises(PalabreError) as info:
        await stream_file(palabre_server(None).url, wav, language="xx")
    assert info.value.code == "bad_start" and "not one Whisper knows" in info.value.message


async def test_french_on_an_english_only_server_is_a_bad_start(
    palabre_server: Any, tmp_path: Path
) -> None:
    wav = tmp_path / "short.wav"
    _write_silence(wav)
    with pytest.raises(PalabreError) as info:
        await stream_file(palabre_server("tiny.en").url, wav, language="fr")
    assert info.value.code == "bad_start"
    assert "model tiny.en serves 'fr' but is English-only" in info.value.message


@pytest.mark.real_speech
async def test_recorded_french_on_the_default_server(palabre_server: Any, shared_audio: Path) -> None:
    """Common Voice French read speech, `language: "fr"`: French text from `base` ("La parole est à
    Madame Annie ..." offline with faster-whisper)."""
    events = await stream_file(
        palabre_server(None).url, shared_audio / "commonvoice_fr.wav", language="fr", speed=2
    )
    assert events[0]["model"] == "base", events[0]
    spoken = finals(events)
    text = " ".join(f["text"] for f in spoken).lower()
    assert spoken and {f["language"] for f in spoken} == {"fr"}, spoken
    assert "parole" in text and "madame" in text, text


@pytest.mark.real_speech
async def test_recorded_french_with_auto_is_marked_french(palabre_server: Any, shared_audio: Path) -> None:
    """The same recording with `language: "auto"`: `base` alone ranks Hebrew or Spanish first on
    it; detection among the deployment's languages (`asr_auto_languages`, default en and fr)
    marks every final `fr` and decodes it in French."""
    events = await stream_file(
        palabre_server(None).url, shared_audio / "commonvoice_fr.wav", language="auto", speed=2
    )
    spoken = finals(events)
    text = " ".join(f["text"] for f in spoken).lower()
    assert spoken and {f["language"] for f in spoken} == {"fr"}, spoken
    assert "parole" in text, text


def _write_silence(path: Path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(np.zeros(1600, "<i2").tobytes())
