"""The `speakers` list of GET /v1/conversations/{id}: labels by first appearance, talk time, counts."""

from __future__ import annotations

from server.routes import speakers_json
from server.store import UtteranceRow


def row(seq: int, speaker: str | None, start: float, end: float) -> UtteranceRow:
    return UtteranceRow(id=seq + 1, public_id=f"c:{seq}", conversation_id="c", tenant_id="t", seq=seq,
                        text="x", start=start, end=end, language="en", speaker=speaker, track=None,
                        entities=None, created_at=0.0)


def test_speakers_in_order_of_first_appearance_with_talk_time() -> None:
    rows = [row(0, "S2", 0.0, 1.5), row(1, "S1", 2.0, 3.0), row(2, "S2", 3.5, 4.25), row(3, None, 5.0, 6.0)]
    assert speakers_json(rows) == [
        {"label": "S2", "name": None, "talk_time_s": 2.25, "utterances": 2},
        {"label": "S1", "name": None, "talk_time_s": 1.0, "utterances": 1},
    ]


def test_no_speakers() -> None:
    assert speakers_json([row(0, None, 0.0, 1.0)]) == []
