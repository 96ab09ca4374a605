"""Redaction rules (`stream.redaction`) on the labelled set of tests/fixtures/redaction_set.json,
checksums, partials, and names through a recogniser (a fake here; the real one in bench/redaction.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stream.events import Final, Partial, Word
from stream.interfaces import Entity
from stream.redaction import (
    REDACTION_KINDS,
    Redactor,
    check_redaction,
    find_spans,
    iban_valid,
    luhn_valid,
    redact_event,
)

SET = Path(__file__).parents[1] / "fixtures" / "redaction_set.json"
CASES: list[dict[str, Any]] = json.loads(SET.read_text(encoding="utf-8"))["cases"]
RULE_KINDS = [k for k in REDACTION_KINDS if k != "person"]


def test_the_labelled_set_is_large_and_bilingual() -> None:
    assert len(CASES) >= 40
    assert {c["language"] for c in CASES} == {"en", "fr"}
    assert sum(not c["spans"] for c in CASES) >= 10  # negatives
    for case in CASES:
        for _, substring in case["spans"]:
            assert substring in case["text"]


@pytest.mark.parametrize("case", CASES, ids=[c["text"][:40] for c in CASES])
def test_rules_find_exactly_the_labelled_spans(case: dict[str, Any]) -> None:
    text = case["text"]
    found = sorted((s.kind, text[s.start : s.end]) for s in find_spans(text, RULE_KINDS))
    assert found == sorted((k, s) for k, s in case["spans"] if k != "person")


def test_only_the_asked_kinds_are_redacted() -> None:
    text = "Call 06 12 34 56 78 or write to jean@orange.fr, card 4111 1111 1111 1111."
    assert (
        Redactor(["phone"]).redact(text, "fr")
        == "Call [PHONE] or write to jean@orange.fr, card 4111 1111 1111 1111."
    )
    assert (
        Redactor(["email", "card"]).redact(text, "fr")
        == "Call 06 12 34 56 78 or write to [EMAIL], card [CARD]."
    )
    assert Redactor([]).redact(text, "fr") == text


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112") and not luhn_valid("12ab")
    assert iban_valid("FR7630006000011234567890189") and iban_valid("gb82west12345698765432")
    assert not iban_valid("FR7630006000011234567890188") and not iban_valid("FR76")


def test_check_redaction() -> None:
    assert check_redaction(["card", "phone", "card"]) == ("phone", "card")
    for bad in ("phone", ["phone", "ssn"], [None]):
        with pytest.raises(ValueError, match="redact"):
            check_redaction(bad)


class Names:
    """A recogniser that knows a few names (the real spaCy one is measured by bench/redaction.py)."""

    name = "names"

    def __init__(self, *names: str) -> None:
        self.names = names
        self.calls = 0

    def entities(self, text: str, language: str) -> list[Entity]:
        self.calls += 1
        found = []
        for name in self.names:
            at = text.find(name)
            if at >= 0:
                found.append(Entity(name, "person", at, at + len(name)))
        return found


def test_names_come_from_the_recogniser_only_when_person_is_asked() -> None:
    names = Names("John Smith")
    text = "John Smith called from 415-555-2671."
    assert Redactor(["person", "phone"], names).redact(text, "en") == "[PERSON] called from [PHONE]."
    assert Redactor(["phone"], names).redact(text, "en") == "John Smith called from [PHONE]."
    assert names.calls == 1 and not Redactor(["phone"], names).needs_recognizer


@pytest.mark.parametrize(
    ("text", "stable", "shown", "kept"),
    [
        ("appelez le zéro six douze", "appelez le", "appelez le [PHONE]", "appelez le"),
        ("my email is john at exam", "my email is", "my email is [EMAIL]", "my email is"),
        ("call 06 12 34 56 78 now", "call 06 12", "call [PHONE] now", "call [PHONE]"),
        ("card 4111 1111", "card", "card [PHONE]", "card"),
        ("in room 12 today", "in room", "in room 12 today", "in room"),
    ],
)
def test_a_partial_hides_the_number_or_address_still_being_spoken(
    text: str, stable: str, shown: str, kept: str
) -> None:
    assert Redactor(["phone", "email", "card"]).partial(text, stable, "en") == (shown, kept)


def test_redact_event_keeps_a_partials_stable_prefix() -> None:
    redactor = Redactor(["phone"])
    partial = Partial("c:0", "call 06 12 34 56 78 now", "call 06 12 34", " 56 78 now", 0.0, 1.0)
    out = redact_event(redactor, partial, "fr")
    assert isinstance(out, Partial)
    assert (out.text, out.stable, out.unstable) == ("call [PHONE] now", "call [PHONE]", " now")
    final = redact_event(redactor, Final("c:0", "06 12 34 56 78", 0.0, 1.0, "fr", 0), "fr")
    assert final.text == "[PHONE]"


def test_a_redacted_finals_words_hide_the_span_and_keep_its_time() -> None:
    said = ["Call", " me", " at", " 06", " 12", " 34", " 56", " 78", " today."]
    words = tuple(Word(w, float(k), float(k) + 0.9, 0.9 - k / 100) for k, w in enumerate(said))
    final = Final(utterance_id="c:0", text="".join(said), start=0.0, end=9.0, language="en", seq=0,
                  words=words)
    out = redact_event(Redactor(["phone"]), final, "en")
    assert isinstance(out, Final) and out.words is not None
    assert "".join(w.word for w in out.words) == out.text == "Call me at [PHONE] today."
    phone = next(w for w in out.words if "PHONE" in w.word)
    assert (phone.word, phone.start, phone.end, phone.probability) == (" [PHONE]", 3.0, 7.9, 0.9 - 7 / 100)
    assert not any(any(c.isdigit() for c in w.word) for w in out.words)
    # Words that do not make up the text are dropped rather than risk keeping a number.
    odd = Final(utterance_id="c:0", text="Call me at 06 12 34 56 78", start=0.0, end=9.0, language="en",
                seq=0, words=(Word("06 12 34 56 78", 0.0, 1.0, 0.9),))
    assert redact_event(Redactor(["phone"]), odd, "en").words == ()  # type: ignore[union-attr]
