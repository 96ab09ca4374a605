"""Start-up wiring: load the models, open the store, start the services and the listeners."""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import os
import resource
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from models.failover import FailoverAsr
from models.registry import load_embedder, load_llm, load_ner, load_speaker, load_vad, set_index_threads
from server.auth import (
    Authenticator,
    OpenAccess,
    Scope,
    build_authenticator,
    origin_allowed,
    startup_refusal,
)
from server.config import ServerConfig, port_range
from server.engines import asr_service, load_asr_engine, speaker_service
from server.engines import embed_service as build_embed_service
from server.http import HttpRequest, HttpResponse, Router, error_response, json_response
from server.live import LiveConversations, SessionServices
from server.llm_queue import LlmQueue
from server.memory import Knowledge
from server.metrics import Metrics
from server.model_service import BatchService
from server.pages import add_page_routes
from server.ray_services import ModelInfo, RemoteModelService
from server.routes import add_memory_routes
from server.sessions import SessionHub
from server.store import AsyncStore
from server.transports.audiosocket import AudioSocketEndpoint, serve_audiosocket
from server.transports.handshake import principal_of
from server.transports.realtime import handle_realtime
from server.transports.sip import SipEndpoint, serve_sip
from server.transports.twilio import handle_twilio
from server.transports.watch import handle_watch
from server.transports.ws import handle_stream
from server.watch import WatchHub
from stream.answers import Passage, build_answer_request
from stream.errors import CloseCode
from stream.interfaces import AsrOutput, Embedder, LlmEngine
from stream.session import AsrJob

log = logging.getLogger("palabre")


class App:
    """The running server: start-up wiring, HTTP dispatch, figures. Sessions live in `hub`."""

    def __init__(self, config: ServerConfig, auth: Authenticator | None = None) -> None:
        self.config = config
        self.auth: Authenticator = auth if auth is not None else OpenAccess(config.tenant)
        self.router = Router()
        self.router.add("/healthz", self._healthz, scope=None)
        self.router.add("/v1/stats", self._stats, scope=Scope.ADMIN)
        add_page_routes(self.router)
        self.watch = WatchHub(self.stats)
        """Live conversations and figures for `/v1/watch` (the dashboard)."""
        self.metrics = Metrics(self)
        self.metrics.routes(self.router)
        self.hub = SessionHub(config.limits, per_tenant_caps=config.auth, on_refused=self.metrics.count_error)
        """Every live session: admission, open/close, resume and supersede, publish."""
        add_memory_routes(self.router, self.hub)
        limits = config.limits
        self.websocket_routes: dict[str, WebSocketHandler] = {
            "/v1/stream": partial(handle_stream, hub=self.hub, auth=self.auth, limits=limits),
            "/v1/realtime": partial(handle_realtime, hub=self.hub, auth=self.auth, limits=limits),
            "/v1/telephony/twilio": partial(handle_twilio, hub=self.hub, auth=self.auth, limits=limits),
            "/v1/watch": partial(handle_watch, watch=self.watch, auth=self.auth),
        }
        """WebSocket endpoints by path: each a transport given the hub, never the app."""
        self.started_at = time.monotonic()
        self.asr_engine: Any = None

    # --- lifecycle ------------------------------------------------------------------------

    async def load(self) -> None:
        """Load models (in a thread: it takes seconds) and open the store."""
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        store = await AsyncStore.open(cfg.database_path)
        await store.ensure_tenant(cfg.tenant)

        def load_models() -> tuple[Any, Any]:
            return load_asr_engine(cfg), load_vad()

        engine: Any
        asr: BatchService[AsrJob, AsrOutput]
        if cfg.ray_address is not None:  # the model runs in a Ray actor shared by front-ends
            from server.ray_services import remote_service

            asr, engine = await remote_service("asr", cfg)
            vad = await asyncio.to_thread(load_vad)
        else:
            engine, vad = await asyncio.to_thread(load_models)
            asr = asr_service(engine, cfg)
        self.asr_engine = engine
        knowledge = await self._load_knowledge(store) if cfg.memory else None
        speaker = None
        if cfg.speaker_model != "none":
            encoder = await asyncio.to_thread(load_speaker, cfg.speaker_model, device=cfg.device)
            speaker = speaker_service(encoder)
            speaker.start()
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
            observers=[self.watch.observe],
            speaker=speaker,
            publish=self.hub.publish,
        )
        self.metrics.attach(services)
        self.hub.serve(services)
        log.info(
            "ready: model %s on %s (%d workers), data in %s",
            engine.name,
            engine.device,
            engine.concurrency,
            cfg.data_dir,
        )

    async def _load_knowledge(self, store: AsyncStore) -> Knowledge:
        """The embedder, the LLM and the conversation memory over them."""
        set_index_threads(1)  # single adds cost 0.1 ms on one thread, ~6 ms on two under load
        cfg = self.config
        embedder: Embedder | ModelInfo
        embed_service: BatchService[str, np.ndarray]
        if cfg.ray_address is not None:  # the embedder runs in a Ray actor shared by front-ends
            from server.ray_services import remote_service

            embed_service, embedder = await remote_service("embed", cfg)
        else:
            embedder = await asyncio.to_thread(load_embedder, cfg.embedder, device=cfg.device)
            embed_service = build_embed_service(embedder)
        embed_service.start()
        llm_queue = None
        if cfg.llm != "none":
            engine = await asyncio.to_thread(
                load_llm, cfg.llm, device=cfg.device, n_threads=1, cache_dir=cfg.data_dir / "models"
            )
            await asyncio.to_thread(warm_up_answers, engine)
            llm_queue = LlmQueue(engine)
            llm_queue.start()
        knowledge = Knowledge(
            store,
            embed_service,
            embedder.name,
            embedder.dim,
            cfg.data_dir / "index",
            llm_queue,
            publish=self.hub.publish,
            ner=load_ner() if cfg.entities else None,
            summary_observers=[self.watch.summarized],
        )
        knowledge.start()
        await knowledge.index(cfg.tenant)
        log.info("memory: embedder %s (%d dims), LLM %s", embedder.name, embedder.dim, cfg.llm)
        return knowledge

    @property
    def services(self) -> SessionServices | None:
        """What sessions share; None while the models load."""
        return self.hub.services

    def active_sessions(self) -> int:
        return len(self.hub)

    async def close(self) -> None:
        await self.watch.close()
        await self.hub.close()
        services = self.hub.services
        if services is not None:
            await services.asr.close()
            if services.speaker is not None:
                await services.speaker.close()
            knowledge = services.knowledge
            if knowledge is not None:
                await knowledge.close()
                await knowledge.embed.close()
                if knowledge.llm is not None:
                    await knowledge.llm.close()
            await services.store.close()

    # --- HTTP -----------------------------------------------------------------------------

    async def _healthz(self, _request: HttpRequest) -> HttpResponse:
        if self.services is None:
            return json_response(503, {"status": "loading"})
        return json_response(200, {"status": "ok", "model": self.services.model_name})

    def asr_status(self) -> dict[str, Any]:
        """The ASR engine's device and failover state."""
        engine = self.asr_engine
        if engine is None:
            return {"loaded": False}
        out: dict[str, Any] = {"loaded": True, "model": engine.name, "device": engine.device}
        if isinstance(engine, FailoverAsr):
            state = engine.state
            out["failover"] = {
                "active": state.active,
                "switches": state.switches,
                "last_error": state.last_error,
                "primary_device": engine.primary.device,
                "fallback_device": engine.fallback.device,
            }
        return out

    def switch_back(self) -> None:
        """Operator command (SIGUSR1): return the ASR to its primary engine after a failover."""
        if isinstance(self.asr_engine, FailoverAsr):
            self.asr_engine.switch_back()

    def stats(self) -> dict[str, Any]:
        """Server figures: sessions, scheduler, process (also for the dashboard later)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out: dict[str, Any] = {
            "sessions": len(self.hub),
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "asr": self.asr_status(),
            "process": {
                "rss_bytes": _current_rss(),
                "max_rss_bytes": usage.ru_maxrss * 1024,
                "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            },
        }
        if self.services is not None:
            asr = self.services.asr
            st = asr.scheduler.stats
            waits = sorted(st.queue_wait_s)
            out["scheduler"] = {
                "asr": {
                    "batches": st.batches,
                    "batch_sizes": {str(k): v for k, v in sorted(st.batch_sizes.items())},
                    "requests": dict(st.submitted),
                    "replaced_partials": st.replaced_partials,
                    "dropped_partials": st.dropped_partials,
                    "pending": asr.scheduler.pending,
                    "busy_workers": asr.busy_workers,
                    "workers": asr.workers,
                    "queue_wait_ms_p50": _percentile_ms(waits, 0.5),
                    "queue_wait_ms_p95": _percentile_ms(waits, 0.95),
                    "compute_seconds": round(asr.compute_seconds, 3),
                    "audio_seconds": round(asr.seconds_done, 3),
                    "cost_per_audio_second": {
                        str(b): round(c.per_audio_second, 4) for b, c in sorted(asr.scheduler.costs.items())
                    },
                }
            }
            if isinstance(asr, RemoteModelService):  # --ray: the figures above are the shared actor's
                out["scheduler"]["asr"]["ray"] = asr.describe()
        return out

    async def _stats(self, _request: HttpRequest) -> HttpResponse:
        return json_response(200, self.stats())

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer plain HTTP GETs; let WebSocket upgrades to known paths through."""
        path = request.path.partition("?")[0]
        if path in self.websocket_routes:
            if not origin_allowed(request.headers.get("Origin"), self.config.allowed_origins):
                return connection.respond(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
            if self.services is None:
                return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "models are loading\n")
            return None
        matched = self.router.match(request.path)
        if matched is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        route, http_request = matched
        scope = http_request.required_scope
        if scope is not None:
            principal = principal_of(self.auth, request)
            if principal is None:
                result = error_response(401, "unauthorized", "a valid token is required")
                return self._http_response(result)
            if not principal.allows(scope):
                result = error_response(403, "forbidden", f"this token lacks the {scope.value!r} scope")
                return self._http_response(result)
            http_request = replace(http_request, principal=principal)
        try:
            result = await route(http_request)
        except Exception:
            log.exception("GET %s failed", path)
            result = error_response(500, "internal", "internal error")
        return self._http_response(result)

    @staticmethod
    def _http_response(result: HttpResponse) -> Response:
        headers = Headers([("Content-Type", result.content_type), ("Content-Length", str(len(result.body)))])
        return Response(result.status, http.HTTPStatus(result.status).phrase, headers, result.body)

    async def handler(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        path = connection.request.path.partition("?")[0]
        endpoint = self.websocket_routes.get(path)
        if endpoint is None:
            await connection.close(CloseCode.POLICY_VIOLATION, "unknown endpoint")
            return
        await endpoint(connection)


WebSocketHandler = Callable[[ServerConnection], Awaitable[None]]


def _current_rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _percentile_ms(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return round(sorted_values[index] * 1000, 1)


async def run(config: ServerConfig) -> None:
    """Serve until SIGINT/SIGTERM."""
    refusal = startup_refusal(config)
    if refusal is not None:
        raise SystemExit(f"palabre: {refusal}")
    app = App(config, build_authenticator(config))
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, request_stop)
    loop.add_signal_handler(signal.SIGUSR1, app.switch_back)
    async with serve(
        app.handler,
        config.host,
        config.port,
        process_request=app.process_request,
        max_size=max(config.limits.max_frame_bytes, config.limits.max_text_bytes) + 1024,
        ping_interval=20,
        ping_timeout=20,
    ) as server:
        log.info("listening on ws://%s:%d", config.host, config.port)
        audiosocket = None
        if config.audiosocket_port is not None:
            endpoint = AudioSocketEndpoint(app.hub, app.auth, config.audiosocket_token, config.limits)
            audiosocket = await serve_audiosocket(endpoint, config.host, config.audiosocket_port)
        sip = None
        if config.sip_port is not None:
            sip_endpoint = SipEndpoint(app.hub, app.auth, config.sip_token, config.limits)
            sip = await serve_sip(
                sip_endpoint, config.host, config.sip_port, port_range(config.sip_rtp_ports)
            )
        loader = asyncio.create_task(app.load())
        try:
            await asyncio.wait([loader, stop], return_when=asyncio.FIRST_COMPLETED)
            if loader.done() and loader.exception() is not None:
                raise loader.exception()  # type: ignore[misc]
            await stop
        finally:
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loader
            server.close()
            if audiosocket is not None:
                audiosocket.close()
            if sip is not None:
                sip.close()
            await app.close()
            app.auth.close()


def warm_up_answers(engine: LlmEngine) -> None:
    """Evaluate the answer prompt's fixed part once, so the first question reuses it (llama.cpp
    keeps the previous prompt's cache): the first token of every answer then comes in well under
    a second instead of paying for the few-shot examples."""
    request = build_answer_request(
        "Warm up?", [Passage("warm:0", 0, "Warm up.", 0.0)], chat=engine.chat, max_tokens=1
    )
    for _ in engine.generate(request):
        pass
