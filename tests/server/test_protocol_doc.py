"""docs/protocol.md against the code: every message type, event field, error and close code.

The lists come from the code itself: the server events of `stream.events.ServerEvent` (their
`type` and fields), the client message parsers of `server.codecs.native.PARSERS`, `ErrorCode` and
`CloseCode`. A new event, message or code that the document does not describe fails here.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from server.codecs.native import PARSERS
from stream.errors import CloseCode, ErrorCode
from stream.events import ServerEvent

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

SERVER_EVENTS: list[Any] = list(typing.get_args(ServerEvent))
"""The dataclass of every server → client event."""


def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def headings(text: str) -> set[str]:
    """The backquoted names in the document's `###` headings (one heading may name several)."""
    return {
        name
        for line in text.splitlines()
        if line.startswith("### ")
        for name in re.findall(r"`([^`]+)`", line)
    }


def json_examples(text: str) -> list[dict[str, Any]]:
    """Every JSON object with a `type` written in the document (examples that do not parse as
    JSON, such as those with a `…` outside a string, are skipped)."""
    decoder = json.JSONDecoder()
    found = []
    for match in re.finditer(r'\{"type":', text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        found.append(value)
    return found


def table_column(text: str, section: str) -> list[str]:
    """The first cells of the table under the `## section` heading."""
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in body.splitlines() if line.startswith("|")]
    return [line.split("|")[1].strip() for line in lines[2:]]  # after the header and its rule


def test_the_lists_come_from_the_code() -> None:
    assert {"ready", "final", "error", "answer.done", "summary", "webrtc.answer"} <= {
        cls.type for cls in SERVER_EVENTS
    }
    assert {"start", "stop", "ask", "webrtc.offer"} <= set(PARSERS)


@pytest.mark.parametrize("event", SERVER_EVENTS, ids=lambda cls: cls.type)
def test_every_server_event_has_a_section_and_a_faithful_example(event: Any) -> None:
    text = doc()
    assert event.type in headings(text), f"no ### heading names `{event.type}` in docs/protocol.md"
    fields = {f.name for f in dataclasses.fields(event)}
    optional = {f.name for f in dataclasses.fields(event) if f.metadata.get("omit_default")}
    examples = [e for e in json_examples(text) if e["type"] == event.type]
    assert examples, f'docs/protocol.md has no JSON example {{"type":"{event.type}",…}}'
    exact = [e for e in examples if fields - optional <= set(e) - {"type"} <= fields]
    assert exact, (
        f"no example of {event.type} has exactly its fields {sorted(fields)}; "
        f"the examples have {[sorted(set(e) - {'type'}) for e in examples]}"
    )


@pytest.mark.parametrize("kind", sorted(PARSERS))
def test_every_client_message_has_an_example(kind: str) -> None:
    assert any(e["type"] == kind for e in json_examples(doc())), (
        f'docs/protocol.md has no JSON example {{"type":"{kind}",…}}'
    )


def test_every_error_code_is_in_the_table_and_nothing_else() -> None:
    documented = [cell.strip("`") for cell in table_column(doc(), "Error codes")]
    missing = sorted(code.value for code in ErrorCode if code.value not in documented)
    assert not missing, f"error codes missing from docs/protocol.md: {missing}"
    assert sorted(documented) == sorted(code.value for code in ErrorCode), "unknown or repeated codes"


def test_every_close_code_is_in_the_table() -> None:
    documented = {int(cell) for cell in table_column(doc(), "Close codes")}
    missing = sorted(code.value for code in CloseCode if code.value not in documented)
    assert not missing, f"close codes missing from docs/protocol.md: {missing}"


def test_the_error_table_says_how_each_closing_error_closes() -> None:
    """An error the table says closes the connection names a close code Palabre has."""
    text = doc().split("## Error codes\n", 1)[1].split("\n## ", 1)[0]
    closes = {int(n) for n in re.findall(r"closed, (\d{4})", text)}
    assert closes and closes <= {code.value for code in CloseCode}
