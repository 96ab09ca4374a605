"""Redaction: phone numbers, e-mail addresses, card numbers, IBANs and names replaced by a label.

A session started with `redact` (or whose tenant has a redaction default) has every partial and
final passed through a `Redactor` before it is stored, embedded, indexed or sent, so the
original text of a redacted span never leaves the session. Spans are replaced by `[PHONE]`,
`[EMAIL]`, `[CARD]`, `[IBAN]` or `[PERSON]`.

The rules are validated, not just shaped, so that order numbers and amounts stay:

* **card**: 13-19 digits passing the Luhn check;
* **iban**: a country code, two check digits and 11-30 letters or digits passing ISO 7064 mod 97;
* **phone**: French numbers (ten digits from 0[1-9], or +33 / 0033 and nine digits), numbers
  written with a `+` country code (8-15 digits), and North American ten-digit numbers
  ("(555) 123-4567", area code and exchange not starting with 0 or 1);
* **email**: written addresses and spoken ones as Whisper writes them ("john at example dot
  com", "jean point dupont arobase orange point fr");
* **person**: the PERSON / PER entities of the named-entity recogniser (`EntityRecognizer`).

Numbers are read whether written in digits or spoken, in English ("oh six one two", "double
five", "twenty-three") and French ("zéro six douze trente-quatre", "soixante-dix-huit",
"quatre-vingt-douze"). A partial may end in the middle of a number or an address: its trailing
number (3 digits or more) or address being spoken is hidden too, since the rules cannot tell yet
what it will be (`Redactor.partial`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, cast

from stream.events import Final, Partial, Word
from stream.interfaces import EntityRecognizer

__all__ = [
    "REDACTION_KINDS",
    "RedactionKind",
    "Redactor",
    "Span",
    "check_redaction",
    "find_spans",
    "iban_valid",
    "luhn_valid",
    "redact_event",
    "redact_spans",
    "redact_words",
]

RedactionKind = Literal["phone", "email", "card", "iban", "person"]
REDACTION_KINDS: tuple[RedactionKind, ...] = ("phone", "email", "card", "iban", "person")
NUMBER_KINDS: frozenset[str] = frozenset({"phone", "card", "iban"})


def check_redaction(value: object) -> tuple[RedactionKind, ...]:
    """The kinds of a `redact` list (JSON array of names), deduplicated in `REDACTION_KINDS` order.

    Raises ValueError naming what is wrong.
    """
    if not isinstance(value, list | tuple):
        raise ValueError(f"redact must be a list of kinds ({', '.join(REDACTION_KINDS)})")
    kinds = set()
    for item in value:
        if item not in REDACTION_KINDS:
            raise ValueError(f"redact: unknown kind {item!r}; kinds are {', '.join(REDACTION_KINDS)}")
        kinds.add(item)
    return tuple(kind for kind in REDACTION_KINDS if kind in kinds)


@dataclass(frozen=True, slots=True)
class Span:
    """A redacted stretch of text: characters `start` to `end`, of `kind`."""

    kind: RedactionKind
    start: int
    end: int


# --- checksums ------------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    """Whether a digit string passes the Luhn check (payment card numbers)."""
    if not digits.isdigit():
        return False
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """Whether a compact IBAN ("FR7630006000011234567890189") passes ISO 7064 mod 97."""
    iban = iban.upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", iban):
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


# --- spoken numbers -------------------------------------------------------------------------

_UNITS = {
    "zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9,
    "zéro": 0, "un": 1, "une": 1, "deux": 2, "trois": 3, "quatre": 4, "cinq": 5,
    "sept": 7, "huit": 8, "neuf": 9,
}  # fmt: skip
_TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
    "dix": 10, "onze": 11, "douze": 12, "treize": 13, "quatorze": 14, "quinze": 15, "seize": 16,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
    "vingt": 20, "vingts": 20, "trente": 30, "quarante": 40, "cinquante": 50, "soixante": 60,
}  # fmt: skip
_REPEAT = {"double": 2, "triple": 3}
_NUMBER_WORDS = {*_UNITS, *_TEENS, *_TENS, *_REPEAT, "et"}


@dataclass(slots=True)
class _Number:
    """A number read in the text: its digits and where it is."""

    digits: str
    start: int
    end: int
    written: bool
    """Written in digits (not spoken)."""
    plus: bool = False
    """Written with a leading `+` ("+44")."""


_TOKEN = re.compile(r"\+?\d+|[^\W\d_]+(?:[-'][^\W\d_]+)*|\S", re.UNICODE)


def _read_numbers(text: str) -> list[_Number]:
    """Every number of `text`, written or spoken, in order (a spoken one composed of its words)."""
    parts: list[tuple[str, int, int]] = []  # (word or digits, start, end), hyphenated words split
    for m in _TOKEN.finditer(text):
        word = m.group()
        if word[0].isalpha() and "-" in word and all(p.lower() in _NUMBER_WORDS for p in word.split("-")):
            for piece in word.split("-"):
                parts.append((piece, m.start(), m.end()))
        else:
            parts.append((word, m.start(), m.end()))
    numbers: list[_Number] = []
    i = 0
    while i < len(parts):
        word, start, end = parts[i]
        if word.lstrip("+").isdigit():
            numbers.append(_Number(word.lstrip("+"), start, end, written=True, plus=word[0] == "+"))
            i += 1
            continue
        value, used = _spoken_number([p[0].lower() for p in parts[i : i + 5]])
        if used:
            numbers.append(_Number(value, start, parts[i + used - 1][2], written=False))
            i += used
        else:
            i += 1
    return numbers


def _spoken_number(words: Sequence[str]) -> tuple[str, int]:
    """The digits of the spoken number that `words` start with, and how many words it takes (0:
    none). Numbers up to 99, French tens included (soixante-dix-huit, quatre-vingt-douze), and
    English "double five"."""
    if not words:
        return "", 0
    first = words[0]
    if first in _REPEAT and len(words) > 1 and words[1] in _UNITS:
        return str(_UNITS[words[1]]) * _REPEAT[first], 2
    if first == "quatre" and len(words) > 1 and words[1] in ("vingt", "vingts"):
        tens, used = 80, 2
    elif first in _TENS:
        tens, used = _TENS[first], 1
    elif first == "dix" and len(words) > 1 and words[1] in ("sept", "huit", "neuf"):
        return str(10 + _UNITS[words[1]]), 2
    elif first in _TEENS:
        return str(_TEENS[first]), 1
    elif first in _UNITS:
        return str(_UNITS[first]), 1
    else:
        return "", 0
    rest = list(words[used:])
    if rest[:1] == ["et"] and len(rest) > 1 and rest[1] in ("un", "une", "onze"):
        rest, used = rest[1:], used + 1
    if tens in (60, 80) and rest and rest[0] in _TEENS:
        return str(tens + _TEENS[rest[0]]), used + 1
    if tens in (60, 80) and rest[:2] in (["dix", "sept"], ["dix", "huit"], ["dix", "neuf"]):
        return str(tens + 10 + _UNITS[rest[1]]), used + 2
    if rest and rest[0] in _UNITS and _UNITS[rest[0]] > 0 and rest[0] != "oh":
        return str(tens + _UNITS[rest[0]]), used + 1
    return str(tens), used


_RUN_GAP = re.compile(r"[\s.\-/()]*|\s*,\s*")
_PLUS_BEFORE = re.compile(r"(?:\+|\bplus\s)\s*$", re.IGNORECASE)


def _number_runs(text: str, numbers: list[_Number]) -> list[list[_Number]]:
    """Numbers that follow each other with only separators between them, grouped."""
    runs: list[list[_Number]] = []
    for number in numbers:
        if runs:
            last = runs[-1][-1]
            gap = text[last.end : number.start]
            comma_between_digits = "," in gap and last.written and number.written
            if _RUN_GAP.fullmatch(gap) and not comma_between_digits:
                runs[-1].append(number)
                continue
        runs.append([number])
    return runs


_NANP_GROUPS = ((3, 3, 4), (10,), (1, 3, 3, 4), (11,))
"""How a North American number is written in digits (so "2024-000123" is not one)."""


def _number_kind(digits: str, plus: bool, groups: tuple[int, ...] | None) -> RedactionKind | None:
    """What a digit string is: a card (Luhn), a phone number, or nothing. `groups`: the lengths
    of its digit groups when written in digits (None when spoken)."""
    n = len(digits)
    nanp_written = groups is None or groups in _NANP_GROUPS
    if plus:
        return "phone" if 8 <= n <= 15 else None
    if 13 <= n <= 19 and luhn_valid(digits):
        return "card"
    if n == 10 and digits[0] == "0" and digits[1] != "0":
        return "phone"  # French national format
    if n == 13 and digits.startswith("0033") and digits[4] != "0":
        return "phone"
    if n == 11 and digits.startswith("33") and digits[2] in "123456789":
        return "phone"  # "+33" spoken as "trente-trois" without the plus heard
    if n == 10 and digits[0] in "23456789" and nanp_written:
        return "phone"  # North American
    if n == 11 and digits[0] == "1" and digits[1] in "23456789" and nanp_written:
        return "phone"
    return None


def _number_spans(text: str, kinds: frozenset[str]) -> list[Span]:
    """Phone and card numbers: the longest classified stretches of each run of numbers."""
    spans: list[Span] = []
    for run in _number_runs(text, _read_numbers(text)):
        i = 0
        while i < len(run):
            span = _longest_number_span(text, run, i, kinds)
            if span is None:
                i += 1
            else:
                spans.append(span[0])
                i = span[1]
    return spans


def _longest_number_span(
    text: str, run: list[_Number], i: int, kinds: frozenset[str]
) -> tuple[Span, int] | None:
    """The longest phone or card number of `run` from its number `i`, and the index after it."""
    spoken_plus = _PLUS_BEFORE.search(text[: run[i].start]) if i == 0 else None
    for j in range(len(run), i, -1):
        digits = "".join(n.digits for n in run[i:j])
        if len(digits) < 8:
            return None
        written = all(n.written for n in run[i:j])
        groups = tuple(len(n.digits) for n in run[i:j]) if written else None
        kind = _number_kind(digits, spoken_plus is not None or run[i].plus, groups)
        if kind is not None and kind in kinds:
            start = spoken_plus.start() if spoken_plus is not None else run[i].start
            if text[start - 1 : start] == "(":
                start -= 1
            return Span(kind, start, run[j - 1].end), j
    return None


_IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]){11,34}\b")


def _iban_spans(text: str) -> list[Span]:
    """IBANs written in groups or compact, validated by mod 97 (the longest valid prefix)."""
    spans = []
    for m in _IBAN.finditer(text):
        chars = [(i, c) for i, c in enumerate(m.group(), m.start()) if c != " "]
        for length in range(min(len(chars), 34), 14, -1):
            if iban_valid("".join(c for _, c in chars[:length])):
                spans.append(Span("iban", m.start(), chars[length - 1][0] + 1))
                break
    return spans


_IBAN_STARTED = re.compile(r"\b[A-Za-z]{2}\d{2}[A-Za-z0-9 ]*$")
"""An IBAN being spoken at the end of a partial ("FR76 3000")."""

_AT = r"(?:@|\s+(?:at|arobase|arrobase|arobas)\s+)"
_DOT = r"(?:\.|\s+(?:dot|point)\s+)"
_JOIN = r"(?:[._+-]|\s+(?:dot|point|underscore|tiret|dash|hyphen)\s+|\s+tiret\s+bas\s+)"
_LABEL = r"[^\W_]+"
_EMAIL = re.compile(
    rf"(?<![\w.@]){_LABEL}(?:{_JOIN}{_LABEL})*{_AT}{_LABEL}(?:{_DOT}{_LABEL})*{_DOT}[^\W\d_]{{2,12}}\b",
    re.IGNORECASE,
)
_EMAIL_STARTED = re.compile(
    rf"(?<![\w.@]){_LABEL}(?:{_JOIN}{_LABEL})*{_AT}(?:{_LABEL}(?:{_DOT}{_LABEL}?)*)?\W*$", re.IGNORECASE
)
"""An address being spoken at the end of a partial ("john at exam")."""


def _email_spans(text: str) -> list[Span]:
    return [Span("email", m.start(), m.end()) for m in _EMAIL.finditer(text)]


def find_spans(text: str, kinds: Iterable[str]) -> list[Span]:
    """The spans of `text` that the rules (not the NER) redact for `kinds`, sorted, not overlapping."""
    wanted = frozenset(kinds)
    spans: list[Span] = []
    if "email" in wanted:
        spans += _email_spans(text)
    if "iban" in wanted:
        spans += _iban_spans(text)
    if wanted & {"phone", "card"}:
        spans += _number_spans(text, wanted)
    return _merge(spans)


def _merge(spans: list[Span]) -> list[Span]:
    """Sorted spans with overlaps joined (the earlier-starting, then longer, span's kind)."""
    merged: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Span(last.kind, last.start, max(last.end, span.end))
        else:
            merged.append(span)
    return merged


def redact_spans(text: str, spans: Sequence[Span]) -> str:
    """`text` with each span (sorted, not overlapping) replaced by its label, e.g. `[PHONE]`."""
    out, pos = [], 0
    for span in spans:
        out.append(text[pos : span.start])
        out.append(f"[{span.kind.upper()}]")
        pos = span.end
    out.append(text[pos:])
    return "".join(out)


def redact_words(words: Sequence[Word], text: str, spans: Sequence[Span]) -> tuple[Word, ...]:
    """The words of a final's `text` once `spans` are redacted: the words a span touches become one
    word (the redacted text of those words) from the first one's start to the last one's end, with
    their lowest probability, so the words still make up the redacted text. Words that do not make
    up `text` are dropped (nothing of a span may survive in them)."""
    if "".join(w.word for w in words) != text:
        return ()
    groups: list[tuple[int, int, list[Word], set[int]]] = []  # (first char, end char, words, spans)
    position = 0
    for word in words:
        first, position = position, position + len(word.word)
        touched = {k for k, sp in enumerate(spans) if sp.start < position and sp.end > first}
        if groups and touched & groups[-1][3]:
            begin, _, merged, seen = groups[-1]
            groups[-1] = (begin, position, [*merged, word], seen | touched)
        else:
            groups.append((first, position, [word], touched))
    out = []
    for first, end, merged, touched in groups:
        if not touched:
            out.extend(merged)
            continue
        inside = [Span(spans[k].kind, spans[k].start - first, spans[k].end - first) for k in sorted(touched)]
        out.append(Word(word=redact_spans(text[first:end], inside), start=merged[0].start, end=merged[-1].end,
                        probability=min(w.probability for w in merged)))
    return tuple(out)


class Redactor:
    """Redacts the kinds a session asked for; names through an `EntityRecognizer` (may be None:
    then "person" finds nothing). `redact` may take milliseconds when names are asked (the
    recogniser runs): call it off the event loop then (`needs_recognizer`)."""

    def __init__(self, kinds: Iterable[RedactionKind], recognizer: EntityRecognizer | None = None) -> None:
        self.kinds = frozenset(kinds)
        self.recognizer = recognizer if "person" in self.kinds else None

    @property
    def needs_recognizer(self) -> bool:
        return self.recognizer is not None

    def __bool__(self) -> bool:
        return bool(self.kinds)

    def spans(self, text: str, language: str) -> list[Span]:
        """Every span to redact in `text` (a final's), rules and names."""
        spans = find_spans(text, self.kinds)
        if self.recognizer is not None and text.strip():
            spans += [
                Span("person", e.start, e.end)
                for e in self.recognizer.entities(text, language)
                if e.label == "person"
            ]
            spans = _merge(spans)
        return spans

    def redact(self, text: str, language: str) -> str:
        """A final's text, redacted."""
        return redact_spans(text, self.spans(text, language)) if self.kinds else text

    def partial(self, text: str, stable: str, language: str) -> tuple[str, str]:
        """A partial's `text` and `stable` prefix, redacted; the trailing number or address still
        being spoken is hidden too. The redacted `stable` is a prefix of the redacted `text`."""
        if not self.kinds:
            return text, stable
        shown = self._partial_text(text, language)
        kept = self._partial_text(stable, language) if stable else ""
        if not shown.startswith(kept):  # a number that became a span moved the boundary
            common = next((i for i, (a, b) in enumerate(zip(kept, shown, strict=False)) if a != b), len(kept))
            kept = shown[: shown.rfind(" ", 0, common) + 1]
        return shown, kept

    def _partial_text(self, text: str, language: str) -> str:
        spans = self.spans(text, language)
        tail = self._trailing_span(text, spans[-1].end if spans else 0)
        if tail is not None:
            spans = _merge([*spans, tail])
        return redact_spans(text, spans)

    def _trailing_span(self, text: str, after: int) -> Span | None:
        """The number or address at the end of a partial, not yet redacted (it may be cut)."""
        if "email" in self.kinds:
            m = _EMAIL_STARTED.search(text, after)
            if m is not None:
                return Span("email", m.start(), len(text))
        numeric = [k for k in REDACTION_KINDS if k in NUMBER_KINDS and k in self.kinds]
        if not numeric:
            return None
        numbers = [n for n in _read_numbers(text) if n.start >= after]
        runs = _number_runs(text, numbers)
        if not runs or text[runs[-1][-1].end :].strip(" .,?!"):
            iban = _IBAN_STARTED.search(text, after) if "iban" in self.kinds else None
            return Span("iban", iban.start(), len(text)) if iban else None
        run = runs[-1]
        if len("".join(n.digits for n in run)) < 3:
            return None
        plus = _PLUS_BEFORE.search(text[: run[0].start])
        start = plus.start() if plus is not None else run[0].start
        return Span(cast(RedactionKind, numeric[0]), start, len(text))


def redact_event(redactor: Redactor, event: Partial | Final, language: str) -> Partial | Final:
    """A partial or final with its text redacted (a partial's `stable` and `unstable` too)."""
    if isinstance(event, Final):
        spans = redactor.spans(event.text, event.language or language) if redactor.kinds else []
        words = redact_words(event.words, event.text, spans) if event.words is not None else None
        return replace(event, text=redact_spans(event.text, spans), words=words)
    text, stable = redactor.partial(event.text, event.stable, language)
    return replace(event, text=text, stable=stable, unstable=text[len(stable) :])
