"""Transcript exports, each parsed back by an independent parser (webvtt-py, srt from PyPI)."""

from __future__ import annotations

import html
import io
import itertools
from datetime import timedelta

import srt
import webvtt

from stream.events import Word
from stream.transcript_formats import (
    CUE_MAX_CHARS,
    CUE_MAX_SECONDS,
    Transcript,
    TranscriptUtterance,
    render,
    timestamp,
)

TWO_TRACKS = Transcript(
    conversation_id="call-1",
    title="Budget review",
    language="en",
    created_at=1_790_000_000.0,
    utterances=(
        TranscriptUtterance("call-1:1", 1, "Fine, and you?", 3.25, 4.5, track="bob"),
        TranscriptUtterance(
            "call-1:0", 0, "Hello <Bob> & welcome", 0.48, 2.34, speaker="Alice", track="alice"
        ),
        TranscriptUtterance("call-1:2", 2, "Line one\n\nline two", 3661.5, 3661.5),
    ),
    summary=("Alice greeted Bob.", "Bob is fine."),
    summary_method="extractive",
)


def test_timestamps() -> None:
    assert timestamp(3661.5) == "01:01:01.500"
    assert timestamp(0.0004, ",") == "00:00:00,000"
    assert timestamp(-1) == "00:00:00.000"


def test_webvtt_parses_with_voices_escapes_and_times_in_order() -> None:
    text = render(TWO_TRACKS, "vtt")
    captions = webvtt.from_buffer(io.StringIO(text)).captions
    assert [c.identifier for c in captions] == ["call-1:0", "call-1:1", "call-1:2"]
    assert [(c.start, c.end) for c in captions] == [
        ("00:00:00.480", "00:00:02.340"),
        ("00:00:03.250", "00:00:04.500"),
        ("01:01:01.500", "01:01:01.501"),  # a cue never ends before it starts
    ]
    assert captions[0].voice == "Alice" and captions[1].voice == "bob" and captions[2].voice is None
    assert captions[0].text == "Hello &lt;Bob&gt; &amp; welcome"  # escaped, as WebVTT requires
    assert html.unescape(captions[0].text) == "Hello <Bob> & welcome"
    assert captions[2].text == "Line one line two"


def test_srt_parses_with_speaker_prefixes() -> None:
    subtitles = list(srt.parse(render(TWO_TRACKS, "srt")))
    assert [s.index for s in subtitles] == [1, 2, 3]
    assert subtitles[0].start == timedelta(seconds=0.48) and subtitles[0].end == timedelta(seconds=2.34)
    assert [s.content for s in subtitles] == [
        "Alice: Hello <Bob> & welcome",
        "bob: Fine, and you?",
        "Line one line two",
    ]


def test_plain_text_and_markdown_minutes() -> None:
    assert render(TWO_TRACKS, "txt").splitlines() == [
        "[00:00:00] Alice: Hello <Bob> & welcome",
        "[00:00:03] bob: Fine, and you?",
        "[01:01:01] Line one line two",
    ]
    md = render(TWO_TRACKS, "md")
    assert md.startswith("# Budget review\n")
    assert "| Alice | 1 | 00:00:01 |" in md and "| bob | 1 | 00:00:01 |" in md
    assert "## Summary (extractive)\n\n- Alice greeted Bob.\n- Bob is fine." in md
    assert md.index("## Participants") < md.index("## Summary") < md.index("## Transcript")
    assert "**[00:00:03] bob:** Fine, and you?" in md


def test_an_empty_conversation_exports_valid_empty_files() -> None:
    empty = Transcript("c", ())
    assert webvtt.from_buffer(io.StringIO(render(empty, "vtt"))).captions == []
    assert list(srt.parse(render(empty, "srt"))) == []
    assert render(empty, "txt") == "" and render(empty, "md").startswith("# Conversation c\n")


def _timed(text: str, start: float, seconds_per_word: float) -> list[Word]:
    names = text.split(" ")
    return [Word(("" if k == 0 else " ") + name, start + k * seconds_per_word,
                 start + (k + 1) * seconds_per_word, 0.9) for k, name in enumerate(names)]


LONG = ("so the plan for next quarter is to hire two engineers and one designer "
        "and then ship the mobile app before the summer break")


def test_a_long_final_with_words_is_cut_into_cues_at_word_boundaries() -> None:
    words = _timed(LONG, 10.0, 0.5)
    long = TranscriptUtterance("c:0", 0, LONG, 10.0, words[-1].end, speaker="Alice", words=words)
    short = TranscriptUtterance("c:1", 1, "Sounds good.", 25.0, 26.0, words=_timed("Sounds good.", 25.0, 0.5))
    transcript = Transcript("c", [long, short])
    captions = webvtt.from_buffer(io.StringIO(render(transcript, "vtt"))).captions
    subtitles = list(srt.parse(render(transcript, "srt")))
    assert len(captions) == len(subtitles) > 3
    assert [c.identifier for c in captions][:2] == ["c:0/1", "c:0/2"] and captions[-1].identifier == "c:1"
    assert " ".join(html.unescape(c.raw_text).split(">", 1)[1] for c in captions[:-1]) == LONG
    assert " ".join(s.content.removeprefix("Alice: ") for s in subtitles[:-1]) == LONG
    for caption in captions[:-1]:
        assert len(caption.raw_text.split(">", 1)[1]) <= CUE_MAX_CHARS
        assert caption.end_in_seconds - caption.start_in_seconds <= CUE_MAX_SECONDS
    assert captions[0].start_in_seconds == 10.0 and captions[-2].end_in_seconds == words[-1].end
    starts = [c.start_in_seconds for c in captions]
    assert starts == sorted(starts)
    assert all(a.end_in_seconds <= b.start_in_seconds for a, b in itertools.pairwise(captions))


def test_a_long_final_without_words_stays_one_cue() -> None:
    transcript = Transcript("c", [TranscriptUtterance("c:0", 0, LONG, 10.0, 30.0)])
    captions = webvtt.from_buffer(io.StringIO(render(transcript, "vtt"))).captions
    assert [c.identifier for c in captions] == ["c:0"]
