import itertools

import numpy as np

from stream.events import Final, Partial, SpeechStarted, SpeechStopped, Word
from stream.interfaces import SAMPLE_RATE, AsrOutput
from stream.session import AsrJob, Session, SessionConfig
from tests.stream.fakes import EnergyVad, silence, tone


def make(**kw: object) -> Session:
    return Session("s1", "c1", EnergyVad(), language="en", config=SessionConfig(**kw))  # type: ignore[arg-type]


def feed_in_frames(session: Session, audio: np.ndarray, frame: int = 320):  # type: ignore[no-untyped-def]
    events, requests = [], []
    for i in range(0, len(audio), frame):
        out = session.feed(audio[i : i + frame])
        events += out.events
        requests += out.requests
    return events, requests


def test_one_utterance_gives_start_stop_and_one_final_request() -> None:
    s = make(partials=False)
    events, requests = feed_in_frames(s, np.concatenate([silence(0.5), tone(1.0), silence(1.0)]))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    assert len(requests) == 1 and requests[0].kind == "final"
    job: AsrJob = requests[0].payload
    # padded by 200 ms on both sides
    assert abs(len(job.input.audio) / SAMPLE_RATE - 1.4) < 0.1
    assert abs(events[0].start - 0.5) < 0.05 and abs(events[1].end - 1.5) < 0.05
    out = s.on_result(job, AsrOutput("hello there", "en"))
    assert isinstance(out.events[0], Final)
    assert out.events[0].text == "hello there" and out.events[0].utterance_id == "c1:0"


def test_partials_are_requested_at_interval_with_one_outstanding() -> None:
    s = make(partial_interval_s=0.5)
    _, requests = feed_in_frames(s, np.concatenate([silence(0.2), tone(3.0)]))
    partials = [r for r in requests if r.kind == "partial"]
    assert len(partials) == 1  # the first is still outstanding
    out = s.on_result(partials[0].payload, AsrOutput("hello", "en"))
    assert isinstance(out.events[0], Partial)
    _, more = feed_in_frames(s, tone(1.0))
    assert [r.kind for r in more] == ["partial"]


def test_finals_released_in_utterance_order() -> None:
    s = make(partials=False)
    audio = np.concatenate([tone(0.5), silence(1.0), tone(0.5), silence(1.0)])
    _, requests = feed_in_frames(s, audio)
    assert len(requests) == 2
    first, second = (r.payload for r in requests)
    assert s.on_result(second, AsrOutput("two", "en")).events == []
    released = s.on_result(first, AsrOutput("one", "en")).events
    assert [e.text for e in released] == ["one", "two"]  # type: ignore[union-attr]


def test_stop_closes_open_utterance_and_done_after_final() -> None:
    s = make(partials=False)
    _, requests = feed_in_frames(s, tone(1.0))
    assert requests == []
    out = s.stop()
    assert [type(e) for e in out.events] == [SpeechStopped]
    assert not s.done
    s.on_result(out.requests[0].payload, AsrOutput("x", "en"))
    assert s.done


def test_silence_makes_no_request_and_buffer_stays_small() -> None:
    s = make()
    events, requests = feed_in_frames(s, silence(60.0))
    assert events == [] and requests == []
    assert s._buffer.end - s._buffer.start < SAMPLE_RATE


def test_partial_of_closed_utterance_is_ignored() -> None:
    s = make(partial_interval_s=0.3)
    _, requests = feed_in_frames(s, np.concatenate([tone(1.0), silence(1.0)]))
    partial = next(r for r in requests if r.kind == "partial")
    assert s.on_result(partial.payload, AsrOutput("late", "en")).events == []


def test_time_offset_and_first_seq_continue_a_conversation() -> None:
    s = Session(
        "s2",
        "c1",
        EnergyVad(),
        language="en",
        seqs=itertools.count(7),
        time_offset=100.0,
        config=SessionConfig(partials=False),
    )
    events, _ = feed_in_frames(s, np.concatenate([silence(1.0), tone(0.5), silence(1.0)]))
    assert events[0].utterance_id == "c1:7"
    assert abs(events[0].start - 101.0) < 0.05


def test_commit_ends_the_open_utterance_now() -> None:
    s = make(partials=False)
    _, requests = feed_in_frames(s, tone(1.0))
    assert requests == []
    out = s.commit()
    assert [type(e) for e in out.events] == [SpeechStopped]
    assert [r.kind for r in out.requests] == ["final"]


def test_manual_turns_treat_silence_as_part_of_the_utterance() -> None:
    s = make(partials=False, turn_detection="manual")
    events, requests = feed_in_frames(s, np.concatenate([tone(0.5), silence(2.0), tone(0.5)]))
    assert [type(e) for e in events] == [SpeechStarted] and requests == []
    out = s.commit()
    assert len(out.requests) == 1
    assert abs(len(out.requests[0].payload.input.audio) / SAMPLE_RATE - 3.0) < 0.1


def test_clear_drops_the_open_utterance() -> None:
    s = make(partials=False)
    feed_in_frames(s, tone(1.0))
    s.clear()
    events, requests = feed_in_frames(s, silence(1.0))
    assert events == [] and requests == []
    assert s.stop().requests == []


def test_partials_of_a_long_utterance_are_spaced_in_proportion_to_its_length() -> None:
    s = make(partial_interval_s=0.5, partial_interval_ratio=0.25)
    ends = []
    for _ in range(20):
        _, requests = feed_in_frames(s, tone(0.5))
        for r in requests:
            ends.append(r.payload.end_sample / SAMPLE_RATE)
            s.on_result(r.payload, AsrOutput("x", "en"))
    gaps = [b - a for a, b in itertools.pairwise(ends)]
    assert gaps[0] < 1.0
    for end, gap in zip(ends[1:], gaps, strict=True):
        assert gap >= 0.25 * end - 0.05


def test_early_final_is_requested_before_the_pause_ends_the_utterance() -> None:
    s = make(partials=False)
    events, requests = feed_in_frames(s, np.concatenate([silence(0.5), tone(1.0), silence(0.3)]))
    assert [type(e) for e in events] == [SpeechStarted]  # the pause is not long enough yet
    assert [r.kind for r in requests] == ["final"]
    early: AsrJob = requests[0].payload
    assert abs(len(early.input.audio) / SAMPLE_RATE - 1.4) < 0.1  # the final's audio, both pads
    assert s.on_result(early, AsrOutput("hello", "en")).events == []  # not final yet
    events, requests = feed_in_frames(s, silence(1.0))
    assert requests == []  # no second decode of the same audio
    assert [type(e) for e in events] == [SpeechStopped, Final]
    assert events[1].text == "hello"  # type: ignore[union-attr]


def test_early_final_result_after_the_end_is_the_final() -> None:
    s = make(partials=False)
    _, requests = feed_in_frames(s, np.concatenate([tone(1.0), silence(1.5)]))
    assert [r.kind for r in requests] == ["final"]
    released = s.on_result(requests[0].payload, AsrOutput("hi", "en")).events
    assert [e.text for e in released] == ["hi"]  # type: ignore[union-attr]
    assert s.pending_finals == 0


def test_early_final_of_a_pause_that_does_not_end_the_utterance_is_a_partial() -> None:
    s = make(partial_interval_s=10.0)
    _, requests = feed_in_frames(s, np.concatenate([tone(1.0), silence(0.3)]))
    early = requests[-1].payload
    events, requests = feed_in_frames(s, np.concatenate([tone(1.0), silence(1.5)]))
    shown = s.on_result(early, AsrOutput("first words", "en")).events
    assert shown == []  # the utterance has ended since, elsewhere: a stale early final is ignored
    finals = [r.payload for r in requests if r.kind == "final"]
    assert [type(e) for e in events if not isinstance(e, Partial)] == [SpeechStopped]
    released = s.on_result(finals[-1], AsrOutput("first words and more", "en")).events
    assert [e.text for e in released] == ["first words and more"]  # type: ignore[union-attr]


def test_early_final_shown_as_partial_while_speech_goes_on() -> None:
    s = make(partial_interval_s=10.0)
    _, requests = feed_in_frames(s, np.concatenate([tone(1.0), silence(0.3), tone(0.5)]))
    early = [r.payload for r in requests if r.kind == "final"]
    assert len(early) == 1
    shown = s.on_result(early[0], AsrOutput("first words", "en")).events
    assert isinstance(shown[0], Partial) and shown[0].text == "first words"


def test_no_early_finals_when_disabled() -> None:
    s = make(partials=False, early_finals=False)
    _, requests = feed_in_frames(s, np.concatenate([tone(1.0), silence(0.3)]))
    assert requests == []


def test_the_vocabulary_prompt_goes_with_partials_and_finals_without_splitting_batches() -> None:
    s = Session("s1", "c1", EnergyVad(), language="en", config=SessionConfig(partial_interval_s=0.5),
                prompt="Zyphrex, Kessandra Vollmer")
    _, requests = feed_in_frames(s, np.concatenate([silence(0.2), tone(2.0), silence(1.0)]))
    assert {r.kind for r in requests} == {"partial", "final"}
    assert all(r.payload.input.prompt == "Zyphrex, Kessandra Vollmer" for r in requests)
    plain = make()
    _, others = feed_in_frames(plain, np.concatenate([silence(0.2), tone(2.0), silence(1.0)]))
    assert {r.key for r in requests} == {r.key for r in others}  # the scheduler batches them together


def test_auto_finals_carry_the_detected_language_or_none_on_silence() -> None:
    s = Session("s1", "c1", EnergyVad(), language=None, config=SessionConfig(partials=False))  # type: ignore[arg-type]
    _, requests = feed_in_frames(s, np.concatenate([tone(1.0), silence(1.0), tone(1.0), silence(1.0)]))
    assert [r.payload.input.language for r in requests] == [None, None]  # detected by the recogniser
    first = s.on_result(requests[0].payload, AsrOutput("Bonjour.", "fr")).events
    second = s.on_result(requests[1].payload, AsrOutput("", "")).events  # nothing heard: no language
    assert [(f.text, f.language) for f in first + second if isinstance(f, Final)] == [
        ("Bonjour.", "fr"),
        ("", None),
    ]


def test_an_auto_final_judged_silent_has_no_language_even_when_one_was_ranked() -> None:
    """Noise loud enough to decode: the recogniser ranks a language but hears no words (`null`)."""
    s = Session("s1", "c1", EnergyVad(), language=None, config=SessionConfig(partials=False))  # type: ignore[arg-type]
    _, requests = feed_in_frames(s, np.concatenate([tone(1.0), silence(1.0)]))
    [final] = s.on_result(requests[0].payload, AsrOutput("  ", "fr", language_probability=0.4)).events
    assert isinstance(final, Final) and (final.text, final.language) == ("", None)
    fixed = Session("s2", "c1", EnergyVad(), language="fr", config=SessionConfig(partials=False))  # type: ignore[arg-type]
    _, requests = feed_in_frames(fixed, np.concatenate([tone(1.0), silence(1.0)]))
    [final] = fixed.on_result(requests[0].payload, AsrOutput("", "fr")).events
    assert isinstance(final, Final) and final.language == "fr"  # the session's language, asked for


def test_word_timestamps_are_asked_for_finals_only_and_come_in_conversation_seconds() -> None:
    s = Session("s1", "c1", EnergyVad(), language="en", time_offset=100.0,
                config=SessionConfig(partial_interval_s=0.5), word_timestamps=True)
    _, requests = feed_in_frames(s, np.concatenate([silence(0.5), tone(2.0), silence(1.0)]))
    assert {r.kind for r in requests} == {"partial", "final"}
    assert all(r.payload.input.word_timestamps == (r.kind == "final") for r in requests)
    final = requests[-1].payload
    # The audio starts 200 ms (padding) before the utterance, at 100.3 s; words are kept inside it.
    words = (Word("Hello", 0.0, 0.5, 0.9), Word(" there.", 0.5, 9.0, 0.8))
    [event] = s.on_result(final, AsrOutput("Hello there.", "en", words=words)).events
    assert isinstance(event, Final) and event.words is not None
    assert abs(event.start - 100.5) < 0.05 and abs(event.end - 102.5) < 0.05
    assert event.words[0].start == event.start and abs(event.words[0].end - 100.8) < 0.05
    assert abs(event.words[1].start - 100.8) < 0.05 and event.words[1].end == event.end
    plain = make(partials=False)
    _, requests = feed_in_frames(plain, np.concatenate([silence(0.5), tone(1.0), silence(1.0)]))
    assert not requests[0].payload.input.word_timestamps
    [event] = plain.on_result(requests[0].payload, AsrOutput("hi", "en")).events
    assert isinstance(event, Final) and event.words is None
