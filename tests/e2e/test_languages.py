"""End-to-end: the default server (no `--model`) serves English on `tiny.en` and every other
language on `base`, each in its own lane; bad languages are a clear `bad_start`.

French with `"fr"` and `"auto"` on the synthesised meeting is in test_stream_e2e.py (it runs on
this same default server); here the English lane, the lanes shown by /v1/stats and /readyz, the
refusals, recorded French speech (Common Voice, `real_speech`), `auto` on noise (`language:
null`), and memory in French: a French meeting (synthesised, then recorded) streamed with `"fr"`
and with `"auto"`, a French question answered in French citing the utterance that holds the
fact, and the French entities as search filters.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from palabre_client import PalabreError, ask, load_audio, stream_file
from stream.answers import CANNOT_ANSWER_FR
from stream.language import fold
from tests.conftest import PalabreServer

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


async def test_auto_on_noise_gives_no_language(palabre_server: Any, speech_dir: Path, tmp_path: Path) -> None:
    """`auto` on 20 s of noise, then on a burst of loud noise: no text, and any (empty) final says
    `language: null` rather than a language guessed from noise; the session still closes."""
    server = palabre_server(None)
    rng = np.random.default_rng(7)
    burst = np.concatenate([np.zeros(8000), rng.normal(0, 0.2, 24_000), np.zeros(24_000)])
    loud = tmp_path / "burst.wav"
    _write_pcm(loud, np.clip(burst * 32767, -32768, 32767).astype("<i2"))
    for wav in (speech_dir / "silence_long.wav", loud):
        events = await stream_file(server.url, wav, language="auto", speed=4)
        assert events[-1]["type"] == "closed", events
        assert not finals(events), events
        assert all(e["language"] is None for e in events if e["type"] == "final"), events


# --- memory in French -----------------------------------------------------------------------------

FRENCH_QUESTION = "La parole est à qui ?"
"""About a French meeting: the synthesised French meeting (tests/fixtures, espeak-ng, which Whisper
base partly mishears), then the Common Voice recording "La parole est à Madame Annie Le Huerou.",
which holds the fact. (The bundled gemma3-270m refuses "Qui a la parole ?" and answers this one.)"""


def french_meeting(speech_dir: Path, shared_audio: Path, path: Path) -> Path:
    """fr_meeting.wav, a second of silence, commonvoice_fr.wav and a second of silence, as 16 kHz."""
    meeting = load_audio(speech_dir / "fr_meeting.wav", 16_000)
    recording = load_audio(shared_audio / "commonvoice_fr.wav", 16_000)
    gap = np.zeros(16_000, np.float32)
    audio = np.concatenate([meeting, gap, recording, gap])
    _write_pcm(path, np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2"))
    return path


async def ask_in_french(server: PalabreServer, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The French question over the streamed meeting: a French answer citing the recording's final
    (the one that says "parole"), which it returns."""
    spoken = finals(events)
    holder = next((f for f in spoken if "parole" in f["text"].lower()), None)
    assert holder is not None, " | ".join(f["text"] for f in spoken)
    done = await ask(FRENCH_QUESTION, url=server.url, conversation_id=events[0]["conversation_id"])
    shown = json.dumps(done, ensure_ascii=False)
    assert done["citations"][0] == holder["utterance_id"], shown
    text = done["text"].lower()
    if done["grounded"]:
        assert any(name in text for name in ("annie", "madame", "huero")), shown
    else:  # the bundled base LLM's answer failed the checks: the fallback quotes the passage, in French
        assert text.startswith(CANNOT_ANSWER_FR.lower()) and "le passage le plus proche dit" in text, shown
    assert "closest passage" not in text and "cannot answer" not in text, shown
    return holder


@pytest.mark.real_speech
async def test_a_french_meeting_is_answered_in_french(
    palabre_server: Any, speech_dir: Path, shared_audio: Path, tmp_path: Path
) -> None:
    """`"fr"` on the default server: French finals from `base`, a French answer citing the
    utterance that holds the fact, and the French entities (spaCy fr_core_news_sm) as search
    filters, a name matched whatever its case and accents."""
    server = palabre_server(None)
    wav = french_meeting(speech_dir, shared_audio, tmp_path / "fr.wav")
    events = await stream_file(server.url, wav, language="fr", speed=2)
    assert events[0]["model"] == "base", events[0]
    spoken = finals(events)
    assert spoken and {f["language"] for f in spoken} == {"fr"}, spoken
    holder = await ask_in_french(server, events)

    conversation_id = events[0]["conversation_id"]
    deadline = time.monotonic() + 180  # entities are tagged in the background (spaCy loads lazily)
    while time.monotonic() < deadline:
        stored = server.get_json(f"/v1/conversations/{conversation_id}")["utterances"]
        if all(u["entities"] is not None for u in stored):
            break
        time.sleep(1.0)
    people = [e["text"] for u in stored if u["utterance_id"] == holder["utterance_id"] for e in u["entities"]
              if e["label"] == "person"]
    assert people, stored
    shouted = fold(people[0]).upper()  # "ANNIE LE HUEROU": another case, no accents
    for filters in ({"entity_label": "person"}, {"entity": shouted}):
        hits = _search(server, "la parole", conversation=conversation_id, **filters)
        assert [hit["utterance_id"] for hit in hits] == [holder["utterance_id"]], (filters, hits, stored)


@pytest.mark.real_speech
async def test_a_french_meeting_with_auto_is_answered_in_french(
    palabre_server: Any, speech_dir: Path, shared_audio: Path, tmp_path: Path
) -> None:
    """`"auto"`: the meeting's finals are marked `fr` (detection among en and fr), and the question
    gets a French answer (the conversation's language comes from its finals' languages)."""
    server = palabre_server(None)
    wav = french_meeting(speech_dir, shared_audio, tmp_path / "fr.wav")
    events = await stream_file(server.url, wav, language="auto", speed=2)
    spoken = finals(events)
    languages = [f["language"] for f in spoken]
    # Whisper base takes a short espeak-ng French sentence for English now and then (the recording,
    # never): French must win, not be unanimous.
    assert languages.count("fr") > len(languages) / 2, spoken
    holder = await ask_in_french(server, events)
    assert holder["language"] == "fr", holder


def _search(server: PalabreServer, q: str, **params: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"q": q, **params})
    results: list[dict[str, Any]] = server.get_json(f"/v1/search?{query}", timeout=60)["results"]
    return results


def _write_pcm(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(pcm.tobytes())


def _write_silence(path: Path) -> None:
    _write_pcm(path, np.zeros(1600, "<i2"))
