"""stream/minutes.py: the few-shot prompt and the grounding of what the model writes."""

from __future__ import annotations

from stream.minutes import MinutesLine, build_minutes_request, minutes_items

LINES = [
    MinutesLine("c:0", "Alice", "We decided to hire two engineers next quarter."),
    MinutesLine("c:1", "Bob", "I will send the budget to finance on Monday."),
    MinutesLine("c:2", None, "Thanks everyone."),
]


def test_the_prompt_numbers_the_lines_after_the_examples_and_ends_at_decisions() -> None:
    request = build_minutes_request(LINES)
    assert request.prompt is not None and request.prompt.endswith(
        "Meeting:\n[1] Alice: We decided to hire two engineers next quarter.\n"
        "[2] Bob: I will send the budget to finance on Monday.\n[3] Speaker: Thanks everyone.\nDecisions:\n"
    )
    assert request.prompt.count("Meeting:") == 2 and "\nMeeting:" in request.stop
    long = build_minutes_request(LINES, max_chars=60).prompt
    assert long is not None and "[2]" not in long.split("Meeting:")[-1]


def test_only_grounded_items_citing_a_shown_line_are_kept() -> None:
    continuation = (
        "- Hire two engineers next quarter [1]\n"
        "- Buy a new office in Paris [1]\n"  # not what line 1 says
        "- Hire two engineers next quarter [1]\n"  # a repeat
        "- Launch the product [7]\n"  # no such line
        "- Thanks everyone [1]\n"  # the wrong line cited: attributed to the line that says it
        "no citation here\n"
        "Action items:\n"
        "- Bob will send the budget to finance on Monday [2].\n"
        "* Finance to approve [2]\n"
        "- Alice will send the budget to finance on Monday [2]\n"  # Bob said he will
    )
    notes = minutes_items(continuation, LINES)
    assert notes.decisions == [("Hire two engineers next quarter", "c:0"), ("Thanks everyone", "c:2")]
    assert notes.actions == [("Bob will send the budget to finance on Monday", "c:1")]
    assert minutes_items("", LINES).decisions == []
    assert minutes_items("- Hire two engineers [2]", LINES).decisions == [("Hire two engineers", "c:0")]
    assert minutes_items("- Send the budget [2]", LINES, max_chars=60).decisions == []  # line 2 not shown
