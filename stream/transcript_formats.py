"""A conversation's transcript as the files people open: WebVTT, SRT, plain text, Markdown minutes.

Pure functions of a `Transcript` (no I/O): the server reads the conversation from the store, makes
a `Transcript` and serves what `render` returns (`GET /v1/conversations/{id}/transcript`).

* WebVTT (W3C): one cue per final, its id the `utterance_id`, the speaker (or track) as a voice
  span `<v Name>`; `&`, `<` and `>` escaped.
* SRT: cues numbered from 1, times with a comma, the speaker as a `Name: ` prefix.
* Plain text: one line per final, `[HH:MM:SS] Name: text`.
* Markdown minutes: title, date and duration, participants with their talk time, the latest
  summary's items, then the transcript.

Cues are in time order (two tracks interleave). A cue never ends before it starts: a final with
`end <= start` lasts one millisecond. A final whose words are known (`start.word_timestamps`) and
that is longer than `CUE_MAX_SECONDS` or `CUE_MAX_CHARS` is cut into several cues at word
boundaries, each timed by its words (WebVTT ids `<utterance_id>/1`, `/2`, …).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from stream.events import Word

__all__ = [
    "CUE_MAX_CHARS",
    "CUE_MAX_SECONDS",
    "FORMATS",
    "MEDIA_TYPES",
    "MarkdownWriter",
    "MinutesItem",
    "SrtWriter",
    "TalkTime",
    "TextWriter",
    "Transcript",
    "TranscriptFormat",
    "TranscriptUtterance",
    "TranscriptWriter",
    "WebVttWriter",
    "render",
    "timestamp",
]

TranscriptFormat = Literal["vtt", "srt", "txt", "md"]

CUE_MAX_SECONDS = 7.0
CUE_MAX_CHARS = 42
"""A subtitle cue cut from a final's words lasts at most this long and holds at most this many
characters (one word longer than either is a cue of its own)."""


@dataclass(frozen=True, slots=True)
class TranscriptUtterance:
    """One final as an export shows it."""

    utterance_id: str
    seq: int
    text: str
    start: float
    """Seconds from the conversation's start."""
    end: float
    speaker: str | None = None
    track: str | None = None
    words: Sequence[Word] | None = None
    """Its words with their times (conversation seconds), when known."""

    @property
    def who(self) -> str | None:
        """The name shown for it: the speaker when known, else the track (None: neither)."""
        return self.speaker or self.track


@dataclass(frozen=True, slots=True)
class Transcript:
    conversation_id: str
    utterances: Sequence[TranscriptUtterance]
    title: str | None = None
    language: str | None = None
    created_at: float | None = None
    """Seconds since the epoch."""
    summary: Sequence[str] = ()
    """The latest summary's items (empty: none)."""
    summary_method: str | None = None

    def in_time_order(self) -> list[TranscriptUtterance]:
        return sorted(self.utterances, key=lambda u: (u.start, u.seq))


def timestamp(seconds: float, decimal: str = ".") -> str:
    """`HH:MM:SS.mmm` (WebVTT) or, with `decimal=","`, `HH:MM:SS,mmm` (SRT)."""
    millis = max(round(seconds * 1000), 0)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _cue_times(u: TranscriptUtterance | _Cue, decimal: str) -> str:
    end = max(u.end, u.start + 0.001)
    return f"{timestamp(u.start, decimal)} --> {timestamp(end, decimal)}"


@dataclass(frozen=True, slots=True)
class _Cue:
    id: str
    text: str
    start: float
    end: float


def _cues(u: TranscriptUtterance) -> list[_Cue]:
    """The subtitle cues of a final: itself, or (words known, too long) its words in pieces of at
    most `CUE_MAX_SECONDS` and `CUE_MAX_CHARS`."""
    text = _one_line(u.text)
    words = [w for w in u.words or () if w.word.strip()]
    if not words or (len(text) <= CUE_MAX_CHARS and u.end - u.start <= CUE_MAX_SECONDS):
        return [_Cue(u.utterance_id, text, u.start, u.end)]
    pieces: list[list[Word]] = [[]]
    for word in words:
        piece = pieces[-1]
        longer = _one_line("".join(w.word for w in [*piece, word]))
        if piece and (len(longer) > CUE_MAX_CHARS or word.end - piece[0].start > CUE_MAX_SECONDS):
            pieces.append([word])
        else:
            piece.append(word)
    return [_Cue(f"{u.utterance_id}/{k}", _one_line("".join(w.word for w in piece)), piece[0].start,
                 piece[-1].end) for k, piece in enumerate(pieces, start=1)]


def _one_line(text: str) -> str:
    """Text on one line (a blank line would end a cue)."""
    return " ".join(text.split())


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class TranscriptWriter:
    """Renders a transcript piece by piece, so that a long one is never whole in memory:
    `head()`, then `page(utterances)` for each page of its utterances in time order (start, then
    seq), then `tail()`. The pieces joined are what `render` returns."""

    def head(self) -> str:
        return ""

    def page(self, utterances: Sequence[TranscriptUtterance]) -> str:
        return ""

    def tail(self) -> str:
        return ""


class WebVttWriter(TranscriptWriter):
    """WebVTT: one cue per final (or per piece of a long one), the speaker as a voice span."""

    def head(self) -> str:
        return "WEBVTT\n"

    def page(self, utterances: Sequence[TranscriptUtterance]) -> str:
        parts = []
        for u in utterances:
            for cue in _cues(u):
                text = _vtt_escape(cue.text)
                if u.who:
                    text = f"<v {_vtt_escape(_one_line(u.who))}>{text}"
                parts.append(f"\n{cue.id}\n{_cue_times(cue, '.')}\n{text}\n")
        return "".join(parts)


class SrtWriter(TranscriptWriter):
    """SubRip: cues numbered from 1 across pages, the speaker as a `Name: ` prefix."""

    def __init__(self) -> None:
        self._number = 0

    def page(self, utterances: Sequence[TranscriptUtterance]) -> str:
        parts = []
        for u in utterances:
            for cue in _cues(u):
                self._number += 1
                text = f"{_one_line(u.who)}: {cue.text}" if u.who else cue.text
                gap = "\n" if self._number > 1 else ""
                parts.append(f"{gap}{self._number}\n{_cue_times(cue, ',')}\n{text}\n")
        return "".join(parts)


class TextWriter(TranscriptWriter):
    """Plain text: one line per final."""

    def page(self, utterances: Sequence[TranscriptUtterance]) -> str:
        lines = []
        for u in utterances:
            who = f"{_one_line(u.who)}: " if u.who else ""
            lines.append(f"[{timestamp(u.start)[:8]}] {who}{_one_line(u.text)}\n")
        return "".join(lines)


@dataclass(slots=True)
class TalkTime:
    """What the minutes' header says of all the utterances (gathered page by page before the
    transcript is written): how many, how long, and each participant's share."""

    utterances: int = 0
    duration: float = 0.0
    """The latest end, in conversation seconds."""
    by_participant: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Participant (speaker, else track, else "(unknown)") → (utterances, seconds talked)."""

    def add(self, utterances: Sequence[TranscriptUtterance]) -> None:
        for u in utterances:
            who = u.who or "(unknown)"
            count, seconds = self.by_participant.get(who, (0, 0.0))
            self.by_participant[who] = (count + 1, seconds + max(u.end - u.start, 0.0))
            self.utterances += 1
            self.duration = max(self.duration, u.end)


@dataclass(frozen=True, slots=True)
class MinutesItem:
    """A decision or an action item of the minutes, with the utterance it comes from."""

    text: str
    utterance_id: str


class MarkdownWriter(TranscriptWriter):
    """Minutes: title, date and duration, participants and talk time, summary, decisions and
    action items (when given), then the transcript."""

    def __init__(
        self,
        transcript: Transcript,
        talk: TalkTime,
        decisions: Sequence[MinutesItem] | None = None,
        actions: Sequence[MinutesItem] | None = None,
    ) -> None:
        self._transcript = transcript
        self._talk = talk
        self._decisions = decisions
        self._actions = actions

    def head(self) -> str:
        transcript, talk = self._transcript, self._talk
        title = transcript.title or f"Conversation {transcript.conversation_id}"
        out = [f"# {_one_line(title)}", ""]
        if transcript.created_at is not None:
            out.append(f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(transcript.created_at))}")
        out += [f"- Duration: {timestamp(talk.duration)[:8]}", f"- Utterances: {talk.utterances}"]
        if transcript.language:
            out.append(f"- Language: {transcript.language}")
        out += ["", "## Participants", "", "| participant | utterances | talk time |", "|---|---|---|"]
        for who, (count, seconds) in sorted(talk.by_participant.items(), key=lambda item: -item[1][1]):
            out.append(f"| {_md_cell(who)} | {count} | {timestamp(seconds)[:8]} |")
        if transcript.summary:
            method = f" ({transcript.summary_method})" if transcript.summary_method else ""
            out += ["", f"## Summary{method}", ""]
            out += [f"- {_one_line(item)}" for item in transcript.summary]
        for heading, items in (("Decisions", self._decisions), ("Action items", self._actions)):
            if items is not None:
                out += ["", f"## {heading}", ""]
                out += [f"- {_one_line(i.text)} ({i.utterance_id})" for i in items] or ["- (none)"]
        out += ["", "## Transcript", ""]
        return "\n".join(out) + "\n"

    def page(self, utterances: Sequence[TranscriptUtterance]) -> str:
        lines = []
        for u in utterances:
            who = f" {_md_cell(u.who)}:" if u.who else ""
            lines.append(f"**[{timestamp(u.start)[:8]}]{who}** {_one_line(u.text)}  \n")
        return "".join(lines)


def _whole(writer: TranscriptWriter, utterances: Sequence[TranscriptUtterance]) -> str:
    return writer.head() + writer.page(utterances) + writer.tail()


def to_webvtt(transcript: Transcript) -> str:
    """The transcript as a WebVTT file."""
    return _whole(WebVttWriter(), transcript.in_time_order())


def to_srt(transcript: Transcript) -> str:
    """The transcript as a SubRip (SRT) file."""
    return _whole(SrtWriter(), transcript.in_time_order())


def to_text(transcript: Transcript) -> str:
    """The transcript as plain text: one line per final."""
    return _whole(TextWriter(), transcript.in_time_order())


def to_markdown(transcript: Transcript) -> str:
    """Minutes: title, date and duration, participants and talk time, summary, transcript."""
    utterances = transcript.in_time_order()
    talk = TalkTime()
    talk.add(utterances)
    return _whole(MarkdownWriter(transcript, talk), utterances)


def _md_cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|").replace("*", "\\*")


FORMATS: dict[TranscriptFormat, Callable[[Transcript], str]] = {
    "vtt": to_webvtt,
    "srt": to_srt,
    "txt": to_text,
    "md": to_markdown,
}
"""Every text format, by its `format=` name."""

MEDIA_TYPES: dict[str, str] = {
    "vtt": "text/vtt; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "json": "application/json",
}
"""The Content-Type of each export format (`json` is the server's own)."""


def render(transcript: Transcript, fmt: TranscriptFormat) -> str:
    """The transcript in one of `FORMATS`."""
    return FORMATS[fmt](transcript)
