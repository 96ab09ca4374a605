"""Every error Palabre reports, listed once.

An error is a value with a stable `code` (sent to clients in `{"type":"error"}` events and
documented in docs/protocol.md) and, where it ends the connection, a WebSocket close code.
"""

from __future__ import annotations

from enum import Enum, StrEnum

__all__ = [
    "CloseCode",
    "ErrorCode",
    "ProtocolError",
]


class ErrorCode(StrEnum):
    """Stable error codes of the wire protocol."""

    BAD_JSON = "bad_json"
    """A text message is not a JSON object."""
    UNKNOWN_TYPE = "unknown_type"
    """A message's `type` is missing or not one this endpoint knows."""
    BAD_START = "bad_start"
    """A `start` message has a missing, wrong or out-of-range field."""
    NOT_STARTED = "not_started"
    """Audio or a command arrived before `start`."""
    ALREADY_STARTED = "already_started"
    """A second `start` arrived on the same connection."""
    BAD_ASK = "bad_ask"
    """An `ask` message has a missing, empty or too long question, or a bad scope."""
    CONVERSATION_NOT_FOUND = "conversation_not_found"
    """No conversation with this id is visible to the client."""
    UNAVAILABLE = "unavailable"
    """The feature needs a model or service this server does not run."""
    BAD_OFFER = "bad_offer"
    """A `webrtc.offer` cannot be answered (no WebRTC start, a second offer, SDP without audio)."""
    WEBRTC_FAILED = "webrtc_failed"
    """The WebRTC connection failed after the answer; the client may send audio on the socket."""
    BAD_AUDIO = "bad_audio"
    """An audio frame cannot be decoded in the announced encoding."""
    FRAME_TOO_LARGE = "frame_too_large"
    """A message is larger than the server accepts."""
    OVERLOADED = "overloaded"
    """The server refuses new work for now (a limit is reached); try again later."""
    UNAUTHORIZED = "unauthorized"
    """The credentials (API token) are missing, unknown or revoked."""
    FORBIDDEN = "forbidden"
    """The token is valid but lacks the scope this endpoint or message needs."""
    RATE_LIMITED = "rate_limited"
    """The client sends messages or audio faster than the connection's limits allow."""
    IDLE_TIMEOUT = "idle_timeout"
    """The client sent nothing for longer than the idle timeout."""
    SLOW_CONSUMER = "slow_consumer"
    """The client did not read its events fast enough; its finals are stored, the connection closes."""
    SUPERSEDED = "superseded"
    """A client resumed this session's conversation and track (`resume_after`): this connection,
    presumed dead, is closed; its finals are stored."""
    CONVERSATION_ERASED = "conversation_erased"
    """The conversation this connection streams was erased (`DELETE /v1/conversations/{id}`, a
    purge or `palabre erase`): the connection is closed and nothing more of it is stored."""
    INTERNAL = "internal"
    """The server failed on this session; other sessions are unaffected."""


class CloseCode(int, Enum):
    """WebSocket close codes Palabre closes with (RFC 6455), each documented in docs/protocol.md."""

    NORMAL = 1000
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


class ProtocolError(Exception):
    """A client mistake: reported as an `error` event; `close` says whether the connection ends."""

    def __init__(self, code: ErrorCode, message: str, close: CloseCode | None = None) -> None:
        super().__init__(code, message, close)
        self.code = code
        self.message = message
        self.close = close

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"
