"""Decisions and action items of the Markdown minutes, from a generative model (pure: no I/O).

The bundled model (Gemma 3 270M) is a base model: it continues text rather than following
instructions, so `build_minutes_request` writes a few-shot completion prompt — two short example
meetings, each with numbered lines then `Decisions:` and `Action items:` lists whose items cite the
line they come from as `[n]` — followed by the conversation's numbered lines and `Decisions:`.
`minutes_items` reads the model's continuation back and keeps only grounded items: each must cite
a line that was shown, and most of its words must be words of that line. A small model invents
freely; what it invents is dropped, so the minutes may list fewer items than were said, never
items nobody said.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from stream.interfaces import LlmRequest

__all__ = ["MINUTES_MAX_CHARS", "MinutesLine", "MinutesNotes", "build_minutes_request", "minutes_items"]

MINUTES_MAX_CHARS = 3000
"""The conversation text given to the model at most (its last lines are dropped beyond it): the
bundled model's context is small, and a long prompt is slow on a CPU."""

GROUNDED_SHARE = 0.6
"""An item is kept when at least this share of its words (3 letters or more) are in its line."""

_EXAMPLES = """Meeting:
[1] Alice: Let's move the launch to March, everyone agrees?
[2] Bob: Yes, March works. I will update the roadmap by Friday.
[3] Alice: Good. Carol, can you call the printer about the brochures?
Decisions:
- Move the launch to March [1]
Action items:
- Bob will update the roadmap by Friday [2]
- Carol to call the printer about the brochures [3]

Meeting:
[1] Dan: We keep the current supplier for another year.
[2] Eve: Fine. I'll send the signed contract tomorrow.
Decisions:
- Keep the current supplier for another year [1]
Action items:
- Eve will send the signed contract tomorrow [2]

"""


@dataclass(frozen=True, slots=True)
class MinutesLine:
    """One utterance as the model sees it."""

    utterance_id: str
    who: str | None
    text: str


@dataclass(frozen=True, slots=True)
class MinutesNotes:
    """Grounded items, each with the `utterance_id` it comes from."""

    decisions: list[tuple[str, str]]
    actions: list[tuple[str, str]]


def _shown(lines: Sequence[MinutesLine], max_chars: int) -> list[str]:
    out: list[str] = []
    used = 0
    for n, line in enumerate(lines, start=1):
        text = f"[{n}] {line.who or 'Speaker'}: {' '.join(line.text.split())}"
        if used + len(text) > max_chars:
            break
        out.append(text)
        used += len(text) + 1
    return out


def build_minutes_request(
    lines: Sequence[MinutesLine], *, max_chars: int = MINUTES_MAX_CHARS, max_tokens: int = 160
) -> LlmRequest:
    """A completion prompt asking a base model for the decisions and action items of `lines`."""
    shown = _shown(lines, max_chars)
    prompt = _EXAMPLES + "Meeting:\n" + "\n".join(shown) + "\nDecisions:\n"
    return LlmRequest(prompt=prompt, max_tokens=max_tokens, stop=("\nMeeting:", "\n\n"), temperature=0.0)


_ITEM = re.compile(r"^\s*[-*]\s*(?P<text>.+?)\s*\[(?P<n>\d+)\]\s*\.?\s*$")
_WORD = re.compile(r"\w{3,}")


def _grounded(item: str, line: str) -> bool:
    words = [w.lower() for w in _WORD.findall(item)]
    said = {w.lower() for w in _WORD.findall(line)}
    return bool(words) and sum(w in said for w in words) >= GROUNDED_SHARE * len(words)


def minutes_items(
    continuation: str, lines: Sequence[MinutesLine], *, max_chars: int = MINUTES_MAX_CHARS
) -> MinutesNotes:
    """The grounded decisions and action items in what the model wrote after the prompt of
    `build_minutes_request(lines)` (which ends with `Decisions:`)."""
    shown = len(_shown(lines, max_chars))
    notes = MinutesNotes([], [])
    target = notes.decisions
    seen: set[tuple[str, str]] = set()
    for raw in continuation.splitlines():
        if raw.strip().lower().rstrip(":") in ("action items", "actions"):
            target = notes.actions
            continue
        match = _ITEM.match(raw)
        if match is None:
            continue
        n, text = int(match["n"]), match["text"].strip()
        if not 1 <= n <= shown or not _grounded(text, lines[n - 1].text):
            continue
        key = (text.lower(), lines[n - 1].utterance_id)
        if key not in seen:
            seen.add(key)
            target.append((text, lines[n - 1].utterance_id))
    return notes
