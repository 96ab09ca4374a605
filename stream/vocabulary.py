"""A vocabulary: the names and terms a team uses, given to the recogniser as its prompt.

Whisper reads a prompt (text "said before") ahead of the speech; names written there are much
more likely to be heard as written ("Kessandra Vollmer", not "kiss and remover"). A session's
vocabulary is its ``start.vocabulary`` followed by its tenant's (`vocabulary_prompt` merges
them, each term once); the OpenAI Realtime ``transcription.prompt`` is one term of free text.

Bounds: a vocabulary sent by a client holds at most `MAX_VOCABULARY_TERMS` terms and
`MAX_VOCABULARY_BYTES` bytes of UTF-8 (`check_vocabulary`, which the codecs turn into
``bad_start``); the prompt built from it keeps whole terms, in order, up to `MAX_PROMPT_CHARS`
characters, so a long vocabulary costs the decoder a bounded number of prompt tokens (the engine
also keeps at most its own limit of prompt tokens).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "MAX_PROMPT_CHARS",
    "MAX_TERM_CHARS",
    "MAX_VOCABULARY_BYTES",
    "MAX_VOCABULARY_TERMS",
    "check_vocabulary",
    "vocabulary_prompt",
]

MAX_VOCABULARY_TERMS = 100
MAX_VOCABULARY_BYTES = 1024
"""The UTF-8 bytes of all the terms of a vocabulary together."""
MAX_TERM_CHARS = 100
MAX_PROMPT_CHARS = 600
"""The prompt keeps the first terms that fit in this many characters (about 150-250 tokens)."""
_SEPARATOR = ", "


def check_vocabulary(terms: object) -> tuple[str, ...]:
    """The terms of a vocabulary given by a client, trimmed; raises `ValueError` saying what is wrong.

    A vocabulary is a list of at most `MAX_VOCABULARY_TERMS` non-empty strings of printable
    characters, each at most `MAX_TERM_CHARS` characters, `MAX_VOCABULARY_BYTES` bytes in all.
    """
    if not isinstance(terms, list | tuple):
        raise ValueError("vocabulary must be a list of strings")
    if len(terms) > MAX_VOCABULARY_TERMS:
        raise ValueError(f"vocabulary has {len(terms)} terms; at most {MAX_VOCABULARY_TERMS}")
    checked: list[str] = []
    for term in terms:
        if not isinstance(term, str) or not term.strip():
            raise ValueError("each vocabulary term must be a non-empty string")
        term = " ".join(term.split())
        if len(term) > MAX_TERM_CHARS or not term.isprintable():
            shown = term if len(term) <= 40 else term[:40] + "…"
            raise ValueError(f"vocabulary term {shown!r} must be 1-{MAX_TERM_CHARS} printable characters")
        checked.append(term)
    size = sum(len(term.encode()) for term in checked)
    if size > MAX_VOCABULARY_BYTES:
        raise ValueError(f"vocabulary is {size} bytes; at most {MAX_VOCABULARY_BYTES}")
    return tuple(checked)


def vocabulary_prompt(*vocabularies: Sequence[str], max_chars: int = MAX_PROMPT_CHARS) -> str | None:
    """The recogniser's prompt for these vocabularies (a session's first, then its tenant's).

    The terms joined by ", ", each once (the first time it comes, case-insensitively), whole terms
    only, up to `max_chars` characters; a first term longer than that is cut at a word. None when
    there is no term.
    """
    kept: list[str] = []
    used = 0
    for term in _unique(t for vocabulary in vocabularies for t in vocabulary):
        cost = len(term) + (len(_SEPARATOR) if kept else 0)
        if used + cost > max_chars:
            if not kept:
                kept.append(_cut(term, max_chars))
            break
        kept.append(term)
        used += cost
    return _SEPARATOR.join(kept) or None


def _unique(terms: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    unique: list[str] = []
    for term in terms:
        term = " ".join(term.split())
        if term and term.casefold() not in seen:
            seen.add(term.casefold())
            unique.append(term)
    return unique


def _cut(text: str, max_chars: int) -> str:
    cut = text[:max_chars]
    return cut.rsplit(" ", 1)[0] if " " in cut and len(text) > max_chars else cut
