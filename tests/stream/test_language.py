"""Words of what was said, in English and French (pure: no model)."""

import pytest

from stream.language import (
    content_words,
    conversation_language,
    guess_language,
    memory_language,
    stem,
    stopwords,
    words,
)


def test_french_words_keep_accented_letters_and_fold_them() -> None:
    said = words("La réunion a été déplacée à jeudi.")
    assert said == ["la", "reunion", "a", "ete", "deplacee", "a", "jeudi"]
    assert words("RÉUNION") == words("réunion") == ["reunion"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("l'usager", ["usager"]),
        ("L’usager d’abord", ["usager", "abord"]),  # typographic apostrophes
        ("qu'il vienne jusqu'à lundi", ["il", "vienne", "a", "lundi"]),
        ("aujourd'hui", ["aujourd'hui"]),  # not an elision
    ],
)
def test_french_elisions_are_dropped(text: str, expected: list[str]) -> None:
    assert words(text) == expected


def test_english_words_are_as_before() -> None:
    assert words("It's the budget_plan, isn't it? 400 euros") == [
        "it's", "the", "budget", "plan", "isn't", "it", "400", "euros",
    ]


def test_stopwords_per_language() -> None:
    question = "Quel est le budget de l'équipe pour la réunion ?"
    assert content_words(question, "fr") == ["budget", "equipe", "reunion"]
    assert content_words("What is the budget of the team?", "en") == ["budget", "team"]
    assert "son" in stopwords("fr") and "son" not in stopwords("en")  # English "son" is a content word


def test_french_stems_match_inflections() -> None:
    assert stem("deplacee", "fr") == stem("deplace", "fr") == stem("deplacer", "fr")
    assert stem("reunions", "fr") == stem("reunion", "fr")
    assert stem("launching", "en") == stem("launch", "en")
    assert stem("2027", "fr") == "2027"


def test_memory_language_is_french_for_french_only() -> None:
    assert [memory_language(code) for code in ("fr", "FR", "fr-CA", "fra", "en", "de", None, "")] == [
        "fr", "fr", "fr", "fr", "en", "en", "en", "en",
    ]


def test_guess_language_from_stopwords() -> None:
    assert guess_language("Quel est le budget de l'équipe ?") == "fr"
    assert guess_language("What is the team's budget?") == "en"
    assert guess_language("Zyphrex") == "en" and guess_language("Zyphrex", default="fr") == "fr"


def test_conversation_language_declared_then_detected_then_guessed() -> None:
    assert conversation_language("fr", ["en", "en"], "What?") == "fr"
    assert conversation_language(None, ["fr", "", "fr", "en"], "What is it?") == "fr"
    assert conversation_language(None, [], "Qui mène le projet ?") == "fr"
    assert conversation_language(None, [""], "Who leads the project?") == "en"
