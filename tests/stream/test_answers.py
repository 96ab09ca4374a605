"""The grounded-answer and summary prompt policy (pure: no model)."""

import pytest

from stream.answers import (
    ANSWER_STOP,
    CANNOT_ANSWER,
    CANNOT_ANSWER_FR,
    Passage,
    answer_citations,
    build_answer_request,
    build_summary_request,
    clean_answer,
    fallback_answer,
    finalize_answer,
    format_passages,
    is_cannot_answer,
    is_grounded,
    is_relevant,
    model_can_summarise,
    parse_citations,
    repair_citations,
    summary_items,
    supporting_utterances,
    truncate,
)
from stream.events import SummaryItem

BUDGET = Passage("c1:4", 4, "The marketing budget for next year is four hundred thousand euros.", 61.0, "Ana")
LAUNCH = Passage("c1:9", 9, "We launch the new website on the twelfth of May.", 130.5, "Tom")
LUNCH = Passage("c1:2", 2, "Lunch is at noon.", 20.0, None)
PASSAGES = [BUDGET, LAUNCH, LUNCH]


def test_base_prompt_is_few_shot_and_ends_with_the_question() -> None:
    request = build_answer_request("What is the marketing budget?", PASSAGES, chat=False)
    assert request.messages == () and request.prompt is not None
    prompt = request.prompt
    assert prompt.count("Question:") == 4 and prompt.count("Answer:") == 4  # 3 examples + the question
    assert f"Answer: {CANNOT_ANSWER}" in prompt  # the refusal example
    assert "[1]\n" in prompt and "[2]\n" in prompt  # cited examples, marker last on the line
    assert prompt.endswith(
        "Passages:\n"
        "[1] Ana: The marketing budget for next year is four hundred thousand euros.\n"
        "[2] Tom: We launch the new website on the twelfth of May.\n"
        "[3] Lunch is at noon.\n"
        "Question: What is the marketing budget?\nAnswer:"
    )
    assert request.stop == ANSWER_STOP and "\n" in request.stop
    assert request.temperature == 0.0 and request.max_tokens == 120


def test_chat_request_has_system_rules_and_the_passages() -> None:
    request = build_answer_request("When do we launch?", PASSAGES, chat=True, max_tokens=80)
    assert request.prompt is None and request.max_tokens == 80
    (role0, system), (role1, user) = request.messages
    assert (role0, role1) == ("system", "user")
    assert "ONLY" in system and "[n]" in system and CANNOT_ANSWER in system
    assert "[2] Tom: We launch the new website" in user and user.endswith("Question: When do we launch?")


def test_prompt_stays_short_with_long_passages() -> None:
    long = [Passage(f"c:{i}", i, "word " * 400, float(i), "S") for i in range(5)]
    request = build_answer_request("what\nwas said?", long, chat=False)
    assert request.prompt is not None
    assert len(request.prompt) < 3000  # about 700 tokens at most
    assert "what was said?" in request.prompt  # newlines in the question cannot end the prompt early


def test_truncate_cuts_at_a_word() -> None:
    assert truncate("short", 10) == "short"
    assert truncate("one two three four", 12) == "one two…"
    assert len(truncate("x" * 50, 10)) <= 10


def test_format_passages_numbers_from_one_and_flattens_newlines() -> None:
    text = format_passages([Passage("a:0", 0, "line one\nline two", 0.0, None)])
    assert text == "[1] line one line two"
    assert format_passages([]) == "(none)"


def test_parse_citations_keeps_valid_markers_in_order() -> None:
    assert parse_citations("It is [2], see also [1].", PASSAGES) == ["c1:9", "c1:4"]
    assert parse_citations("Both [1, 3] and [3][1].", PASSAGES) == ["c1:4", "c1:2"]
    assert parse_citations("Nothing [7] or [0] here.", PASSAGES) == []
    assert parse_citations("No markers.", PASSAGES) == []


def test_citations_fall_back_to_all_retrieved_passages() -> None:
    assert answer_citations("Four hundred thousand euros [1].", PASSAGES) == ["c1:4"]
    assert answer_citations("Four hundred thousand euros.", PASSAGES) == ["c1:4", "c1:9", "c1:2"]
    assert answer_citations("Euros [9].", PASSAGES) == ["c1:4", "c1:9", "c1:2"]


def test_clean_answer_keeps_the_first_line() -> None:
    assert clean_answer("  Four hundred euros [1].\nQuestion: x") == "Four hundred euros [1]."
    assert clean_answer("\n\nAnswer:  On  May 12 [2]. ") == "On May 12 [2]."
    assert clean_answer("   ") == ""


def test_cannot_answer_is_recognised() -> None:
    assert is_cannot_answer(CANNOT_ANSWER)
    assert is_cannot_answer("i cannot answer that from the conversation")
    assert not is_cannot_answer("I can answer: four hundred thousand euros.")


@pytest.mark.parametrize(
    ("answer", "grounded"),
    [
        ("Four hundred thousand euros [1].", True),
        ("The marketing budget is four hundred thousand euros [1].", True),
        ("We launch the website on the twelfth of May [2].", True),
        (CANNOT_ANSWER, True),
        ("Yes [1].", True),
        ("Yes.", False),
        ("", False),
        ("The budget is 500000 euros [1].", False),  # a number that nobody said
        ("Paris is the capital of France, famous for cheese and wine.", False),
    ],
)
def test_is_grounded(answer: str, grounded: bool) -> None:
    assert is_grounded(answer, PASSAGES) is grounded


def test_numbers_said_in_the_passages_are_grounded() -> None:
    passages = [Passage("c:1", 1, "Sales grew by 12 percent in 2025.", 0.0, None)]
    assert is_grounded("By 12 percent [1].", passages)
    assert not is_grounded("By 15 percent [1].", passages)


def test_relevance_rejects_a_copied_but_unrelated_passage() -> None:
    question = "What is the marketing budget?"
    assert is_relevant("Four hundred thousand euros [1]", PASSAGES, question)  # via its passage
    assert is_relevant("The marketing budget is large", PASSAGES, question)  # via the question's words
    assert not is_relevant("We launch the new website on the twelfth of May [1]", PASSAGES, question)
    assert is_relevant(CANNOT_ANSWER, PASSAGES, question)


def test_repair_points_markers_at_the_supporting_passage() -> None:
    assert repair_citations("Four hundred thousand euros [1]", PASSAGES) == "Four hundred thousand euros [1]"
    assert repair_citations("Four hundred thousand euros [2]", PASSAGES) == "Four hundred thousand euros [1]"
    assert repair_citations("On the twelfth of May [7].", PASSAGES) == "On the twelfth of May [2]."
    assert repair_citations("Noon [1, 3]", PASSAGES) == "Noon [3]"
    assert repair_citations("Yes [2]", PASSAGES) == "Yes [2]"  # no content word: kept as cited
    assert repair_citations("Bananas [2].", PASSAGES) == "Bananas."  # nothing supports it: removed


def test_fallback_quotes_the_top_passage() -> None:
    text = fallback_answer(PASSAGES)
    assert text.startswith(CANNOT_ANSWER)
    assert 'Ana said: "The marketing budget for next year is four hundred thousand euros." [1]' in text
    assert fallback_answer([]) == CANNOT_ANSWER


def test_finalize_keeps_a_grounded_answer_with_its_citations() -> None:
    final = finalize_answer(" Four hundred thousand euros [1].\n", PASSAGES)
    assert final.text == "Four hundred thousand euros [1]."
    assert final.citations == ["c1:4"] and final.grounded


def test_finalize_replaces_an_ungrounded_answer() -> None:
    final = finalize_answer("The budget is two million dollars, approved by the board.", PASSAGES)
    assert not final.grounded
    assert final.text == fallback_answer(PASSAGES)
    assert final.citations == ["c1:4"]  # the quoted top passage


def test_finalize_repairs_a_wrong_marker() -> None:
    final = finalize_answer("Four hundred thousand euros [3]", PASSAGES, "What is the marketing budget?")
    assert final.grounded and final.text == "Four hundred thousand euros [1]" and final.citations == ["c1:4"]


def test_finalize_replaces_an_answer_to_another_question() -> None:
    final = finalize_answer(
        "We launch the new website on the twelfth of May [2]", PASSAGES, "What is the marketing budget?"
    )
    assert not final.grounded and final.text == fallback_answer(PASSAGES)


def test_finalize_refusal_cites_all_retrieved_passages() -> None:
    final = finalize_answer("I cannot answer that from the conversation", PASSAGES)
    assert final.text == CANNOT_ANSWER and final.grounded
    assert final.citations == ["c1:4", "c1:9", "c1:2"]


def test_finalize_without_passages() -> None:
    final = finalize_answer("Anything.", [])
    assert final.text == CANNOT_ANSWER and final.citations == []


def test_only_chat_models_summarise() -> None:
    assert model_can_summarise(True)
    assert not model_can_summarise(False)
    with pytest.raises(ValueError, match="extractive"):
        build_summary_request(PASSAGES, None, chat=False)


def test_summary_request_has_sections_previous_summary_and_utterances() -> None:
    request = build_summary_request([BUDGET, LAUNCH], "Key points:\n- Budget discussed", chat=True)
    (_, system), (_, user) = request.messages
    for heading in ("Key points:", "Decisions:", "Action items:"):
        assert heading in system
    assert "Key points:\n- Budget discussed" in user
    assert "Ana: The marketing budget" in user and "Tom: We launch" in user
    assert user.index("Ana:") < user.index("Tom:")
    assert "(none yet)" in build_summary_request([BUDGET], None).messages[1][1]


def test_summary_keeps_the_most_recent_utterances_that_fit() -> None:
    utterances = [
        Passage(f"c:{i}", i, f"utterance number {i} " + "x" * 80, float(i), None) for i in range(200)
    ]
    user = build_summary_request(utterances, None, max_chars=1000).messages[1][1]
    assert "utterance number 199" in user and "utterance number 0 " not in user
    assert len(user) < 1400


def test_a_generative_summary_is_read_back_into_items_by_section() -> None:
    reply = (
        "**Key points:**\n"
        "- The marketing budget is four hundred thousand euros.\n"
        "* The website launches in May.\n"
        "\n"
        "Decisions:\n"
        "- None\n"
        "## Action items:\n"
        "1. Tom: prepare the website launch\n"
    )
    assert summary_items(reply, PASSAGES) == [
        SummaryItem("The marketing budget is four hundred thousand euros.", ["c1:4"], "key_points"),
        SummaryItem("The website launches in May.", ["c1:9"], "key_points"),
        SummaryItem("Tom: prepare the website launch", ["c1:9"], "action_items"),
    ]


def test_lines_before_any_heading_are_items_without_a_section() -> None:
    assert summary_items("They talked about lunch.\n", PASSAGES) == [
        SummaryItem("They talked about lunch.", ["c1:2"], None)
    ]
    assert summary_items("", PASSAGES) == []
    assert summary_items("Key points:\n- None\n", PASSAGES) == []


def test_supporting_utterances_share_the_most_words_in_conversation_order() -> None:
    said = [
        Passage("c:0", 0, "Hello everyone.", 0.0),
        Passage("c:1", 1, "The budget for marketing next year.", 1.0),
        Passage("c:2", 2, "Marketing budget: four hundred thousand euros.", 2.0),
        Passage("c:3", 3, "And the marketing team grows.", 3.0),
    ]
    point = "The marketing budget grows next year."  # shares 4 words with c:1, 2 with c:2 and c:3
    assert supporting_utterances(point, said) == ["c:1", "c:2", "c:3"]
    assert supporting_utterances(point, said, limit=2) == ["c:1", "c:2"]
    assert supporting_utterances(point, said, limit=1) == ["c:1"]
    # c:2 shares 6 words, c:1 only 2: less than half as many as the best
    assert supporting_utterances("The marketing budget is four hundred thousand euros.", said) == ["c:2"]
    assert supporting_utterances("Nothing in common here.", said) == []


# --- in French ---------------------------------------------------------------------------------

BUDGET_FR = Passage(
    "c2:3", 3, "Le budget marketing de l'année prochaine est de quatre cent mille euros.", 12.0, "Ana"
)
REUNION_FR = Passage("c2:5", 5, "La réunion avec l'usager est déplacée à jeudi.", 30.0, "Tom")
PASSAGES_FR = [BUDGET_FR, REUNION_FR]


def test_french_prompts_are_in_french() -> None:
    base = build_answer_request("Quand a lieu la réunion ?", PASSAGES_FR, chat=False, language="fr")
    assert base.prompt is not None and base.stop == ANSWER_STOP
    assert base.prompt.count("Réponse:") == 4 and f"Réponse: {CANNOT_ANSWER_FR}" in base.prompt
    assert base.prompt.endswith("[2] Tom: La réunion avec l'usager est déplacée à jeudi.\n"
                                "Question: Quand a lieu la réunion ?\nRéponse:")
    chat = build_answer_request("Quand a lieu la réunion ?", PASSAGES_FR, chat=True, language="fr")
    (_, system), (_, user) = chat.messages
    assert "UNIQUEMENT" in system and CANNOT_ANSWER_FR in system and "[n]" in system
    assert user.endswith("Question: Quand a lieu la réunion ?")
    # Any other language is English.
    assert build_answer_request("Wann?", PASSAGES, chat=True, language="de").messages[0][1] == (
        build_answer_request("Wann?", PASSAGES, chat=True).messages[0][1]
    )


def test_a_french_answer_is_grounded_on_accented_words() -> None:
    answer = "La réunion est déplacée à jeudi [1]."
    question = "Quand a lieu la réunion avec l'usager ?"
    final = finalize_answer("Réponse: " + answer, PASSAGES_FR, question, "fr")
    assert final.grounded and final.text == "La réunion est déplacée à jeudi [2]."
    assert final.citations == ["c2:5"]


def test_french_refusal_and_fallback() -> None:
    assert is_cannot_answer(CANNOT_ANSWER_FR) and is_cannot_answer("je ne peux pas repondre.")
    final = finalize_answer(CANNOT_ANSWER_FR, PASSAGES_FR, "Qui dirige l'équipe ?", "fr")
    assert final.text == CANNOT_ANSWER_FR and final.grounded
    final = finalize_answer("Le lancement est en mai [1].", PASSAGES_FR, "Quand est le lancement ?", "fr")
    assert not final.grounded
    assert final.text == f'{CANNOT_ANSWER_FR} Ana a dit: "{BUDGET_FR.text}" [1]'
    closest = f"{CANNOT_ANSWER_FR} Le passage le plus proche dit:"
    assert fallback_answer([LUNCH], language="fr").startswith(closest)
    assert finalize_answer("", [], "Quoi ?", "fr").text == CANNOT_ANSWER_FR


def test_french_summary_request_and_headings() -> None:
    request = build_summary_request(PASSAGES_FR, None, chat=True, language="fr")
    (_, system), (_, user) = request.messages
    assert "'Points clés:', 'Décisions:', 'Actions:'" in system
    assert user.startswith("Résumé jusqu'ici :\n(aucun pour l'instant)") and "Tom: La réunion" in user
    text = (
        "**Points clés :**\n- Budget de 400 000 euros\n"
        "Décisions:\n- Réunion déplacée à jeudi\nActions:\n- Aucun"
    )
    items = summary_items(text, PASSAGES_FR, "fr")
    assert [(item.section, item.utterance_ids) for item in items] == [
        ("key_points", ["c2:3"]), ("decisions", ["c2:5"]),
    ]
