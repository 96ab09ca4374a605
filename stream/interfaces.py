"""The interfaces the streaming core needs from model engines.

`models/` implements these Protocols; `server/` wires implementations in at start-up. The core
only ever sees these types, never a model library.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

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
    """Previous text of the conversation, given to the decoder as context."""


@dataclass(frozen=True, slots=True)
class AsrOutput:
    """What an engine heard in one `AsrInput`."""

    text: str
    language: str
    language_probability: float = 1.0
    no_speech_probability: float = 0.0
    avg_logprob: float = 0.0
    fallback: bool = False
    """True when the engine re-decoded the input padded to a full window (a repetition guard fired)."""


class AsrEngine(Protocol):
    """A speech recogniser that transcribes a batch of inputs in one call.

    Implementations must be safe to call from `concurrency` threads at once.
    """

    name: str
    device: str
    multilingual: bool
    concurrency: int

    def transcribe_batch(self, inputs: Sequence[AsrInput]) -> list[AsrOutput]:
        """Transcribe `inputs` together; the result has one output per input, in order."""
        ...


class VadStream(Protocol):
    """Per-session streaming voice activity model: one speech probability per frame."""

    frame_samples: int

    def probability(self, frame: Audio) -> float:
        """Speech probability of the next `frame_samples` samples of the stream."""
        ...

    def reset(self) -> None:
        """Forget the stream's recurrent state."""
        ...


class VadModel(Protocol):
    """A voice activity model that opens one independent stream per session."""

    frame_samples: int

    def open_stream(self) -> VadStream: ...


@dataclass(slots=True)
class ModelTiming:
    """What one engine call cost, reported back to the scheduler's throughput model."""

    batch_size: int
    audio_seconds: float
    compute_seconds: float
    extra: dict[str, float] = field(default_factory=dict)


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
    name: str

    def entities(self, text: str, language: str) -> list[Entity]: ...
