"""The Markdown minutes' decisions and action items, written by the bundled generative model
(Gemma 3 270M on llama.cpp, CPU) through the real server, and grounded in the transcript."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable

import pytest

from server.store import Store
from stream.minutes import GROUNDED_SHARE
from tests.conftest import PalabreServer

pytestmark = pytest.mark.slow

MEETING = [
    ("alice", "Good morning everyone, the agenda today is the new office."),
    ("bob", "We decided to open the Lyon office in September."),
    ("alice", "Paul will send the lease to the lawyers on Monday."),
    ("bob", "And Marie will hire two engineers for Lyon."),
    ("alice", "Thank you, that is all for today."),
]
"""Nothing of it is in the prompt's example meeting (a copied example item must not pass)."""


def words(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"\w{3,}", text)]


def test_the_minutes_have_decisions_and_actions_grounded_in_the_transcript(
    palabre_server: Callable[..., PalabreServer],
) -> None:
    server = palabre_server("tiny.en")
    with Store.open(server.data_dir / "palabre.db") as store:  # beside the running server
        store.open_conversation("default", "minutes-1", "en")
        for seq, (track, text) in enumerate(MEETING):
            start = seq * 4.0
            store.add_utterance("default", "minutes-1", seq, text, start, start + 3.5, "en", track=track)
    url = f"{server.http}/v1/conversations/minutes-1/transcript?format=md"
    with urllib.request.urlopen(url, timeout=60) as response:
        md = response.read().decode()
    assert "## Decisions" in md and "## Action items" in md, md
    section = md.split("## Decisions", 1)[1].split("## Transcript", 1)[0]
    items = re.findall(r"^- (.+) \((minutes-1:\d+)\)$", section, flags=re.M)
    said = {f"minutes-1:{seq}": text for seq, (_, text) in enumerate(MEETING)}
    for text, utterance_id in items:
        item_words = words(text)
        assert sum(w in words(said[utterance_id]) for w in item_words) >= GROUNDED_SHARE * len(item_words)
    print(f"{len(items)} grounded items:\n{section}")
