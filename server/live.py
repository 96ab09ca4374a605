"""A live session in the server: a `stream.Session` wired to the ASR service and the store.

Transports (the `/v1/stream` WebSocket, later WebRTC and telephony) all drive a `LiveSession`
the same way: `open()` with the start parameters, `feed()` wire bytes, `stop()`, and read
server events from its `Outbox`. Finals are committed to the store before they are sent.
If the client goes away, the session still finishes its pending finals and stores them.

A multichannel start (`start.channels` > 1) is one track per channel: each frame is split
(`stream.channels`) and each channel has its own converter and core `Session` (its own VAD,
utterances and finals, on its own track), all behind the one outbox: one `ready`, one `closed`.

A diarized session (`start.diarize`) sends the audio of each final ASR request to the speaker
service too, at the same time; the final's commit awaits that voice, labels it with the
conversation's `Diarizer`, and stores and sends the final with its `speaker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from server.asr_lanes import AsrLanes, UnsupportedLanguage
from server.engines import Voice, voice_request
from server.final_hold import FinalHold, HoldLimits
from server.memory import Knowledge
from server.model_service import BatchService
from server.store import ConversationNotFound, StoreUnavailable, UtteranceConflict, UtteranceRow
from server.store_interface import ConversationStore
from server.timing import SessionTiming
from stream.audio import AudioConverter
from stream.channels import ChannelSplitter, channel_tracks
from stream.diarization import Diarizer
from stream.errors import CloseCode, ErrorCode, ProtocolError
from stream.events import (
    Closed,
    Error,
    Final,
    Partial,
    Ready,
    ServerEvent,
    Speakers,
    SpeechStopped,
    Start,
    Word,
)
from stream.interfaces import SAMPLE_RATE, AsrOutput, Audio, EntityRecognizer, VadModel
from stream.redaction import Redactor, check_redaction, redact_event
from stream.scheduler import Request
from stream.session import AsrJob, Output, Session, SessionConfig
from stream.vocabulary import vocabulary_prompt

log = logging.getLogger(__name__)

VOICE_TIMEOUT_S = 10.0
"""The longest a diarized final's commit waits for its voice; past it, the final takes the label
of the context (as an utterance without a usable voice)."""
RESUME_SETTLE_S = 30.0
"""How long a resuming client's `start` waits for the conversation's sessions that lost their
client to store their last finals."""

Send = Callable[[ServerEvent], Awaitable[None]]
Deferred = Callable[[], Awaitable[list[ServerEvent]]]
"""Events computed when the writer reaches this point of the queue (e.g. the final summary)."""
SessionObserver = Callable[["LiveSession", ServerEvent], None]
"""Sees what every live session emits (the watch hub): its `Ready` when it opens, then each event
as its outbox delivers it (a final once committed), up to `Closed`. Must be quick and not raise."""


class Outbox:
    """The ordered outgoing events of one session, and their sending to its client.

    Bounded for a slow consumer: queued partials are dropped first, finals and errors never. A
    consumer that still cannot keep up (`max_events` events queued without a partial to drop)
    is cut off: sending stops (the session goes on committing every final) and `on_overflow`
    is called once so the transport can close with a clear code.
    """

    def __init__(
        self,
        send: Send | None = None,
        *,
        max_events: int = 256,
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        self._queue: deque[ServerEvent | Deferred] = deque()
        self._ready = asyncio.Event()
        self.max_events = max_events
        self.dropped_partials = 0
        self._send = send
        self._on_overflow = on_overflow
        self.overflowed = False

    @property
    def attached(self) -> bool:
        """Whether events still go to a client."""
        return self._send is not None

    def detach(self) -> None:
        """The client is gone: stop sending (what is queued is still taken and committed)."""
        self._send = None

    def put(self, event: ServerEvent | Deferred) -> None:
        if len(self._queue) >= self.max_events:
            kept: deque[ServerEvent | Deferred] = deque(e for e in self._queue if not isinstance(e, Partial))
            self.dropped_partials += len(self._queue) - len(kept)
            self._queue = kept
            if isinstance(event, Partial):
                self.dropped_partials += 1
                return
            if len(self._queue) >= self.max_events and self._send is not None and not self.overflowed:
                self.overflowed = True
                self._send = None
                if self._on_overflow is not None:
                    self._on_overflow()
        self._queue.append(event)
        self._ready.set()

    def finals_waiting(self) -> int:
        """How many finals are queued (not yet committed and sent)."""
        return sum(1 for item in self._queue if isinstance(item, Final))

    async def take(self) -> ServerEvent | Deferred:
        """The next queued item, in order (waits for one)."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    async def send(self, event: ServerEvent) -> None:
        """Send one event to the client, if one is attached (a failed send detaches it)."""
        if self._send is None:
            return
        try:
            await self._send(event)
        except Exception:  # the connection is gone; the session goes on without it
            self._send = None


async def write_events(
    outbox: Outbox,
    commit: Callable[[Final], Awaitable[list[ServerEvent]]],
    observe: Callable[[ServerEvent], None],
) -> None:
    """A session's writer: take the outbox's events in order; for each, commit (a final is
    stored, and completed: its speaker), then deliver (observers, then the client), so that a
    final is sent only after it is stored, as stored. Committing a final gives the events to
    deliver in its place: the final as stored, then what it caused (a `speakers` merge).
    Returns once `Closed` is delivered."""
    while True:
        item = await outbox.take()
        if callable(item):
            try:
                events = await item()
            except Exception:
                log.exception("deferred events failed")
                events = []
        else:
            events = [item]
        for item_event in events:
            delivered = await commit(item_event) if isinstance(item_event, Final) else [item_event]
            for event in delivered:
                try:
                    observe(event)
                except Exception:
                    log.exception("event observer failed")
                await outbox.send(event)
        if isinstance(item, Closed):
            return


RENUMBER_TRIES = 8
"""How many free seqs a final tries when other front-ends streaming its conversation keep taking them."""


class SeqCounter:
    """The seqs of a live conversation's utterances, shared by its sessions on this front-end.

    Another front-end streaming the same conversation (a track on each) counts from the same
    stored transcript: when a seq of ours turns out taken there (`LiveSession._store_final`), the
    final is stored at the next free one and this counter continues above it (`skip_past`)."""

    def __init__(self, first: int) -> None:
        self._next = first

    def __iter__(self) -> SeqCounter:
        return self

    def __next__(self) -> int:
        seq = self._next
        self._next += 1
        return seq

    def skip_past(self, seq: int) -> None:
        """Never give `seq` or a lower one again."""
        self._next = max(self._next, seq + 1)


@dataclass(slots=True)
class LiveConversation:
    """A conversation with sessions streaming into it now (one per track)."""

    id: str
    seqs: SeqCounter
    """Shared by its sessions, so two tracks never take the same seq."""
    base_offset: float
    """Seconds of the conversation before this live period (a resumed conversation continues)."""
    started_at: float
    sessions: int = 0
    diarizer: Diarizer = field(default_factory=Diarizer)
    """The speakers of its diarized sessions (all tracks of the conversation share it)."""
    speaker_names: dict[str, str] = field(default_factory=dict)
    """{speaker (a label or a track): the name people gave it}, for the `speaker_name` of finals;
    read from the store when it goes live, told of each naming since (`LiveConversations.named`)."""

    def offset_now(self) -> float:
        """Conversation time at this instant, for a session that joins now."""
        return self.base_offset + (time.monotonic() - self.started_at)


class LiveConversations:
    """The conversations that have live sessions, by id."""

    def __init__(self) -> None:
        self._live: dict[str, LiveConversation] = {}
        self._closing: dict[str, set[asyncio.Event]] = {}
        """Per conversation, the `closed` events of its sessions whose client went away."""

    def closing(self, conversation_id: str, closed: asyncio.Event) -> None:
        """A session of the conversation lost its client and is finishing its finals."""
        self._closing.setdefault(conversation_id, set()).add(closed)

    async def settle(self, conversation_id: str, timeout: float) -> bool:
        """Wait (at most `timeout` s) until the conversation's sessions that lost their client have
        stored their last finals, so a client resuming it starts from the stored transcript.

        Returns False when some were still running at the deadline.
        """
        pending = {e for e in self._closing.get(conversation_id, ()) if not e.is_set()}
        if pending:
            waits = [asyncio.ensure_future(e.wait()) for e in pending]
            _, still = await asyncio.wait(waits, timeout=timeout)
            for waiter in still:
                waiter.cancel()
        left = {e for e in self._closing.pop(conversation_id, ()) if not e.is_set()}
        if left:
            self._closing[conversation_id] = left
        return not left

    async def join(
        self, store: ConversationStore, tenant_id: str, conversation_id: str
    ) -> tuple[LiveConversation, float]:
        """Take part in a conversation; returns it and the time offset of the joining session."""
        live = self._live.get(conversation_id)
        if live is not None:
            live.sessions += 1
            return live, live.offset_now()
        next_seq = await store.next_seq(conversation_id)
        offset = 0.0
        names: dict[str, str] = {}
        if next_seq > 0:  # a resumed conversation continues where its stored transcript ends
            last = await store.utterances(tenant_id, conversation_id, after_seq=next_seq - 2)
            offset = max((u.end for u in last), default=0.0)
            names = await store.speaker_names(tenant_id, conversation_id)
        live = self._live.get(conversation_id)  # another session may have joined meanwhile
        if live is not None:
            live.sessions += 1
            return live, live.offset_now()
        live = LiveConversation(
            conversation_id,
            SeqCounter(next_seq),
            offset,
            time.monotonic(),
            sessions=1,
            speaker_names=names,
        )
        self._live[conversation_id] = live
        return live, offset

    def leave(self, conversation_id: str) -> bool:
        """A session of the conversation ended; True when it was the last one."""
        live = self._live.get(conversation_id)
        if live is None:
            return False
        live.sessions -= 1
        if live.sessions <= 0:
            del self._live[conversation_id]
            return True
        return False

    def named(self, conversation_id: str, speaker: str, name: str) -> None:
        """A speaker of the conversation was named (stored): its later finals carry the name."""
        live = self._live.get(conversation_id)
        if live is not None:
            live.speaker_names[speaker] = name

    def sessions_of(self, conversation_id: str) -> int:
        live = self._live.get(conversation_id)
        return 0 if live is None else live.sessions

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._live

    def __len__(self) -> int:
        return len(self._live)


@dataclass(slots=True)
class SessionServices:
    """What every live session shares in the process."""

    asr: AsrLanes
    """The ASR lanes, one model per language group; each request goes to its language's lane."""
    vad: VadModel
    store: ConversationStore
    session_config: SessionConfig
    conversations: LiveConversations
    knowledge: Knowledge | None = None
    observers: list[SessionObserver] = field(default_factory=list)
    """Who sees every session's events besides its client (the watch hub)."""
    speaker: BatchService[Audio, Voice] | None = None
    """The speaker encoder's service, for diarized sessions; None: `start.diarize` is refused."""
    publish: Callable[[str, ServerEvent, str], None] | None = None
    """Sends an event to the other live sessions of a conversation (the hub's: conversation id,
    event, the session to leave out)."""
    on_speaker_wait: Callable[[float], None] | None = None
    """Told how long each diarized final's commit waited for its voice (metrics)."""
    ner: EntityRecognizer | None = None
    """Finds the names a session redacts (`start.redact` with "person")."""
    vocabulary: tuple[str, ...] = ()
    """The deployment's vocabulary (config `vocabulary`), after the session's and the tenant's."""


class LiveSession:
    """One client stream in the server: bytes in, events out through `outbox`."""

    def __init__(
        self,
        services: SessionServices,
        tenant_id: str,
        *,
        send: Send | None = None,
        max_events: int = 256,
        on_overflow: Callable[[], None] | None = None,
        on_evicted: Callable[[ErrorCode], None] | None = None,
        on_closed: Callable[[LiveSession], None] | None = None,
        hold: HoldLimits | None = None,
    ) -> None:
        self.services = services
        self.tenant_id = tenant_id
        self.session_id = uuid.uuid4().hex[:12]
        self.outbox = Outbox(send, max_events=max_events, on_overflow=on_overflow)
        self.start: Start | None = None
        """The start parameters, once open."""
        self.tracks: tuple[str | None, ...] = ()
        """The tracks it streams, once open: its `start.track`, or one per channel (`start.channels`)."""
        self.sessions: list[Session] = []
        """The core session of each of its tracks, in channel order."""
        self._converters: list[AudioConverter] = []
        self._splitter: ChannelSplitter | None = None
        """A multichannel start: splits each frame into one frame per channel."""
        self._writer: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._on_closed = on_closed
        self._on_evicted = on_evicted
        self.erased = False
        """Its conversation was erased while it streamed (`erase`): it takes no more audio."""
        self.conversation_id = ""
        self.audio_seconds = 0.0
        self._close_queued = False
        self.timing = SessionTiming()
        """When this session's audio arrived (for the final latency metric)."""
        self.redactor = Redactor(())
        """What this session's partials and finals lose before they are stored or sent
        (`start.redact` and the tenant's kinds)."""
        self.replayed: list[Final] = []
        """For a resuming client (`start.resume_after`): the stored finals it has not received,
        to send right after `ready`."""
        self._live: LiveConversation | None = None
        self._voices: dict[int, asyncio.Future[Voice]] = {}
        """Diarized: the voice of each utterance awaiting its final, by seq (the latest final request)."""
        self.hold = FinalHold(hold or HoldLimits())
        """Its finals held while the store cannot be reached (server/final_hold.py)."""

    @property
    def session(self) -> Session | None:
        """The core session of its first track (its only one unless `start.channels` > 1)."""
        return self.sessions[0] if self.sessions else None

    @property
    def closed(self) -> bool:
        """Whether its last event (`closed`) was delivered."""
        return self._closed.is_set()

    async def open(self, start: Start, *, turn_detection: Literal["vad", "manual"] | None = None) -> Ready:
        """Validate the start parameters, open the conversation, create the core session.

        `turn_detection` overrides the server's setting for this session ("manual": only
        `commit()` or the length limit ends an utterance); None keeps the server's. Raises
        `ProtocolError`: `bad_start`, or `unavailable` (closing) when the store cannot be reached.
        """
        try:
            return await self._open(start, turn_detection)
        except StoreUnavailable as error:
            log.warning("session %s not opened: %s", self.session_id, error)
            await self._abandon()
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                "the database cannot be reached; try again shortly",
                CloseCode.TRY_AGAIN_LATER,
            ) from None

    async def _abandon(self) -> None:
        """Undo a failed `open`: stop the writer, leave the conversation."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._live is not None:
            self.services.conversations.leave(self.conversation_id)
            self._live = None

    async def _open(self, start: Start, turn_detection: Literal["vad", "manual"] | None) -> Ready:
        svc = self.services
        if start.diarize and svc.speaker is None:
            raise ProtocolError(ErrorCode.BAD_START, "this server runs no speaker model: diarize is off")
        try:
            language = svc.asr.session_language(start.language)
        except UnsupportedLanguage as error:
            raise ProtocolError(ErrorCode.BAD_START, str(error)) from None
        self.tracks = channel_tracks(start.track, start.channel_tracks, start.channels)
        self._converters = [AudioConverter(start.encoding, start.sample_rate) for _ in self.tracks]
        if start.channels > 1:
            self._splitter = ChannelSplitter(start.encoding, start.channels)
        if start.conversation_id is not None and start.resume_after is not None:
            if not await svc.conversations.settle(start.conversation_id, RESUME_SETTLE_S):
                log.warning(
                    "conversation %s resumed while an earlier session still finishes", start.conversation_id
                )
        try:
            conversation = await svc.store.open_conversation(self.tenant_id, start.conversation_id, language)
        except (ValueError, LookupError) as error:
            raise ProtocolError(ErrorCode.BAD_START, f"conversation_id: {error}") from None
        self.conversation_id = conversation.id
        tenant_kinds = await svc.store.redaction(self.tenant_id)
        self.redactor = Redactor(check_redaction([*start.redact, *tenant_kinds]), svc.ner)
        live, time_offset = await svc.conversations.join(svc.store, self.tenant_id, conversation.id)
        self._live = live
        config = svc.session_config
        if not start.partials and config.partials:
            config = replace(config, partials=False)
        if turn_detection is not None and turn_detection != config.turn_detection:
            config = replace(config, turn_detection=turn_detection)
        tenant_vocabulary = await svc.store.vocabulary(self.tenant_id)
        prompt = vocabulary_prompt(start.vocabulary, tenant_vocabulary, svc.vocabulary)
        self.sessions = [
            Session(
                self._track_session_id(channel),
                conversation.id,
                svc.vad.open_stream(),
                language=language,
                config=config,
                seqs=live.seqs,
                time_offset=time_offset,
                track=track,
                prompt=prompt,
                word_timestamps=start.word_timestamps,
            )
            for channel, track in enumerate(self.tracks)
        ]
        self._writer = asyncio.create_task(self._write(), name=f"outbox-{self.session_id}")
        self.start = start
        if start.resume_after is not None:
            rows = await svc.store.utterances(self.tenant_id, conversation.id, after_seq=start.resume_after)
            names = live.speaker_names
            self.replayed = [_replayed_final(row, names) for row in rows if row.track in self.tracks]
        ready = Ready(
            conversation_id=conversation.id,
            session_id=self.session_id,
            sample_rate=start.sample_rate,
            model=svc.asr.model_for(language),
            time_offset=round(time_offset, 3),
            resume_from=await self._resume_from(),
        )
        for observer in svc.observers:
            observer(self, ready)
        return ready

    def feed(self, data: bytes) -> None:
        """Wire audio bytes in the announced encoding (a multichannel frame: whole sample frames,
        else `ProtocolError(BAD_AUDIO)` and nothing of it is used)."""
        if self.erased:
            raise ProtocolError(
                ErrorCode.CONVERSATION_ERASED, "this conversation was erased", CloseCode.POLICY_VIOLATION
            )
        if not self.sessions:
            raise ProtocolError(ErrorCode.NOT_STARTED, "send a start message before audio")
        payloads = [data] if self._splitter is None else self._splitter.split(data)
        received = 0
        for session, converter, payload in zip(self.sessions, self._converters, payloads, strict=True):
            samples = converter.feed(payload)
            received = len(samples)
            self._handle(session.feed(samples), session)
        self.audio_seconds += received / SAMPLE_RATE  # seconds of the source, whatever its channels
        self.timing.audio_arrived(self.audio_seconds, time.monotonic())

    def stop(self) -> None:
        """End of audio: remaining finals follow, then `closed`."""
        if not self.sessions or self.sessions[0].stopped:
            return
        for session, converter in zip(self.sessions, self._converters, strict=True):
            self._handle(session.feed(converter.flush()), session)
            self._handle(session.stop(), session)
        self._maybe_close()

    def commit(self) -> None:
        """The client ends its turn: the open utterances are finalized now."""
        for session in self.sessions:
            if not session.stopped:
                self._handle(session.commit(), session)

    def clear(self) -> None:
        """The client discards the audio of its open utterances."""
        for session in self.sessions:
            self._handle(session.clear(), session)

    def detach(self) -> None:
        """The client went away: stop sending, but finish and store the pending finals.

        A client resuming the conversation waits for them (`LiveConversations.settle`).
        """
        self.outbox.detach()
        if self.session is not None:
            self.services.conversations.closing(self.conversation_id, self._closed)
        self.stop()

    def supersede(self) -> None:
        """A client resumed this session's conversation and track: it takes over this session,
        whose connection is presumed dead (a drop the server has not noticed yet). Close the
        connection and finish the session without it (its finals are stored)."""
        if self._on_evicted is not None:
            self._on_evicted(ErrorCode.SUPERSEDED)
        self.detach()

    async def erase(self) -> None:
        """Its conversation is being erased: close the connection (`conversation_erased`) and
        drop the session at once; nothing more of it is stored or sent."""
        self.erased = True
        if self._on_evicted is not None:
            self._on_evicted(ErrorCode.CONVERSATION_ERASED)
        self.outbox.detach()
        await self.abort()

    def _erased_elsewhere(self) -> None:
        """The store no longer has the conversation (`palabre erase` or `purge` beside the server):
        close the connection (`conversation_erased`); the session finishes without storing or
        sending (its pending recognitions complete, so it still reaches `closed`)."""
        log.info("session %s: its conversation was erased", self.session_id)
        self.erased = True
        if self._on_evicted is not None:
            self._on_evicted(ErrorCode.CONVERSATION_ERASED)
        self.outbox.detach()

    async def wait_closed(self) -> None:
        if self._writer is not None:
            await self._closed.wait()

    async def abort(self) -> None:
        """Drop everything (server shutdown)."""
        for session in self.sessions:
            self.services.asr.cancel(session.session_id)
        if self.services.speaker is not None:
            self.services.speaker.cancel(self.session_id)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    # --- internals --------------------------------------------------------------------------

    async def _write(self) -> None:
        """Commit and deliver this session's events until `closed`, then leave the hub."""
        await write_events(self.outbox, self._commit, self._observe)
        self._closed.set()
        if self._on_closed is not None:
            self._on_closed(self)

    def _observe(self, event: ServerEvent) -> None:
        """Pass a delivered event to the services' observers (`Ready` was announced by `open`)."""
        if isinstance(event, Ready) or (isinstance(event, Final) and event.replayed):
            return
        for observer in self.services.observers:
            observer(self, event)

    def _track_session_id(self, channel: int) -> str:
        """The id of a track's core session (and of its ASR requests): the session's own for one
        channel, `<session id>.<channel>` (from 1) for each of several."""
        return self.session_id if self._splitter is None else f"{self.session_id}.{channel + 1}"

    async def _resume_from(self) -> float | None:
        """Where the stored transcript of its tracks ends (the latest end among them: the channels
        of one frame arrive together, so every track was received up to there), None: nothing."""
        assert self._live is not None
        store, ends = self.services.store, []
        for track in self.tracks:
            end = await store.last_end(self.tenant_id, self._live.id, track)
            if end is not None:
                ends.append(end)
        return max(ends, default=None)

    def _handle(self, out: Output, session: Session) -> None:
        for event in out.events:
            if isinstance(event, SpeechStopped):
                self.timing.speech_stopped(event.utterance_id, event.end - session.time_offset)
            self.outbox.put(self._redacted(event))
        for request in out.requests:
            self.services.asr.submit(request, self._on_result)
            if request.payload.kind == "final" and self.start is not None and self.start.diarize:
                self._voices[request.payload.seq] = self._embed_voice(request.payload.input.audio)

    def _embed_voice(self, audio: Audio) -> asyncio.Future[Voice]:
        """Ask the speaker service for the voice of one utterance's audio (alongside its ASR)."""
        future: asyncio.Future[Voice] = asyncio.get_running_loop().create_future()

        def done(_: Request[Audio], voice: Voice | None, error: BaseException | None) -> None:
            if not future.done():
                future.set_result(voice if voice is not None else Voice(None))
            if error is not None:
                log.error("session %s: speaker embedding failed: %s", self.session_id, error)

        assert self.services.speaker is not None
        self.services.speaker.submit(voice_request(self.session_id, audio), done)
        return future

    def _redacted(self, event: ServerEvent) -> ServerEvent | Deferred:
        """A partial or final with its text redacted, before anything stores or sends it; when
        names are redacted, the recogniser runs on a thread when the writer reaches the event."""
        redactor = self.redactor
        if not redactor or not isinstance(event, Partial | Final) or not event.text:
            return event
        language = (self.session.language if self.session is not None else None) or ""
        if not redactor.needs_recognizer:
            return redact_event(redactor, event, language)

        async def redacted() -> list[ServerEvent]:
            return [await asyncio.to_thread(redact_event, redactor, event, language)]

        return redacted

    def _on_result(
        self, request: Request[AsrJob], output: AsrOutput | None, error: BaseException | None
    ) -> None:
        session = next(s for s in self.sessions if s.session_id == request.session_id)
        job = request.payload
        if error is not None:
            log.error("session %s: recognition failed: %s", self.session_id, error)
            if job.kind == "final":
                self.outbox.put(Error(ErrorCode.INTERNAL, f"recognition of utterance {job.seq} failed"))
                output = AsrOutput(text="", language=job.input.language or "")  # "": no language
            else:
                self._handle(session.on_dropped(job), session)
                return
        if output is None:
            self._handle(session.on_dropped(job), session)
            return
        self._handle(session.on_result(job, output), session)
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self.sessions and all(s.done for s in self.sessions) and not self._close_queued:
            self._close_queued = True
            self.outbox.put(self._closing_events)
            self.outbox.put(Closed(utterances=sum(s.utterances for s in self.sessions)))

    async def _closing_events(self) -> list[ServerEvent]:
        """At the end of the last session of a conversation: its final summary."""
        svc = self.services
        if svc.knowledge is None or svc.conversations.sessions_of(self.conversation_id) > 1:
            return []
        summary = await svc.knowledge.summarize(self.conversation_id, final=True)
        return [summary] if summary is not None else []

    async def _commit(self, final: Final) -> list[ServerEvent]:
        """Store a final (when it has text) with its speaker; returns it as stored, and a
        `speakers` event when its speaker merged two labels. Nothing is stored once the
        conversation is erased."""
        if final.replayed or self.erased:
            return [final]
        speaker, merge = await self._speaker_of(final)
        names = self._live.speaker_names if self._live is not None else {}
        final = replace(final, speaker=speaker, speaker_name=names.get(speaker) if speaker else None)
        if not final.text:
            return [final]
        try:
            row = await self._store_final(final)
        except ConversationNotFound:
            self._erased_elsewhere()
            return [final]
        if row.seq != final.seq:
            final = replace(final, seq=row.seq, utterance_id=row.public_id)
        if self.services.knowledge is not None:
            self.services.knowledge.utterance_stored(row)
        if merge is None:
            return [final]
        if self.services.publish is not None:
            self.services.publish(self.conversation_id, merge, self.session_id)
        return [final, merge]

    async def _store_final(self, final: Final) -> UtteranceRow:
        """Commit a final's row. While the store cannot be reached, hold it (and the events
        behind it) and retry with a growing delay; past the hold's bound, the session is told
        and closed (`_store_lost`) and the retries go on."""
        hold = self.hold
        began = time.monotonic()
        while True:
            try:
                timeout = hold.attempt_timeout(time.monotonic(), began)
                row = await asyncio.wait_for(self._insert_final(final), timeout)
            except (StoreUnavailable, TimeoutError) as error:
                now = time.monotonic()
                delay = hold.failed(now, began)
                if hold.retries == 1:
                    log.warning(
                        "session %s: final %d not stored (%s); holding it and retrying",
                        self.session_id,
                        final.seq,
                        error or "timed out",
                    )
                if hold.over_bound(now, self.outbox.finals_waiting() + 1):
                    self._store_lost()
                await asyncio.sleep(delay)
                continue
            held = hold.committed(time.monotonic())
            if held > 0:
                log.warning(
                    "session %s: the store is back; final %d stored after %.1f s",
                    self.session_id,
                    final.seq,
                    held,
                )
            return row

    def _store_lost(self) -> None:
        """The hold passed its bound: tell the client (`unavailable`) and close its connection;
        the session takes no more audio and finishes, its held finals still retried (a client
        resuming the conversation waits for them, `LiveConversations.settle`)."""
        log.error(
            "session %s: the store has been unreachable for %.1f s; closing the session",
            self.session_id,
            time.monotonic() - (self.hold.since or 0.0),
        )
        if self._on_evicted is not None and self.outbox.attached:
            self._on_evicted(ErrorCode.UNAVAILABLE)
        self.detach()

    async def _insert_final(self, final: Final) -> UtteranceRow:
        """Store a final at its seq, or, when another front-end streaming the same conversation
        stored another utterance there first, at the next free seq (this front-end's seqs then
        continue above it). The same final stored again (a retried write) is its first row."""
        store = self.services.store
        seq = final.seq
        for _ in range(RENUMBER_TRIES):
            try:
                row = await store.add_utterance(
                    self.tenant_id,
                    self.conversation_id,
                    seq,
                    final.text,
                    final.start,
                    final.end,
                    final.language,
                    track=final.track,
                    speaker=final.speaker,
                    words=None if final.words is None else [asdict(w) for w in final.words],
                )
            except UtteranceConflict:
                row = None
            if row is not None and row.track == final.track and row.start == final.start:
                if self._live is not None:
                    self._live.seqs.skip_past(row.seq)
                return row
            seq = await store.next_seq(self.conversation_id)
        raise UtteranceConflict(f"no free seq for a final of conversation {self.conversation_id}")

    async def _speaker_of(self, final: Final) -> tuple[str | None, Speakers | None]:
        """The final's speaker: the track's name, or (diarized) the label of its voice, and the
        `speakers` event to announce when labeling it merged labels.

        An utterance without text gets none (and leaves the speakers as they were); one without
        a usable voice (too short, silent, a failed embedding) gets the conversation's previous
        label."""
        if self.start is None or not self.start.diarize or self._live is None:
            return final.track, None
        pending = self._voices.pop(final.seq, None)
        if not final.text:
            return None, None
        voice = Voice(None)
        if pending is not None:
            waited = time.monotonic()
            try:
                voice = await asyncio.wait_for(pending, VOICE_TIMEOUT_S)
            except TimeoutError:
                log.error("session %s: no speaker embedding for utterance %d", self.session_id, final.seq)
            if self.services.on_speaker_wait is not None:
                self.services.on_speaker_wait(time.monotonic() - waited)
        diarizer = self._live.diarizer
        assignment = diarizer.assign(voice.vector)
        merge = None
        if assignment.merged:
            merge = Speakers(self.conversation_id, assignment.merged, diarizer.labels)
        return assignment.label, merge


def _replayed_final(row: UtteranceRow, names: dict[str, str]) -> Final:
    """A stored utterance as the `final` it was (sent again to a resuming client), with the name
    its speaker has now (`names`: {speaker: name})."""
    return Final(
        utterance_id=row.public_id,
        text=row.text,
        start=row.start,
        end=row.end,
        language=row.language or None,
        seq=row.seq,
        track=row.track,
        speaker=row.speaker,
        speaker_name=names.get(row.speaker) if row.speaker else None,
        replayed=True,
        words=None if row.words is None else tuple(Word(**w) for w in row.words),
    )
