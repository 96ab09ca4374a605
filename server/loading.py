"""Loading what sessions share: the store, the models and their micro-batchers, the memory.

Run once at start-up, after the listeners are up (the models take seconds to load: until then
new sessions are refused with `unavailable`). With `--ray` the ASR and the embedder are Ray
actors shared by several front-ends; otherwise engines come from `models.registry`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import ParamSpec, Protocol, TypeVar

import numpy as np

from models.registry import (
    load_embedder,
    load_llm,
    load_ner,
    load_speaker,
    load_vad,
    set_index_threads,
    whisper_languages,
)
from server.asr_lanes import AsrLane, AsrLanes, LanguageRoutes
from server.config import ServerConfig
from server.daemon_executor import DaemonExecutor
from server.engines import asr_service, load_asr_engine, speaker_service
from server.engines import embed_service as build_embed_service
from server.live import LiveConversations, SessionObserver, SessionServices
from server.llm_queue import LlmQueue
from server.memory import Knowledge
from server.metrics import Metrics
from server.model_service import BatchService
from server.ray_services import ModelInfo
from server.store_interface import ConversationStore, open_store
from stream.answers import Passage, build_answer_request
from stream.events import ServerEvent, Summary
from stream.interfaces import Embedder, EntityRecognizer, LlmEngine

__all__ = ["load_services", "warm_up_answers"]

log = logging.getLogger("palabre")

P = ParamSpec("P")
T = TypeVar("T")


async def _in_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` on a daemon thread: a stop during loading does not wait for it."""
    executor = DaemonExecutor(1, "load")
    try:
        return await asyncio.wrap_future(executor.submit(fn, *args, **kwargs))
    finally:
        executor.shutdown(wait=False)


class Publish(Protocol):
    """Sends an event to the live sessions of a conversation, but `besides` (`SessionHub.publish`)."""

    def __call__(self, conversation_id: str, event: ServerEvent, besides: str | None = None) -> None: ...


async def load_services(
    cfg: ServerConfig,
    *,
    metrics: Metrics,
    publish: Publish,
    observers: Sequence[SessionObserver],
    summary_observers: Sequence[Callable[[Summary], None]],
) -> SessionServices:
    """Open the store, load the models, start their services. `metrics` gets the hooks of every
    service, `publish` sends memory's events to a conversation, `observers` see every session's
    events."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    store = await open_store(cfg.store, cfg.database_path, on_write=metrics.store_write_done)
    await store.ensure_tenant(cfg.tenant)

    asr = await _load_asr_lanes(cfg, metrics)
    vad = await _in_thread(load_vad)
    ner = await _in_thread(load_ner)  # entity tagging, and names for `start.redact`
    knowledge = (
        await _load_knowledge(cfg, store, metrics, publish, summary_observers, ner if cfg.entities else None)
        if cfg.memory
        else None
    )
    speaker = None
    if cfg.speaker_model != "none":  # the speaker encoder: `start.diarize`
        encoder = await _in_thread(load_speaker, cfg.speaker_model, device=cfg.device)
        speaker = speaker_service(encoder, metrics.batch_recorder("speaker"))
        speaker.start()
    asr.start()
    services = SessionServices(
        asr=asr,
        vad=vad,
        store=store,
        session_config=cfg.session,
        conversations=LiveConversations(),
        knowledge=knowledge,
        observers=[*observers, metrics.observe],
        speaker=speaker,
        publish=publish,
        on_speaker_wait=metrics.speaker_waited,
        ner=ner,
        vocabulary=cfg.vocabulary,
    )
    for lane in asr.lanes:
        log.info(
            "ready: model %s for %s on %s (%d workers)",
            lane.model,
            ", ".join(asr.routes.languages_of(lane.model)),
            lane.engine.device,
            lane.engine.concurrency,
        )
    log.info("data in %s", cfg.data_dir)
    return services


async def _load_asr_lanes(cfg: ServerConfig, metrics: Metrics) -> AsrLanes:
    """Every model of `cfg.language_models()`, each in its own lane (all loaded before serving);
    with `--ray`, the one model of the shared Ray actor."""
    models = cfg.language_models()
    lanes: list[AsrLane] = []
    on_batch = metrics.batch_recorder("asr")
    if cfg.ray_address is not None:  # the model runs in a Ray actor shared by front-ends
        from server.ray_services import remote_service

        remote, info = await remote_service("asr", cfg, on_batch)
        lanes.append(AsrLane(next(iter(models.values())), info, remote))
    else:
        for model in dict.fromkeys(models.values()):
            engine = await _in_thread(load_asr_engine, cfg, model)
            lanes.append(AsrLane(model, engine, asr_service(engine, cfg, on_batch)))
    routes = LanguageRoutes(
        models, {lane.model: lane.engine.multilingual for lane in lanes}, frozenset(whisper_languages())
    )
    return AsrLanes(routes, lanes)


async def _load_knowledge(
    cfg: ServerConfig,
    store: ConversationStore,
    metrics: Metrics,
    publish: Publish,
    summary_observers: Sequence[Callable[[Summary], None]],
    ner: EntityRecognizer | None,
) -> Knowledge:
    """The embedder, the LLM and the conversation memory over them (`ner` tags entities)."""
    set_index_threads(1)  # single adds cost 0.1 ms on one thread, ~6 ms on two under load
    embedder: Embedder | ModelInfo
    embed_service: BatchService[str, np.ndarray]
    if cfg.ray_address is not None:  # the embedder runs in a Ray actor shared by front-ends
        from server.ray_services import remote_service

        embed_service, embedder = await remote_service("embed", cfg, metrics.batch_recorder("embed"))
    else:
        embedder = await _in_thread(load_embedder, cfg.embedder, device=cfg.device)
        embed_service = build_embed_service(embedder, metrics.batch_recorder("embed"))
    embed_service.start()
    llm_queue = None
    if cfg.llm != "none":
        engine = await _in_thread(
            load_llm, cfg.llm, device=cfg.device, n_threads=1, cache_dir=cfg.data_dir / "models"
        )
        await _in_thread(warm_up_answers, engine)
        llm_queue = LlmQueue(engine, on_generation=metrics.generation_done)
        llm_queue.start()
    knowledge = Knowledge(
        store,
        embed_service,
        embedder.name,
        embedder.dim,
        cfg.data_dir / "index",
        llm_queue,
        publish=publish,
        ner=ner,
        summary_observers=list(summary_observers),
    )
    knowledge.start()
    await knowledge.index(cfg.tenant)
    log.info("memory: embedder %s (%d dims), LLM %s", embedder.name, embedder.dim, cfg.llm)
    return knowledge


def warm_up_answers(engine: LlmEngine) -> None:
    """Evaluate the answer prompt's fixed part once, so the first question reuses it (llama.cpp
    keeps the previous prompt's cache): the first token of every answer then comes in well under
    a second instead of paying for the few-shot examples."""
    request = build_answer_request(
        "Warm up?", [Passage("warm:0", 0, "Warm up.", 0.0)], chat=engine.chat, max_tokens=1
    )
    for _ in engine.generate(request):
        pass
