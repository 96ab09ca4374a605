"""`/v1/watch` across front-ends: each front-end's watch messages shared through the store.

With a store shared by several front-ends (PostgreSQL), a dashboard connected to any of them shows
the conversations of all. `WatchRelay` connects this front-end's `WatchHub` to the others over a
`Broadcast` of the store (PostgreSQL `NOTIFY` on `WATCH_CHANNEL`):

* every message the hub publishes about its own sessions (`conversation.started`/`ended`,
  `speech_started`/`stopped`, `partial`, `final`, `summary`) is sent as an envelope
  `{"o": origin, "t": tenant, "k": kind, "m": message}`, in order, by one sender task;
* an envelope from another origin goes to `WatchHub.relayed`, which hands it to the watchers of
  that tenant only and keeps a view of the remote conversation for snapshots;
* a message too long for a notification (`NOTIFY_MAX_BYTES`: a final with many words, a long
  summary) is sent without its long fields plus `"fill"`, and the receiver reads them back from
  the store (the final's row by seq, the conversation's latest summary); a partial too long is
  dropped (the final follows);
* every `heartbeat_s` each front-end sends the ids of its live conversations (`"beat"`): a
  receiver ends the remote conversations missing from it, and all those of a front-end not heard
  from for `SILENT_BEATS` beats (killed: its `conversation.ended` never came);
* a beat also names the tenants that have watchers on its front-end (`"w"`; sent at once, out
  of turn, when a tenant gets its first watcher there): partials, the bulk of the messages (a few
  a second per speaking session), are sent only while another front-end watches their tenant;
  the rest is always sent, since it keeps every front-end's list of conversations for snapshots.
  A beat without `"w"` (a front-end from before it) counts as watching every tenant;
* after each (re)connection a front-end asks the others to announce their live conversations
  again (`"sync"`), since notifications are not stored.

The `stats` figures stay per front-end. Notifications are best effort: a message lost while the
database is unreachable is not sent again (the beats and syncs restore the list of conversations).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from typing import Any, cast

from server.memory.tasks import TaskSet
from server.store_interface import Broadcast, ConversationStore
from server.store_postgresql import NOTIFY_MAX_BYTES
from server.watch import Kind, WatchHub

log = logging.getLogger(__name__)

WATCH_CHANNEL = "palabre_watch"
"""The notification channel the front-ends share their watch messages on."""
HEARTBEAT_S = 5.0
SILENT_BEATS = 3
"""Beats missed before a front-end's conversations are taken for ended."""
MAX_OUTBOX = 1024
"""Envelopes waiting to be sent before partials are dropped (the database is slow or away)."""

_FILLED = {"final": ("text", "words"), "summary": ("items",)}
"""The fields left out of a message too long to notify, read back from the store by the receiver."""


class WatchRelay:
    """Shares a `WatchHub`'s messages with the other front-ends of the store, and theirs with it."""

    def __init__(
        self, hub: WatchHub, store: ConversationStore, *, heartbeat_s: float = HEARTBEAT_S
    ) -> None:
        self.hub = hub
        self.store = store
        self.heartbeat_s = heartbeat_s
        self.origin = uuid.uuid4().hex[:16]
        """This front-end, in the envelopes it sends."""
        self._channel: Broadcast | None = None
        self._outbox: deque[tuple[Kind | None, str]] = deque()
        self._ready = asyncio.Event()
        self._heard: dict[str, float] = {}
        """Other front-end → when (monotonic) it was last heard from."""
        self._watching: dict[str, set[str] | None] = {}
        """Other front-end → the tenants it has watchers of (None: it does not say; all)."""
        self.partials_held_back = 0
        """Partials not sent because no other front-end watched their tenant."""
        self._tasks = TaskSet()
        self._loops: list[asyncio.Task[None]] = []

    def start(self) -> bool:
        """Start relaying when the store is shared; False (nothing to do) otherwise."""
        self._channel = self.store.broadcast(WATCH_CHANNEL, self._received, self._connected)
        if self._channel is None:
            return False
        self._channel.start()
        self.hub.relay = self._share
        self.hub.on_new_tenant = lambda _tenant: self._send_beat()
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._send_all(), name="watch-relay-send"),
                       loop.create_task(self._beat(), name="watch-relay-beat")]
        return True

    async def close(self) -> None:
        """Stop relaying (the others end this front-end's conversations after its silence)."""
        self.hub.relay = None
        self.hub.on_new_tenant = None
        for task in self._loops:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._tasks.wait()
        if self._channel is not None:
            await self._channel.close()

    # --- sending ----------------------------------------------------------------------------

    def _share(self, tenant_id: str, kind: Kind, message: dict[str, Any]) -> None:
        """Queue one of the hub's messages for the other front-ends (see `WatchHub.relay`); a
        partial only when one of them watches its tenant."""
        if kind == "partial" and not self._watched_elsewhere(tenant_id):
            self.partials_held_back += 1
            return
        text = self._envelope(t=tenant_id, k=kind, m=message)
        if len(text.encode()) > NOTIFY_MAX_BYTES:
            left_out = _FILLED.get(str(message.get("type")))
            if left_out is None:
                log.debug("watch relay: a %s too long to share, dropped", message.get("type"))
                return
            short = {k: v for k, v in message.items() if k not in left_out}
            text = self._envelope(t=tenant_id, k=kind, m=short, fill=True)
        self._queue(kind, text)

    def _watched_elsewhere(self, tenant_id: str) -> bool:
        return any(tenants is None or tenant_id in tenants for tenants in self._watching.values())

    def _envelope(self, **fields: Any) -> str:
        return json.dumps({"o": self.origin, **fields}, separators=(",", ":"), ensure_ascii=False)

    def _queue(self, kind: Kind | None, text: str) -> None:
        if len(self._outbox) >= MAX_OUTBOX:
            kept = deque(item for item in self._outbox if item[0] not in ("partial", "stats"))
            if len(kept) >= MAX_OUTBOX:
                kept.popleft()
            self._outbox = kept
        self._outbox.append((kind, text))
        self._ready.set()

    async def _send_all(self) -> None:
        """Send the queued envelopes one after the other (so they arrive in order)."""
        assert self._channel is not None
        while True:
            while not self._outbox:
                self._ready.clear()
                await self._ready.wait()
            _, text = self._outbox[0]
            try:
                await self._channel.send(text)
            except Exception as error:  # the database is away: keep the envelope, retry
                log.warning("watch relay: sending failed (%s); retrying", type(error).__name__)
                await asyncio.sleep(1.0)
                continue
            self._outbox.popleft()

    async def _beat(self) -> None:
        """Every `heartbeat_s`: announce this front-end's live conversations, end silent ones'."""
        while True:
            self._send_beat()
            silent = time.monotonic() - SILENT_BEATS * self.heartbeat_s
            for origin, heard in list(self._heard.items()):
                if heard < silent:
                    log.info("watch relay: front-end %s silent; its conversations end", origin)
                    del self._heard[origin]
                    self._watching.pop(origin, None)
                    self.hub.forget(origin)
            await asyncio.sleep(self.heartbeat_s)

    def _send_beat(self) -> None:
        """Queue a beat: this front-end's live conversations and its watched tenants."""
        ids = [m["conversation_id"] for _, m in self.hub.own_conversations()]
        self._queue(None, self._envelope(beat=ids, w=sorted(self.hub.watched_tenants())))

    def _connected(self) -> None:
        """(Re)connected: messages may have been missed; ask the others to announce theirs."""
        self._queue(None, self._envelope(sync=True))

    # --- receiving --------------------------------------------------------------------------

    def _received(self, text: str) -> None:
        envelope = json.loads(text)
        origin = str(envelope.get("o", ""))
        if origin == self.origin:
            return
        self._heard[origin] = time.monotonic()
        if envelope.get("sync"):
            for tenant_id, message in self.hub.own_conversations():
                self._queue("event", self._envelope(t=tenant_id, k="event", m=message))
            self._send_beat()  # and who watches here, so that it sends partials from now on
        elif "beat" in envelope:
            watched = envelope.get("w")
            self._watching[origin] = None if watched is None else {str(t) for t in watched}
            self.hub.forget(origin, keep=set(envelope["beat"]))
        elif envelope.get("fill"):
            self._tasks.start(self._fill_and_relay(origin, envelope), name="watch-relay-fill")
        elif "m" in envelope:
            self.hub.relayed(origin, str(envelope["t"]), cast(Kind, envelope["k"]), envelope["m"])

    async def _fill_and_relay(self, origin: str, envelope: dict[str, Any]) -> None:
        """Read back from the store the fields a message too long to notify was sent without."""
        tenant_id, message = str(envelope["t"]), dict(envelope["m"])
        conversation_id = str(message.get("conversation_id"))
        if message.get("type") == "final":
            rows = await self.store.utterances(tenant_id, conversation_id, after_seq=int(message["seq"]) - 1)
            if not rows or rows[0].seq != message["seq"]:
                return
            message["text"] = rows[0].text
            if rows[0].words is not None:
                message["words"] = rows[0].words
        else:
            summary = await self.store.latest_summary(tenant_id, conversation_id)
            if summary is None:
                return
            message["items"] = summary.items
        self.hub.relayed(origin, tenant_id, cast(Kind, envelope["k"]), message)
