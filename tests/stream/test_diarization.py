"""Online speaker clustering on fixed vectors: new speakers, thresholds, merges, missing vectors."""

from __future__ import annotations

import numpy as np
import pytest

from stream.diarization import Diarizer


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def deg(angle: float) -> np.ndarray:
    """The unit vector at `angle` degrees from E1 towards E2."""
    r = np.radians(angle)
    return np.array([np.cos(r), np.sin(r), 0.0], dtype=np.float32)


E1, E2, E3 = unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)


def test_labels_in_order_of_first_appearance() -> None:
    d = Diarizer(threshold=0.7)
    labels = [d.assign(v).label for v in (E2, E1, E2, E3, E1)]
    assert labels == ["S1", "S2", "S1", "S3", "S2"]
    assert d.labels == ["S1", "S2", "S3"]


def test_the_first_utterance_is_a_new_speaker() -> None:
    first = Diarizer().assign(E1)
    assert first.label == "S1" and first.new_speaker and first.similarity is None


@pytest.mark.parametrize(("x", "label"), [(0.5, "S1"), (0.5001, "S1"), (0.4999, "S2")])
def test_threshold_edge_joins_at_exactly_the_threshold(x: float, label: str) -> None:
    d = Diarizer(threshold=0.5, merge_threshold=0.99)
    d.assign(E1)
    out = d.assign(np.array([x, np.sqrt(1 - x * x), 0], dtype=np.float32))  # cosine x with E1
    assert out.label == label
    if label == "S1":
        assert out.similarity == pytest.approx(x, abs=1e-7)


def test_centroids_follow_the_speaker() -> None:
    """A voice drifting by small steps, each close to the running centroid, stays one speaker even
    once it is far below the threshold from where it started."""
    d = Diarizer(threshold=0.8, merge_threshold=0.99)
    labels = [d.assign(deg(a)).label for a in range(0, 60, 5)]
    assert labels == ["S1"] * 12
    assert float(deg(55) @ E1) < 0.6


def feed_until_merged(d: Diarizer, angle: float) -> tuple[list[str | None], dict[str, str]]:
    """Labels given to vectors at `angle` until one merges labels (at most 10)."""
    labels: list[str | None] = []
    for _ in range(10):
        out = d.assign(deg(angle))
        labels.append(out.label)
        if out.merged:
            return labels, out.merged
    return labels, {}


def test_a_merge_is_announced_once_and_the_label_never_comes_back() -> None:
    d = Diarizer(threshold=0.8, merge_threshold=0.9)
    assert d.assign(deg(0)).label == "S1"
    assert d.assign(deg(40)).new_speaker  # cos 40° = 0.77 < 0.8: S2
    # speech between both, nearer S2: S2's centroid drifts towards S1 until they are one speaker
    labels, merged = feed_until_merged(d, 22)
    assert merged == {"S2": "S1"}
    assert labels[:-1] == ["S2"] * (len(labels) - 1) and labels[-1] == "S1"
    assert d.labels == ["S1"]
    later = d.assign(deg(40))
    assert later.label == "S1" and later.merged == {}
    assert d.resolve("S2") == "S1"


def test_merges_chain_to_the_earliest_label() -> None:
    d = Diarizer(threshold=0.8, merge_threshold=0.85)
    assert [d.assign(deg(a)).label for a in (0, 40, 80)] == ["S1", "S2", "S3"]
    assert d.assign(deg(62)).merged == {"S3": "S2"}
    # a voice sliding from S2 towards S1 drags S2's centroid along until S2 is S1 too
    merges = [(a, out.merged) for a in range(40, 10, -2) if (out := d.assign(deg(a))).merged]
    assert merges[0][1] == {"S2": "S1", "S3": "S1"}
    assert d.labels == ["S1"] and d.resolve("S3") == "S1"


def test_no_vector_takes_the_previous_label_or_none() -> None:
    d = Diarizer()
    first = d.assign(None)
    assert first.label is None and first.reason == "no_embedding"
    d.assign(E1)
    d.assign(E2)
    out = d.assign(None)
    assert out.label == "S2" and out.reason == "no_embedding" and not out.new_speaker


def test_thresholds_are_checked() -> None:
    with pytest.raises(ValueError, match="threshold"):
        Diarizer(threshold=0.9, merge_threshold=0.8)
