"""Transcript exports, each parsed back by an independent parser (webvtt-py, srt from PyPI)."""

from __future__ import annotations

import html
import io
from datetime import timedelta

import srt
import webvtt

from stream.transcript_formats import Transcript, TranscriptUtterance, render, timestamp

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
