"""Loading what sessions share: the store, the models and their micro-batchers, the memory.

Run once at start-up, after the listeners are up (the models take seconds to load: until then
new sessions are refused with `unavailable`). With `--ray` the ASR and the embedder are Ray
actors shared by several front-ends; otherwise engines come from `models.registry`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import numpy as np

from models.registry import load_embedder, load_llm, load_ner, load_vad, set_index_threads
from server.config import ServerConfig
from server.engines import asr_service, load_asr_engine
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
from stream.interfaces import AsrEngine, AsrOutput, Embedder, LlmEngine, VadModel
from stream.session import AsrJob

__all__ = ["load_services", "warm_up_answers"]

log = logging.getLogger("palabre")

Publish = Callable[[str, ServerEvent], None]


async def load_services(
    cfg: ServerConfig,
    *,
    metrics: Metrics,
    publish: Publish,
    observers: Sequence[SessionObserver],
    summary_observers: Sequence[Callable[[Summary], None]],
) -> tuple[SessionServices, AsrEngine | ModelInfo]:
    """Open the store, load the models, start their services; returns the services and the ASR
    engine (or the Ray actor's description). `metrics` gets the hooks of every service,
    `publish` sends memory's events to a conversation, `observers` see every session's events."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    store = await open_store(cfg.store, cfg.database_path, on_write=metrics.store_write_done)
    await store.ensure_tenant(cfg.tenant)

    def load_models() -> tuple[AsrEngine, VadModel]:
        return load_asr_engine(cfg), load_vad()

    engine: AsrEngine | ModelInfo
    asr: BatchService[AsrJob, AsrOutput]
    if cfg.ray_address is not None:  # the model runs in a Ray actor shared by front-ends
        from server.ray_services import remote_service

        asr, engine = await remote_service("asr", cfg, metrics.batch_recorder("asr"))
        vad = await asyncio.to_thread(load_vad)
    else:
        local, vad = await asyncio.to_thread(load_models)
        asr, engine = asr_service(local, cfg, metrics.batch_recorder("asr")), local
    knowledge = await _load_knowledge(cfg, store, metrics, publish, summary_observers) if cfg.memory else None
    asr.start()
    services = SessionServices(
        asr=asr,
        vad=vad,
        store=store,
        model_name=engine.name,
        multilingual=engine.multilingual,
        session_config=cfg.session,
        conversations=LiveConversations(),
        knowledge=knowledge,
        observers=[*observers, metrics.observe],
        ner=load_ner(),
    )
    log.info(
        "ready: model %s on %s (%d workers), data in %s",
        engine.name,
        engine.device,
        engine.concurrency,
        cfg.data_dir,
    )
    return services, engine


async def _load_knowledge(
    cfg: ServerConfig,
    store: ConversationStore,
    metrics: Metrics,
    publish: Publish,
    summary_observers: Sequence[Callable[[Summary], None]],
) -> Knowledge:
    """The embedder, the LLM and the conversation memory over them."""
    set_index_threads(1)  # single adds cost 0.1 ms on one thread, ~6 ms on two under load
    embedder: Embedder | ModelInfo
    embed_service: BatchService[str, np.ndarray]
    if cfg.ray_address is not None:  # the embedder runs in a Ray actor shared by front-ends
        from server.ray_services import remote_service

        embed_service, embedder = await remote_service("embed", cfg, metrics.batch_recorder("embed"))
    else:
        embedder = await asyncio.to_thread(load_embedder, cfg.embedder, device=cfg.device)
        embed_service = build_embed_service(embedder, metrics.batch_recorder("embed"))
    embed_service.start()
    llm_queue = None
    if cfg.llm != "none":
        engine = await asyncio.to_thread(
            load_llm, cfg.llm, device=cfg.device, n_threads=1, cache_dir=cfg.data_dir / "models"
        )
        await asyncio.to_thread(warm_up_answers, engine)
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
        ner=load_ner() if cfg.entities else None,
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
