"""Who is speaking: online clustering of one conversation's utterances by voice.

Each utterance brings one speaker vector (unit norm, from a `SpeakerEncoder`) or none (too short
or silent). `Diarizer.assign` gives it a label, stable for the whole conversation: ``S1``,
``S2``, … in order of first appearance, with no fixed number of speakers.

- A vector whose cosine similarity to every known speaker's centroid is below `threshold` starts
  a new speaker; otherwise it joins the most similar one (at exactly `threshold`, it joins), and
  that speaker's centroid (the mean of its vectors) moves towards it.
- When two centroids have come within `merge_threshold` of each other, the two labels were one
  speaker: the later label is merged into the earlier one. Labels already sent stay as they
  were; the merge is reported (`Assignment.merged`) so the caller can announce it, and the
  merged label is never given again.
- An utterance without a vector takes the label of the conversation's previous utterance (the
  nearest context), or None when there is none yet; `Assignment.reason` says why.

Pure: no I/O, no clock, no model. Vectors are numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_MERGE_THRESHOLD",
    "DEFAULT_THRESHOLD",
    "Assignment",
    "Diarizer",
    "Reason",
]

DEFAULT_THRESHOLD = 0.75
"""Cosine similarity to a centroid below which an utterance is a new speaker (resemblyzer
d-vectors: two readers' sentences are ≤ 0.62 alike, one reader's ≥ 0.73; the sb sequence of
`bench/diarization.py` is right from 0.70 to 0.80)."""
DEFAULT_MERGE_THRESHOLD = 0.82
"""Cosine similarity of two centroids above which their labels are one speaker."""

Vector = npt.NDArray[np.float32]
Reason = Literal["no_embedding"]
"""Why an utterance's label was not decided by its own voice: it gave no speaker vector."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """The label given to one utterance, and what changed."""

    label: str | None
    """``S1``, ``S2``, …; None when the utterance had no vector and nothing came before it."""
    similarity: float | None = None
    """Cosine similarity to the centroid it joined (None for a new speaker or no vector)."""
    reason: Reason | None = None
    """Set when the label came from the context instead of the utterance's voice."""
    merged: dict[str, str] = field(default_factory=dict)
    """Labels merged by this utterance: {merged label: the label it is now}, including labels
    merged earlier into a label merged now."""

    @property
    def new_speaker(self) -> bool:
        return self.label is not None and self.similarity is None and self.reason is None


@dataclass(slots=True)
class _Speaker:
    label: str
    total: npt.NDArray[np.float64]
    count: int

    def centroid(self) -> npt.NDArray[np.float64]:
        norm = float(np.linalg.norm(self.total))
        return self.total / norm if norm > 0 else self.total


class Diarizer:
    """The speakers of one conversation so far."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD,
                 merge_threshold: float = DEFAULT_MERGE_THRESHOLD) -> None:
        if not -1.0 <= threshold <= merge_threshold <= 1.0:
            raise ValueError("need -1 ≤ threshold ≤ merge_threshold ≤ 1")
        self.threshold = threshold
        self.merge_threshold = merge_threshold
        self._speakers: list[_Speaker] = []
        self._next = 1
        self.merged: dict[str, str] = {}
        """Every merge so far: {merged label: the label it is now}."""
        self.last_label: str | None = None

    @property
    def labels(self) -> list[str]:
        """The current labels, in order of first appearance."""
        return [s.label for s in self._speakers]

    def resolve(self, label: str) -> str:
        """What `label` is called now (itself unless it was merged)."""
        return self.merged.get(label, label)

    def assign(self, vector: Vector | None) -> Assignment:
        """Label the conversation's next utterance by its speaker vector (None: it had none)."""
        if vector is None:
            label = None if self.last_label is None else self.resolve(self.last_label)
            return Assignment(label, reason="no_embedding")
        v = np.asarray(vector, dtype=np.float64)
        best, similarity = self._nearest(v)
        if best is None or similarity < self.threshold:
            speaker = _Speaker(f"S{self._next}", v.copy(), 1)
            self._next += 1
            self._speakers.append(speaker)
            self.last_label = speaker.label
            return Assignment(speaker.label)
        best.total += v
        best.count += 1
        merged = self._merge_around(best)
        label = self.resolve(best.label)
        self.last_label = label
        return Assignment(label, similarity=similarity, merged=merged)

    def _nearest(self, v: npt.NDArray[np.float64]) -> tuple[_Speaker | None, float]:
        best: _Speaker | None = None
        best_sim = -2.0
        for speaker in self._speakers:
            sim = float(speaker.centroid() @ v)
            if sim > best_sim:
                best, best_sim = speaker, sim
        return best, best_sim

    def _merge_around(self, moved: _Speaker) -> dict[str, str]:
        """Merge every speaker whose centroid is now within `merge_threshold` of `moved`'s."""
        merged: dict[str, str] = {}
        while True:
            centre = moved.centroid()
            close = [s for s in self._speakers
                     if s is not moved and float(s.centroid() @ centre) >= self.merge_threshold]
            if not close:
                return merged
            other = close[0]
            keep, drop = (moved, other) if self._speakers.index(moved) < self._speakers.index(other) \
                else (other, moved)
            keep.total += drop.total
            keep.count += drop.count
            self._speakers.remove(drop)
            for label in [drop.label, *(a for a, b in self.merged.items() if b == drop.label)]:
                self.merged[label] = keep.label
                merged[label] = keep.label
            moved = keep
