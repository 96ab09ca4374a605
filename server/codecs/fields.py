"""Field checks shared by the codecs: the language code a client may name, and how a received
value is shown in an error message."""

from __future__ import annotations

import re

LANGUAGE_CODE = re.compile(r"[A-Za-z]{2,3}")
"""A language code as clients send it: 2-3 letters (ISO 639-1 or 639-3), any case."""


def language_code(value: str) -> str | None:
    """A client's language: the code lower-cased, or None for "auto" (any case): detect it.

    Raises ValueError when `value` is neither; each codec words that error its own way.
    """
    if value.lower() == "auto":
        return None
    if LANGUAGE_CODE.fullmatch(value):
        return value.lower()
    raise ValueError(f"not a language code: {value!r}")


def show(value: object, limit: int = 40) -> str:
    """A short repr of a received value for an error message (cut to `limit` characters)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
