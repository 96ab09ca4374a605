"""The streaming client: one `StreamSession` per WebSocket connection to `/v1/stream`.

A session sends `start`, waits for `ready`, then lets the caller send audio and read events at
the same time: a background task receives every server event into a queue, and iterating the
session drains that queue. Events are the server's JSON objects as plain dicts (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import uuid
from collections.abc import Callable, Sequence
from enum import StrEnum
from types import TracebackType
from typing import Any, Final, Self

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from palabre_client.audio import DEFAULT_SAMPLE_RATE, channel_track, load_audio, load_channels, to_pcm16

DEFAULT_URL: Final = "ws://127.0.0.1:8765/v1/stream"

Event = dict[str, Any]
"""A server event: the JSON object as received, `type` first."""


class ClientErrorCode(StrEnum):
    """Codes of failures the client detects itself (the server's codes are in docs/protocol.md)."""

    CONNECTION_FAILED = "connection_failed"
    """The WebSocket could not be opened (refused, unreachable, rejected handshake)."""
    CONNECTION_CLOSED = "connection_closed"
    """The connection ended before the server said `ready` or `closed`."""
    TIMEOUT = "timeout"
    """The server did not answer `start` within `open_timeout`."""
    BAD_EVENT = "bad_event"
    """The server sent something that is not a protocol event."""


class PalabreError(Exception):
    """A failure with a stable code: a server `error` event, or one of `ClientErrorCode`."""

    def __init__(self, code: str, message: str, *, event: Event | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.event = event
        """The server's `error` event, when the error came from one."""

    @classmethod
    def from_event(cls, event: Event) -> PalabreError:
        """The error a server `error` event reports."""
        return cls(str(event.get("code", "unknown")), str(event.get("message", "")), event=event)


class _End:
    """Queue marker: no more events will arrive."""


_END: Final = _End()


class StreamSession:
    """One streaming session. Create it with `await StreamSession.open(...)`.

    >>> async with await StreamSession.open(url, language="en") as session:
    ...     await session.send_audio(pcm)
    ...     await session.stop()
    ...     async for event in session:
    ...         print(event)
    """

    def __init__(self, ws: ClientConnection) -> None:
        """Wrap an open connection; use `open()` instead, which also does the `start` handshake."""
        self._ws = ws
        self._queue: asyncio.Queue[Event | BaseException | _End] = asyncio.Queue()
        self._receiver = asyncio.create_task(self._receive(), name="palabre-client-receive")
        self.ready: Event = {}
        """The server's `ready` event."""
        self.finals: list[Event] = []
        """Every `final` event received so far, in order (whether or not it was iterated yet)."""

    @classmethod
    async def open(
        cls,
        url: str = DEFAULT_URL,
        *,
        language: str | None = "en",
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        encoding: str = "pcm_s16le",
        conversation_id: str | None = None,
        partials: bool = True,
        token: str | None = None,
        track: str | None = None,
        resume_after: int | None = None,
        vocabulary: Sequence[str] = (),
        diarize: bool = False,
        redact: Sequence[str] = (),
        word_timestamps: bool = False,
        open_timeout: float = 30.0,
    ) -> StreamSession:
        """Connect, send `start` and wait for `ready`.

        `language` None means automatic detection ("auto"). `vocabulary`: names and terms the
        speakers use (at most 100, 1 KB), so the recogniser writes them as listed. `redact`: kinds
        of personal data the server replaces by a label before storing or sending ("phone",
        "email", "card", "iban", "person"). `word_timestamps`: each final also carries `words`, its
        words with their times. `track` names this audio's speaker or call leg;
        `diarize` asks the server to tell the speakers of this audio apart (each final's `speaker`
        is then "S1", "S2", …). `token`, when given, is sent as
        `Authorization: Bearer <token>`. Raises `PalabreError`: with the server's code when it
        answers `start` with an `error` event, with a `ClientErrorCode` when the connection fails,
        closes or times out.
        """
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            ws = await connect(url, additional_headers=headers, open_timeout=open_timeout)
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise PalabreError(
                ClientErrorCode.CONNECTION_FAILED.value, f"{url} rejected the connection: HTTP {status}"
            ) from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise PalabreError(
                ClientErrorCode.CONNECTION_FAILED.value, f"cannot connect to {url}: {exc}"
            ) from exc

        session = cls(ws)
        start: dict[str, Any] = {
            "type": "start",
            "sample_rate": sample_rate,
            "encoding": encoding,
            "language": language or "auto",
            "partials": partials,
        }
        if conversation_id is not None:
            start["conversation_id"] = conversation_id
        if track is not None:
            start["track"] = track
        if resume_after is not None:
            start["resume_after"] = resume_after
        if vocabulary:
            start["vocabulary"] = list(vocabulary)
        if diarize:
            start["diarize"] = True
        if redact:
            start["redact"] = list(redact)
        if word_timestamps:
            start["word_timestamps"] = True
        try:
            await session._send(json.dumps(start))
            async with asyncio.timeout(open_timeout):
                event = await anext(session, None)
            if event is None:
                raise session._closed_error("before `ready`")
            if event.get("type") == "error":
                raise PalabreError.from_event(event)
            if event.get("type") != "ready":
                raise PalabreError(
                    ClientErrorCode.BAD_EVENT.value, f"expected `ready`, got {event.get('type')!r}"
                )
        except TimeoutError as exc:
            await session.close()
            raise PalabreError(
                ClientErrorCode.TIMEOUT.value, f"no answer to `start` within {open_timeout} s"
            ) from exc
        except BaseException:
            await session.close()
            raise
        session.ready = event
        return session

    @property
    def conversation_id(self) -> str:
        """The conversation this session's utterances belong to (chosen by the server if not given)."""
        return str(self.ready.get("conversation_id", ""))

    @property
    def session_id(self) -> str:
        """The server's id for this connection."""
        return str(self.ready.get("session_id", ""))

    @property
    def close_code(self) -> int | None:
        """The WebSocket close code once the connection is closed, else None."""
        return self._ws.close_code

    @property
    def close_reason(self) -> str | None:
        """The WebSocket close reason once the connection is closed, else None."""
        return self._ws.close_reason

    async def send_audio(self, pcm: bytes) -> None:
        """Send one binary frame of audio in the encoding announced in `start`."""
        await self._send(pcm)

    async def stop(self) -> None:
        """Say the audio is over; the server then sends the remaining finals and `closed`."""
        await self._send(json.dumps({"type": "stop"}))

    async def close(self) -> None:
        """Close the connection (idempotent). Iteration ends once queued events are drained."""
        await self._ws.close()
        if not self._receiver.done():
            self._receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._receiver

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        """The next event; the iteration ends after `closed` or when the connection ends."""
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # every later call ends too
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    async def _send(self, message: str | bytes) -> None:
        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            raise self._closed_error("while sending") from exc

    def _closed_error(self, when: str) -> PalabreError:
        reason = f" ({self.close_reason})" if self.close_reason else ""
        return PalabreError(
            ClientErrorCode.CONNECTION_CLOSED.value,
            f"connection closed {when}: code {self.close_code}{reason}",
        )

    async def _receive(self) -> None:
        """Move every server event into the queue until `closed` or the end of the connection."""
        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    raise PalabreError(ClientErrorCode.BAD_EVENT.value, "unexpected binary message")
                try:
                    event = json.loads(message)
                except json.JSONDecodeError as exc:
                    raise PalabreError(
                        ClientErrorCode.BAD_EVENT.value, f"not JSON: {message[:80]!r}"
                    ) from exc
                if not isinstance(event, dict):
                    raise PalabreError(ClientErrorCode.BAD_EVENT.value, f"not an object: {message[:80]!r}")
                if event.get("type") == "final":
                    self.finals.append(event)
                self._queue.put_nowait(event)
                if event.get("type") == "closed":
                    return
        except ConnectionClosed:
            pass  # an abnormal closure; `close_code` tells which
        except PalabreError as exc:
            self._queue.put_nowait(exc)
        finally:
            self._queue.put_nowait(_END)


async def stream_file(
    url: str | Callable[[], str],
    path: str | os.PathLike[str],
    *,
    language: str | None = "en",
    speed: float = 1.0,
    frame_ms: int = 20,
    token: str | None = None,
    conversation_id: str | None = None,
    on_event: Callable[[Event], None] | None = None,
    reconnect: bool = True,
    max_reconnects: int = 3,
    vocabulary: Sequence[str] = (),
    track: str | None = None,
    diarize: bool = False,
    split_channels: bool = True,
    redact: Sequence[str] = (),
    word_timestamps: bool = False,
) -> list[Event]:
    """Stream an audio file as a live source would and return every server event, `ready` first.

    A file of several channels (a stereo call recording, one party per channel) is streamed, with
    `split_channels`, as one track per channel of one conversation, concurrently: tracks "ch1",
    "ch2", … (`track-ch1`, … when `track` is given), so each final says which channel it heard;
    the events of all channels are returned in the order they arrived. Without, channels are
    mixed down.

    The file is decoded to 16 kHz mono and sent in `frame_ms` frames at `speed` times real time
    (0 or infinity: as fast as the connection takes them). Each frame leaves when its last sample
    would have been recorded, on a schedule counted from one monotonic start, so pacing does not
    drift. Then `stop` is sent and events are collected until `closed`. `on_event` is called with
    each event as it arrives.

    With `reconnect` (the default), a connection that drops before `closed` is resumed, at most
    `max_reconnects` times: see `ResilientStream`. `url` may be a callable, asked for the URL
    before each connection (e.g. to go to another server after a failover).

    A server `error` event does not raise: it is among the returned events. Raises `PalabreError`
    when the first session cannot be opened, and when the connection ends before `closed`
    without an `error` event to explain it and cannot be resumed.
    """
    if math.isnan(speed) or speed < 0:
        raise ValueError(f"speed must be >= 0, got {speed}")
    if frame_ms <= 0:
        raise ValueError(f"frame_ms must be positive, got {frame_ms}")
    if max_reconnects < 0:
        raise ValueError(f"max_reconnects must be >= 0, got {max_reconnects}")
    if split_channels:
        channels = await asyncio.to_thread(load_channels, path, DEFAULT_SAMPLE_RATE)
    else:
        channels = [await asyncio.to_thread(load_audio, path, DEFAULT_SAMPLE_RATE)]
    if len(channels) > 1 and conversation_id is None:
        conversation_id = uuid.uuid4().hex  # every channel's stream joins this conversation
    events: list[Event] = []

    def seen(event: Event) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    streams = [
        ResilientStream(
            url,
            to_pcm16(samples),
            language=language,
            speed=speed,
            frame_ms=frame_ms,
            vocabulary=vocabulary,
            redact=redact,
            word_timestamps=word_timestamps,
            token=token,
            conversation_id=conversation_id,
            on_event=seen,
            max_reconnects=max_reconnects if reconnect else 0,
            track=channel_track(track, i) if len(channels) > 1 else track,
            diarize=diarize,
        )
        for i, samples in enumerate(channels)
    ]
    await asyncio.gather(*(stream.run() for stream in streams))
    return events


_RETRYABLE: Final = frozenset(
    {ClientErrorCode.CONNECTION_FAILED, ClientErrorCode.CONNECTION_CLOSED, ClientErrorCode.TIMEOUT}
)
_RESUMABLE_CLOSE_CODES: Final = frozenset({None, 1001, 1006, 1012, 1013})
"""Connection ends worth resuming: no close frame (a crash, a cut network), going away, restart,
try again later. A deliberate close (1000, 1008, 1011, ...) raises instead."""


class ResilientStream:
    """Streams 16 kHz PCM into one conversation, reconnecting when the connection drops.

    A final the client received is *acknowledged*: the server stores a final before sending it,
    so it is safe in the conversation. When a connection ends before `closed` (and without an
    `error` event), the stream waits a moment (0.5 s, doubling) and opens a new connection with
    the same `conversation_id` and `resume_after` (the seq of the last final received). The
    server first lets the conversation's session that lost this client store its last finals,
    replays the stored finals after that seq (passed on like any final), and says in `ready`
    where the stored transcript ends (`resume_from`, conversation seconds) and where the new
    session's audio starts (`time_offset`): the stream resends its audio from that point, so no
    utterance is transcribed twice or skipped. Only ends without a close frame or with 1001,
    1012 or 1013 are resumed; a deliberate close (1000, 1008, 1011, ...) raises as without
    reconnection. A final whose `seq` was already passed on is not passed on again: the caller
    sees each final once.

    Times: finals' `start`/`end` are conversation seconds; the stream maps `resume_from` to a
    position in its audio with the `time_offset` of the connection that sent it.

    Gives up, raising `PalabreError`, after `max_reconnects` failed or dropped reconnections;
    the first connection's failure raises at once.
    """

    def __init__(
        self,
        url: str | Callable[[], str],
        pcm: bytes,
        *,
        language: str | None = "en",
        speed: float = 1.0,
        frame_ms: int = 20,
        token: str | None = None,
        conversation_id: str | None = None,
        on_event: Callable[[Event], None] | None = None,
        max_reconnects: int = 3,
        vocabulary: Sequence[str] = (),
        track: str | None = None,
        diarize: bool = False,
        redact: Sequence[str] = (),
        word_timestamps: bool = False,
        ) -> None:
        """`pcm`: 16-bit little-endian mono at 16 kHz; the other arguments as for `stream_file`."""
        self._url = url
        self._track = track
        self._diarize = diarize
        self._pcm = pcm
        self._language = language
        self._vocabulary = tuple(vocabulary)
        self._redact = tuple(redact)
        self._word_timestamps = word_timestamps
        self._token = token
        self._on_event = on_event
        self._bytes_per_second = DEFAULT_SAMPLE_RATE * 2
        self._frame_bytes = self._bytes_per_second * frame_ms // 1000
        self._seconds_per_byte = (
            0.0 if speed == 0 or math.isinf(speed) else 1.0 / (self._bytes_per_second * speed)
        )
        self._max_reconnects = max_reconnects
        self.conversation_id = conversation_id
        """The conversation, once the first `ready` named it."""
        self.events: list[Event] = []
        """Every event passed on, in order: one `ready` per connection, each final once."""
        self.finals: list[Event] = []
        """The finals passed on (the acknowledged ones)."""
        self.reconnects = 0
        """Reconnections tried so far."""
        self._seqs: set[int] = set()
        self._connections: list[tuple[int, float]] = []
        """(first byte sent, its conversation seconds) of each connection so far."""

    def _next_url(self) -> str:
        return self._url() if callable(self._url) else self._url

    def _seen(self, event: Event) -> None:
        self.events.append(event)
        if self._on_event is not None:
            self._on_event(event)

    async def run(self) -> list[Event]:
        """Stream until `closed` or an `error` event; returns `events`."""
        while True:
            resuming = bool(self.events)
            try:
                session = await StreamSession.open(
                    self._next_url(),
                    language=self._language,
                    vocabulary=self._vocabulary,
                    redact=self._redact,
                    word_timestamps=self._word_timestamps,
                    token=self._token,
                    conversation_id=self.conversation_id,
                    resume_after=max(self._seqs, default=-1) if resuming else None,
                    track=self._track,
                    diarize=self._diarize,
                )
            except PalabreError as exc:
                if not resuming or exc.code not in _RETRYABLE or self.reconnects >= self._max_reconnects:
                    raise
                await self._back_off()
                continue
            async with session:
                self._seen(session.ready)
                if resuming:
                    start_byte, offset = self._resume_point(session.ready)
                else:
                    start_byte, offset = 0, _time_offset(session.ready)
                self._connections.append((start_byte, offset))
                if await self._stream(session, start_byte):
                    return self.events
                resumable = session.close_code in _RESUMABLE_CLOSE_CODES
                if not resumable or self.reconnects >= self._max_reconnects:
                    raise session._closed_error("before `closed`")
            await self._back_off()

    def _resume_point(self, ready: Event) -> tuple[int, float]:
        """(first byte of the audio to resend, its conversation seconds) for a resumed connection."""
        resume_from, time_offset = ready.get("resume_from"), _time_offset(ready)
        if not isinstance(resume_from, int | float):  # nothing of this stream is stored: all of it again
            return self._connections[0][0], time_offset
        return self._byte_at(float(resume_from)), time_offset

    def _byte_at(self, seconds: float) -> int:
        """The byte of the audio that conversation time `seconds` was, by the connection that sent it."""
        start_byte, offset = self._connections[0]
        for candidate in self._connections:
            if candidate[1] <= seconds + 1e-6:
                start_byte, offset = candidate
        position = start_byte + int(max(0.0, seconds - offset) * self._bytes_per_second)
        return min(position, len(self._pcm)) // 2 * 2

    async def _back_off(self) -> None:
        self.reconnects += 1
        await asyncio.sleep(0.5 * 2 ** (self.reconnects - 1))

    async def _stream(self, session: StreamSession, start_byte: int) -> bool:
        """One connection, its audio from `start_byte`; True when it ended with `closed` or `error`."""
        self.conversation_id = session.conversation_id
        pcm = self._pcm[start_byte:]
        sender = asyncio.create_task(_send_paced(session, pcm, self._frame_bytes, self._seconds_per_byte))
        finished = False
        try:
            async for event in session:
                kind = event.get("type")
                if kind == "final":
                    self._final(event)
                    continue
                self._seen(event)
                finished = finished or kind in ("closed", "error")
        finally:
            if not sender.done():
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        return finished

    def _final(self, event: Event) -> None:
        """Pass a final on unless its seq was already passed on."""
        seq = event.get("seq")
        if isinstance(seq, int):
            if seq in self._seqs:
                return
            self._seqs.add(seq)
        self.finals.append(event)
        self._seen(event)


def _time_offset(ready: Event) -> float:
    """Conversation seconds of the connection's first audio sample, from its `ready`."""
    value = ready.get("time_offset", 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PalabreError(ClientErrorCode.BAD_EVENT.value, f"bad time_offset in ready: {value!r}")
    return float(value)


async def _send_paced(session: StreamSession, pcm: bytes, frame_bytes: int, seconds_per_byte: float) -> None:
    """Send `pcm` in frames, frame k once `seconds_per_byte` x (bytes up to its end) has passed."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        for offset in range(0, len(pcm), frame_bytes):
            frame = pcm[offset : offset + frame_bytes]
            if seconds_per_byte:
                delay = start + (offset + len(frame)) * seconds_per_byte - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await session.send_audio(frame)
        await session.stop()
    except PalabreError:
        pass  # the connection closed: the receiver ends the iteration, with whatever the server said
    except Exception:
        await session.close()  # end the iteration so the caller sees this error instead of waiting
        raise
