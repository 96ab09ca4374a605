"""The prompt policy for grounded answers and live summaries: pure text in, `LlmRequest` out.

No model, no I/O: the server retrieves passages (utterances) for a question, builds a request
here, streams it through an `LlmEngine`, and gives the text back here to be checked and cited.

Answers
    `build_answer_request` numbers the passages [1]..[n] (the best match first) and asks for a
    short answer that cites them as [n], or exactly `CANNOT_ANSWER` when they do not hold it.
    Instruct models (``chat=True``) get a system message saying so; base models get a short
    few-shot completion prompt (three worked examples: two cited answers, one refusal) and stop
    at the end of the answer line.

The rules for ``answer.done`` (`finalize_answer`):
    1. The text is the model's first answer line, cleaned (`clean_answer`).
    2. An answer that is `CANNOT_ANSWER` (or starts like it) becomes exactly that sentence.
    3. Any other answer must pass `is_grounded` — every number in it appears in the passages and
       at least `GROUNDED_MIN_SHARE` of its content words do too — and, when the question is
       given, `is_relevant`: the question shares a content word with the answer or with the
       passage that supports it best. An answer that fails is replaced by `CANNOT_ANSWER`
       followed by the top passage quoted, cited as [1] (`fallback_answer`), so the user still
       sees the most relevant thing that was said. Deltas already streamed are superseded:
       ``answer.done`` carries the authoritative text.
    4. Markers are checked (`repair_citations`): a [n] that is out of range or names a passage
       sharing no content word with the answer is pointed at the passage that supports the
       answer best (the 270M base model copies marker numbers from its examples).
    5. Citations (`answer_citations`): the utterance ids of the passages the final text cites
       with valid [n] markers; when it cites none, all the retrieved passages. So the passages
       an answer relies on are always returned.

Summaries
    Only instruct models write summaries (`model_can_summarise`); for a base model the server
    uses its extractive summary instead (method ``"extractive"``). `build_summary_request`
    updates the previous summary with the utterances since, as key points, decisions and
    action items. `summary_items` reads the model's reply back into structured points, each
    with its section and the utterances that support it best (`supporting_utterances`), so
    clients never parse bullet text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from stream.events import SummaryItem, SummarySection
from stream.interfaces import LlmRequest

__all__ = [
    "ANSWER_STOP",
    "CANNOT_ANSWER",
    "GROUNDED_MIN_SHARE",
    "MAX_PASSAGE_CHARS",
    "SUMMARY_MAX_CHARS",
    "FinalAnswer",
    "Passage",
    "answer_citations",
    "build_answer_request",
    "build_summary_request",
    "clean_answer",
    "fallback_answer",
    "finalize_answer",
    "format_passages",
    "is_cannot_answer",
    "is_grounded",
    "is_relevant",
    "model_can_summarise",
    "parse_citations",
    "repair_citations",
    "truncate",
]

CANNOT_ANSWER = "I cannot answer that from the conversation."
"""The exact reply when the passages do not contain the answer."""

MAX_PASSAGE_CHARS = 300
"""Passages are cut to about this many characters (at a word boundary) in prompts."""
GROUNDED_MIN_SHARE = 0.75
"""`is_grounded`: the share of an answer's content words that must appear in the passages."""
SUMMARY_MAX_CHARS = 6000
"""`build_summary_request` keeps the most recent utterances that fit in this many characters."""

ANSWER_STOP: tuple[str, ...] = ("\n", "Question:", "Passages:")
"""Stop sequences of the base-model prompt: the answer is one line."""

_SYSTEM_ANSWER = (
    "You answer questions about a conversation using ONLY the numbered passages from it. "
    "Cite every passage you use as [n], for example [2]. Answer in one or two short sentences. "
    f'If the passages do not contain the answer, reply exactly "{CANNOT_ANSWER}"'
)

_FEW_SHOT_HEADER = (
    "Answer each question using only the numbered passages. Cite passages as [n]. "
    f'If the passages do not contain the answer, reply "{CANNOT_ANSWER}"\n\n'
)
_FEW_SHOT_EXAMPLES = (
    # Measured on Gemma 3 270M (base), 10 questions: with one cited example (and the refusal) it
    # cited 0 answers; with two it cited 7, but its [n] numbers copy the examples' (hence
    # `repair_citations`).
    "Passages:\n"
    "[1] Ana: The design review moves to Friday.\n"
    "[2] Tom: We will ship the mobile app on the fifth of March.\n"
    "[3] Ana: Good morning, everyone.\n"
    "Question: When does the app ship?\n"
    "Answer: On the fifth of March [2]\n\n"
    "Passages:\n"
    "[1] Luis: Our budget for travel is ten thousand euros.\n"
    "[2] Ana: Lunch is at noon in the main room.\n"
    "Question: What is the travel budget?\n"
    "Answer: Ten thousand euros [1]\n\n"
    "Passages:\n"
    "[1] Ana: Lunch is at noon in the main room.\n"
    "[2] Tom: Bring your laptops to the workshop.\n"
    "Question: Who is the new team lead?\n"
    f"Answer: {CANNOT_ANSWER}\n\n"
)

_SYSTEM_SUMMARY = (
    "You keep the running summary of a live conversation. Use only what was said. "
    "Write three sections with these exact headings: 'Key points:', 'Decisions:', 'Action items:'. "
    "Under each, write short bullet lines starting with '- '; give action items as '- owner: task' "
    "when the owner is known. Write '- None' for an empty section. No other text."
)

_CITATION_RE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SPACE_RE = re.compile(r"\s+")
_STOPWORDS = frozenset(
    """a an the and or but if then so of to in on at by for with from as into about over under up down out
    is are was were be been being am do does did done have has had having will would shall should can could
    may might must not no yes it its it's this that these those there here they them their he him his she her
    we us our you your i me my what which who whom whose when where why how all any some each every
    than too very just also only one said say says think thinks per many much""".split()
)
_SUFFIXES = ("ing", "ed", "s", "ly")
_STEM_CHARS = 5


@dataclass(frozen=True, slots=True)
class Passage:
    """One retrieved utterance, as the prompt shows it: [n] speaker: text."""

    utterance_id: str
    seq: int
    text: str
    start: float
    """Seconds from the start of the conversation."""
    speaker: str | None = None


@dataclass(frozen=True, slots=True)
class FinalAnswer:
    """What ``answer.done`` carries: the final text, its citations, and whether it was replaced."""

    text: str
    citations: list[str]
    """Utterance ids (see `answer_citations`)."""
    grounded: bool
    """False when the model's answer failed `is_grounded` (or `is_relevant`) and `text` is the fallback."""


# --- answers ----------------------------------------------------------------------------------


def build_answer_request(
    question: str,
    passages: Sequence[Passage],
    *,
    chat: bool,
    max_tokens: int = 120,
    max_passage_chars: int = MAX_PASSAGE_CHARS,
) -> LlmRequest:
    """The request that answers `question` from `passages` (numbered [1].. in the given order).

    ``chat=True``: a system message with the rules, then the passages and the question as the
    user message. ``chat=False``: a few-shot completion prompt ending in ``Answer:``, stopped at
    the end of the line. Greedy decoding either way.
    """
    numbered = format_passages(passages, max_chars=max_passage_chars)
    question = _one_line(question)
    if chat:
        user = f"Passages:\n{numbered}\n\nQuestion: {question}"
        return LlmRequest(
            messages=(("system", _SYSTEM_ANSWER), ("user", user)), max_tokens=max_tokens, temperature=0.0
        )
    prompt = f"{_FEW_SHOT_HEADER}{_FEW_SHOT_EXAMPLES}Passages:\n{numbered}\nQuestion: {question}\nAnswer:"
    return LlmRequest(prompt=prompt, max_tokens=max_tokens, stop=ANSWER_STOP, temperature=0.0)


def format_passages(passages: Sequence[Passage], *, max_chars: int = MAX_PASSAGE_CHARS) -> str:
    """The passages as numbered lines, ``[n] speaker: text``, each cut to about `max_chars`."""
    lines = []
    for n, passage in enumerate(passages, start=1):
        text = truncate(_one_line(passage.text), max_chars)
        speaker = _one_line(passage.speaker) if passage.speaker else ""
        lines.append(f"[{n}] {speaker}: {text}" if speaker else f"[{n}] {text}")
    return "\n".join(lines) if lines else "(none)"


def truncate(text: str, max_chars: int) -> str:
    """`text` cut to at most `max_chars` characters at a word boundary, with an ellipsis if cut."""
    if len(text) <= max_chars:
        return text
    cut = text[: max(max_chars - 1, 0)]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + "…"


def clean_answer(text: str) -> str:
    """The model's answer as shown: its first non-empty line, trimmed, without an ``Answer:`` prefix."""
    for line in text.strip().splitlines():
        line = _one_line(line)
        if line.lower().startswith("answer:"):
            line = line[len("answer:") :].strip()
        if line:
            return line
    return ""


def parse_citations(answer_text: str, passages: Sequence[Passage]) -> list[str]:
    """The utterance ids of the [n] markers in `answer_text` that name a passage, first cited first.

    Accepts ``[2]``, ``[1][3]`` and ``[1, 3]``; markers out of range are ignored.
    """
    cited: list[str] = []
    for match in _CITATION_RE.finditer(answer_text):
        for number in match.group(1).split(","):
            n = int(number)
            if 1 <= n <= len(passages):
                utterance_id = passages[n - 1].utterance_id
                if utterance_id not in cited:
                    cited.append(utterance_id)
    return cited


def answer_citations(answer_text: str, passages: Sequence[Passage]) -> list[str]:
    """The citations of ``answer.done``: the validly cited passages, else all retrieved ones."""
    return parse_citations(answer_text, passages) or _unique(p.utterance_id for p in passages)


def is_cannot_answer(answer_text: str) -> bool:
    """True when the answer is the cannot-answer sentence (give or take case and punctuation)."""
    return _normal(answer_text).startswith("i cannot answer")


def is_grounded(answer_text: str, passages: Sequence[Passage]) -> bool:
    """A cheap check that an answer comes from the passages.

    True for the cannot-answer sentence. Otherwise every number in the answer must appear in
    the passages, and at least `GROUNDED_MIN_SHARE` of its content words must too (stop words
    and citation markers left out; words compared by a crude stem: one -s/-ed/-ing/-ly ending
    dropped, then the first five letters). An answer with no content word at all ("Yes [2].")
    is grounded only when it cites a passage.
    """
    if is_cannot_answer(answer_text):
        return True
    words = _content_words(_CITATION_RE.sub(" ", answer_text))
    if not words:
        return bool(parse_citations(answer_text, passages))
    source = {_stem(w) for p in passages for w in _WORD_RE.findall(p.text.lower())}
    if any(w.isdigit() and w not in source for w in words):
        return False
    supported = sum(_stem(w) in source for w in words)
    return supported >= GROUNDED_MIN_SHARE * len(words)


def is_relevant(answer_text: str, passages: Sequence[Passage], question: str) -> bool:
    """Whether the answer addresses the question: they, or the question and the passage that
    supports the answer best, share a content word. Refusals are always relevant.

    Catches a weak model copying an unrelated passage ("The office move is postponed" for "What is
    the budget?"), which `is_grounded` alone accepts.
    """
    if is_cannot_answer(answer_text):
        return True
    asked = _stems(question)
    if not asked:
        return True
    best = _best_support(answer_text, passages)
    support = _stems(passages[best].text) if best is not None else set()
    return bool(asked & (_stems(_CITATION_RE.sub(" ", answer_text)) | support))


def repair_citations(answer_text: str, passages: Sequence[Passage]) -> str:
    """`answer_text` with each [n] marker that cites no supporting passage pointed at the best one.

    A marker number is kept when it is in range and its passage shares a content word with the
    answer (any in-range number is kept when the answer has no content word). A marker left
    with no number becomes the best-supporting passage's, or is removed when none supports it.
    """
    words = _stems(_CITATION_RE.sub(" ", answer_text))
    best = _best_support(answer_text, passages)

    def fix(match: re.Match[str]) -> str:
        numbers = [int(n) for n in match.group(1).split(",")]
        kept = [n for n in numbers if 1 <= n <= len(passages)
                and (not words or words & _stems(passages[n - 1].text))]
        if not kept and best is not None:
            kept = [best + 1]
        return "[" + ", ".join(str(n) for n in dict.fromkeys(kept)) + "]" if kept else ""

    return _one_line(_CITATION_RE.sub(fix, answer_text)).replace(" .", ".")


def fallback_answer(passages: Sequence[Passage], *, max_chars: int = MAX_PASSAGE_CHARS) -> str:
    """`CANNOT_ANSWER` followed by the top passage quoted and cited as [1] (just the sentence if none)."""
    if not passages:
        return CANNOT_ANSWER
    top = passages[0]
    quote = truncate(_one_line(top.text), max_chars)
    who = f"{_one_line(top.speaker)} said" if top.speaker else "The closest passage says"
    return f'{CANNOT_ANSWER} {who}: "{quote}" [1]'


def finalize_answer(answer_text: str, passages: Sequence[Passage],
                    question: str | None = None) -> FinalAnswer:
    """Apply the ``answer.done`` rules (module docstring) to the model's raw output.

    Give the `question` to also reject answers that do not address it (`is_relevant`).
    """
    text = clean_answer(answer_text)
    if not passages:
        return FinalAnswer(CANNOT_ANSWER, [], grounded=is_cannot_answer(text))
    if is_cannot_answer(text):
        text = CANNOT_ANSWER
    grounded = (bool(text) and is_grounded(text, passages)
                and (question is None or is_relevant(text, passages, question)))
    text = repair_citations(text, passages) if grounded else fallback_answer(passages)
    return FinalAnswer(text, answer_citations(text, passages), grounded=grounded)


# --- summaries --------------------------------------------------------------------------------


def model_can_summarise(chat: bool) -> bool:
    """Whether a model writes summaries: only instruct (chat) models; base models loop or echo."""
    return chat


def build_summary_request(
    utterances: Sequence[Passage],
    previous_summary: str | None,
    chat: bool = True,
    *,
    max_tokens: int = 300,
    max_chars: int = SUMMARY_MAX_CHARS,
) -> LlmRequest:
    """The request that updates `previous_summary` with `utterances` (the ones since it was made).

    Only the most recent utterances that fit in `max_chars` are shown. Raises `ValueError` for a
    base model (``chat=False``): see `model_can_summarise`.
    """
    if not model_can_summarise(chat):
        raise ValueError("base models do not write summaries; use the extractive summary")
    lines: list[str] = []
    used = 0
    for utterance in reversed(utterances):
        text = _one_line(utterance.text)
        line = f"{_one_line(utterance.speaker)}: {text}" if utterance.speaker else text
        if lines and used + len(line) + 1 > max_chars:
            break
        lines.append(truncate(line, max_chars))
        used += len(line) + 1
    lines.reverse()
    previous = previous_summary.strip() if previous_summary and previous_summary.strip() else "(none yet)"
    transcript = "\n".join(lines) if lines else "(nothing new)"
    user = (
        f"Summary so far:\n{previous}\n\nNew part of the conversation:\n{transcript}\n\n"
        "Write the updated summary of the whole conversation."
    )
    return LlmRequest(
        messages=(("system", _SYSTEM_SUMMARY), ("user", user)), max_tokens=max_tokens, temperature=0.0
    )


SUPPORTING_UTTERANCES = 3
"""`supporting_utterances` names at most this many utterances per summary point."""

_SECTION_HEADINGS: dict[str, SummarySection] = {
    "key points": "key_points",
    "decisions": "decisions",
    "action items": "action_items",
}
_BULLET_RE = re.compile(r"^(?:[-*•]|\d+[.)])\s+")
_EMPTY_POINTS = frozenset({"none", "none.", "n/a", "nothing", "(none)"})


def summary_items(text: str, utterances: Sequence[Passage]) -> list[SummaryItem]:
    """The points of a generative summary (the reply to `build_summary_request`).

    A heading line ("Key points:", "Decisions:", "Action items:", also in markdown bold or as a
    "#" title) starts a section; every other non-empty line is a point of the current section
    (None before any heading), its bullet ("- ", "* ", "1. ") removed. Empty-section markers
    ("- None") are dropped. Each point names the `utterances` that support it
    (`supporting_utterances`).
    """
    items: list[SummaryItem] = []
    section: SummarySection | None = None
    for raw in text.splitlines():
        line = raw.strip()
        heading = line.strip("*#_ ").rstrip(":").strip("*_ ").lower()
        if heading in _SECTION_HEADINGS:
            section = _SECTION_HEADINGS[heading]
            continue
        point = _BULLET_RE.sub("", line).strip()
        if not point or point.lower() in _EMPTY_POINTS:
            continue
        items.append(SummaryItem(point, supporting_utterances(point, utterances), section))
    return items


def supporting_utterances(
    point: str, utterances: Sequence[Passage], limit: int = SUPPORTING_UTTERANCES
) -> list[str]:
    """The ids of the utterances a summary point most likely comes from, in conversation order.

    An utterance supports a point by the content words (stems) they share; those sharing at least
    half as many as the best one (and at least one) count, the `limit` best of them.
    """
    words = _stems(point)
    overlaps = [len(words & _stems(u.text)) for u in utterances]
    best = max(overlaps, default=0)
    if best == 0:
        return []
    floor = max(1, (best + 1) // 2)
    ranked = sorted((i for i, n in enumerate(overlaps) if n >= floor), key=lambda i: -overlaps[i])
    return [utterances[i].utterance_id for i in sorted(ranked[:limit])]


# --- helpers ----------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return _SPACE_RE.sub(" ", text).strip()


def _normal(text: str) -> str:
    return " ".join(_WORD_RE.findall(text.lower()))


def _content_words(text: str) -> list[str]:
    return [w for w in _WORD_RE.findall(text.lower()) if w not in _STOPWORDS and (len(w) > 1 or w.isdigit())]


def _stems(text: str) -> set[str]:
    """The stems of the content words of `text`."""
    return {_stem(w) for w in _content_words(text)}


def _best_support(answer_text: str, passages: Sequence[Passage]) -> int | None:
    """Index of the passage sharing most content words with the answer (the first on a tie), or None."""
    words = _stems(_CITATION_RE.sub(" ", answer_text))
    overlaps = [len(words & _stems(p.text)) for p in passages]
    if not overlaps or max(overlaps) == 0:
        return None
    return overlaps.index(max(overlaps))


def _stem(word: str) -> str:
    """A crude stem: drop one common ending, keep the first `_STEM_CHARS` letters (numbers whole)."""
    if word.isdigit():
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:_STEM_CHARS]


def _unique(items: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen
