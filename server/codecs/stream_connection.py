"""The `/v1/stream` connection as a state machine: messages in, actions out, no I/O.

In the manner of `websockets`' Protocol and h11's connection: the transport feeds each message
it reads (`receive_text`, `receive_binary`) and performs the actions that come back, in order;
it tells the connection what happened when an action completes (`session_opened`, `fail`).
Every rule of the endpoint lives here, tested with plain calls:

* states: `new` → (`start`) `opening` → `streaming` → (`stop`) `stopping` → `closed`;
  a refused `start` goes back to `new`;
* who may do what: streaming needs the `stream` scope, asking about another conversation `read`;
* the limits of one connection: message rate, audio rate (refuse, or pause reading with the
  "pace" policy), frame and text sizes;
* what an error does: an `error` event, and a close when the error says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from server.auth import Principal, Scope, ask_allowed
from server.codecs.native import parse_client_text
from server.config import LimitsConfig
from server.limits import ConnectionLimits
from stream.errors import CloseCode, ErrorCode, ProtocolError
from stream.events import Ask, Error, Start, Stop, WebRtcCandidate, WebRtcOffer

__all__ = [
    "AcceptOffer",
    "Action",
    "AnswerQuestion",
    "CloseConnection",
    "FeedAudio",
    "OpenSession",
    "SendError",
    "StopSession",
    "StreamConnection",
]


@dataclass(frozen=True, slots=True)
class OpenSession:
    """Open the session (`hub.open`), then call `session_opened` or `fail`."""

    start: Start


@dataclass(frozen=True, slots=True)
class FeedAudio:
    """Feed the audio to the session, then read nothing for `pause_s` seconds ("pace" policy)."""

    data: bytes
    pause_s: float = 0.0


@dataclass(frozen=True, slots=True)
class AnswerQuestion:
    """Stream an answer (in the background); `conversation_id` None: across the tenant."""

    ask: Ask
    conversation_id: str | None


@dataclass(frozen=True, slots=True)
class AcceptOffer:
    """Answer the WebRTC offer of the session."""

    offer: WebRtcOffer


@dataclass(frozen=True, slots=True)
class StopSession:
    """End of audio: wait for the last finals and `closed`, then close the connection normally."""


@dataclass(frozen=True, slots=True)
class SendError:
    """Send this error (through the session's outbox when there is one, so events stay ordered)."""

    event: Error


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Close the connection with this code (after what was sent before)."""

    code: CloseCode
    reason: str


Action = OpenSession | FeedAudio | AnswerQuestion | AcceptOffer | StopSession | SendError | CloseConnection

State = Literal["new", "opening", "streaming", "stopping", "closed"]


class StreamConnection:
    """One `/v1/stream` connection's rules; `principal` None: the handshake carried no valid token."""

    def __init__(self, principal: Principal | None, limits: LimitsConfig, now: float) -> None:
        self.principal = principal
        self.limits = limits
        self.rates = ConnectionLimits(limits, now)
        self.state: State = "new"
        self.conversation_id: str | None = None
        """The conversation of the session, once open."""

    def connected(self) -> list[Action]:
        """The handshake completed: what to do before reading (refuse an unauthenticated caller)."""
        if self.principal is None:
            return self.fail(
                ProtocolError(
                    ErrorCode.UNAUTHORIZED, "a valid API token is required", CloseCode.POLICY_VIOLATION
                )
            )
        return []

    def receive_text(self, text: str, now: float) -> list[Action]:
        """A text message (JSON control)."""
        try:
            self.rates.message(now)
            return self._message(parse_client_text(text, self.limits.max_text_bytes))
        except ProtocolError as error:
            return self.fail(error)

    def receive_binary(self, data: bytes, now: float) -> list[Action]:
        """A binary message (audio in the announced format)."""
        try:
            self.rates.message(now)
            if self.state not in ("streaming", "stopping"):
                raise ProtocolError(ErrorCode.NOT_STARTED, "audio before start")
            if len(data) > self.limits.max_frame_bytes:
                raise ProtocolError(
                    ErrorCode.FRAME_TOO_LARGE,
                    f"audio frame of {len(data)} bytes exceeds {self.limits.max_frame_bytes}",
                    CloseCode.MESSAGE_TOO_BIG,
                )
            return [FeedAudio(data, self.rates.audio(len(data), now))]
        except ProtocolError as error:
            return self.fail(error)

    def session_opened(self, start: Start, conversation_id: str) -> None:
        """The `OpenSession` action succeeded."""
        self.state = "streaming"
        self.conversation_id = conversation_id
        self.rates.started(start)

    def fail(self, error: ProtocolError) -> list[Action]:
        """An error to report (from a message, or from an action that failed)."""
        if self.state == "opening":
            self.state = "new"
        actions: list[Action] = [SendError(Error(error.code, error.message))]
        if error.close is not None:
            self.state = "closed"
            actions.append(CloseConnection(error.close, error.code.value))
        return actions

    def _message(self, message: object) -> list[Action]:
        if isinstance(message, Start):
            return self._start(message)
        if isinstance(message, Ask):
            return self._ask(message)
        if isinstance(message, WebRtcOffer):
            if self.state == "new":
                raise ProtocolError(ErrorCode.NOT_STARTED, "webrtc.offer before start")
            return [AcceptOffer(message)]
        if isinstance(message, WebRtcCandidate):
            return []  # the offer and the answer carry every candidate: no trickle ICE
        if isinstance(message, Stop):
            if self.state == "new":
                raise ProtocolError(ErrorCode.NOT_STARTED, "stop before start")
            self.state = "stopping"
            return [StopSession()]
        return []

    def _start(self, start: Start) -> list[Action]:
        assert self.principal is not None
        if self.state != "new":
            raise ProtocolError(ErrorCode.ALREADY_STARTED, "this connection already started")
        if not self.principal.allows(Scope.STREAM):
            raise ProtocolError(ErrorCode.FORBIDDEN, "streaming needs a token with 'stream'")
        self.state = "opening"
        return [OpenSession(start)]

    def _ask(self, ask: Ask) -> list[Action]:
        assert self.principal is not None
        if not ask_allowed(self.principal, ask, self.conversation_id):
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "asking about other conversations needs a token with 'read'"
            )
        return [AnswerQuestion(ask, ask.conversation_id or self.conversation_id)]
