"""Extractive summaries: pick a conversation's key utterances from their embeddings alone.

Pure numpy, no model: the caller embeds the utterances (or reads their vectors from the index).

An utterance is central when it resembles the rest of the conversation: its centrality is the sum
of its cosine similarities to every other utterance (LexRank's degree centrality, without the
graph threshold). For unit vectors that sum is ``v_i · (Σ_j v_j) − 1``, computed in O(n·dim)
without the n × n similarity matrix. Utterances are then taken from the most central down,
skipping any whose similarity to one already taken exceeds `redundancy` (maximal marginal
relevance in its simplest form: repeats and near-repeats are said once), until `k` are chosen.
They are returned in conversation order.
"""

from __future__ import annotations

import numpy as np

from stream.interfaces import Vectors

__all__ = [
    "centrality",
    "extractive_summary",
]


def centrality(vectors: Vectors) -> np.ndarray:
    """Each row's summed cosine similarity to the other rows.

    Rows need not be unit-norm; a zero row scores 0.
    """
    unit = _unit_rows(vectors)
    total = unit.sum(axis=0)
    self_similarity = np.einsum("ij,ij->i", unit, unit)
    return np.asarray(unit @ total - self_similarity, dtype=np.float64)


def extractive_summary(vectors: Vectors, k: int, *, redundancy: float = 0.85) -> list[int]:
    """Row indices of up to `k` key utterances, in conversation (row) order.

    `vectors` is the (n, dim) matrix of the conversation's utterance embeddings, row i being
    utterance i. A candidate whose cosine similarity to an utterance already chosen is above
    `redundancy` is skipped, so fewer than `k` may come back (never more than n). Ties in
    centrality go to the earlier utterance.
    """
    matrix = np.asarray(vectors, dtype=np.float32)
    if k <= 0 or matrix.ndim != 2 or matrix.shape[0] == 0:
        return []
    unit = _unit_rows(matrix)
    scores = centrality(unit)
    by_centrality = np.argsort(-scores, kind="stable")
    chosen: list[int] = []
    for candidate in by_centrality.tolist():
        if chosen and float(np.max(unit[chosen] @ unit[candidate])) > redundancy:
            continue
        chosen.append(candidate)
        if len(chosen) == k:
            break
    return sorted(chosen)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm; zero (or non-finite) rows become zero."""
    matrix = np.nan_to_num(np.asarray(matrix, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: np.ndarray = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    return unit
