"""Start-up wiring: the hub, the routes and the listeners; models load in the background
(`server.loading`)."""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from models.failover import FailoverAsr
from server.auth import (
    Authenticator,
    OpenAccess,
    Scope,
    build_authenticator,
    origin_allowed,
    startup_refusal,
)
from server.config import ServerConfig, parse_retention_days, port_range
from server.http import (
    OPEN_TIMEOUT_S,
    HttpRequest,
    HttpResponse,
    Router,
    error_response,
    json_response,
    send_streamed,
)
from server.lifecycle import RetentionJob, add_lifecycle_routes
from server.live import SessionServices
from server.loading import load_services
from server.metrics import Metrics
from server.pages import add_page_routes
from server.routes import add_memory_routes
from server.sessions import SessionHub
from server.stats import server_stats
from server.store import StoreError
from server.transports.audiosocket import AudioSocketEndpoint, serve_audiosocket
from server.transports.handshake import principal_of
from server.transports.realtime import handle_realtime
from server.transports.sip import SipEndpoint, serve_sip
from server.transports.twilio import handle_twilio
from server.transports.watch import handle_watch
from server.transports.ws import handle_stream
from server.watch import WatchHub
from server.watch_relay import WatchRelay
from stream.errors import CloseCode

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
        self.watch_relay: WatchRelay | None = None
        """Shares `watch` with the other front-ends of a PostgreSQL store (from `load`)."""
        self.metrics = Metrics(self)
        self.metrics.routes(self.router)
        self.hub = SessionHub(config.limits, per_tenant_caps=config.auth, on_refused=self.metrics.count_error)
        """Every live session: admission, open/close, resume and supersede, publish."""
        add_memory_routes(self.router, self.hub)
        add_lifecycle_routes(self.router, self.hub)
        self.retention = RetentionJob(self.hub, configured=parse_retention_days(config.retention_days))
        limits = config.limits
        self.websocket_routes: dict[str, WebSocketHandler] = {
            "/v1/stream": partial(handle_stream, hub=self.hub, auth=self.auth, limits=limits),
            "/v1/realtime": partial(handle_realtime, hub=self.hub, auth=self.auth, limits=limits),
            "/v1/telephony/twilio": partial(
                handle_twilio, hub=self.hub, auth=self.auth, limits=limits, diarize=config.telephony_diarize
            ),
            "/v1/watch": partial(handle_watch, watch=self.watch, auth=self.auth),
        }
        """WebSocket endpoints by path: each a transport given the hub, never the app."""
        self.started_at = time.monotonic()

    # --- lifecycle ------------------------------------------------------------------------

    async def load(self) -> None:
        """Load the models and open the store (`server.loading`); sessions may open afterwards."""
        services = await load_services(
            self.config,
            metrics=self.metrics,
            publish=self.hub.publish,
            observers=[self.watch.observe],
            summary_observers=[self.watch.summarized],
        )
        self.hub.serve(services)
        self.watch_relay = WatchRelay(self.watch, services.store)
        self.watch_relay.start()
        self.retention.start()

    @property
    def services(self) -> SessionServices | None:
        """What sessions share; None while the models load."""
        return self.hub.services

    def active_sessions(self) -> int:
        return len(self.hub)

    async def close(self) -> None:
        await self.retention.close()
        if self.watch_relay is not None:
            await self.watch_relay.close()
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
        return json_response(200, {"status": "ok", "model": self.services.asr.model_name})

    def switch_back(self) -> None:
        """Operator command (SIGUSR1): return the ASR to its primary engine after a failover."""
        if self.services is None:
            return
        for lane in self.services.asr.lanes:
            if isinstance(lane.engine, FailoverAsr):
                lane.engine.switch_back()

    def stats(self) -> dict[str, Any]:
        """Server figures: sessions, scheduler, process (`/v1/stats`, the dashboard)."""
        return server_stats(self.hub, self.started_at)

    async def _stats(self, _request: HttpRequest) -> HttpResponse:
        return json_response(200, self.stats())

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer plain HTTP requests (GET, DELETE); let WebSocket upgrades to known paths through."""
        path = request.path.partition("?")[0]
        if path in self.websocket_routes:
            if not origin_allowed(request.headers.get("Origin"), self.config.allowed_origins):
                return connection.respond(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
            if self.services is None:
                return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "models are loading\n")
            return None
        matched = self.router.match(request.path, request.method)
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
            log.exception("%s %s failed", request.method, path)
            result = error_response(500, "internal", "internal error")
        if result.stream is not None:
            try:
                await send_streamed(connection, result)
            except Exception:
                log.exception("%s %s failed while streaming its body", request.method, path)
            return Response(result.status, "", Headers(), b"")  # not sent: the connection is closed
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


async def run(config: ServerConfig) -> None:
    """Serve until SIGINT/SIGTERM."""
    refusal = startup_refusal(config)
    if refusal is not None:
        raise SystemExit(f"palabre: {refusal}")
    try:
        auth = build_authenticator(config)
    except StoreError as error:  # its message names the database, not its password
        raise SystemExit(f"palabre: {error}") from None
    app = App(config, auth)
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
        open_timeout=OPEN_TIMEOUT_S,
        max_size=max(config.limits.max_frame_bytes, config.limits.max_text_bytes) + 1024,
        ping_interval=20,
        ping_timeout=20,
    ) as server:
        log.info("listening on ws://%s:%d", config.host, config.port)
        audiosocket = None
        if config.audiosocket_port is not None:
            endpoint = AudioSocketEndpoint(
                app.hub, app.auth, config.audiosocket_token, config.limits, diarize=config.telephony_diarize
            )
            audiosocket = await serve_audiosocket(endpoint, config.host, config.audiosocket_port)
        sip = None
        if config.sip_port is not None:
            sip_endpoint = SipEndpoint(
                app.hub, app.auth, config.sip_token, config.limits, diarize=config.telephony_diarize
            )
            sip = await serve_sip(
                sip_endpoint, config.host, config.sip_port, port_range(config.sip_rtp_ports)
            )
        loader = asyncio.create_task(app.load())
        try:
            await asyncio.wait([loader, stop], return_when=asyncio.FIRST_COMPLETED)
            if loader.done() and loader.exception() is not None:
                failure = loader.exception()
                if isinstance(failure, StoreError):  # its message names the database, not its password
                    raise SystemExit(f"palabre: {failure}")
                raise failure  # type: ignore[misc]
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
