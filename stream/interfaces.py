"""The interfaces the streaming core needs from model engines.

`models/` implements these Protocols; `server/` wires implementations in at start-up. The core
only ever sees these types, never a model library.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from stream.events import Word

__all__ = [
    "SAMPLE_RATE",
    "AsrEngine",
    "AsrInput",
    "AsrOutput",
    "Audio",
    "Embedder",
    "Entity",
    "EntityRecognizer",
    "IndexCorrupt",
    "IndexFileError",
    "IndexStale",
    "LlmEngine",
    "LlmRequest",
    "RequestKind",
    "SearchResults",
    "SpeakerEncoder",
    "SpeakerVector",
    "VadModel",
    "VadStream",
    "VectorIndex",
    "Vectors",
]

SAMPLE_RATE = 16_000
"""Every model in Palabre consumes 16 kHz mono float32 audio in [-1, 1]."""

Audio = npt.NDArray[np.float32]

RequestKind = Literal["final", "partial"]


@dataclass(frozen=True, slots=True)
class AsrInput:
    """One piece of speech to transcribe (an utterance so far, or a whole utterance)."""

    audio: Audio
    language: str | None
    """An ISO code, or None to detect the language."""
    task: Literal["transcribe", "translate"] = "transcribe"
    prompt: str | None = None
    """Text given to the decoder as context before the speech: the session's vocabulary (names
    and terms the caller expects, `stream.vocabulary.vocabulary_prompt`), or None."""
    word_timestamps: bool = False
    """Also align the text's words to the audio (`AsrOutput.words`): asked for finals only, as it
    costs a pass of the decoder."""


@dataclass(frozen=True, slots=True)
class AsrOutput:
    """What an engine heard in one `AsrInput`."""

    text: str
    language: str
    language_probability: float = 1.0
    no_speech_probability: float = 0.0
    avg_logprob: float = 0.0
    fallback: bool = False
    """True when the engine's repetition guard fired: the decode looked looped and was cut."""
    words: tuple[Word, ...] | None = None
    """The words of `text`, in seconds of the input audio, when `word_timestamps` was asked (and
    the engine can align): their concatenation is the text, up to surrounding spaces."""


class AsrEngine(Protocol):
    """A speech recogniser that transcribes a batch of inputs in one call.

    Implementations must be safe to call from `concurrency` threads at once.
    """

    @property
    def name(self) -> str:
        """The model's name (``tiny.en``, a directory name)."""
        ...

    @property
    def device(self) -> str:
        """Where it runs now: ``cpu`` or ``cuda``."""
        ...

    @property
    def multilingual(self) -> bool:
        """Whether it transcribes other languages than English (and detects languages)."""
        ...

    @property
    def concurrency(self) -> int:
        """How many `transcribe_batch` calls may run at once."""
        ...

    def transcribe_batch(self, inputs: Sequence[AsrInput]) -> list[AsrOutput]:
        """Transcribe `inputs` together; the result has one output per input, in order."""
        ...


class VadStream(Protocol):
    """Per-session streaming voice activity model: one speech probability per frame."""

    frame_samples: int

    def probability(self, frame: Audio) -> float:
        """Speech probability of the next `frame_samples` samples of the stream."""
        ...


class VadModel(Protocol):
    """A voice activity model that opens one independent stream per session."""

    frame_samples: int

    def open_stream(self) -> VadStream:
        """A new stream with fresh state, for one session."""
        ...


Vectors = npt.NDArray[np.float32]
"""A (n, dim) float32 matrix of L2-normalised embeddings."""


class Embedder(Protocol):
    """A sentence embedding model (FlagEmbedding): texts in, normalised vectors out."""

    name: str
    dim: int
    device: str

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed a batch of texts; row i is the unit-norm vector of texts[i]."""
        ...


SpeakerVector = npt.NDArray[np.float32]
"""One L2-normalised speaker embedding (dim,)."""


class SpeakerEncoder(Protocol):
    """A speaker-embedding model: utterances in, one voice vector each (closer = more alike)."""

    name: str
    dim: int
    device: str
    min_samples: int
    """Utterances shorter than this give no usable embedding."""

    def embed(self, audios: Sequence[Audio]) -> list[SpeakerVector | None]:
        """Embed a batch of 16 kHz utterances; item i is the unit-norm vector of audios[i], or None
        when it is too short (`min_samples`) or silent."""
        ...


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """One generation: either a completion prompt (base models) or chat messages (instruct models)."""

    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] = ()
    """(role, content) pairs, for engines with `chat = True`."""
    max_tokens: int = 200
    stop: tuple[str, ...] = ()
    temperature: float = 0.0


class LlmEngine(Protocol):
    """A streaming text generator (llama.cpp GGUF, ExLlamaV2)."""

    name: str
    device: str
    chat: bool
    """True for instruction-tuned models (chat messages); False for base models (completion prompts)."""

    def generate(self, request: LlmRequest) -> Iterator[str]:
        """Yield text pieces as they are decoded; closing the iterator stops generation."""
        ...


@dataclass(frozen=True, slots=True)
class Entity:
    """A named entity found in an utterance."""

    text: str
    label: Literal["person", "organization", "place", "date", "amount", "other"]
    start: int
    """Character offsets in the utterance text."""
    end: int


class EntityRecognizer(Protocol):
    """A named-entity tagger (spaCy); safe to call from any thread."""

    name: str

    def entities(self, text: str, language: str) -> list[Entity]:
        """The entities of `text` in `language` (an ISO code); none for a language it does not know."""
        ...


SearchResults = list[list[tuple[int, float]]]
"""Per query vector, up to k (id, score) pairs, best first."""


class IndexFileError(Exception):
    """An index file that cannot be used; rebuild the index from the store."""


class IndexStale(IndexFileError):
    """No index file, or one made for another format, dimension or embedder."""


class IndexCorrupt(IndexFileError):
    """An index file that cannot be read, is truncated, or disagrees with its sidecar."""


class VectorIndex(Protocol):
    """A tenant's vectors keyed by utterance id (int64, never reused), scored by inner product.

    Ids are never reused: vectors are added, removed when their utterance is erased, or all
    replaced by `rebuild`. Every method
    may be called from any thread. An index is made empty or read from a file by the registry
    (`models.registry.new_index`, `load_index`); reading raises `IndexFileError` when the file
    cannot be used.
    """

    dim: int
    """Dimension of the vectors."""

    @property
    def count(self) -> int:
        """How many vectors the index holds."""
        ...

    @property
    def max_id(self) -> int:
        """The largest id held, -1 when empty."""
        ...

    def __len__(self) -> int: ...

    def __contains__(self, utterance_id: object) -> bool: ...

    def is_consistent_with(self, count: int, max_id: int) -> bool:
        """Whether the index holds `count` vectors up to id `max_id` (ignored when `count` is 0)."""
        ...

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> int:
        """Add `vectors` (n × dim, or one vector) under `ids`; return how many were new.

        Ids already held are skipped, so adding again after a retry is harmless.
        """
        ...

    def rebuild(self, items: Iterable[tuple[int, npt.ArrayLike]]) -> None:
        """Replace the contents with `items` (id, vector)."""
        ...

    def remove(self, ids: Iterable[int]) -> int:
        """Remove the vectors of `ids` (those held; others are ignored); return how many were removed."""
        ...

    def search(
        self, vectors: npt.ArrayLike, k: int, allowed_ids: Collection[int] | None = None
    ) -> SearchResults:
        """The `k` best (id, score) pairs for each query vector, among `allowed_ids` only when given."""
        ...

    def vectors(self, ids: Iterable[int]) -> Vectors:
        """The stored vectors of `ids`, one row each, in order; `KeyError` for an id not held."""
        ...

    def save(self, path: str | os.PathLike[str]) -> object:
        """Write the index to `path` (and whatever files it keeps beside it), atomically."""
        ...
