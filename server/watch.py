"""The watch hub behind `/v1/watch`: live conversations and server figures for dashboards.

Every live session's events reach `WatchHub.observe` (a `SessionObserver` in
`SessionServices.observers`): the hub keeps a small view of each running conversation (speaking,
utterance count, last final, final latency, summary) and forwards the events a dashboard shows
to the subscribers of the same tenant. A subscriber receives, in order:

* `snapshot` — the tenant's running conversations and the latest figures, at once;
* `conversation.started` / `conversation.ended` — its first session opened / its last one closed;
  `conversation.updated` — another session joined it or left it (its `participants` changed);
* `speech_started`, `speech_stopped`, `partial`, `final` — the session events, each with
  `conversation_id`, `session_id` and the session's `track` (a participant's name on the meeting
  page, which shows the other participants' words from here); a final also with
  `final_latency_ms`: the final latency of `server.timing`, from the arrival of the audio that
  ends the utterance to the final being sent, as the `palabre_final_latency_seconds` metric);
* `summary` — each summary of a conversation once (from `summarized`, which conversation memory
  calls; not from the sessions, which each receive it), with its `conversation_id`;
* `stats` — every `stats_interval_s` while someone watches.

A subscriber may follow one conversation only (`subscribe(principal, conversation_id)`, what the
meeting page does to show the other participants): it then receives that conversation's messages
and no `stats`.

With a store shared by several front-ends (PostgreSQL), `server.watch_relay` shares each
front-end's messages with the others (`relay`) and hands theirs to `relayed`: a watcher on any
front-end sees the conversations of all, each message at most once. A conversation live on two
front-ends at once is shown once (this front-end's view of it). The `stats` figures stay this
front-end's, but for the count of conversations.

Each subscriber has a bounded queue (`Subscriber`): when a slow watcher's queue is full its queued
partials and figures are dropped first; a watcher still too slow is cut off (it reconnects and
gets a fresh snapshot). Messages are serialized once and shared by every subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from server.auth import Principal, Scope
from server.timing import final_latency
from stream.events import (
    Closed,
    Final,
    Partial,
    Ready,
    ServerEvent,
    SpeechStarted,
    SpeechStopped,
    Summary,
    event_to_dict,
)

if TYPE_CHECKING:
    from server.live import LiveSession

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 2.0
MAX_QUEUED = 256
"""Messages one subscriber may have waiting before its partials are dropped."""
LAST_FINAL_CHARS = 200

Kind = Literal["snapshot", "event", "partial", "stats"]
"""How a queued message may be dropped: partials and stats are expendable, the rest is not."""

Relay = Callable[[str, Kind, dict[str, Any]], None]
"""Told (tenant id, kind, message) of each message the hub publishes about its own sessions."""


@dataclass(slots=True)
class RemoteView:
    """A conversation live on another front-end, as its relayed messages describe it."""

    origin: str
    """The front-end it is live on (`server.watch_relay.WatchRelay.origin`)."""
    tenant_id: str
    view: dict[str, Any]
    """Its `ConversationView.to_json()`, kept up to date by the messages relayed since."""


@dataclass(slots=True)
class ConversationView:
    """What a dashboard shows of one running conversation."""

    conversation_id: str
    tenant_id: str
    started_at: float
    """Wall-clock time (Unix seconds) its first live session opened."""
    language: str | None = None
    sessions: dict[str, str] = field(default_factory=dict)
    """Live session id → its transport ("socket", "webrtc", or the endpoint's own)."""
    tracks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Live session id → its tracks (a participant's name; one per channel of a multichannel
    session), for the sessions that have some."""
    speaking: set[str] = field(default_factory=set)
    """Utterance ids between `speech_started` and their final."""
    utterances: int = 0
    """Non-empty finals stored since it went live."""
    last_final: str = ""
    final_latency_ms: float | None = None
    """The final latency (`server.timing.final_latency`) of the last final that has one."""
    summary: list[dict[str, Any]] | None = None
    """The items of its latest summary (`stream.events.SummaryItem` as JSON)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "started_at": round(self.started_at, 3),
            "language": self.language,
            "sessions": len(self.sessions),
            "transports": sorted(set(self.sessions.values())),
            "participants": sorted({track for tracks in self.tracks.values() for track in tracks}),
            "speaking": bool(self.speaking),
            "utterances": self.utterances,
            "last_final": self.last_final,
            "final_latency_ms": self.final_latency_ms,
            "summary": self.summary,
        }


class Subscriber:
    """One watcher's bounded queue of serialized messages."""

    def __init__(
        self,
        tenant_id: str,
        server_figures: bool,
        max_queued: int = MAX_QUEUED,
        conversation_id: str | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.server_figures = server_figures
        """Whether it sees process-wide figures (scheduler, batches): admins only."""
        self.conversation_id = conversation_id
        """The one conversation it follows (no `stats` then); None: every one of its tenant."""
        self.max_queued = max_queued
        self._queue: deque[tuple[Kind, str]] = deque()
        self._ready = asyncio.Event()
        self.dropped = 0
        self.overflowed = False
        """Too slow even without its partials: the connection should be closed."""

    def offer(self, kind: Kind, text: str) -> None:
        """Queue a message; drop expendable ones (partials, stats) when the queue is full."""
        if self.overflowed:
            return
        if len(self._queue) >= self.max_queued:
            kept = deque(item for item in self._queue if item[0] not in ("partial", "stats"))
            self.dropped += len(self._queue) - len(kept)
            self._queue = kept
            if kind in ("partial", "stats"):
                self.dropped += 1
                return
            if len(self._queue) >= self.max_queued:
                self.overflowed = True
                self._queue.clear()
                self._ready.set()
                return
        self._queue.append((kind, text))
        self._ready.set()

    def follows(self, tenant_id: str, conversation_id: str | None) -> bool:
        """Whether a message of this tenant and conversation (None: `stats`) is for it."""
        if tenant_id != self.tenant_id:
            return False
        return self.conversation_id is None or conversation_id == self.conversation_id

    def pending(self) -> int:
        return len(self._queue)

    async def get(self) -> str | None:
        """The next message, waiting for one; None once the subscriber overflowed."""
        while not self._queue:
            if self.overflowed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()[1]


class WatchHub:
    """Publish/subscribe of live conversation events, per tenant."""

    def __init__(
        self,
        stats: Callable[[], dict[str, Any]],
        *,
        stats_interval_s: float = STATS_INTERVAL_S,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._server_stats = stats
        self.stats_interval_s = stats_interval_s
        self.max_queued = max_queued
        self._subscribers: set[Subscriber] = set()
        self._conversations: dict[str, ConversationView] = {}
        self._sessions: dict[str, LiveSession] = {}
        self._ended_audio_s: dict[str, float] = {}
        """Tenant → audio seconds received by its sessions that have closed."""
        self._rate_base: dict[str, tuple[float, float]] = {}
        """Tenant → (time.monotonic(), total audio seconds) at the previous figures."""
        self._batch_base: tuple[int, int] = (0, 0)
        """(batches, batched requests) of the ASR scheduler at the previous figures."""
        self._ticker: asyncio.Task[None] | None = None
        self.relay: Relay | None = None
        """Shares this front-end's messages with the others (set by `server.watch_relay`)."""
        self.on_new_tenant: Callable[[str], None] | None = None
        """Told of a tenant that has a watcher here and had none before (set by
        `server.watch_relay`, which then tells the other front-ends at once)."""
        self._remote: dict[str, RemoteView] = {}
        """Conversation id → its view, for the conversations live on other front-ends."""

    # --- the observer side ------------------------------------------------------------------

    def observe(self, live: LiveSession, event: ServerEvent) -> None:
        """Take one event of a live session (see `server.live.SessionObserver`); summaries come
        once per conversation through `summarized`, so a session's copy is ignored."""
        if isinstance(event, Ready):
            self._opened(live)
            return
        view = self._conversations.get(live.conversation_id)
        if view is None:
            return
        track = live.start.track if live.start is not None else None
        if isinstance(event, Final) and event.track is not None:  # a multichannel session's: its channel's
            track = event.track
        extra: dict[str, Any] = {"conversation_id": view.conversation_id, "session_id": live.session_id,
                                 "track": track}
        kind: Kind = "event"
        if isinstance(event, SpeechStarted):
            view.speaking.add(event.utterance_id)
        elif isinstance(event, SpeechStopped):
            pass  # forwarded as it is
        elif isinstance(event, Partial):
            kind = "partial"
        elif isinstance(event, Final):
            view.speaking.discard(event.utterance_id)
            latency_s = final_latency(live, event)
            latency = round(latency_s * 1000, 1) if latency_s is not None else None
            extra["final_latency_ms"] = latency
            if not event.text:
                return
            view.utterances += 1
            view.last_final = event.text[:LAST_FINAL_CHARS]
            view.final_latency_ms = latency if latency is not None else view.final_latency_ms
        elif isinstance(event, Closed):
            self._closed(live, view)
            return
        else:
            return
        self._publish(view.tenant_id, kind, {**event_to_dict(event), **extra})

    def summarized(self, summary: Summary) -> None:
        """Take a conversation's new summary, once (however many sessions the conversation has)."""
        view = self._conversations.get(summary.conversation_id)
        if view is None:
            return
        message = event_to_dict(summary)
        view.summary = message["items"]
        self._publish(view.tenant_id, "event", message)

    def _opened(self, live: LiveSession) -> None:
        self._sessions[live.session_id] = live
        transport = live.start.transport if live.start is not None else "socket"
        view = self._conversations.get(live.conversation_id)
        if view is None:
            view = ConversationView(live.conversation_id, live.tenant_id, time.time())
            view.language = live.start.language if live.start is not None else None
            view.sessions[live.session_id] = transport
            self._add_participant(view, live)
            self._conversations[view.conversation_id] = view
            shown = view.conversation_id in self._remote  # watchers here already know it
            self._publish(view.tenant_id, "event", {"type": "conversation.started", **view.to_json()},
                          offer=not shown)
        else:
            view.sessions[live.session_id] = transport
            self._add_participant(view, live)
            self._publish(view.tenant_id, "event", {"type": "conversation.updated", **view.to_json()})

    @staticmethod
    def _add_participant(view: ConversationView, live: LiveSession) -> None:
        tracks = tuple(track for track in live.tracks if track is not None)
        if tracks:
            view.tracks[live.session_id] = tracks

    def _closed(self, live: LiveSession, view: ConversationView) -> None:
        if self._sessions.pop(live.session_id, None) is not None:
            tenant = live.tenant_id
            self._ended_audio_s[tenant] = self._ended_audio_s.get(tenant, 0.0) + live.audio_seconds
        view.sessions.pop(live.session_id, None)
        view.tracks.pop(live.session_id, None)
        if view.sessions:
            self._publish(view.tenant_id, "event", {"type": "conversation.updated", **view.to_json()})
            return
        del self._conversations[view.conversation_id]
        message = {"type": "conversation.ended", "conversation_id": view.conversation_id,
                   "utterances": view.utterances}
        self._publish(view.tenant_id, "event", message, offer=view.conversation_id not in self._remote)

    # --- the other front-ends ---------------------------------------------------------------

    def own_conversations(self) -> list[tuple[str, dict[str, Any]]]:
        """(tenant id, `conversation.started` message) of each conversation live here."""
        return [(v.tenant_id, {"type": "conversation.started", **v.to_json()})
                for v in self._conversations.values()]

    def relayed(self, origin: str, tenant_id: str, kind: Kind, message: dict[str, Any]) -> None:
        """Take a message another front-end published: its conversations join the snapshots and
        figures here, and this front-end's watchers of the tenant receive it (once: a conversation
        also live here is announced by this front-end)."""
        conversation_id = message.get("conversation_id")
        remote = self._remote.get(conversation_id) if isinstance(conversation_id, str) else None
        if remote is not None and remote.tenant_id != tenant_id:
            return
        kind_of = message.get("type")
        local = conversation_id in self._conversations
        if kind_of == "conversation.started" and isinstance(conversation_id, str):
            view = {k: v for k, v in message.items() if k != "type"}
            self._remote[conversation_id] = RemoteView(origin, tenant_id, view)
            if remote is not None or local:
                return
        elif kind_of == "conversation.ended":
            if remote is None or remote.origin != origin:
                return
            del self._remote[str(conversation_id)]
            if local:
                return
        elif remote is not None:
            _follow(remote.view, message)
        self._offer(tenant_id, kind, message)

    def forget(self, origin: str, keep: set[str] | None = None) -> None:
        """End the conversations of front-end `origin` but those in `keep` (it has closed them
        without telling, or went silent): watchers here receive their `conversation.ended`."""
        for conversation_id, remote in list(self._remote.items()):
            if remote.origin != origin or (keep is not None and conversation_id in keep):
                continue
            del self._remote[conversation_id]
            if conversation_id not in self._conversations:
                self._offer(remote.tenant_id, "event", {
                    "type": "conversation.ended", "conversation_id": conversation_id,
                    "utterances": remote.view.get("utterances", 0)})

    # --- the subscriber side ----------------------------------------------------------------

    def subscribe(self, principal: Principal, conversation_id: str | None = None) -> Subscriber:
        """A new watcher of `principal`'s tenant (of one of its conversations only, when given);
        its queue starts with the snapshot (without `stats` for one conversation)."""
        subscriber = Subscriber(
            principal.tenant_id, principal.allows(Scope.ADMIN), self.max_queued, conversation_id
        )
        views = [
            v
            for v in self._listed(principal.tenant_id)
            if subscriber.follows(principal.tenant_id, str(v.get("conversation_id")))
        ]
        snapshot: dict[str, Any] = {"type": "snapshot", "conversations": views}
        if conversation_id is None:
            snapshot["stats"] = self._figures(subscriber)
        subscriber.offer("snapshot", _dumps(snapshot))
        new_tenant = principal.tenant_id not in self.watched_tenants()
        self._subscribers.add(subscriber)
        if new_tenant and self.on_new_tenant is not None:
            self.on_new_tenant(principal.tenant_id)
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="watch-stats")
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        if not self._subscribers and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def watched_tenants(self) -> set[str]:
        """The tenants that have at least one watcher on this front-end."""
        return {subscriber.tenant_id for subscriber in self._subscribers}

    def conversations(self, tenant_id: str) -> list[ConversationView]:
        """The tenant's running conversations, oldest first."""
        views = [v for v in self._conversations.values() if v.tenant_id == tenant_id]
        return sorted(views, key=lambda v: v.started_at)

    def _listed(self, tenant_id: str) -> list[dict[str, Any]]:
        """The tenant's running conversations on every front-end, oldest first, as JSON."""
        views = [v.to_json() for v in self.conversations(tenant_id)]
        views += [r.view for cid, r in self._remote.items()
                  if r.tenant_id == tenant_id and cid not in self._conversations]
        return sorted(views, key=lambda v: float(v.get("started_at") or 0))

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    def _publish(self, tenant_id: str, kind: Kind, message: dict[str, Any], *, offer: bool = True) -> None:
        """Send a message about this front-end's sessions to its watchers (unless `offer` is
        false) and to the other front-ends' (`relay`)."""
        if offer:
            self._offer(tenant_id, kind, message)
        if self.relay is not None:
            self.relay(tenant_id, kind, message)

    def _offer(self, tenant_id: str, kind: Kind, message: dict[str, Any]) -> None:
        text: str | None = None
        for subscriber in self._subscribers:
            if subscriber.follows(tenant_id, message["conversation_id"]):
                text = text or _dumps(message)
                subscriber.offer(kind, text)

    # --- figures ----------------------------------------------------------------------------

    async def _tick(self) -> None:
        """Send `stats` to every subscriber every `stats_interval_s`."""
        while True:
            await asyncio.sleep(self.stats_interval_s)
            try:
                self._send_figures()
            except Exception:
                log.exception("watch figures failed")

    def _send_figures(self) -> None:
        """One `stats` message per (tenant, admin or not), each serialized once."""
        server = self._server_figures()
        tenants: dict[str, dict[str, Any]] = {}
        texts: dict[tuple[str, bool], str] = {}
        for subscriber in list(self._subscribers):
            if subscriber.conversation_id is not None:
                continue  # it follows one conversation: no figures
            key = (subscriber.tenant_id, subscriber.server_figures)
            if key not in texts:
                if subscriber.tenant_id not in tenants:
                    tenants[subscriber.tenant_id] = self._tenant_figures(subscriber.tenant_id)
                figures = tenants[subscriber.tenant_id]
                if subscriber.server_figures:
                    figures = {**figures, "server": server}
                texts[key] = _dumps({"type": "stats", **figures})
            subscriber.offer("stats", texts[key])

    def _figures(self, subscriber: Subscriber) -> dict[str, Any]:
        """The figures of a new subscriber's snapshot (the rates' bases are left alone)."""
        figures = self._tenant_figures(subscriber.tenant_id, update_rate=False)
        if subscriber.server_figures:
            figures["server"] = self._server_figures(update_rate=False)
        return figures

    def _tenant_figures(self, tenant_id: str, *, update_rate: bool = True) -> dict[str, Any]:
        """Sessions, conversations and the audio received per second by one tenant."""
        sessions = [s for s in self._sessions.values() if s.tenant_id == tenant_id]
        total = self._ended_audio_s.get(tenant_id, 0.0) + sum(s.audio_seconds for s in sessions)
        now = time.monotonic()
        since, before = self._rate_base.get(tenant_id, (now, total))
        rate = (total - before) / (now - since) if now > since else 0.0
        if update_rate:
            self._rate_base[tenant_id] = (now, total)
        return {
            "sessions": len(sessions),
            "conversations": len(self._listed(tenant_id)),
            "audio_seconds": round(total, 1),
            "audio_seconds_per_second": round(max(rate, 0.0), 2),
        }

    def _server_figures(self, *, update_rate: bool = True) -> dict[str, Any]:
        """Process-wide figures from the app's stats: sessions, ASR batches, queue wait."""
        stats = self._server_stats()
        out: dict[str, Any] = {"sessions": stats.get("sessions", 0), "uptime_s": stats.get("uptime_s")}
        asr = stats.get("scheduler", {}).get("asr")
        if asr is not None:
            sizes = {int(k): v for k, v in asr.get("batch_sizes", {}).items()}
            batches, requests = sum(sizes.values()), sum(k * v for k, v in sizes.items())
            last_batches, last_requests = self._batch_base
            if update_rate:
                self._batch_base = (batches, requests)
            recent = batches - last_batches
            out["asr"] = {
                "batch_sizes": asr.get("batch_sizes", {}),
                "mean_batch_recent": round((requests - last_requests) / recent, 2) if recent > 0 else None,
                "batches": batches,
                "pending": asr.get("pending", 0),
                "busy_workers": asr.get("busy_workers", 0),
                "workers": asr.get("workers", 0),
                "queue_wait_ms_p50": asr.get("queue_wait_ms_p50"),
                "queue_wait_ms_p95": asr.get("queue_wait_ms_p95"),
                "audio_seconds": asr.get("audio_seconds"),
                "compute_seconds": asr.get("compute_seconds"),
            }
        return out


def _follow(view: dict[str, Any], message: dict[str, Any]) -> None:
    """Update a remote conversation's view (`ConversationView.to_json`) with one of its messages."""
    kind = message.get("type")
    if kind == "conversation.updated":  # a participant joined or left
        view.update({k: v for k, v in message.items() if k != "type"})
    elif kind == "speech_started":
        view["speaking"] = True
    elif kind == "final":
        view["speaking"] = False
        if message.get("text"):
            view["utterances"] = int(view.get("utterances", 0)) + 1
            view["last_final"] = str(message["text"])[:LAST_FINAL_CHARS]
            if message.get("final_latency_ms") is not None:
                view["final_latency_ms"] = message["final_latency_ms"]
    elif kind == "summary":
        view["summary"] = message.get("items")


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
