"""Which utterances an answer's prompt shows (stream/retrieval.py)."""

from __future__ import annotations

from stream.retrieval import answer_context

CONVERSATION = [10, 11, 12, 13, 14, 15]
"""Row ids of one conversation, in conversation order."""


def test_nearest_first_then_the_latest_ones() -> None:
    assert answer_context([12, 10], CONVERSATION, top_k=5, recent=2) == [12, 10, 14, 15]


def test_a_latest_utterance_already_retrieved_is_shown_once_in_its_retrieved_place() -> None:
    assert answer_context([15, 11], CONVERSATION, top_k=5, recent=2) == [15, 11, 14]


def test_at_most_top_k_nearest_and_recent_latest() -> None:
    nearest = [13, 12, 11, 10, 14]
    assert answer_context(nearest, CONVERSATION, top_k=3, recent=1) == [13, 12, 11, 15]
    assert answer_context(nearest, CONVERSATION, top_k=3, recent=0) == [13, 12, 11]
    assert answer_context([], CONVERSATION, top_k=3, recent=2) == [14, 15]


def test_ids_outside_the_conversation_and_duplicates_are_skipped_and_not_counted() -> None:
    assert answer_context([99, 12, 12, 98, 11, 10], CONVERSATION, top_k=2, recent=0) == [12, 11]


def test_a_question_about_every_conversation_takes_the_nearest_only() -> None:
    assert answer_context([7, 3, 7, 5, 1], None, top_k=3, recent=2) == [7, 3, 5]


def test_a_short_conversation_is_shown_whole() -> None:
    assert answer_context([11], [10, 11], top_k=5, recent=5) == [11, 10]
