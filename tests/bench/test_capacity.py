"""The capacity benchmark's bookkeeping: session plans, coverage of utterances, WER, pacing.

Pure and fast: synthetic references, no server, no model.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bench.capacity import (
    END_SLACK_S,
    TAIL_S,
    FinalRecord,
    Placement,
    SessionResult,
    analyse,
    build_parser,
    covered,
    main,
    plan_session,
    settle_language,
    summarise,
)
from bench.common import SAMPLE_RATE, Pacing, Reference, Usage, WordErrors, normalise, send_paced


def reference(name: str, text: str, seconds: float) -> Reference:
    """A reference whose audio is a tone of the given length."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return Reference(name, text, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


REFS = [
    reference("a.wav", "the child almost hurt the small dog", 2.5),
    reference("b.wav", "what joy there is in living", 2.0),
    reference("c.wav", "ask not what your country can do for you", 6.0),
]


def final(text: str, start: float, end: float, arrived: float = 0.0) -> FinalRecord:
    return FinalRecord(text, start, end, arrived)


def test_plans_are_deterministic_and_place_the_audio_where_they_say() -> None:
    first, again, other = (
        plan_session(0, REFS, 20.0),
        plan_session(0, REFS, 20.0),
        plan_session(1, REFS, 20.0),
    )
    assert np.array_equal(first.samples, again.samples)
    assert first.placements == again.placements
    assert first.placements != other.placements or not np.array_equal(first.samples, other.samples)
    for plan in (first, other):
        assert plan.seconds >= 20.0
        assert plan.placements[-1].end + TAIL_S <= plan.seconds + 1e-3
        for p in plan.placements:
            ref = next(r for r in REFS if r.name == p.name)
            start = round(p.start * SAMPLE_RATE)  # starts are kept to the millisecond (16 samples)
            diffs = [
                np.max(np.abs(plan.samples[k : k + len(ref.samples)] - ref.samples))
                for k in range(start - 8, start + 9)
            ]
            assert min(diffs) < 0.01  # the reference, under the dither
        starts = [p.start for p in plan.placements]
        assert starts == sorted(starts)


def test_a_final_covers_an_utterance_only_up_to_where_it_ends() -> None:
    p = Placement("a.wav", "x", 10.0, 12.5)
    assert covered(p, [final("words", 9.8, 12.4)])
    assert covered(p, [final("part", 10.0, 11.0), final("rest", 11.2, 12.5 - END_SLACK_S)])
    assert not covered(p, [final("stops short", 5.0, 11.0)])  # merged with the previous file
    assert not covered(p, [final("", 10.0, 12.5)])  # an empty final carries no words
    assert not covered(p, [final("elsewhere", 13.0, 15.0)])


def test_analyse_counts_lost_utterances_spurious_finals_and_word_errors() -> None:
    plan = plan_session(0, REFS, 30.0)
    first, second = plan.placements[0], plan.placements[1]
    result = SessionResult("palabre", 0, closed=True)
    result.finals = [
        final(first.text.upper() + ".", first.start, first.end, arrived=1.0),
        final("thank you", second.end + 0.9, second.end + 1.2, arrived=2.0),  # in a gap
    ]
    result.pacing = Pacing(start=0.0, frame_samples=320, sent=[0.02 * (k + 1) for k in range(2000)])
    result.set_latencies()
    analysis = analyse(plan, result)
    assert analysis.expected == len(plan.placements)
    assert analysis.lost == len(plan.placements) - 1
    assert analysis.spurious == 1
    missing = sum(len(p.text.split()) for p in plan.placements[1:])
    by_file = analysis.errors_by_file  # the gap's words are insertions, each file's own words missing
    assert (by_file.substitutions, by_file.deletions, by_file.insertions) == (0, missing, 2)
    whole = analysis.errors  # the session as one text: the best alignment costs as many edits
    assert whole.substitutions + whole.deletions + whole.insertions == missing
    assert analysis.latencies[0] == pytest.approx(
        1.0 - 0.02 * np.ceil(first.end * SAMPLE_RATE / 320), abs=1e-9
    )


def test_a_refused_session_loses_everything() -> None:
    plan = plan_session(2, REFS, 20.0)
    analysis = analyse(plan, SessionResult("whisperlive", 2, refused=True))
    assert analysis.lost == analysis.expected == len(plan.placements)


def test_word_errors_normalise_case_and_punctuation() -> None:
    assert normalise("And so, my fellow Americans!") == "and so my fellow americans"
    errors = WordErrors()
    errors.add("ask not what your country can do", "Ask not, what your country can do.")
    assert errors.wer == 0.0
    errors.add("", "hallucinated words")
    errors.add("lost words", "")
    assert (errors.insertions, errors.deletions, errors.reference_words) == (2, 2, 9)


def test_send_paced_keeps_real_time_and_records_each_frame() -> None:
    sent: list[bytes] = []

    async def send(payload: bytes) -> None:
        sent.append(payload)

    async def run() -> Pacing:
        pacing = Pacing()
        payloads = [bytes(2 * 160)] * 5 + [bytes(2 * 80)]  # 10 ms frames, then a 5 ms one
        await send_paced(payloads, 2, send, pacing, speed=4.0)
        return pacing

    pacing = asyncio.run(run())
    assert len(sent) == len(pacing.sent) == 6
    assert pacing.frame_samples == 160
    assert pacing.due[-1] - pacing.start == pytest.approx(0.055 / 4.0)
    assert all(s >= d for s, d in zip(pacing.sent, pacing.due, strict=True))
    assert pacing.sent_at(0.0) == pacing.sent[0]
    assert pacing.sent_at(0.015) == pacing.sent[1]
    assert pacing.sent_at(99.0) == pacing.sent[-1]


def test_diarize_measures_palabre_only_and_writes_its_own_report(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["--diarize", "--servers", "palabre,whisperlive"])
    assert refused.value.code == 2
    assert "--diarize measures Palabre only" in capsys.readouterr().err


def test_unlabelled_counts_finals_with_text_but_no_speaker() -> None:
    plan = plan_session(0, REFS, 20.0)
    result = SessionResult("palabre", 0, closed=True)
    result.finals = [
        FinalRecord("the child", 1.0, 2.0, 0.0, speaker="S1"),
        FinalRecord("what joy", 3.0, 4.0, 0.0),
        FinalRecord("", 5.0, 5.5, 0.0),
    ]
    figures = summarise("palabre", [plan], [result], Usage(1.0, 0.5, 0, 0))
    assert figures.unlabelled == 1
    assert figures.per_session[0]["speakers"] == ["S1"]


def test_french_measures_the_default_server_alone_into_its_own_files() -> None:
    args = build_parser().parse_args(["--language", "fr"])
    settle_language(args)
    assert (args.servers, args.palabre_model) == (["palabre"], "default")
    assert (args.out.name, args.plot.name) == ("capacity-fr.json", "capacity-fr.png")
    english = build_parser().parse_args([])
    settle_language(english)
    assert (english.servers, english.palabre_model, english.out.name) == (
        ["palabre", "whisperlive"],
        "tiny.en",
        "capacity.json",
    )
    with pytest.raises(SystemExit):
        settle_language(build_parser().parse_args(["--language", "fr", "--servers", "whisperlive"]))

