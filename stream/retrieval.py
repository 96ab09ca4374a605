"""Which utterances an answer's prompt shows: the question's nearest ones, then the latest ones.

The rule (`answer_context`), on utterance row ids (the vector index's keys):

1. The nearest utterances to the question, best first, at most `top_k` of them. When the question
   is about one conversation, only that conversation's utterances count (an id the index returned
   that is not one of them is skipped, not counted).
2. Then, for a question about one conversation, its `recent` most recent utterances that step 1
   did not already take, in conversation order: a question like "what did she just say?" needs
   the last thing said even when it matches the question's words poorly.
3. Each utterance at most once: duplicates keep their first place.

So at most `top_k + recent` passages, the best match first: the prompt numbers them [1]..[n] in
this order (`stream.answers.build_answer_request`).
"""

from __future__ import annotations

from collections.abc import Sequence


def answer_context(
    nearest: Sequence[int],
    conversation: Sequence[int] | None,
    *,
    top_k: int,
    recent: int,
) -> list[int]:
    """The row ids to show for a question, in prompt order.

    `nearest`: ids from the index, best first (it may return more than `top_k`). `conversation`:
    the ids of the conversation asked about, in conversation order, or None for a question about
    every conversation of the tenant (then `recent` does not apply).
    """
    allowed = None if conversation is None else set(conversation)
    chosen: list[int] = []
    seen: set[int] = set()
    for row_id in nearest:
        if len(chosen) >= top_k:
            break
        if row_id in seen or (allowed is not None and row_id not in allowed):
            continue
        chosen.append(row_id)
        seen.add(row_id)
    if conversation is not None and recent > 0:
        for row_id in conversation[-recent:]:
            if row_id not in seen:
                chosen.append(row_id)
                seen.add(row_id)
    return chosen
