"""Decisions and action items of the Markdown minutes, from a generative model (pure: no I/O).

The bundled model (Gemma 3 270M) is a base model: it continues text rather than following
instructions, so `build_minutes_request` writes a few-shot completion prompt — a short example
meeting with numbered lines then `Decisions:` and `Action items:` lists whose items cite the
line they come from as `[n]` — followed by the conversation's numbered lines and `Decisions:`.
`minutes_items` reads the model's continuation back and keeps only grounded items: most of an
item's words must be words of the line it cites or, when that line does not hold them (a small
model often cites the wrong number), of the shown line that holds most of them; the item is then
attributed to that line. A small model invents freely; what it invents is dropped, so the minutes
may list fewer items than were said, never items nobody said. A person an item names (a speaker,
or a capitalised word inside a sentence of the transcript) must be named in its line too, or be
its speaker speaking of themselves ("I will…").
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
    lines: Sequence[MinutesLine], *, max_chars: int = MINUTES_MAX_CHARS, max_tokens: int = 120
) -> LlmRequest:
    """A completion prompt asking a base model for the decisions and action items of `lines`."""
    shown = _shown(lines, max_chars)
    prompt = _EXAMPLES + "Meeting:\n" + "\n".join(shown) + "\nDecisions:\n"
    return LlmRequest(prompt=prompt, max_tokens=max_tokens, stop=("\nMeeting:", "\n\n"), temperature=0.0)


_ITEM = re.compile(r"^\s*[-*]\s*(?P<text>.+?)\s*\[(?P<n>\d+)\]\s*\.?\s*$")
_WORD = re.compile(r"\w{3,}")


def _share(item: str, line: str) -> float:
    """The share of the item's words (3 letters or more) that are words of `line`."""
    words = [w.lower() for w in _WORD.findall(item)]
    said = {w.lower() for w in _WORD.findall(line)}
    return sum(w in said for w in words) / len(words) if words else 0.0


def _names(lines: Sequence[MinutesLine]) -> set[str]:
    """The people the shown lines name (lower-cased): the speakers, and capitalised words that do
    not start a sentence."""
    names = {line.who.lower() for line in lines if line.who}
    for line in lines:
        for before, word in re.findall(r"(\S?)\s+([A-Z][a-z]\w+)", line.text):
            if before not in ".!?":
                names.add(word.lower())
    return names


def _grounded(item: str, line: MinutesLine, names: set[str]) -> bool:
    """Most of the item's words are the line's, and every person it names is named in the line
    (its speaker counts when it speaks of itself, "I will…"; a small model puts the example's or
    the speaker's name on someone else's task)."""
    said = {w.lower() for w in _WORD.findall(line.text)}
    if line.who and re.search(r"\bI\b|\bI'", line.text):  # "I will…": the speaker is named
        said.add(line.who.lower())
    named = {w.lower() for w in _WORD.findall(item) if w.lower() in names}
    return _share(item, line.text) >= GROUNDED_SHARE and named <= said


def _source(item: str, cited: int, lines: Sequence[MinutesLine]) -> MinutesLine | None:
    """The line (of `lines`, the ones shown) that grounds `item`: the cited one (1-based) when it
    does, else the one holding most of its words when that one does; None when none does."""
    names = _names(lines)
    if 1 <= cited <= len(lines) and _grounded(item, lines[cited - 1], names):
        return lines[cited - 1]
    best = max(lines, key=lambda line: _share(item, line.text), default=None)
    return best if best is not None and _grounded(item, best, names) else None


def minutes_items(
    continuation: str, lines: Sequence[MinutesLine], *, max_chars: int = MINUTES_MAX_CHARS
) -> MinutesNotes:
    """The grounded decisions and action items in what the model wrote after the prompt of
    `build_minutes_request(lines)` (which ends with `Decisions:`)."""
    shown = lines[: len(_shown(lines, max_chars))]
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
        text = match["text"].strip()
        source = _source(text, int(match["n"]), shown)
        if source is None:
            continue
        key = (text.lower(), source.utterance_id)
        if key not in seen:
            seen.add(key)
            target.append((text, source.utterance_id))
    return notes
