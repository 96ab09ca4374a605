"""Extractive summaries on hand-made vectors."""

from __future__ import annotations

import numpy as np

from stream.summary import centrality, extractive_summary


def unit(*rows: list[float]) -> np.ndarray:
    matrix = np.array(rows, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


# Three topics in a 4-d space: budget (x), hiring (y), weather (z, said once, off topic).
BUDGET = [1.0, 0.1, 0.0, 0.0]
BUDGET_AGAIN = [1.0, 0.12, 0.0, 0.0]
BUDGET_TOO = [0.9, 0.3, 0.0, 0.1]
HIRING = [0.3, 1.0, 0.0, 0.0]
HIRING_TOO = [0.2, 1.0, 0.1, 0.0]
WEATHER = [0.0, 0.0, 1.0, 0.2]


def test_central_utterances_are_picked_over_the_outlier() -> None:
    vectors = unit(WEATHER, BUDGET, HIRING, BUDGET_TOO, HIRING_TOO)
    assert 0 not in extractive_summary(vectors, 2, redundancy=0.99)
    assert int(np.argmin(centrality(vectors))) == 0


def test_near_duplicates_are_said_once() -> None:
    vectors = unit(BUDGET, BUDGET_AGAIN, HIRING, WEATHER)
    chosen = extractive_summary(vectors, 3)
    assert len({0, 1} & set(chosen)) == 1
    assert 2 in chosen


def test_result_is_in_conversation_order() -> None:
    vectors = unit(HIRING, WEATHER, BUDGET_TOO, BUDGET, HIRING_TOO)
    chosen = extractive_summary(vectors, 3, redundancy=0.95)
    assert chosen == sorted(chosen)
    assert len(chosen) == 3


def test_k_larger_than_n_returns_each_distinct_utterance_once() -> None:
    vectors = unit(BUDGET, HIRING, BUDGET_AGAIN, WEATHER)
    assert extractive_summary(vectors, 10) in ([0, 1, 3], [1, 2, 3])
    assert extractive_summary(vectors, 10, redundancy=1.01) == [0, 1, 2, 3]


def test_exact_duplicates_keep_the_earliest() -> None:
    vectors = unit(HIRING, BUDGET, BUDGET, BUDGET)
    assert extractive_summary(vectors, 4) == [0, 1]


def test_degenerate_inputs() -> None:
    assert extractive_summary(np.zeros((0, 4), dtype=np.float32), 3) == []
    assert extractive_summary(unit(BUDGET), 0) == []
    assert extractive_summary(unit(BUDGET), 5) == [0]
    with_zero = np.vstack([unit(BUDGET), np.zeros((1, 4), dtype=np.float32)])
    assert extractive_summary(with_zero, 2) == [0, 1]


def test_unnormalised_input_is_treated_as_cosine() -> None:
    vectors = unit(BUDGET, HIRING, WEATHER, BUDGET_TOO)
    scaled = vectors * np.array([[3.0], [0.5], [7.0], [2.0]], dtype=np.float32)
    assert extractive_summary(scaled, 2) == extractive_summary(vectors, 2)


def test_centrality_matches_the_similarity_matrix() -> None:
    rng = np.random.default_rng(3)
    vectors = unit(*rng.standard_normal((12, 8)).tolist())
    similarity = vectors @ vectors.T
    expected = similarity.sum(axis=1) - np.diag(similarity)
    np.testing.assert_allclose(centrality(vectors), expected, rtol=1e-5, atol=1e-5)


def test_scales_to_a_long_conversation() -> None:
    rng = np.random.default_rng(0)
    topics = unit(*rng.standard_normal((5, 64)).tolist())
    rows = [topics[i % 5] + 0.02 * rng.standard_normal(64) for i in range(5000)]
    chosen = extractive_summary(np.array(rows, dtype=np.float32), 5, redundancy=0.8)
    assert len(chosen) == 5
    assert sorted(i % 5 for i in chosen) == [0, 1, 2, 3, 4]
