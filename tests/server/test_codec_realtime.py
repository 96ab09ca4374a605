"""server/codecs/realtime.py: parsing OpenAI Realtime client events, translating Palabre events.

Client fixtures are the messages the official `openai` SDK sends (captured from
`client.realtime.connect()` and `client.beta.realtime.connect()`); server events are checked
against the SDK's own pydantic models (GA `openai.types.realtime`, beta
`openai.types.beta.realtime`) when the SDK is installed.
"""

from __future__ import annotations

import base64
import itertools
import json
import typing
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.codecs.realtime import (
    G711_ALAW,
    G711_ULAW,
    MISSING,
    PCM16,
    UNSUPPORTED_TYPES,
    AppendAudio,
    AudioFormat,
    ClearAudio,
    CommitAudio,
    Handshake,
    RealtimeError,
    RealtimeTranslator,
    SessionUpdate,
    Transcription,
    commit_empty_error,
    dumps,
    parse_client_event,
    parse_handshake,
)
from stream.errors import CloseCode, ErrorCode, ProtocolError
from stream.events import Closed, Error, Final, Partial, Ready, SpeechStarted, SpeechStopped, Start
from stream.segmenter import SegmenterConfig
from tests.requirements import require_module

FUZZ = settings(max_examples=200, deadline=None)
LIMIT = 1 << 20


def parse(obj: dict[str, Any] | str) -> Any:
    return parse_client_event(obj if isinstance(obj, str) else json.dumps(obj), LIMIT)


def refused(obj: dict[str, Any] | str | bytes) -> RealtimeError:
    with pytest.raises(RealtimeError) as info:
        parse_client_event(obj if isinstance(obj, str | bytes) else json.dumps(obj), LIMIT)
    return info.value


def counter_ids() -> Callable[[str], str]:
    numbers = itertools.count(1)
    return lambda prefix: f"{prefix}_{next(numbers)}"


def translator(dialect: str = "ga", kind: str = "transcription", **kwargs: Any) -> RealtimeTranslator:
    return RealtimeTranslator(Handshake(dialect, kind, None), new_id=counter_ids(), **kwargs)  # type: ignore[arg-type]


# --- handshake ---------------------------------------------------------------------------------------


def test_handshake_ga_sdk() -> None:
    headers = {"Authorization": "Bearer unused", "User-Agent": "AsyncOpenAI/Python 3.57.0"}
    assert parse_handshake("/v1/realtime?intent=transcription", headers) == Handshake(
        "ga", "transcription", None
    )


def test_handshake_beta_sdk() -> None:
    headers = {"OpenAI-Beta": "realtime=v1"}
    path = "/v1/realtime?model=gpt-4o-transcribe&intent=transcription"
    assert parse_handshake(path, headers) == Handshake("beta", "transcription", "gpt-4o-transcribe")


def test_handshake_browser_subprotocol_and_conversation_model() -> None:
    headers = {"Sec-WebSocket-Protocol": "realtime, openai-insecure-api-key.x, openai-beta.realtime-v1"}
    path = "/v1/realtime?model=gpt-4o-realtime-preview"
    assert parse_handshake(path, headers) == Handshake("beta", "realtime", "gpt-4o-realtime-preview")


# --- client events -----------------------------------------------------------------------------------


def test_append() -> None:
    audio = bytes(range(256)) * 3
    event = parse({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()})
    assert event == AppendAudio(audio)


def test_append_empty_and_event_id() -> None:
    event = parse({"type": "input_audio_buffer.append", "audio": "", "event_id": "evt_1"})
    assert event == AppendAudio(b"", "evt_1")


def test_commit_and_clear() -> None:
    assert parse('{"type":"input_audio_buffer.commit"}') == CommitAudio()
    assert parse('{"type":"input_audio_buffer.commit","event_id":"e"}') == CommitAudio("e")
    assert parse('{"type":"input_audio_buffer.clear"}') == ClearAudio()


def test_ga_session_update_from_the_sdk() -> None:
    text = (
        '{"type": "session.update", "session": {"type": "transcription", "audio": {"input": '
        '{"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": null}}}}'
    )
    assert parse(text) == SessionUpdate("ga", "transcription", PCM16, MISSING, False)


def test_ga_session_update_every_field() -> None:
    event = parse(
        {
            "type": "session.update",
            "event_id": "evt_7",
            "session": {
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcmu"},
                        "transcription": {"model": "gpt-4o-transcribe", "language": "EN", "prompt": "names"},
                        "turn_detection": {
                            "type": "server_vad",
                            "threshold": 0.6,
                            "silence_duration_ms": 300,
                        },
                        "noise_reduction": {"type": "near_field"},
                    }
                },
                "include": ["item.input_audio_transcription.logprobs"],
            },
        }
    )
    assert event == SessionUpdate(
        "ga", "transcription", G711_ULAW, Transcription("gpt-4o-transcribe", "en", "names"), True, "evt_7"
    )


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ({"type": "audio/pcm", "rate": 24000}, PCM16),
        ({"type": "audio/pcm"}, PCM16),
        ({"rate": 24000.0}, PCM16),
        ({"type": "audio/pcm", "rate": 16000}, AudioFormat("pcm_s16le", 16000)),
        ({"type": "audio/pcma"}, G711_ALAW),
        ({"type": "audio/pcmu", "rate": 8000}, G711_ULAW),
    ],
)
def test_ga_formats(fmt: dict[str, Any], expected: AudioFormat) -> None:
    event = parse(
        {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {"format": fmt}}}}
    )
    assert event.input_format == expected


def test_beta_transcription_session_update_from_the_sdk() -> None:
    text = (
        '{"type": "transcription_session.update", '
        '"session": {"input_audio_format": "pcm16", "turn_detection": null}}'
    )
    assert parse(text) == SessionUpdate("transcription_session", "transcription", PCM16, MISSING, False)


def test_beta_transcription_session_update_from_the_docs() -> None:
    event = parse(
        {
            "type": "transcription_session.update",
            "session": {
                "input_audio_format": "g711_alaw",
                "input_audio_transcription": {"model": "whisper-1", "prompt": "", "language": "en"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                },
                "input_audio_noise_reduction": {"type": "near_field"},
                "include": ["item.input_audio_transcription.logprobs"],
            },
        }
    )
    assert event == SessionUpdate(
        "transcription_session", "transcription", G711_ALAW, Transcription("whisper-1", "en", ""), True
    )


def test_beta_session_update_flat_fields() -> None:
    event = parse(
        {
            "type": "session.update",
            "session": {
                "modalities": ["text"],
                "instructions": "ignored",
                "input_audio_format": "g711_ulaw",
                "input_audio_transcription": None,
                "turn_detection": {"type": "semantic_vad", "eagerness": "low"},
            },
        }
    )
    assert event == SessionUpdate("beta", None, G711_ULAW, None, True)


@pytest.mark.parametrize(
    ("obj", "param", "code"),
    [
        ({"type": "session.update"}, "session", "invalid_type"),
        ({"type": "session.update", "session": []}, "session", "invalid_type"),
        (
            {"type": "session.update", "session": {"input_audio_format": "opus"}},
            "session.input_audio_format",
            None,
        ),
        ({"type": "session.update", "session": {"type": "chat"}}, "session.type", None),
        ({"type": "session.update", "session": {"audio": 1}}, "session.audio", "invalid_type"),
        (
            {"type": "session.update", "session": {"audio": {"input": []}}},
            "session.audio.input",
            "invalid_type",
        ),
        (
            {"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/opus"}}}}},
            "session.audio.input.format.type",
            None,
        ),
        (
            {"type": "session.update", "session": {"audio": {"input": {"format": {"rate": 96000}}}}},
            "session.audio.input.format.rate",
            None,
        ),
        (
            {"type": "session.update", "session": {"audio": {"input": {"format": {"rate": True}}}}},
            "session.audio.input.format.rate",
            None,
        ),
        (
            {
                "type": "session.update",
                "session": {"audio": {"input": {"format": {"type": "audio/pcmu", "rate": 24000}}}},
            },
            "session.audio.input.format.rate",
            None,
        ),
        (
            {"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"type": "push"}}}}},
            "session.audio.input.turn_detection.type",
            None,
        ),
        (
            {
                "type": "transcription_session.update",
                "session": {"input_audio_transcription": {"language": "english"}},
            },
            "session.input_audio_transcription.language",
            None,
        ),
        (
            {"type": "transcription_session.update", "session": {"input_audio_transcription": {"model": 4}}},
            "session.input_audio_transcription.model",
            None,
        ),
        (
            {"type": "transcription_session.update", "session": {"input_audio_transcription": "whisper-1"}},
            "session.input_audio_transcription",
            "invalid_type",
        ),
        (
            {"type": "transcription_session.update", "session": {"turn_detection": "server_vad"}},
            "session.turn_detection",
            "invalid_type",
        ),
        (
            {"type": "transcription_session.update", "session": {"input_audio_noise_reduction": "near"}},
            "session.input_audio_noise_reduction",
            "invalid_type",
        ),
    ],
)
def test_bad_session_updates(obj: dict[str, Any], param: str, code: str | None) -> None:
    error = refused({**obj, "event_id": "evt_bad"})
    assert error.code == ErrorCode.BAD_START
    assert error.param == param
    assert error.realtime_code == code
    assert error.event_id == "evt_bad"
    assert error.close is None


def test_bad_base64() -> None:
    error = refused({"type": "input_audio_buffer.append", "audio": "not base64!", "event_id": "e1"})
    assert (error.code, error.param, error.event_id) == (ErrorCode.BAD_AUDIO, "audio", "e1")
    assert refused({"type": "input_audio_buffer.append"}).param == "audio"


@pytest.mark.parametrize("kind", sorted(UNSUPPORTED_TYPES))
def test_unsupported_types(kind: str) -> None:
    error = refused({"type": kind})
    assert (error.code, error.param) == (ErrorCode.UNKNOWN_TYPE, "type")
    assert "only transcribes" in error.message


@pytest.mark.parametrize("text", ['{"type":"ping"}', "{}", '{"type":null}', '{"type":1}'])
def test_unknown_type(text: str) -> None:
    error = refused(text)
    assert (error.code, error.param) == (ErrorCode.UNKNOWN_TYPE, "type")


@pytest.mark.parametrize("text", ["", "nope", "[]", '"x"', b"\xff\xfe", '{"a":NaN}'])
def test_bad_json(text: str | bytes) -> None:
    assert refused(text).code == ErrorCode.BAD_JSON


def test_size_limit_closes() -> None:
    with pytest.raises(RealtimeError) as info:
        parse_client_event(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 2000}), 1000)
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE
    assert info.value.close == CloseCode.MESSAGE_TOO_BIG


# --- session configuration ---------------------------------------------------------------------------


def test_session_created_ga() -> None:
    created = translator().session_created()
    assert created == {
        "type": "session.created",
        "event_id": "event_2",
        "session": {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": "sess_1",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": {"model": "whisper-1", "language": None, "prompt": ""},
                    "noise_reduction": None,
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 200,
                        "silence_duration_ms": 480,
                    },
                }
            },
            "include": None,
        },
    }


def test_session_created_beta_transcription() -> None:
    created = translator("beta").session_created()
    assert created["type"] == "transcription_session.created"
    assert created["session"]["object"] == "realtime.transcription_session"
    assert created["session"]["input_audio_format"] == "pcm16"
    assert created["session"]["turn_detection"]["type"] == "server_vad"


def test_session_created_beta_conversation() -> None:
    t = RealtimeTranslator(Handshake("beta", "realtime", "gpt-4o-realtime-preview"), new_id=counter_ids())
    created = t.session_created()
    assert created["type"] == "session.created"
    assert created["session"]["object"] == "realtime.session"
    assert created["session"]["model"] == "gpt-4o-realtime-preview"
    assert created["session"]["modalities"] == ["text"]


def test_turn_detection_reports_palabre_vad() -> None:
    vad = SegmenterConfig(threshold=0.6, min_silence_ms=300, pad_ms=100)
    session = translator(vad=vad).session_created()["session"]
    assert session["audio"]["input"]["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.6,
        "prefix_padding_ms": 100,
        "silence_duration_ms": 300,
    }


def test_apply_updates_the_config_and_replies_in_the_update_shape() -> None:
    t = translator()
    update = parse(
        '{"type":"transcription_session.update","session":{"input_audio_format":"g711_ulaw",'
        '"input_audio_transcription":{"model":"gpt-4o-transcribe","language":"fr"},"turn_detection":null}}'
    )
    updated = t.apply(update)
    assert updated["type"] == "transcription_session.updated"
    assert updated["session"]["input_audio_format"] == "g711_ulaw"
    assert updated["session"]["input_audio_transcription"] == {
        "model": "gpt-4o-transcribe",
        "language": "fr",
        "prompt": "",
    }
    assert updated["session"]["turn_detection"] is None
    assert t.dialect == "beta"
    start, mode = t.start()
    assert start == Start(sample_rate=8000, encoding="mulaw", language="fr", partials=True)
    assert mode == "manual"


def test_apply_only_changes_fields_present() -> None:
    t = translator()
    t.apply(
        parse({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcma"}}}}})
    )
    t.apply(parse({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}}))
    updated = t.apply(
        parse({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {}}}})
    )
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcma"}
    assert updated["session"]["audio"]["input"]["turn_detection"] is None
    assert t.start() == (Start(sample_rate=8000, encoding="alaw", language=None, partials=True), "manual")


def test_transcription_null_resets_to_defaults() -> None:
    t = translator()
    t.apply(
        parse(
            {
                "type": "transcription_session.update",
                "session": {"input_audio_transcription": {"language": "de"}},
            }
        )
    )
    t.apply(parse({"type": "transcription_session.update", "session": {"input_audio_transcription": None}}))
    assert t.config.transcription == Transcription()


def test_english_only_model_refuses_other_languages() -> None:
    t = translator(multilingual=False)
    update = parse(
        {
            "type": "session.update",
            "event_id": "evt_fr",
            "session": {"type": "transcription", "audio": {"input": {"transcription": {"language": "fr"}}}},
        }
    )
    with pytest.raises(RealtimeError) as info:
        t.apply(update)
    assert info.value.param == "session.audio.input.transcription.language"
    assert info.value.realtime_code == "unsupported_language"
    assert info.value.event_id == "evt_fr"
    assert t.config.transcription.language is None
    t.apply(
        parse(
            {
                "type": "transcription_session.update",
                "session": {"input_audio_transcription": {"language": "en"}},
            }
        )
    )


def test_format_and_turn_detection_are_locked_once_audio_started() -> None:
    t = translator()
    t.audio_started = True
    for session, param in [
        ({"input_audio_format": "g711_ulaw"}, "session.input_audio_format"),
        ({"turn_detection": None}, "session.turn_detection"),
        ({"input_audio_transcription": {"language": "en"}}, "session.input_audio_transcription.language"),
    ]:
        with pytest.raises(RealtimeError) as info:
            t.apply(parse({"type": "transcription_session.update", "session": session}))
        assert (info.value.param, info.value.realtime_code) == (param, "session_locked")
    same = {"input_audio_format": "pcm16", "input_audio_transcription": {"model": "m", "prompt": "p"}}
    updated = t.apply(parse({"type": "transcription_session.update", "session": same}))
    assert updated["session"]["input_audio_transcription"]["prompt"] == "p"


# --- Palabre events → Realtime events ------------------------------------------------------------


def utterance_events(uid: str = "c1:0") -> list[Any]:
    return [
        SpeechStarted(uid, 0.512),
        Partial(uid, "the quick", "", "the quick", 0.512, 1.1),
        Partial(uid, "the quick brown", "the quick", " brown", 0.512, 1.7),
        Partial(uid, "the quick brown fox", "the quick brown", "fox", 0.512, 2.3),
        SpeechStopped(uid, 2.6),
        Final(uid, "the quick brown fox jumps.", 0.512, 2.6, "en", 0),
    ]


def translate_all(t: RealtimeTranslator, events: list[Any]) -> list[dict[str, Any]]:
    return [out for event in events for out in t.translate(event)]


def test_vad_utterance_ga() -> None:
    t = translator()
    out = translate_all(t, utterance_events())
    assert [(e["type"], e.get("delta")) for e in out] == [
        ("input_audio_buffer.speech_started", None),
        ("conversation.item.input_audio_transcription.delta", "the quick"),
        ("conversation.item.input_audio_transcription.delta", " brown"),
        ("input_audio_buffer.speech_stopped", None),
        ("input_audio_buffer.committed", None),
        ("conversation.item.added", None),
        ("conversation.item.input_audio_transcription.delta", " fox jumps."),
        ("conversation.item.input_audio_transcription.completed", None),
        ("conversation.item.done", None),
    ]
    item_id = out[0]["item_id"]
    assert item_id.startswith("item_")
    assert all(e.get("item_id", e.get("item", {}).get("id")) == item_id for e in out)
    assert out[0]["audio_start_ms"] == 512
    assert out[3]["audio_end_ms"] == 2600
    assert out[4]["previous_item_id"] is None
    assert out[5]["item"] == {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": None}],
    }
    completed = out[7]
    assert completed["transcript"] == "the quick brown fox jumps."
    assert completed["content_index"] == 0
    assert completed["usage"] == {"type": "duration", "seconds": 2.088}
    assert "".join(e["delta"] for e in out if "delta" in e) == completed["transcript"]
    assert out[8]["item"]["content"] == [{"type": "input_audio", "transcript": "the quick brown fox jumps."}]
    assert len({e["event_id"] for e in out}) == len(out)


def test_vad_utterance_beta_and_previous_item() -> None:
    t = translator("beta")
    first = translate_all(t, utterance_events("c1:0"))
    second = translate_all(t, utterance_events("c1:1"))
    assert "conversation.item.created" in [e["type"] for e in first]
    assert "conversation.item.done" not in [e["type"] for e in first]
    committed = next(e for e in second if e["type"] == "input_audio_buffer.committed")
    assert committed["previous_item_id"] == first[0]["item_id"]
    assert committed["item_id"] == second[0]["item_id"] != first[0]["item_id"]


def test_manual_turns_send_no_speech_events() -> None:
    t = translator()
    t.apply(parse({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}}))
    types = [e["type"] for e in translate_all(t, utterance_events())]
    assert "input_audio_buffer.speech_started" not in types
    assert "input_audio_buffer.speech_stopped" not in types
    assert "input_audio_buffer.committed" in types


def test_final_that_rewrites_the_partials_sends_no_closing_delta() -> None:
    t = translator()
    events = utterance_events()
    events[-1] = Final("c1:0", "The quick, brown fox.", 0.5, 2.6, "en", 0)
    out = translate_all(t, events)
    deltas = [e["delta"] for e in out if "delta" in e]
    assert deltas == ["the quick", " brown"]
    assert next(e for e in out if e["type"].endswith("completed"))["transcript"] == "The quick, brown fox."


def test_final_without_partials_is_one_delta() -> None:
    t = translator()
    out = translate_all(
        t, [SpeechStarted("c:0", 0.0), SpeechStopped("c:0", 1.0), Final("c:0", "hi", 0, 1, "en", 0)]
    )
    assert [e["delta"] for e in out if "delta" in e] == ["hi"]


def test_empty_final_completes_with_empty_transcript() -> None:
    t = translator()
    out = translate_all(
        t, [SpeechStarted("c:0", 0.0), SpeechStopped("c:0", 1.0), Final("c:0", "", 0, 1, "en", 0)]
    )
    assert not [e for e in out if "delta" in e]
    assert next(e for e in out if e["type"].endswith("completed"))["transcript"] == ""


def test_cleared_forgets_the_open_item() -> None:
    t = translator()
    t.translate(SpeechStarted("c:0", 0.0))
    assert t.cleared()["type"] == "input_audio_buffer.cleared"
    started = t.translate(SpeechStarted("c:1", 2.0))[0]
    stopped = t.translate(SpeechStopped("c:1", 3.0))
    assert stopped[1]["previous_item_id"] is None
    assert stopped[1]["item_id"] == started["item_id"]


def test_other_events_are_not_sent() -> None:
    t = translator()
    assert t.translate(Ready("c", "s", 24000, "tiny.en")) == []
    assert t.translate(Closed(utterances=1)) == []


def test_errors() -> None:
    t = translator()
    event = t.translate(Error(ErrorCode.INTERNAL, "recognition of utterance 3 failed"))[0]
    assert event["type"] == "error"
    assert event["error"] == {
        "type": "server_error",
        "code": "internal_error",
        "message": "recognition of utterance 3 failed",
        "param": None,
        "event_id": None,
    }
    bad = refused({"type": "input_audio_buffer.append", "audio": "%%", "event_id": "evt_9"})
    assert t.error(bad)["error"] == {
        "type": "invalid_request_error",
        "code": "invalid_value",
        "message": "audio is not valid base64",
        "param": "audio",
        "event_id": "evt_9",
    }
    empty = t.error(commit_empty_error("evt_c"))["error"]
    assert (empty["code"], empty["event_id"]) == ("input_audio_buffer_commit_empty", "evt_c")
    overloaded = t.error(ProtocolError(ErrorCode.OVERLOADED, "busy"))["error"]
    assert (overloaded["type"], overloaded["code"]) == ("server_error", "overloaded")


def test_dumps_is_compact_utf8() -> None:
    assert dumps({"type": "x", "delta": "é"}) == '{"type":"x","delta":"é"}'


# --- shapes the official SDK accepts -----------------------------------------------------------------


def sdk_models(union: Any) -> dict[str, Any]:
    """The SDK's event models by their `type` literal."""
    members = typing.get_args(typing.get_args(union)[0])
    return {typing.get_args(m.model_fields["type"].annotation)[0]: m for m in members}


SDK_UPDATES: dict[str, list[dict[str, Any]]] = {
    "ga": [
        {"type": "session.update", "session": {"type": "transcription"}},
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        },
        {
            "type": "session.update",
            "session": {"type": "transcription", "audio": {"input": {"transcription": None}}},
        },
    ],
    "beta": [
        {"type": "transcription_session.update", "session": {"input_audio_format": "g711_ulaw"}},
        {"type": "session.update", "session": {"input_audio_format": "pcm16", "turn_detection": None}},
        {"type": "transcription_session.update", "session": {"turn_detection": {"type": "server_vad"}}},
    ],
}


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_events_validate_against_the_sdk_models(dialect: str) -> None:
    """Every event, in each dialect, passes pydantic validation by the SDK's model of its type."""
    require_module("openai")
    if dialect == "ga":
        from openai.types.realtime import RealtimeServerEvent
    else:
        from openai.types.beta.realtime import RealtimeServerEvent  # type: ignore[assignment]
    models = sdk_models(RealtimeServerEvent)
    t = translator(dialect)
    events = [t.session_created()]
    events += [t.apply(parse(update)) for update in SDK_UPDATES[dialect]]
    events += translate_all(t, utterance_events())
    events += [t.cleared(), t.error(commit_empty_error("evt_1"))]
    events += t.translate(Error(ErrorCode.INTERNAL, "failed"))
    checked = set()
    for event in events:
        if event["type"] == "transcription_session.created":
            continue  # sent by the beta API, but missing from the beta SDK's union
        model = models[event["type"]]
        if event["type"] == "transcription_session.updated":
            # The beta model requires the client secret that only REST-created sessions have.
            event = {
                **event,
                "session": {**event["session"], "client_secret": {"expires_at": 0, "value": ""}},
            }
        parsed = model.model_validate(event)
        assert parsed.type == event["type"]
        checked.add(event["type"])
    assert "conversation.item.input_audio_transcription.completed" in checked


@pytest.mark.parametrize("kind", ["transcription", "realtime"])
def test_client_fixtures_validate_against_the_sdk_models(kind: str) -> None:
    require_module("openai")
    import pydantic
    from openai.types.realtime import RealtimeClientEvent

    adapter: Any = pydantic.TypeAdapter(RealtimeClientEvent)
    session: dict[str, Any] = {
        "type": kind,
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None}},
    }
    if kind == "realtime":
        session["model"] = "gpt-realtime"
    events: list[dict[str, Any]] = [
        {"type": "session.update", "session": session},
        {"type": "input_audio_buffer.append", "audio": "AAAA"},
        {"type": "input_audio_buffer.commit"},
        {"type": "input_audio_buffer.clear"},
    ]
    for event in events:
        adapter.validate_python(event)
        parse(event)


# --- fuzzing ---------------------------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=300))
def test_fuzz_text(text: str) -> None:
    try:
        parse_client_event(text, 4096)
    except ProtocolError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
field_values = json_values | st.sampled_from(
    [
        "pcm16",
        "g711_ulaw",
        "audio/pcm",
        "audio/pcmu",
        24000,
        "en",
        "auto",
        "server_vad",
        "transcription",
        "AAAA",
        {"type": "audio/pcm", "rate": 16000},
        {"type": "server_vad"},
        {"language": "fr", "model": "whisper-1"},
    ]
)
field_names = st.sampled_from(
    [
        "type",
        "audio",
        "input",
        "format",
        "rate",
        "transcription",
        "turn_detection",
        "language",
        "model",
        "prompt",
        "input_audio_format",
        "input_audio_transcription",
        "input_audio_noise_reduction",
        "noise_reduction",
        "event_id",
    ]
)
sessions = st.recursive(
    st.dictionaries(field_names, field_values, max_size=5),
    lambda inner: st.dictionaries(field_names, inner | field_values, max_size=4),
    max_leaves=10,
)


@FUZZ
@given(
    st.sampled_from(
        [
            "session.update",
            "transcription_session.update",
            "input_audio_buffer.append",
            "input_audio_buffer.commit",
            "response.create",
            None,
        ]
    ),
    sessions,
    field_values,
)
def test_fuzz_events(kind: str | None, session: Any, audio: Any) -> None:
    """Arbitrary fields: a parsed event or a RealtimeError, and an accepted update applies."""
    obj = {"type": kind, "session": session, "audio": audio}
    try:
        event = parse_client_event(json.dumps(obj), LIMIT)
    except RealtimeError as error:
        assert error.message
        assert translator().error(error)["error"]["message"] == error.message
        return
    if isinstance(event, SessionUpdate):
        t = translator(multilingual=True)
        assert t.apply(event)["type"].endswith(".updated")
        start, _ = t.start()
        assert 8000 <= start.sample_rate <= 48000


words = st.lists(st.sampled_from(["a", "b", "c", "de", "fgh"]), max_size=8)


@FUZZ
@given(st.lists(words, max_size=6), words)
def test_fuzz_deltas_concatenate_to_the_growing_stable_text(
    stables: list[list[str]], final: list[str]
) -> None:
    """Deltas never repeat or retract text: their concatenation is a prefix of the last stable
    text that extended it, and equals the transcript when the final extends what was sent."""
    t = translator()
    longest = ""
    out = t.translate(SpeechStarted("c:0", 0.0))
    for stable in stables:
        text = " ".join(stable)
        out += t.translate(Partial("c:0", text, text, "", 0.0, 1.0))
        if text.startswith(longest):
            longest = text
    out += t.translate(SpeechStopped("c:0", 1.0))
    final_text = " ".join(final)
    out += t.translate(Final("c:0", final_text, 0.0, 1.0, "en", 0))
    sent = "".join(e["delta"] for e in out if "delta" in e)
    assert all(e["delta"] for e in out if "delta" in e)
    assert sent == (final_text if final_text.startswith(longest) else longest)


def test_the_transcription_prompt_is_the_sessions_vocabulary() -> None:
    t = translator()
    t.apply(parse({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "transcription": {"model": "whisper-1", "prompt": "Zyphrex, Kessandra Vollmer"}}}}}))
    start, _ = t.start()
    assert start.vocabulary == ("Zyphrex, Kessandra Vollmer",)
    t.apply(parse({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "transcription": {"model": "whisper-1", "prompt": "  "}}}}}))
    assert t.start()[0].vocabulary == ()


def test_a_diarizing_model_asks_for_speakers_and_completed_carries_them() -> None:
    plain = translator()
    plain.apply(parse({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "transcription": {"model": "gpt-4o-transcribe"}}}}}))
    assert plain.start()[0].diarize is False
    done = translate_all(plain, [SpeechStarted("c:0", 0.0), SpeechStopped("c:0", 1.0),
                                 Final("c:0", "hi", 0, 1, "en", 0, speaker="S1")])
    assert "speaker" not in next(e for e in done if e["type"].endswith("completed"))

    t = translator()
    t.apply(parse({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "transcription": {"model": "gpt-4o-transcribe-diarize"}}}}}))
    assert t.start()[0].diarize is True
    out = translate_all(t, [
        SpeechStarted("c:0", 0.0), SpeechStopped("c:0", 1.0), Final("c:0", "hi", 0, 1, "en", 0, speaker="S1"),
        SpeechStarted("c:1", 2.0), SpeechStopped("c:1", 3.0),
        Final("c:1", "yes", 2, 3, "en", 1, speaker="S2", speaker_name="Bob"),
    ])
    completed = [e for e in out if e["type"].endswith("completed")]
    assert [(e.get("speaker"), e.get("speaker_name")) for e in completed] == [("S1", None), ("S2", "Bob")]
    assert "speaker_name" not in completed[0]
