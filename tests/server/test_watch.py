"""server/watch.py: the watch hub's views, tenant scoping, slow watchers and figures."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, cast

from server.auth import Principal, Scope
from server.live import LiveSession
from server.timing import SessionTiming
from server.watch import Subscriber, WatchHub
from stream.events import (
    Closed,
    Final,
    Partial,
    Ready,
    ServerEvent,
    SpeechStarted,
    SpeechStopped,
    Start,
    Summary,
    SummaryItem,
)

READER_A = Principal("tenant-a", frozenset({Scope.READ}))
ADMIN_A = Principal("tenant-a", frozenset(Scope))
READER_B = Principal("tenant-b", frozenset({Scope.READ}))


@dataclass
class FakeOutbox:
    attached: bool = True
    """Whether a client reads the session's events."""


@dataclass
class FakeSession:
    """The attributes of a `LiveSession` the hub reads."""

    session_id: str
    conversation_id: str
    tenant_id: str = "tenant-a"
    start: Start | None = None
    audio_seconds: float = 0.0
    timing: SessionTiming = field(default_factory=SessionTiming)
    outbox: FakeOutbox = field(default_factory=FakeOutbox)

    @property
    def tracks(self) -> tuple[str | None, ...]:
        """Its tracks: its `start.track` (a multichannel session's start names one per channel)."""
        if self.start is None:
            return ()
        if self.start.channel_tracks:
            return self.start.channel_tracks
        return (self.start.track,)


def server_stats() -> dict[str, Any]:
    return {
        "sessions": 3,
        "uptime_s": 10.0,
        "scheduler": {
            "asr": {
                "batch_sizes": {"1": 4, "2": 3},
                "pending": 1,
                "busy_workers": 1,
                "workers": 2,
                "queue_wait_ms_p50": 5.0,
                "queue_wait_ms_p95": 40.0,
            }
        },
    }


def session(
    sid: str, cid: str, tenant: str = "tenant-a", transport: str = "webrtc", track: str | None = None
) -> FakeSession:
    start = Start(sample_rate=48000, language="en", transport=transport, track=track)  # type: ignore[arg-type]
    return FakeSession(sid, cid, tenant, start)


def emit(hub: WatchHub, live: FakeSession, *events: ServerEvent) -> None:
    for event in events:
        if isinstance(event, SpeechStopped):  # as LiveSession does: the end's audio arrived now
            live.timing.audio_arrived(event.end, time.monotonic())
            live.timing.speech_stopped(event.utterance_id, event.end)
        hub.observe(cast(LiveSession, live), event)


def ready(live: FakeSession) -> Ready:
    return Ready(live.conversation_id, live.session_id, 48000, "tiny.en")


def final(cid: str, seq: int, text: str) -> Final:
    return Final(f"{cid}:{seq}", text, seq * 2.0, seq * 2.0 + 1.5, "en", seq)


async def texts(subscriber: Subscriber) -> list[str]:
    """Everything queued for a subscriber."""
    out = []
    while subscriber.pending():
        text = await subscriber.get()
        assert text is not None
        out.append(text)
    return out


async def drain(subscriber: Subscriber) -> list[dict[str, Any]]:
    """Everything queued for a subscriber, parsed."""
    return [json.loads(text) for text in await texts(subscriber)]


async def test_snapshot_then_the_life_of_a_conversation() -> None:
    hub = WatchHub(server_stats)
    early = session("s0", "c0")
    emit(hub, early, ready(early))
    watcher = hub.subscribe(READER_A)
    snapshot = (await drain(watcher))[0]
    assert snapshot["type"] == "snapshot"
    assert [c["conversation_id"] for c in snapshot["conversations"]] == ["c0"]
    assert snapshot["conversations"][0]["transports"] == ["webrtc"]
    assert snapshot["stats"]["sessions"] == 1
    assert "server" not in snapshot["stats"]  # readers do not see process-wide figures

    live = session("s1", "c1", track="Alice")
    emit(
        hub,
        live,
        ready(live),
        SpeechStarted("c1:0", 0.5),
        Partial("c1:0", "hello wor", "hello", " wor", 0.5, 1.2),
        SpeechStopped("c1:0", 1.8),
        final("c1", 0, "Hello world."),
        Closed(utterances=1),
    )
    got = await drain(watcher)
    assert [m["type"] for m in got] == [
        "conversation.started",
        "speech_started",
        "partial",
        "speech_stopped",
        "final",
        "conversation.ended",
    ]
    assert all(m["conversation_id"] == "c1" for m in got)
    assert got[0]["language"] == "en" and got[0]["speaking"] is False
    assert got[1]["session_id"] == "s1"
    assert got[0]["participants"] == ["Alice"] and {m["track"] for m in got[1:5]} == {"Alice"}
    assert got[4]["text"] == "Hello world." and got[4]["final_latency_ms"] >= 0
    assert got[5]["utterances"] == 1
    assert [v.conversation_id for v in hub.conversations("tenant-a")] == ["c0"]
    hub.unsubscribe(watcher)


async def test_view_follows_speech_and_finals() -> None:
    hub = WatchHub(server_stats)
    live = session("s1", "c1")
    emit(hub, live, ready(live), SpeechStarted("c1:0", 0.0))
    view = hub.conversations("tenant-a")[0]
    assert view.to_json()["speaking"] is True
    emit(hub, live, SpeechStopped("c1:0", 1.0), final("c1", 0, "One."), final("c1", 1, ""))
    state = view.to_json()
    assert state["speaking"] is False
    assert state["utterances"] == 1  # the empty final counts for nothing
    assert state["last_final"] == "One."
    assert state["final_latency_ms"] is not None


async def test_final_latency_is_the_metrics_figure() -> None:
    """One definition: the watch reports the final latency of server.timing (audio of the end
    arrived → final sent), the figure the Prometheus histogram observes; none without a client."""
    hub = WatchHub(server_stats)
    watcher = hub.subscribe(READER_A)
    live = session("s1", "c1")
    emit(hub, live, ready(live), SpeechStarted("c1:0", 0.0))
    live.timing.audio_arrived(1.0, 100.0)
    live.timing.speech_stopped("c1:0", 1.0)  # the end of its audio arrived at 100.0
    live.timing.final_latency("c1:0", 100.25)  # the metrics observer, first in line
    emit(hub, live, final("c1", 0, "One."))
    assert (await drain(watcher))[-1]["final_latency_ms"] == 250.0
    live.outbox.attached = False  # the client is gone: nothing is sent, no latency
    emit(hub, live, SpeechStarted("c1:1", 2.0), SpeechStopped("c1:1", 3.0), final("c1", 1, "Two."))
    assert (await drain(watcher))[-1]["final_latency_ms"] is None
    assert hub.conversations("tenant-a")[0].to_json()["final_latency_ms"] == 250.0


async def test_two_sessions_make_one_conversation_and_one_summary() -> None:
    hub = WatchHub(server_stats)
    watcher = hub.subscribe(READER_A)
    await drain(watcher)
    inbound, outbound = session("s1", "call", transport="socket"), session("s2", "call", transport="socket")
    summary = Summary("call", "extractive", [SummaryItem("Hi.", ["call:0"])], 0)
    emit(hub, inbound, ready(inbound))
    emit(hub, outbound, ready(outbound))
    hub.summarized(summary)  # conversation memory tells the hub once
    emit(hub, inbound, summary)  # app.publish hands it to every session of the conversation:
    emit(hub, outbound, summary)  # the hub ignores those copies
    emit(hub, inbound, Closed(0))
    messages = await drain(watcher)
    assert [m["type"] for m in messages] == [
        "conversation.started", "conversation.updated", "summary", "conversation.updated"
    ]
    assert [m["sessions"] for m in messages if m["type"] != "summary"] == [1, 2, 1]
    assert messages[2]["conversation_id"] == "call" and "session_id" not in messages[2]
    assert messages[2]["items"] == [{"text": "Hi.", "utterance_ids": ["call:0"], "section": None}]
    view = hub.conversations("tenant-a")[0].to_json()
    assert view["sessions"] == 1 and view["summary"] == messages[2]["items"]
    emit(hub, outbound, Closed(0))
    assert [m["type"] for m in await drain(watcher)] == ["conversation.ended"]
    hub.summarized(summary)  # a conversation no longer live: nobody watches it
    assert await drain(watcher) == []
    hub.unsubscribe(watcher)


async def test_participants_joining_and_leaving_are_announced() -> None:
    """A meeting: Alice opens it, Bob joins, Alice reconnects (a new session on her track), Bob
    leaves; each change of the live sessions is a `conversation.updated` with the participants."""
    hub = WatchHub(server_stats)
    watcher = hub.subscribe(READER_A)
    await drain(watcher)
    alice, bob, alice_again = (session("s1", "m", track="Alice"), session("s2", "m", track="Bob"),
                               session("s3", "m", track="Alice"))
    emit(hub, alice, ready(alice))
    emit(hub, bob, ready(bob))
    emit(hub, alice_again, ready(alice_again))
    emit(hub, alice, Closed(0))
    emit(hub, bob, Closed(0))
    messages = await drain(watcher)
    assert [(m["type"], m["participants"], m["sessions"]) for m in messages] == [
        ("conversation.started", ["Alice"], 1),
        ("conversation.updated", ["Alice", "Bob"], 2),
        ("conversation.updated", ["Alice", "Bob"], 3),
        ("conversation.updated", ["Alice", "Bob"], 2),
        ("conversation.updated", ["Alice"], 1),
    ]
    hub.unsubscribe(watcher)


async def test_a_watcher_of_one_conversation_gets_only_its_messages() -> None:
    """What the meeting page opens: `subscribe(principal, conversation_id)` gets the snapshot of
    that conversation, its events (from every participant's session), and no figures."""
    hub = WatchHub(server_stats, stats_interval_s=0.01)
    other = session("s0", "other", track="Carol")
    emit(hub, other, ready(other))
    alice, bob = session("s1", "meeting", track="Alice"), session("s2", "meeting", track="Bob")
    emit(hub, alice, ready(alice))
    follower = hub.subscribe(READER_A, "meeting")
    everything = hub.subscribe(READER_A)
    emit(hub, bob, ready(bob), Partial("meeting:1", "twelve fli", "twelve", " fli", 0.5, 1.0))
    emit(hub, other, final("other", 0, "Not for the meeting."))
    emit(hub, bob, final("meeting", 1, "Twelve flights."))
    hub.summarized(Summary("other", "extractive", [SummaryItem("No.", ["other:0"])], 0))
    await asyncio.sleep(0.05)  # figures ticked meanwhile
    snapshot, *messages = await drain(follower)
    assert [c["conversation_id"] for c in snapshot["conversations"]] == ["meeting"]
    assert "stats" not in snapshot
    assert [(m["type"], m.get("track")) for m in messages] == [
        ("conversation.updated", None), ("partial", "Bob"), ("final", "Bob")
    ]
    assert messages[0]["participants"] == ["Alice", "Bob"]
    assert {m["type"] for m in await drain(everything)} >= {"final", "summary", "stats"}
    hub.unsubscribe(follower)
    hub.unsubscribe(everything)
    await hub.close()


async def test_watchers_see_only_their_tenant() -> None:
    hub = WatchHub(server_stats)
    a, b = hub.subscribe(READER_A), hub.subscribe(READER_B)
    live = session("s1", "secret", tenant="tenant-a")
    emit(hub, live, ready(live), final("secret", 0, "Confidential."))
    assert [m["type"] for m in await drain(a)] == ["snapshot", "conversation.started", "final"]
    snapshot_b = await drain(b)
    assert [m["type"] for m in snapshot_b] == ["snapshot"]
    later_b = hub.subscribe(READER_B)
    assert (await drain(later_b))[0]["conversations"] == []
    assert hub.conversations("tenant-b") == []
    for watcher in (a, b, later_b):
        hub.unsubscribe(watcher)


async def test_a_slow_watcher_loses_partials_and_figures_first() -> None:
    subscriber = Subscriber("t", server_figures=False, max_queued=4)
    subscriber.offer("event", "final-0")
    subscriber.offer("stats", "stats-0")
    subscriber.offer("partial", "partial-0")
    subscriber.offer("partial", "partial-1")
    subscriber.offer("event", "final-1")  # full: the queued partials and figures go
    subscriber.offer("event", "final-2")
    subscriber.offer("event", "final-3")
    subscriber.offer("partial", "partial-late")  # full of finals: the new partial goes
    assert subscriber.dropped == 4 and not subscriber.overflowed
    assert await texts(subscriber) == ["final-0", "final-1", "final-2", "final-3"]


async def test_a_watcher_too_slow_for_finals_is_cut_off() -> None:
    subscriber = Subscriber("t", server_figures=False, max_queued=2)
    for i in range(3):
        subscriber.offer("event", f"final-{i}")
    assert subscriber.overflowed
    assert await subscriber.get() is None


async def test_stats_every_interval_with_server_figures_for_admins() -> None:
    hub = WatchHub(server_stats, stats_interval_s=0.05)
    reader, admin = hub.subscribe(READER_A), hub.subscribe(ADMIN_A)
    assert "server" in json.loads(await admin.get() or "")["stats"]
    live = session("s1", "c1")
    emit(hub, live, ready(live))
    stats: list[dict[str, Any]] = []
    async with asyncio.timeout(10):  # two ticks, however late a loaded machine runs them
        while len(stats) < 2:
            message = json.loads(await reader.get() or "null")
            if message["type"] == "stats":
                stats.append(message)
    assert all("server" not in m for m in stats)
    assert stats[-1]["sessions"] == 1 and stats[-1]["conversations"] == 1
    server = [m for m in await drain(admin) if m["type"] == "stats"][-1]["server"]
    assert server["asr"]["batch_sizes"] == {"1": 4, "2": 3}
    assert server["asr"]["batches"] == 7
    assert server["asr"]["queue_wait_ms_p95"] == 40.0
    hub.unsubscribe(reader)
    hub.unsubscribe(admin)
    assert hub.subscribers == 0
    await hub.close()


async def test_closed_sessions_keep_counting_in_the_audio_total() -> None:
    hub = WatchHub(server_stats)
    watcher = hub.subscribe(READER_A)
    live = session("s1", "c1")
    emit(hub, live, ready(live))
    live.audio_seconds = 3.0
    emit(hub, live, Closed(0))
    later = hub.subscribe(READER_A)
    stats = (await drain(later))[0]["stats"]
    assert stats["audio_seconds"] == 3.0 and stats["sessions"] == 0
    hub.unsubscribe(watcher)
    hub.unsubscribe(later)
    await hub.close()


async def test_audio_seconds_per_second_between_two_figures() -> None:
    hub = WatchHub(server_stats, stats_interval_s=3600)
    watcher = hub.subscribe(READER_A)
    live = session("s1", "c1")
    emit(hub, live, ready(live))
    hub._send_figures()
    live.audio_seconds = 0.1
    await asyncio.sleep(0.1)
    hub._send_figures()
    stats = [m for m in await drain(watcher) if m["type"] == "stats"]
    assert stats[0]["audio_seconds_per_second"] == 0
    assert 0.3 < stats[1]["audio_seconds_per_second"] <= 1.0
    hub.unsubscribe(watcher)
