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

Languages
    Every function takes the ``language`` the conversation is held in (an ISO code; English
    unless French, `stream.language.memory_language`): the prompts, few-shot examples, refusal and
    quote are written in it (`wording`), and words are compared with its stop words and endings
    (`stream.language`). The refusal is recognised in either language.

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
from stream.language import MemoryLanguage, content_words, fold, memory_language, stem, words

__all__ = [
    "ANSWER_STOP",
    "CANNOT_ANSWER",
    "CANNOT_ANSWER_FR",
    "GROUNDED_MIN_SHARE",
    "MAX_PASSAGE_CHARS",
    "SUMMARY_MAX_CHARS",
    "FinalAnswer",
    "Passage",
    "Wording",
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
    "wording",
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

CANNOT_ANSWER_FR = "Je ne peux pas répondre à cela à partir de la conversation."
"""The French `CANNOT_ANSWER`."""


@dataclass(frozen=True, slots=True)
class Wording:
    """What answers and summaries say in one language: prompts, refusal, quotes, headings."""

    cannot_answer: str
    answer_system: str
    few_shot_header: str
    few_shot_examples: str
    answer_label: str
    """The label of the answer line in the few-shot prompt ("Answer:")."""
    closest_passage: str
    """Introduces the quoted top passage of a refusal when it has no speaker."""
    speaker_said: str
    """Introduces it when it has one: formatted with ``{speaker}``."""
    summary_system: str
    summary_user: str
    """Formatted with ``{previous}`` and ``{transcript}``."""
    none_yet: str
    nothing_new: str


_WORDINGS: dict[MemoryLanguage, Wording] = {
    "en": Wording(
        cannot_answer=CANNOT_ANSWER,
        answer_system=_SYSTEM_ANSWER,
        few_shot_header=_FEW_SHOT_HEADER,
        few_shot_examples=_FEW_SHOT_EXAMPLES,
        answer_label="Answer:",
        closest_passage="The closest passage says",
        speaker_said="{speaker} said",
        summary_system=_SYSTEM_SUMMARY,
        summary_user=(
            "Summary so far:\n{previous}\n\nNew part of the conversation:\n{transcript}\n\n"
            "Write the updated summary of the whole conversation."
        ),
        none_yet="(none yet)",
        nothing_new="(nothing new)",
    ),
    "fr": Wording(
        cannot_answer=CANNOT_ANSWER_FR,
        answer_system=(
            "Tu réponds à des questions sur une conversation en utilisant UNIQUEMENT les passages "
            "numérotés qui en sont tirés. Cite chaque passage utilisé sous la forme [n], par exemple [2]. "
            "Réponds en français, en une ou deux phrases courtes. "
            f'Si les passages ne contiennent pas la réponse, réponds exactement « {CANNOT_ANSWER_FR} »'
        ),
        few_shot_header=(
            "Réponds à chaque question en utilisant uniquement les passages numérotés. Cite les passages "
            "sous la forme [n]. Si les passages ne contiennent pas la réponse, "
            f"réponds « {CANNOT_ANSWER_FR} »\n\n"
        ),
        few_shot_examples=(
            "Passages:\n"
            "[1] Ana: La revue de conception est déplacée à vendredi.\n"
            "[2] Tom: Nous livrerons l'application mobile le cinq mars.\n"
            "[3] Ana: Bonjour à tous.\n"
            "Question: Quand l'application sera-t-elle livrée ?\n"
            "Réponse: Le cinq mars [2]\n\n"
            "Passages:\n"
            "[1] Luis: Notre budget de déplacement est de dix mille euros.\n"
            "[2] Ana: Le déjeuner est à midi dans la grande salle.\n"
            "Question: Quel est le budget de déplacement ?\n"
            "Réponse: Dix mille euros [1]\n\n"
            "Passages:\n"
            "[1] Ana: Le déjeuner est à midi dans la grande salle.\n"
            "[2] Tom: Apportez vos ordinateurs à l'atelier.\n"
            "Question: Qui est le nouveau chef d'équipe ?\n"
            f"Réponse: {CANNOT_ANSWER_FR}\n\n"
        ),
        answer_label="Réponse:",
        closest_passage="Le passage le plus proche dit",
        speaker_said="{speaker} a dit",
        summary_system=(
            "Tu tiens le résumé d'une conversation en direct, en français. N'utilise que ce qui a été dit. "
            "Écris trois sections avec exactement ces titres : 'Points clés:', 'Décisions:', 'Actions:'. "
            "Sous chacune, écris de courtes lignes commençant par '- ' ; donne les actions sous la forme "
            "'- responsable: tâche' quand le responsable est connu. Écris '- Aucun' pour une section vide. "
            "Pas d'autre texte."
        ),
        summary_user=(
            "Résumé jusqu'ici :\n{previous}\n\nNouvelle partie de la conversation :\n{transcript}\n\n"
            "Écris le résumé mis à jour de toute la conversation."
        ),
        none_yet="(aucun pour l'instant)",
        nothing_new="(rien de nouveau)",
    ),
}


def wording(language: str | None) -> Wording:
    """The wording of answers and summaries in a conversation held in `language` (English but for French)."""
    return _WORDINGS[memory_language(language)]


_CITATION_RE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_SPACE_RE = re.compile(r"\s+")
_ANSWER_LABEL_RE = re.compile(r"^(?:answer|r[ée]ponse)\s*:", re.IGNORECASE)
_REFUSAL_STARTS = ("i cannot answer", "je ne peux pas repondre")
"""How the refusals start (`words` of `CANNOT_ANSWER` and `CANNOT_ANSWER_FR`)."""


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
    language: str | None = "en",
) -> LlmRequest:
    """The request that answers `question` from `passages` (numbered [1].. in the given order).

    ``chat=True``: a system message with the rules, then the passages and the question as the
    user message. ``chat=False``: a few-shot completion prompt ending in ``Answer:``, stopped at
    the end of the line. Greedy decoding either way. Both are written in `language` (`wording`).
    """
    said = wording(language)
    numbered = format_passages(passages, max_chars=max_passage_chars)
    question = _one_line(question)
    if chat:
        user = f"Passages:\n{numbered}\n\nQuestion: {question}"
        return LlmRequest(
            messages=(("system", said.answer_system), ("user", user)), max_tokens=max_tokens, temperature=0.0
        )
    prompt = (f"{said.few_shot_header}{said.few_shot_examples}"
              f"Passages:\n{numbered}\nQuestion: {question}\n{said.answer_label}")
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
    """The model's answer as shown: its first non-empty line, trimmed, without an ``Answer:`` prefix
    (nor a French ``Réponse :``)."""
    for line in text.strip().splitlines():
        line = _ANSWER_LABEL_RE.sub("", _one_line(line)).strip()
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
    """True when the answer is the cannot-answer sentence, in any language (give or take case,
    accents and punctuation)."""
    normal = _normal(answer_text)
    return any(normal.startswith(start) for start in _REFUSAL_STARTS)


def is_grounded(answer_text: str, passages: Sequence[Passage], language: str | None = "en") -> bool:
    """A cheap check that an answer comes from the passages.

    True for the cannot-answer sentence. Otherwise every number in the answer must appear in
    the passages, and at least `GROUNDED_MIN_SHARE` of its content words must too (stop words
    and citation markers left out; words compared by a crude stem: one -s/-ed/-ing/-ly ending
    dropped, then the first five letters). An answer with no content word at all ("Yes [2].")
    is grounded only when it cites a passage.
    """
    if is_cannot_answer(answer_text):
        return True
    said = content_words(_CITATION_RE.sub(" ", answer_text), language)
    if not said:
        return bool(parse_citations(answer_text, passages))
    source = {stem(w, language) for p in passages for w in words(p.text)}
    if any(w.isdigit() and w not in source for w in said):
        return False
    supported = sum(stem(w, language) in source for w in said)
    return supported >= GROUNDED_MIN_SHARE * len(said)


def is_relevant(answer_text: str, passages: Sequence[Passage], question: str,
                language: str | None = "en") -> bool:
    """Whether the answer addresses the question: they, or the question and the passage that
    supports the answer best, share a content word. Refusals are always relevant.

    Catches a weak model copying an unrelated passage ("The office move is postponed" for "What is
    the budget?"), which `is_grounded` alone accepts.
    """
    if is_cannot_answer(answer_text):
        return True
    asked = _stems(question, language)
    if not asked:
        return True
    best = _best_support(answer_text, passages, language)
    support = _stems(passages[best].text, language) if best is not None else set()
    return bool(asked & (_stems(_CITATION_RE.sub(" ", answer_text), language) | support))


def repair_citations(answer_text: str, passages: Sequence[Passage], language: str | None = "en") -> str:
    """`answer_text` with each [n] marker that cites no supporting passage pointed at the best one.

    A marker number is kept when it is in range and its passage shares a content word with the
    answer (any in-range number is kept when the answer has no content word). A marker left
    with no number becomes the best-supporting passage's, or is removed when none supports it.
    """
    said = _stems(_CITATION_RE.sub(" ", answer_text), language)
    best = _best_support(answer_text, passages, language)

    def fix(match: re.Match[str]) -> str:
        numbers = [int(n) for n in match.group(1).split(",")]
        kept = [n for n in numbers if 1 <= n <= len(passages)
                and (not said or said & _stems(passages[n - 1].text, language))]
        if not kept and best is not None:
            kept = [best + 1]
        return "[" + ", ".join(str(n) for n in dict.fromkeys(kept)) + "]" if kept else ""

    return _one_line(_CITATION_RE.sub(fix, answer_text)).replace(" .", ".")


def fallback_answer(passages: Sequence[Passage], *, max_chars: int = MAX_PASSAGE_CHARS,
                    language: str | None = "en") -> str:
    """The refusal followed by the top passage quoted and cited as [1] (just the refusal if none),
    in `language`."""
    said = wording(language)
    if not passages:
        return said.cannot_answer
    top = passages[0]
    quote = truncate(_one_line(top.text), max_chars)
    who = said.speaker_said.format(speaker=_one_line(top.speaker)) if top.speaker else said.closest_passage
    return f'{said.cannot_answer} {who}: "{quote}" [1]'


def finalize_answer(answer_text: str, passages: Sequence[Passage],
                    question: str | None = None, language: str | None = "en") -> FinalAnswer:
    """Apply the ``answer.done`` rules (module docstring) to the model's raw output.

    Give the `question` to also reject answers that do not address it (`is_relevant`). The refusal
    and the fallback are written in `language`.
    """
    text = clean_answer(answer_text)
    refusal = wording(language).cannot_answer
    if not passages:
        return FinalAnswer(refusal, [], grounded=is_cannot_answer(text))
    if is_cannot_answer(text):
        text = refusal
    grounded = (bool(text) and is_grounded(text, passages, language)
                and (question is None or is_relevant(text, passages, question, language)))
    if grounded:
        text = repair_citations(text, passages, language)
    else:
        text = fallback_answer(passages, language=language)
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
    language: str | None = "en",
) -> LlmRequest:
    """The request that updates `previous_summary` with `utterances` (the ones since it was made),
    written in `language` (its headings too: `summary_items` reads both languages').

    Only the most recent utterances that fit in `max_chars` are shown. Raises `ValueError` for a
    base model (``chat=False``): see `model_can_summarise`.
    """
    said = wording(language)
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
    previous = previous_summary.strip() if previous_summary and previous_summary.strip() else said.none_yet
    transcript = "\n".join(lines) if lines else said.nothing_new
    user = said.summary_user.format(previous=previous, transcript=transcript)
    return LlmRequest(
        messages=(("system", said.summary_system), ("user", user)), max_tokens=max_tokens, temperature=0.0
    )


SUPPORTING_UTTERANCES = 3
"""`supporting_utterances` names at most this many utterances per summary point."""

_SECTION_HEADINGS: dict[str, SummarySection] = {
    "key points": "key_points",
    "decisions": "decisions",
    "action items": "action_items",
    # French headings (`wording("fr")`), accent-folded.
    "points cles": "key_points",
    "actions": "action_items",
}
_BULLET_RE = re.compile(r"^(?:[-*•]|\d+[.)])\s+")
_EMPTY_POINTS = frozenset(
    {"none", "none.", "n/a", "nothing", "(none)", "aucun", "aucun.", "aucune", "(aucun)", "rien"}
)


def summary_items(
    text: str, utterances: Sequence[Passage], language: str | None = "en"
) -> list[SummaryItem]:
    """The points of a generative summary (the reply to `build_summary_request`).

    A heading line ("Key points:", "Decisions:", "Action items:", or the French "Points clés:",
    "Décisions:", "Actions:", also in markdown bold or as a "#" title) starts a section; every
    other non-empty line is a point of the current section (None before any heading), its bullet
    ("- ", "* ", "1. ") removed. Empty-section markers ("- None", "- Aucun") are dropped.
    Each point names the `utterances` that support it
    (`supporting_utterances`).
    """
    items: list[SummaryItem] = []
    section: SummarySection | None = None
    for raw in text.splitlines():
        line = raw.strip()
        heading = fold(line.strip("*#_ ").rstrip(":").strip("*_ "))
        if heading in _SECTION_HEADINGS:
            section = _SECTION_HEADINGS[heading]
            continue
        point = _BULLET_RE.sub("", line).strip()
        if not point or point.lower() in _EMPTY_POINTS:
            continue
        items.append(SummaryItem(point, supporting_utterances(point, utterances, language=language), section))
    return items


def supporting_utterances(
    point: str, utterances: Sequence[Passage], limit: int = SUPPORTING_UTTERANCES, *,
    language: str | None = "en",
) -> list[str]:
    """The ids of the utterances a summary point most likely comes from, in conversation order.

    An utterance supports a point by the content words (stems) they share; those sharing at least
    half as many as the best one (and at least one) count, the `limit` best of them.
    """
    said = _stems(point, language)
    overlaps = [len(said & _stems(u.text, language)) for u in utterances]
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
    return " ".join(words(text))


def _stems(text: str, language: str | None = "en") -> set[str]:
    """The stems of the content words of `text`."""
    return {stem(w, language) for w in content_words(text, language)}


def _best_support(answer_text: str, passages: Sequence[Passage], language: str | None = "en") -> int | None:
    """Index of the passage sharing most content words with the answer (the first on a tie), or None."""
    said = _stems(_CITATION_RE.sub(" ", answer_text), language)
    overlaps = [len(said & _stems(p.text, language)) for p in passages]
    if not overlaps or max(overlaps) == 0:
        return None
    return overlaps.index(max(overlaps))


def _unique(items: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen
