"""When rolling summaries are due (stream/summary_schedule.py), on a fake clock."""

from __future__ import annotations

from stream.summary_schedule import SummaryCadence, SummarySchedule


def test_a_summary_every_n_finals() -> None:
    schedule = SummarySchedule(SummaryCadence(every_finals=3, every_s=0), now=0.0)
    assert [schedule.final_stored() for _ in range(3)] == [False, False, True]
    schedule.summarized(now=5.0)
    assert [schedule.final_stored() for _ in range(3)] == [False, False, True]


def test_finals_stored_while_a_summary_is_made_count_for_the_next() -> None:
    schedule = SummarySchedule(SummaryCadence(every_finals=2, every_s=0), now=0.0)
    schedule.final_stored()
    assert schedule.final_stored()
    schedule.summarized(now=1.0)  # made from the finals stored so far
    assert not schedule.final_stored()
    assert schedule.final_stored()


def test_a_summary_every_s_seconds_only_when_something_new_was_said() -> None:
    schedule = SummarySchedule(SummaryCadence(every_finals=0, every_s=30.0), now=100.0)
    assert not schedule.due(now=200.0), "nothing said yet"
    assert not schedule.final_stored(), "every_finals=0: never by count"
    assert not schedule.due(now=129.9)
    assert schedule.due(now=130.0)
    schedule.summarized(now=130.0)
    assert not schedule.due(now=500.0), "nothing new since the last summary"
    schedule.final_stored()
    assert schedule.due(now=500.0)


def test_the_time_counts_from_the_last_summary_whatever_made_it() -> None:
    schedule = SummarySchedule(SummaryCadence(every_finals=2, every_s=30.0), now=0.0)
    schedule.final_stored()
    assert schedule.final_stored()
    schedule.summarized(now=25.0)  # due by count
    schedule.final_stored()
    assert not schedule.due(now=50.0)
    assert schedule.due(now=55.0)


def test_zero_turns_a_cadence_off() -> None:
    schedule = SummarySchedule(SummaryCadence(every_finals=0, every_s=0), now=0.0)
    assert not any(schedule.final_stored() for _ in range(100))
    assert not schedule.due(now=1e9)
