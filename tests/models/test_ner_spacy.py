"""Named entities with the real spaCy pipelines (English and French) plus Palabre's date/amount rules."""

from __future__ import annotations

import pytest

from models.ner_spacy import SpacyNer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ner() -> SpacyNer:
    return SpacyNer()


def labels(found: list) -> dict[str, str]:  # type: ignore[type-arg]
    return {e.text: e.label for e in found}


def test_english_people_places_dates_amounts(ner: SpacyNer) -> None:
    text = (
        "Marie Curie will meet the board of Airbus in London on Friday about four hundred thousand euros."
    )
    found = labels(ner.entities(text, "en"))
    assert found.get("London") == "place", found
    assert found.get("Friday") == "date"
    assert found.get("four hundred thousand euros") == "amount"
    assert any(label == "person" for label in found.values())


def test_french_gets_dates_and_amounts_from_the_rules(ner: SpacyNer) -> None:
    found = labels(
        ner.entities(
            "Marie enverra le rapport à Airbus à Toulouse vendredi pour deux cent mille euros.", "fr"
        )
    )
    assert found.get("Marie") == "person"
    assert found.get("Toulouse") == "place"
    assert found.get("vendredi") == "date"
    assert found.get("deux cent mille euros") == "amount"


def test_offsets_point_into_the_text(ner: SpacyNer) -> None:
    text = "We pay 300 dollars in March."
    entities = ner.entities(text, "en")
    assert {e.text for e in entities} >= {"300 dollars", "March"}, entities
    for entity in entities:
        assert text[entity.start : entity.end] == entity.text


def test_unknown_language_or_empty_text_has_no_entities(ner: SpacyNer) -> None:
    assert ner.entities("Guten Tag, Herr Müller aus Berlin.", "de") == []
    assert ner.entities("   ", "en") == []
