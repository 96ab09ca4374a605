"""Small fakes for the conversation-memory unit tests: a word-hashing embedder, a scripted LLM, a
capitalised-word entity recognizer; and `say`, which stores finals in the real store."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from server.store import AsyncStore, UtteranceRow
from stream.interfaces import Entity, LlmRequest, Vectors

TENANT = "t"
DIM = 64
_WORD_RE = re.compile(r"[a-z0-9]+")


class WordEmbedder:
    """Bag of words hashed into `DIM` dimensions, unit norm: texts sharing words are close."""

    name = "fake-words"
    dim = DIM
    device = "cpu"

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls += len(texts)
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD_RE.findall(text.lower()):
                out[row, int(hashlib.sha1(word.encode()).hexdigest(), 16) % DIM] += 1.0
            norm = np.linalg.norm(out[row])
            out[row] = out[row] / norm if norm > 0 else out[row]
            if norm == 0:
                out[row, 0] = 1.0
        return out


class ScriptedLlm:
    """An `LlmEngine` that replies `reply(request)`, word by word."""

    name = "scripted"
    device = "cpu"

    def __init__(self, reply: Callable[[LlmRequest], str], chat: bool = True) -> None:
        self.reply = reply
        self.chat = chat
        self.requests: list[LlmRequest] = []

    def generate(self, request: LlmRequest) -> Iterator[str]:
        self.requests.append(request)
        text = self.reply(request)
        for i, word in enumerate(text.split(" ")):
            yield word if i == 0 else " " + word


class CapitalNer:
    """Capitalised words not starting the text are people; numbers are amounts."""

    name = "capitals"

    def __init__(self) -> None:
        self.texts: list[str] = []

    def entities(self, text: str, language: str) -> list[Entity]:
        self.texts.append(text)
        found = []
        for match in re.finditer(r"\b[A-Z][a-z]+|\b\d+\b", text):
            if match.start() == 0:
                continue
            if match.group().isdigit():
                found.append(Entity(match.group(), "amount", match.start(), match.end()))
            else:
                found.append(Entity(match.group(), "person", match.start(), match.end()))
        return found


async def say(
    store: AsyncStore, conversation_id: str, *texts: str, language: str | None = "en"
) -> list[UtteranceRow]:
    """Store `texts` as the next finals of a conversation (opened in `language` if new)."""
    await store.open_conversation(TENANT, conversation_id, language)
    first = await store.next_seq(conversation_id)
    rows = []
    for seq, text in enumerate(texts, start=first):
        start = 2.0 * seq
        said = language or "en"
        rows.append(await store.add_utterance(TENANT, conversation_id, seq, text, start, start + 1.5, said))
    return rows
