from stream.segmenter import Segmenter, SegmenterConfig, SpeechEnd, SpeechStart

FRAME = 512
RATE = 16000


def run(probs: list[float], config: SegmenterConfig | None = None) -> list[object]:
    seg = Segmenter(config or SegmenterConfig(), FRAME, RATE)
    events: list[object] = []
    for p in probs:
        events.extend(seg.push(p))
    events.extend(seg.finish())
    return events


def frames(ms: float) -> int:
    return round(ms / 32)


def test_speech_between_silences_is_one_utterance() -> None:
    probs = [0.0] * 10 + [0.9] * 30 + [0.0] * 30
    assert run(probs) == [SpeechStart(10 * FRAME), SpeechEnd(40 * FRAME)]


def test_short_blip_is_not_speech() -> None:
    assert run([0.0] * 10 + [0.9] * 2 + [0.0] * 30) == []


def test_short_pause_does_not_end_utterance() -> None:
    probs = [0.9] * 20 + [0.0] * (frames(480) - 2) + [0.9] * 20 + [0.0] * 30
    events = run(probs)
    assert len(events) == 2


def test_hysteresis_keeps_speech_between_thresholds() -> None:
    probs = [0.9] * 20 + [0.4] * 40 + [0.0] * 30
    assert run(probs) == [SpeechStart(0), SpeechEnd(60 * FRAME)]


def test_long_utterance_is_cut_at_its_quietest_frame() -> None:
    config = SegmenterConfig(soft_max_s=5.0, max_utterance_s=6.0, cut_search_s=2.0)
    n = round(6.0 * RATE / FRAME)
    probs = [0.9] * n
    probs[n - 20] = 0.4  # the quietest frame within the last 2 s
    events = run(probs + [0.0] * 30, config)
    assert events[0] == SpeechStart(0)
    assert events[1] == SpeechEnd((n - 20) * FRAME, forced=True)
    assert events[2] == SpeechStart((n - 20) * FRAME)
    assert isinstance(events[3], SpeechEnd) and not events[3].forced


def test_after_soft_max_a_short_pause_ends_the_utterance() -> None:
    config = SegmenterConfig(soft_max_s=2.0, max_utterance_s=10.0, soft_min_silence_ms=160)
    n = round(3.0 * RATE / FRAME)
    probs = [0.9] * n + [0.0] * frames(200) + [0.9] * 20 + [0.0] * 30
    events = run(probs, config)
    assert events[:2] == [SpeechStart(0), SpeechEnd(n * FRAME)]


def test_finish_closes_open_utterance() -> None:
    assert run([0.9] * 20) == [SpeechStart(0), SpeechEnd(20 * FRAME)]
