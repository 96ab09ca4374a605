"""The names people give to a conversation's speakers, and how utterances show them.

A speaker is what `utterances.speaker` holds: a diarization label ("S1", "S2", …) or a track's name.
`PUT /v1/conversations/{id}/speakers/{label}?name=Alice` names it (server/routes.py); the store
keeps the names per conversation (`speaker_names`). Finals keep sending the label as `speaker`, and
once it is named its name as `speaker_name` (the live conversation is told: server/live.py); the places that
show utterances to people or to the LLM show the name where there is one: the `speakers` list and
`speaker_name` of each utterance in GET /v1/conversations/{id} and /v1/search, answer citations and
the answer prompt's "Alice: …" lines, and
the utterances quoted by summaries.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.store import UtteranceRow
from server.store_interface import ConversationStore

MAX_NAME_CHARS = 64


def speaker_name_error(name: str) -> str | None:
    """Why `name` cannot name a speaker (1-64 printable characters, not only spaces), or None."""
    if not name.strip():
        return "name must not be empty"
    if len(name) > MAX_NAME_CHARS:
        return f"name must be at most {MAX_NAME_CHARS} characters"
    if not name.isprintable():
        return "name must hold printable characters only"
    return None


class SpeakerNames:
    """The names of the speakers of some conversations: {(conversation id, label): name}."""

    def __init__(self, names: dict[tuple[str, str], str] | None = None) -> None:
        self._names = names or {}

    @classmethod
    def of_conversation(cls, conversation_id: str, names: dict[str, str]) -> SpeakerNames:
        """The names of one conversation's speakers, {label: name} as the store gives them."""
        return cls({(conversation_id, label): name for label, name in names.items()})

    @classmethod
    async def of(cls, store: ConversationStore, tenant_id: str, rows: Iterable[UtteranceRow]) -> SpeakerNames:
        """The names of the speakers of these utterances' conversations (one read per conversation)."""
        names: dict[tuple[str, str], str] = {}
        for conversation_id in dict.fromkeys(row.conversation_id for row in rows if row.speaker):
            for label, name in (await store.speaker_names(tenant_id, conversation_id)).items():
                names[(conversation_id, label)] = name
        return cls(names)

    def name(self, row: UtteranceRow) -> str | None:
        """What the utterance's speaker is called, or None (no speaker, or not named)."""
        if row.speaker is None:
            return None
        return self._names.get((row.conversation_id, row.speaker))

    def who(self, row: UtteranceRow) -> str | None:
        """Who spoke, as people read it: the speaker's name, else its label, else the track."""
        return self.name(row) or row.speaker or row.track


def quoted(row: UtteranceRow, names: SpeakerNames) -> str:
    """The utterance's text as a summary quotes it: "Alice: …" when its speaker was named."""
    name = names.name(row)
    return f"{name}: {row.text}" if name else row.text

