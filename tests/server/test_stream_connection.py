"""The `/v1/stream` connection's rules, driven with plain calls (no socket, no session)."""

from __future__ import annotations

import json

from server.auth import Principal, Scope
from server.codecs.stream_connection import (
    AcceptOffer,
    AnswerQuestion,
    CloseConnection,
    FeedAudio,
    OpenSession,
    SendError,
    StopSession,
    StreamConnection,
)
from server.config import LimitsConfig
from stream.errors import CloseCode, ErrorCode, ProtocolError
from stream.events import Start

STREAM = Principal("t1", frozenset({Scope.STREAM}))
START = json.dumps({"type": "start", "sample_rate": 16000})


def connection(principal: Principal | None = STREAM, **limits: object) -> StreamConnection:
    return StreamConnection(principal, LimitsConfig(**limits), now=0.0)  # type: ignore[arg-type]


def opened(conn: StreamConnection, now: float = 0.0) -> StreamConnection:
    (action,) = conn.receive_text(START, now)
    assert isinstance(action, OpenSession)
    conn.session_opened(action.start, "c1")
    return conn


def codes(actions: list[object]) -> list[str]:
    return [a.event.code.value for a in actions if isinstance(a, SendError)]


def test_unauthenticated_handshake_is_refused_and_closed() -> None:
    actions = connection(None).connected()
    assert codes(actions) == ["unauthorized"]
    assert actions[-1] == CloseConnection(CloseCode.POLICY_VIOLATION, "unauthorized")
    assert connection().connected() == []


def test_start_opens_once_then_audio_flows_then_stop() -> None:
    conn = connection()
    assert conn.receive_binary(b"\0\0", 0.0) and codes(conn.receive_binary(b"\0\0", 0.0)) == ["not_started"]
    conn = opened(conn)
    assert conn.state == "streaming" and conn.conversation_id == "c1"
    assert conn.receive_binary(b"\0\0" * 160, 0.1) == [FeedAudio(b"\0\0" * 160, 0.0)]
    assert codes(conn.receive_text(START, 0.2)) == ["already_started"]
    assert conn.receive_text('{"type":"stop"}', 0.3) == [StopSession()]
    assert conn.state == "stopping"


def test_a_refused_start_may_be_retried() -> None:
    conn = connection()
    conn.receive_text(START, 0.0)
    assert conn.state == "opening"
    actions = conn.fail(ProtocolError(ErrorCode.BAD_START, "conversation_id: no"))
    assert codes(actions) == ["bad_start"] and conn.state == "new"
    assert isinstance(conn.receive_text(START, 0.1)[0], OpenSession)


def test_streaming_needs_the_stream_scope() -> None:
    reader = connection(Principal("t1", frozenset({Scope.READ})))
    assert codes(reader.receive_text(START, 0.0)) == ["forbidden"]
    assert reader.state == "new"


def test_commands_before_start() -> None:
    conn = connection()
    assert codes(conn.receive_text('{"type":"stop"}', 0.0)) == ["not_started"]
    offer = json.dumps({"type": "webrtc.offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"})
    assert codes(conn.receive_text(offer, 0.1)) == ["not_started"]
    assert conn.receive_text('{"type":"webrtc.candidate","candidate":""}', 0.2) == []


def test_ask_about_own_conversation_or_with_read_scope() -> None:
    conn = opened(connection())
    (action,) = conn.receive_text('{"type":"ask","question":"What?"}', 0.1)
    assert isinstance(action, AnswerQuestion) and action.conversation_id == "c1"
    other = '{"type":"ask","question":"What?","conversation_id":"other"}'
    assert codes(conn.receive_text(other, 0.2)) == ["forbidden"]
    reader = connection(Principal("t1", frozenset({Scope.READ})))
    (action,) = reader.receive_text(other, 0.0)
    assert isinstance(action, AnswerQuestion) and action.conversation_id == "other"


def test_offer_after_start_is_accepted() -> None:
    conn = opened(connection())
    offer = json.dumps({"type": "webrtc.offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"})
    (action,) = conn.receive_text(offer, 0.1)
    assert isinstance(action, AcceptOffer)


def test_bad_json_is_reported_without_closing() -> None:
    conn = opened(connection())
    actions = conn.receive_text("{not json", 0.1)
    assert codes(actions) == ["bad_json"] and not any(isinstance(a, CloseConnection) for a in actions)
    assert conn.state == "streaming"


def test_oversized_frame_closes_with_1009() -> None:
    conn = opened(connection(max_frame_bytes=100))
    actions = conn.receive_binary(b"\0" * 102, 0.1)
    assert codes(actions) == ["frame_too_large"]
    assert actions[-1] == CloseConnection(CloseCode.MESSAGE_TOO_BIG, "frame_too_large")
    assert conn.state == "closed"


def test_message_rate_closes_with_1008() -> None:
    conn = opened(connection(message_rate=1.0, message_burst=2.0))
    conn.receive_binary(b"\0\0", 0.0)
    actions = conn.receive_binary(b"\0\0", 0.0)
    assert codes(actions) == ["rate_limited"]
    assert actions[-1] == CloseConnection(CloseCode.POLICY_VIOLATION, "rate_limited")


def test_audio_too_fast_is_refused_or_paced() -> None:
    second = b"\0\0" * 16000  # one second of 16 kHz PCM16
    refuse = opened(connection(audio_rate=1.0, audio_burst_s=1.0, max_frame_bytes=1 << 20))
    assert refuse.receive_binary(second, 0.0) == [FeedAudio(second, 0.0)]
    assert codes(refuse.receive_binary(second, 0.0)) == ["rate_limited"]
    pace = opened(
        connection(audio_rate=1.0, audio_burst_s=1.0, max_frame_bytes=1 << 20, audio_rate_policy="pace")
    )
    pace.receive_binary(second, 0.0)
    (action,) = pace.receive_binary(second, 0.0)
    assert isinstance(action, FeedAudio) and action.pause_s == 1.0


def test_start_announces_the_audio_format_for_the_rate() -> None:
    conn = connection(audio_rate=1.0, audio_burst_s=0.5, max_frame_bytes=1 << 20)
    (action,) = conn.receive_text(json.dumps({"type": "start", "sample_rate": 8000}), 0.0)
    assert isinstance(action, OpenSession) and action.start == Start(sample_rate=8000)
    conn.session_opened(action.start, "c1")
    half_second_at_8k = b"\0\0" * 4000
    assert conn.receive_binary(half_second_at_8k, 0.0) == [FeedAudio(half_second_at_8k, 0.0)]
