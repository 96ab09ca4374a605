"""Partial-transcript stability: an append-only confirmed prefix plus an unstable tail.

LocalAgreement-2: a word becomes *stable* once two successive hypotheses of the same
utterance agree on it (and on every word before it). Stable words are never retracted in
later partials; the final transcript is authoritative and may still differ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "LocalAgreement",
    "PartialText",
]

_NORMALIZE = re.compile(r"[^\w']+", re.UNICODE)


def _key(word: str) -> str:
    """Compare words without case or punctuation: "Hello," agrees with "hello"."""
    return _NORMALIZE.sub("", word).lower()


@dataclass(slots=True)
class PartialText:
    stable: str
    unstable: str

    @property
    def text(self) -> str:
        return f"{self.stable} {self.unstable}".strip()


@dataclass(slots=True)
class LocalAgreement:
    """Tracks one utterance's successive hypotheses and its confirmed prefix."""

    stable_words: list[str] = field(default_factory=list)
    _previous: list[str] = field(default_factory=list)

    def update(self, hypothesis: str) -> PartialText:
        """Take a new hypothesis of the whole utterance so far; return the partial to show."""
        words = hypothesis.split()
        n = len(self.stable_words)
        # Only hypotheses that still start with the confirmed prefix can extend it.
        if [_key(w) for w in words[:n]] == [_key(w) for w in self.stable_words]:
            agreed = n
            limit = min(len(words), len(self._previous))
            while agreed < limit and _key(words[agreed]) == _key(self._previous[agreed]) != "":
                agreed += 1
            self.stable_words.extend(words[n:agreed])
            tail = words[agreed:]
        else:
            tail = self._tail_after_disagreement(words)
        self._previous = words
        return PartialText(" ".join(self.stable_words), " ".join(tail))

    def _tail_after_disagreement(self, words: list[str]) -> list[str]:
        """The hypothesis rewrote confirmed words: keep them, show what follows its best match."""
        keys = [_key(w) for w in words]
        last = _key(self.stable_words[-1]) if self.stable_words else ""
        for i in range(len(keys) - 1, -1, -1):
            if keys[i] == last:
                return words[i + 1 :]
        return words[len(self.stable_words) :]
