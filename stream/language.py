"""Words of what was said, in the language it was said in: the lexical side of conversation memory.

Pure text, no model. Conversation memory compares questions, answers and utterances by their
content words (`stream.answers`: grounding, relevance, citation repair, summary support); this
module says what those words are, for English and French:

* `words`: Unicode words, lower-cased and accent-insensitive ("Réunion" → "reunion"), typographic
  apostrophes read as ``'``, French elisions dropped ("l'usager" → "usager", "qu'il" → "il").
  An English contraction stays one word ("it's", "don't"), as before.
* `content_words`: `words` without the language's stop words (and one-letter words but digits).
* `stem`: a crude stem, one common ending of the language dropped, then its first five letters.
* `guess_language`: "fr" or "en" by which language's stop words a text holds more of; for a
  question asked across conversations, whose language no conversation says.

`memory_language` maps any language code to the one memory speaks (`MEMORY_LANGUAGES`): French
for "fr", English for everything else; `conversation_language` picks it for a conversation.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "MEMORY_LANGUAGES",
    "MemoryLanguage",
    "content_words",
    "conversation_language",
    "fold",
    "guess_language",
    "memory_language",
    "stem",
    "stopwords",
    "words",
]

MemoryLanguage = Literal["en", "fr"]
MEMORY_LANGUAGES: tuple[MemoryLanguage, ...] = ("en", "fr")
"""The languages answers and summaries are written in."""

_WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'", "\u2018": "'", "`": "'"})
_ELISION_RE = re.compile(r"^(?:l|d|j|m|n|s|t|c|qu|jusqu|lorsqu|puisqu|quoiqu)'(?=[^\W_])")

_STOPWORDS: dict[MemoryLanguage, frozenset[str]] = {
    "en": frozenset(
        """a an the and or but if then so of to in on at by for with from as into about over under up down
        out is are was were be been being am do does did done have has had having will would
        shall should can could may might must not no yes it its it's this that these those there
        here they them their he him his she her we us our you your i me my what which who whom
        whose when where why how all any some each every than too very just also only one said
        say says think thinks per many much""".split()
    ),
    # Accent-folded, as `words` gives them ("été" → "ete", "à" → "a").
    "fr": frozenset(
        """a au aux avec ce ces cet cette ceci cela ca dans de des du elle elles en et est etre ete etait
        etaient sont sera seront serait ai as avons avez ont avait avaient aura il ils je j la
        le les leur leurs lui mais me meme mes moi mon ma ne ni nos notre nous on ou ont par pas
        plus pour qu que quel quelle quels quelles qui quoi sa se ses si son sur ta te tes toi
        ton tu un une vos votre vous y d l n s c m t donc car comme tout tous toute toutes tres
        aussi bien fait faire dit dire oui non alors ici quand comment pourquoi combien
        ou chaque certains peu beaucoup deja encore entre vers chez sans sous dont cela celui
        celle ceux celles avoir""".split()
    ),
}
_SUFFIXES: dict[MemoryLanguage, tuple[str, ...]] = {
    "en": ("ing", "ed", "s", "ly"),
    "fr": ("ements", "ement", "ments", "ment", "euses", "euse", "eux", "ent", "ees", "ee",
           "es", "er", "ez", "e", "s", "x"),
}
_STEM_CHARS = 5


def memory_language(language: str | None) -> MemoryLanguage:
    """The memory language of an ISO code (or a tag like "fr-CA"): French for French, else English."""
    primary = (language or "").lower().replace("_", "-").split("-")[0]
    return "fr" if primary in ("fr", "fra", "fre") else "en"


def fold(text: str) -> str:
    """`text` lower-cased, accents removed, apostrophes made plain (``’`` → ``'``)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold().translate(_APOSTROPHES))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """The words of `text`, folded (`fold`), French elisions dropped ("l'usager" → "usager")."""
    return [_ELISION_RE.sub("", w) for w in _WORD_RE.findall(fold(text))]


def stopwords(language: str | None) -> frozenset[str]:
    """The stop words of a language (folded), English for any language but French."""
    return _STOPWORDS[memory_language(language)]


def content_words(text: str, language: str | None = "en") -> list[str]:
    """The words of `text` that carry meaning: no stop word, no one-letter word but digits."""
    stop = stopwords(language)
    return [w for w in words(text) if w not in stop and (len(w) > 1 or w.isdigit())]


def stem(word: str, language: str | None = "en") -> str:
    """A crude stem of a folded word: one common ending dropped, its first five letters (numbers whole)."""
    if word.isdigit():
        return word
    for suffix in _SUFFIXES[memory_language(language)]:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:_STEM_CHARS]


def guess_language(text: str, default: MemoryLanguage = "en") -> MemoryLanguage:
    """Either "fr" or "en": the language whose stop words `text` holds more of; `default` on a tie."""
    said = words(text)
    french_only = _STOPWORDS["fr"] - _STOPWORDS["en"]
    english_only = _STOPWORDS["en"] - _STOPWORDS["fr"]
    french = sum(w in french_only for w in said)
    english = sum(w in english_only for w in said)
    if french == english:
        return default
    return "fr" if french > english else "en"


def conversation_language(declared: str | None, detected: Sequence[str], text: str) -> MemoryLanguage:
    """The language memory speaks about a conversation (or a question across conversations).

    The `declared` one (the conversation's ``start.language``) when there is one; else the most
    common language `detected` in its utterances (empty codes ignored, the first on a tie); else
    the one `text` (the question) is guessed to be in (`guess_language`).
    """
    if declared:
        return memory_language(declared)
    counts = Counter(code for code in detected if code)
    if counts:
        return memory_language(counts.most_common(1)[0][0])
    return guess_language(text)
