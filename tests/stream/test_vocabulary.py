"""Vocabularies: checks of what a client sends, and the bounded prompt built from them."""

import pytest

from stream.vocabulary import (
    MAX_PROMPT_CHARS,
    MAX_VOCABULARY_BYTES,
    MAX_VOCABULARY_TERMS,
    check_vocabulary,
    vocabulary_prompt,
)


def test_terms_are_trimmed_and_kept_in_order() -> None:
    assert check_vocabulary(["Zyphrex", "  Kessandra   Vollmer "]) == ("Zyphrex", "Kessandra Vollmer")
    assert check_vocabulary([]) == ()


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ("Zyphrex,Kessandra", "must be a list of strings"),
        (["Zyphrex", 3], "non-empty string"),
        (["Zyphrex", "  "], "non-empty string"),
        (["x" * 101], "1-100 printable characters"),
        (["bell\x07inside"], "printable"),
        ([f"term{i}" for i in range(MAX_VOCABULARY_TERMS + 1)], "101 terms; at most 100"),
        ([("é" * 60) + str(i) for i in range(9)], f"bytes; at most {MAX_VOCABULARY_BYTES}"),
    ],
)
def test_bad_vocabularies_say_what_is_wrong(terms: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_vocabulary(terms)


def test_the_prompt_joins_terms_once_session_first() -> None:
    assert vocabulary_prompt(("Zyphrex", "Kessandra Vollmer"), ("Palabre", "zyphrex")) == (
        "Zyphrex, Kessandra Vollmer, Palabre"
    )
    assert vocabulary_prompt() is None and vocabulary_prompt((), ()) is None


def test_the_prompt_is_bounded_to_whole_terms() -> None:
    terms = [f"Name{i:03d}" for i in range(100)]
    prompt = vocabulary_prompt(terms)
    assert prompt is not None and len(prompt) <= MAX_PROMPT_CHARS
    assert prompt.startswith("Name000, Name001") and prompt.endswith(terms[len(prompt.split(", ")) - 1])
    assert vocabulary_prompt(["a b c d"], max_chars=5) == "a b"  # one long term is cut at a word
