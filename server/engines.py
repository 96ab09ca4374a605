"""Building the model services from the configuration: the ASR engine (with its failover), got from
`models.registry`, and the micro-batched services around the ASR engine, the embedder and the
speaker encoder.

Used by `App.load` in a single process, and by the Ray model actors (`server/ray_services.py`),
so that both build the same engines and schedulers from the same `ServerConfig`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from models.registry import choose_device, load_serving_asr
from server.config import ServerConfig
from server.model_service import BatchRecord, ModelService
from stream.interfaces import (
    SAMPLE_RATE,
    AsrEngine,
    AsrOutput,
    Audio,
    Embedder,
    SpeakerEncoder,
    SpeakerVector,
)
from stream.scheduler import Request, Scheduler, SchedulerConfig
from stream.session import AsrJob

EMBED_SCHEDULER = SchedulerConfig(max_batch=32, max_wait_s=0.01)
"""The embedding service's micro-batcher: sentences are cheap, batches of up to 32 pay off."""
SPEAKER_SCHEDULER = SchedulerConfig(max_batch=16, max_wait_s=0.005)
"""The speaker encoder's micro-batcher: an utterance's windows (1.6 s each) batch with the other
sessions' (GPU: one LSTM call; CPU: a GEMM instead of several GEMVs); its result is awaited before
the final is stored, so it waits little for company."""


def load_asr_engine(cfg: ServerConfig, model: str, cache_dir: Path | None = None) -> AsrEngine:
    """Load and warm up the ASR engine of `model` (one of `cfg.language_models()`), with a CPU
    fallback (`FailoverAsr`) when one is wanted.

    Blocking (seconds): call it in a thread. `cache_dir` is where built models are assembled
    (default: `<data_dir>/models`). With `inject_asr_fault_after` (tests only) the primary engine
    fails like a lost GPU after that many batches, and a fallback is wanted unless it is off.
    """
    device, _ = choose_device(cfg.device, cfg.compute_type)
    workers = cfg.asr_workers or (2 if device == "cpu" else 1)
    fallback_wanted = cfg.asr_fallback == "cpu" or (cfg.asr_fallback == "auto" and device != "cpu")
    if cfg.inject_asr_fault_after is not None:
        fallback_wanted = cfg.asr_fallback != "off"
    fallback_workers = 2
    return load_serving_asr(
        model,
        device=cfg.device,
        compute_type=cfg.compute_type,
        cpu_threads=cfg.cpu_threads or max(1, (os.cpu_count() or 2) // workers),
        num_workers=workers,
        cache_dir=cache_dir if cache_dir is not None else cfg.data_dir / "models",
        fallback=fallback_wanted,
        fallback_threads=max(1, (os.cpu_count() or 2) // fallback_workers),
        fallback_workers=fallback_workers,
        inject_fault_after=cfg.inject_asr_fault_after,
        auto_languages=cfg.asr_auto_languages,
    )


def asr_service(
    engine: AsrEngine, cfg: ServerConfig, on_batch: Callable[[BatchRecord], None] | None = None
) -> ModelService[AsrJob, AsrOutput]:
    """The ASR micro-batcher around `engine` (not started); `on_batch` sees each batch's figures."""
    mode = cfg.scheduler
    if cfg.scheduler_mode == "sequential":
        mode = replace(mode, sequential=True)

    def transcribe(jobs: Sequence[AsrJob]) -> list[AsrOutput]:
        return engine.transcribe_batch([job.input for job in jobs])

    return ModelService[AsrJob, AsrOutput](
        "asr", transcribe, Scheduler[AsrJob](mode), engine.concurrency, on_batch=on_batch
    )


def embed_service(
    embedder: Embedder, on_batch: Callable[[BatchRecord], None] | None = None
) -> ModelService[str, np.ndarray]:
    """The embedding micro-batcher around `embedder` (not started); `on_batch` sees each batch."""

    def embed(texts: Sequence[str]) -> list[np.ndarray]:
        return list(embedder.embed(list(texts)))

    return ModelService[str, np.ndarray](
        "embed", embed, Scheduler[str](EMBED_SCHEDULER), 1, on_batch=on_batch
    )


@dataclass(frozen=True, slots=True)
class Voice:
    """The speaker encoder's answer for one utterance (the service's callbacks reserve None for a
    dropped request)."""

    vector: SpeakerVector | None
    """None when the utterance is too short or silent for an embedding."""


def voice_request(session_id: str, audio: Audio) -> Request[Audio]:
    """A request to the speaker service for one utterance's audio; its cost follows its length."""
    return Request(session_id=session_id, kind="final", key="speaker", seconds=len(audio) / SAMPLE_RATE,
                   payload=audio)


def speaker_service(
    encoder: SpeakerEncoder, on_batch: Callable[[BatchRecord], None] | None = None
) -> ModelService[Audio, Voice]:
    """The speaker-embedding micro-batcher around `encoder` (not started); `on_batch` sees each batch."""

    def embed(audios: Sequence[Audio]) -> list[Voice]:
        return [Voice(v) for v in encoder.embed(list(audios))]

    return ModelService[Audio, Voice](
        "speaker", embed, Scheduler[Audio](SPEAKER_SCHEDULER), 1, on_batch=on_batch
    )
