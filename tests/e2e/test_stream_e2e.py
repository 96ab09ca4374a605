"""End-to-end streaming through the real server, real models and the Python SDK.

Every test here starts (or reuses) a `palabre serve` subprocess and loads Whisper: all are `slow`.
The audio is the synthesised speech of tests/fixtures/make_speech.py (`speech_dir` fixture), whose
manifest gives each utterance's reference text and its start/end in the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
import wave
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jiwer
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from palabre_client import PalabreError, StreamSession

pytestmark = pytest.mark.slow

SAMPLE_RATE = 16_000
CHUNK_S = 0.1
"""Audio sent per WebSocket frame."""
STREAM_TIMEOUT_S = 180.0
"""Longest one streamed file may take, sending and waiting for `closed` together."""
TIME_TOLERANCE_S = 0.6


# --- streaming helper --------------------------------------------------------------------------


@dataclass
class StreamResult:
    """Every event of one session, each stamped with its arrival time (`_t`, time.monotonic())."""

    events: list[dict[str, Any]]
    t0: float
    """When the first audio frame was sent (time.monotonic())."""
    speed: float
    ready: dict[str, Any] = field(default_factory=dict)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """Events of one `type`, in arrival order."""
        return [e for e in self.events if e.get("type") == kind]

    @property
    def finals(self) -> list[dict[str, Any]]:
        """Finals in arrival order."""
        return self.of_type("final")

    @property
    def spoken_finals(self) -> list[dict[str, Any]]:
        """Finals whose text is not empty."""
        return [f for f in self.finals if f["text"].strip()]

    @property
    def partials(self) -> list[dict[str, Any]]:
        """Partials in arrival order."""
        return self.of_type("partial")

    def types(self) -> list[str]:
        """The sequence of event types."""
        return [str(e.get("type")) for e in self.events]


def read_pcm16(path: Path) -> bytes:
    """The PCM16 samples of a 16 kHz mono WAV file (what make_speech.py writes)."""
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SAMPLE_RATE, 1, 2)
        return w.readframes(w.getnframes())


async def stream_pcm(
    url: str,
    pcm: bytes,
    *,
    language: str = "en",
    speed: float = 1.0,
    partials: bool = True,
    timeout: float = STREAM_TIMEOUT_S,
) -> StreamResult:
    """Stream PCM16 at `speed` times real time in CHUNK_S frames, then `stop`; collect events until `closed`.

    Frame k leaves at t0 + (end of frame k) / speed, so the audio at file time `x` has been sent
    by t0 + x / speed.
    """
    session = await StreamSession.open(url, language=language, partials=partials)
    events: list[dict[str, Any]] = []
    frame_bytes = int(CHUNK_S * SAMPLE_RATE) * 2
    t0 = time.monotonic()

    async def send() -> None:
        for offset in range(0, len(pcm), frame_bytes):
            frame = pcm[offset : offset + frame_bytes]
            due = t0 + (offset + len(frame)) / (2 * SAMPLE_RATE) / speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await session.send_audio(frame)
        await session.stop()

    async def receive() -> None:
        async for event in session:
            event["_t"] = time.monotonic()
            events.append(event)

    try:
        async with asyncio.timeout(timeout):
            sender = asyncio.create_task(send())
            await receive()
            if not sender.done():
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
    finally:
        await session.close()
    return StreamResult(events, t0, speed, session.ready)


async def stream_file(
    url: str, path: Path, *, language: str = "en", speed: float = 1.0, partials: bool = True
) -> StreamResult:
    """`stream_pcm` of a WAV file."""
    return await stream_pcm(url, read_pcm16(path), language=language, speed=speed, partials=partials)


_CACHE: dict[tuple[str, str, str, float], StreamResult] = {}


async def cached_stream(url: str, path: Path, *, language: str = "en", speed: float = 1.0) -> StreamResult:
    """`stream_file`, done once per (server, file, language, speed) for the whole test session."""
    key = (url, str(path), language, speed)
    if key not in _CACHE:
        _CACHE[key] = await stream_file(url, path, language=language, speed=speed)
    return _CACHE[key]


# --- text helpers ------------------------------------------------------------------------------

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """English words of 0 <= n < 10**9 (no "and"), as the references spell numbers."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return f"{number_words(head)} {name}" + (f" {number_words(rest)}" if rest else "")
    raise AssertionError("unreachable")


def normalise(text: str, language: str = "en") -> str:
    """Lowercase, digits spelled out (English only), punctuation removed, spaces collapsed."""
    text = text.lower()
    if language == "en":
        text = re.sub(r"(?<=\d)[,\s](?=\d{3}\b)", "", text)  # 400,000 / 400 000 → 400000
        text = re.sub(r"\d+", lambda m: " " + number_words(int(m.group())) + " ", text)
    text = re.sub(r"[^\w\s']|_", " ", text)
    return " ".join(text.split())


def wer(reference: str, hypothesis: str, language: str = "en") -> float:
    """Word error rate after `normalise` (an empty hypothesis scores 1.0)."""
    ref, hyp = normalise(reference, language), normalise(hypothesis, language)
    if not hyp:
        return 1.0
    return float(jiwer.wer(ref, hyp))


STOPWORDS = frozenset(
    "a an the and or of to in on at for with from by is are was were be been it its this that these those "
    "i you he she we they my your our their me him her us them do does did not no so as if then than "
    "will would can could should has have had there here what which who whom when where why how all "
    "some any each next before after up down over into out about please".split()
)


def content_words(text: str) -> set[str]:
    """Distinct normalised words of `text` that are not stopwords."""
    return {w for w in normalise(text).split() if w not in STOPWORDS}


def joined(result: StreamResult) -> str:
    """All final texts of a session, in order."""
    return " ".join(f["text"].strip() for f in result.finals if f["text"].strip())


def describe(result: StreamResult) -> str:
    """A readable dump of a session's events for assertion messages."""
    lines = []
    for e in result.events:
        shown = {k: v for k, v in e.items() if k not in ("_t", "type")}
        lines.append(f"  +{e['_t'] - result.t0:6.2f}s {e['type']}: {json.dumps(shown, ensure_ascii=False)}")
    return "\n".join(lines)


def test_normalise_spells_numbers() -> None:
    """The WER normaliser spells out what Whisper writes as digits."""
    assert normalise("The budget is 400,000 euros.") == "the budget is four hundred thousand euros"
    assert normalise("at 9 tomorrow") == "at nine tomorrow"
    assert normalise("17 trains") == "seventeen trains"


# --- (a) English: accuracy, partials, stability ------------------------------------------------


async def test_english_fox_wer(
    palabre_server: Any, speech_dir: Path, speech_manifest: dict[str, Any]
) -> None:
    """tiny.en transcribes the pangram at 4x real time with WER ≤ 0.25, then says `closed`."""
    server = palabre_server("tiny.en")
    result = await stream_file(server.url, speech_dir / "en_fox.wav", language="en", speed=4)
    reference = speech_manifest["files"]["en_fox.wav"]["text"]
    assert result.types()[-1] == "closed", describe(result)
    assert result.spoken_finals, describe(result)
    score = wer(reference, joined(result))
    assert score <= 0.25, f"WER {score:.2f}: {joined(result)!r} vs {reference!r}\n{describe(result)}"
    for final in result.finals:
        assert final["language"] == "en"
    assert [f["seq"] for f in result.finals] == sorted(f["seq"] for f in result.finals)


async def test_partials_before_final_and_stable_append_only(palabre_server: Any, speech_dir: Path) -> None:
    """On a longer file, partials arrive before their final, and each `stable` extends the previous one."""
    server = palabre_server("tiny.en")
    result = await cached_stream(server.url, speech_dir / "en_meeting.wav", language="en", speed=1.5)
    assert result.types()[-1] == "closed", describe(result)
    assert result.partials, f"no partial at all\n{describe(result)}"

    final_at = {f["utterance_id"]: i for i, f in enumerate(result.events) if f["type"] == "final"}
    early = [
        p
        for i, p in enumerate(result.events)
        if p["type"] == "partial" and i < final_at.get(p["utterance_id"], len(result.events))
    ]
    assert early, f"no partial arrived before its utterance's final\n{describe(result)}"

    previous: dict[str, str] = {}
    for partial in result.partials:
        uid = partial["utterance_id"]
        assert partial["text"].startswith(partial["stable"]), partial
        stable = partial["stable"]
        before = previous.get(uid, "")
        assert stable.startswith(before), (
            f"stable text went back for {uid}: {before!r} → {stable!r}\n{describe(result)}"
        )
        previous[uid] = stable
        assert uid not in final_at or result.events.index(partial) < final_at[uid], (
            f"partial after the final of {uid}\n{describe(result)}"
        )


# --- (b) French ---------------------------------------------------------------------------------

FRENCH_MAX_WER = 0.35


async def test_french_with_language_fr(
    palabre_server: Any, speech_dir: Path, speech_manifest: dict[str, Any]
) -> None:
    """The default server (no --model) with language "fr": `base` writes French text within
    FRENCH_MAX_WER, finals tagged "fr"."""
    server = palabre_server(None)
    result = await stream_file(server.url, speech_dir / "fr_meeting.wav", language="fr", speed=2)
    assert result.ready.get("model") == "base", result.ready
    reference = speech_manifest["files"]["fr_meeting.wav"]["text"]
    assert result.types()[-1] == "closed", describe(result)
    assert result.spoken_finals, describe(result)
    score = wer(reference, joined(result), "fr")
    assert score <= FRENCH_MAX_WER, (
        f"WER {score:.2f}: {joined(result)!r} vs {reference!r}\n{describe(result)}"
    )
    assert {f["language"] for f in result.spoken_finals} == {"fr"}, describe(result)


async def test_french_detected_with_auto(palabre_server: Any, speech_dir: Path) -> None:
    """The default server with language "auto" detects French on the French meeting (on `base`)."""
    server = palabre_server(None)
    result = await stream_file(server.url, speech_dir / "fr_meeting.wav", language="auto", speed=2)
    assert result.ready.get("model") == "base", result.ready
    assert result.types()[-1] == "closed", describe(result)
    languages = [f["language"] for f in result.spoken_finals]
    assert languages, describe(result)
    # Detection is per utterance, and Whisper base takes a short espeak-ng French sentence for
    # Spanish or Romanian now and then: French must win, not be unanimous.
    counts = Counter(languages)
    assert counts.most_common(1)[0][0] == "fr" and counts["fr"] >= len(languages) / 2, (
        f"detected {languages}\n{describe(result)}"
    )


# --- (c) concurrent sessions stay apart --------------------------------------------------------

SPEAKERS = ("en_speaker_a.wav", "en_speaker_b.wav", "en_speaker_c.wav")


async def test_concurrent_sessions_get_only_their_own_words(
    palabre_server: Any, speech_dir: Path, speech_manifest: dict[str, Any]
) -> None:
    """Three sessions at once, different word sets: every final carries its own speaker's words only."""
    server = palabre_server("tiny.en")
    results = await asyncio.gather(
        *(stream_file(server.url, speech_dir / name, language="en", speed=1.5) for name in SPEAKERS)
    )
    refs = {name: content_words(speech_manifest["files"][name]["text"]) for name in SPEAKERS}
    for name, result in zip(SPEAKERS, results, strict=True):
        assert result.types()[-1] == "closed", f"{name}\n{describe(result)}"
        assert result.spoken_finals, f"{name}: no final\n{describe(result)}"
        own_total: set[str] = set()
        for final in result.spoken_finals:
            words = content_words(final["text"])
            if not words:
                continue
            own_total |= words
            own = len(words & refs[name]) / len(words)
            for other in SPEAKERS:
                if other == name:
                    continue
                leaked = words & (refs[other] - refs[name])
                assert len(leaked) <= 1, f"{name} final {final['text']!r} has {other}'s words {leaked}"
                assert own > len(words & refs[other]) / len(words), (name, final["text"], other)
            assert own >= 0.5, f"{name}: final {final['text']!r} is mostly not its words ({own:.0%})"
        share = len(own_total & refs[name]) / len(own_total)
        assert share >= 0.7, f"{name}: only {share:.0%} of {sorted(own_total)} in its reference"
        recall = len(own_total & refs[name]) / len(refs[name])
        assert recall >= 0.5, f"{name}: only {recall:.0%} of its reference words heard: {joined(result)!r}"


# --- (d) silence --------------------------------------------------------------------------------


async def test_silence_gives_no_text(palabre_server: Any, speech_dir: Path) -> None:
    """20 s of low noise: no final with text, and `closed` still arrives."""
    server = palabre_server("tiny.en")
    result = await stream_file(server.url, speech_dir / "silence_long.wav", language="en", speed=4)
    assert result.types()[-1] == "closed", describe(result)
    assert not result.spoken_finals, describe(result)
    assert not [p for p in result.partials if p["text"].strip()], describe(result)


async def test_long_silence_between_sentences(
    palabre_server: Any, speech_dir: Path, speech_manifest: dict[str, Any]
) -> None:
    """A sentence, 15 s of noise, a sentence: exactly those two finals, nothing made up between them."""
    server = palabre_server("tiny.en")
    result = await stream_file(server.url, speech_dir / "en_with_long_silence.wav", language="en", speed=3)
    utterances = speech_manifest["files"]["en_with_long_silence.wav"]["utterances"]
    assert result.types()[-1] == "closed", describe(result)
    finals = result.spoken_finals
    assert len(finals) == 2, describe(result)
    for final, utterance in zip(finals, utterances, strict=True):
        score = wer(utterance["text"], final["text"])
        assert score <= 0.3, f"WER {score:.2f}: {final['text']!r} vs {utterance['text']!r}"
    gap_start, gap_end = utterances[0]["end"], utterances[1]["start"]
    for final in result.finals:
        inside = final["start"] > gap_start + TIME_TOLERANCE_S and final["end"] < gap_end - TIME_TOLERANCE_S
        assert not inside, f"a final inside the silence: {final}"


# --- (e) protocol errors ------------------------------------------------------------------------


async def raw_exchange(url: str, messages: list[str | bytes], timeout: float = 15.0) -> list[dict[str, Any]]:
    """Send `messages` on a bare WebSocket and return the events received until an `error` or the close."""
    events: list[dict[str, Any]] = []
    async with connect(url) as ws:
        for message in messages:
            await ws.send(message)
        try:
            async with asyncio.timeout(timeout):
                async for message in ws:
                    event = json.loads(message)
                    events.append(event)
                    if event.get("type") == "error":
                        break
        except ConnectionClosed:
            pass
    return events


BAD_OPENINGS: list[tuple[str, list[str | bytes], str]] = [
    (
        "sample_rate 3",
        [json.dumps({"type": "start", "sample_rate": 3, "encoding": "pcm_s16le", "language": "en"})],
        "bad_start",
    ),
    (
        "encoding mp3",
        [json.dumps({"type": "start", "sample_rate": 16000, "encoding": "mp3", "language": "en"})],
        "bad_start",
    ),
    ("missing type", [json.dumps({"sample_rate": 16000, "encoding": "pcm_s16le"})], "unknown_type"),
    ("unknown type", [json.dumps({"type": "begin", "sample_rate": 16000})], "unknown_type"),
    ("not JSON", ["{start please"], "bad_json"),
    ("JSON not an object", ["[1, 2, 3]"], "bad_json"),
    ("audio before start", [b"\x00\x00" * 1600], "not_started"),
]


@pytest.mark.parametrize(("case", "messages", "code"), BAD_OPENINGS, ids=[c[0] for c in BAD_OPENINGS])
async def test_bad_openings_get_error_codes(
    palabre_server: Any, speech_dir: Path, case: str, messages: list[str | bytes], code: str
) -> None:
    """Each malformed opening is answered with an `error` of the right code; the server then still works."""
    server = palabre_server("tiny.en")
    events = await raw_exchange(server.url, messages)
    errors = [e for e in events if e.get("type") == "error"]
    assert errors, f"{case}: no error event, got {events}"
    assert errors[0]["code"] == code, f"{case}: {errors[0]}"
    assert not [e for e in events if e.get("type") == "ready"], f"{case}: got ready: {events}"

    result = await stream_file(server.url, speech_dir / "en_fox.wav", language="en", speed=4)
    assert result.spoken_finals and result.types()[-1] == "closed", describe(result)


async def test_sdk_raises_on_bad_start(palabre_server: Any) -> None:
    """The SDK's `open` turns the server's `bad_start` into a PalabreError with that code."""
    server = palabre_server("tiny.en")
    with pytest.raises(PalabreError) as info:
        await StreamSession.open(server.url, sample_rate=3)
    assert info.value.code == "bad_start"
    with pytest.raises(PalabreError) as info:
        await StreamSession.open(server.url, encoding="mp3")
    assert info.value.code == "bad_start"


# --- (f) the command-line client -----------------------------------------------------------------


def client_command() -> list[str]:
    """The `palabre-client` console script next to this Python, else `-m palabre_client.cli`."""
    script = Path(sys.executable).parent / "palabre-client"
    return [str(script)] if script.exists() else [sys.executable, "-m", "palabre_client.cli"]


def test_cli_stream_json(palabre_server: Any, speech_dir: Path, speech_manifest: dict[str, Any]) -> None:
    """`palabre-client stream FILE --json` prints one JSON event per line, finals and `closed`, exit 0."""
    server = palabre_server("tiny.en")
    cmd = [
        *client_command(),
        "stream",
        str(speech_dir / "en_fox.wav"),
        "--url",
        server.url,
        "--language",
        "en",
        "--speed",
        "4",
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]
    types = [e["type"] for e in events]
    assert "final" in types, proc.stdout
    assert types[-1] == "closed", proc.stdout
    text = " ".join(e["text"] for e in events if e["type"] == "final")
    reference = speech_manifest["files"]["en_fox.wav"]["text"]
    assert wer(reference, text) <= 0.25, text  # as test_english_fox_wer: the finals are the transcript


# --- (g) timestamps -------------------------------------------------------------------------------


async def test_final_times_match_the_audio(
    palabre_server: Any, speech_dir: Path, speech_manifest: dict[str, Any]
) -> None:
    """Each utterance of the meeting gets one final whose start/end are within 0.6 s of the truth."""
    server = palabre_server("tiny.en")
    result = await cached_stream(server.url, speech_dir / "en_meeting.wav", language="en", speed=1.5)
    utterances = speech_manifest["files"]["en_meeting.wav"]["utterances"]
    finals = result.spoken_finals
    assert len(finals) == len(utterances), describe(result)
    for final, utterance in zip(finals, utterances, strict=True):
        assert abs(final["start"] - utterance["start"]) <= TIME_TOLERANCE_S, (final, utterance)
        assert abs(final["end"] - utterance["end"]) <= TIME_TOLERANCE_S, (final, utterance)
        score = wer(utterance["text"], final["text"])
        assert score <= 0.5, f"WER {score:.2f}: {final['text']!r} vs {utterance['text']!r}"
