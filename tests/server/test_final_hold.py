"""The hold of a session's finals while the store is lost (server/final_hold.py), on a fake clock."""

from __future__ import annotations

import random

import pytest

from server.final_hold import FinalHold, HoldLimits


def test_retries_back_off_doubling_up_to_the_cap() -> None:
    hold = FinalHold(HoldLimits(first_retry_s=0.1, max_retry_s=1.0, retry_jitter=0.0))
    assert not hold.holding
    delays = [hold.failed(now) for now in (10.0, 10.1, 10.3, 10.7, 11.5, 12.5)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert hold.holding and hold.since == 10.0 and hold.retries == 6


def test_jitter_shortens_each_delay_by_up_to_its_fraction() -> None:
    limits = HoldLimits(first_retry_s=0.4, max_retry_s=2.0, retry_jitter=0.5)
    assert FinalHold(limits, uniform=lambda: 0.0).failed(0.0) == 0.4
    assert FinalHold(limits, uniform=lambda: 0.999).failed(0.0) == pytest.approx(0.2, abs=1e-3)
    draws = iter([0.5, 0.25])
    hold = FinalHold(limits, uniform=lambda: next(draws))
    assert [hold.failed(0.0), hold.failed(0.3)] == pytest.approx([0.3, 0.7])


def test_sessions_held_by_one_outage_spread_their_retries() -> None:
    """With the default jitter, twenty holds failing at the same instant do not all retry at the
    same instant (a seeded source, so the test is the same every run)."""
    source = random.Random(7)
    delays = {FinalHold(HoldLimits(), uniform=source.random).failed(0.0) for _ in range(20)}
    assert len(delays) == 20
    assert all(0.05 <= d <= 0.1 for d in delays), delays


def test_a_commit_ends_the_hold_and_says_how_long_it_lasted() -> None:
    hold = FinalHold(HoldLimits(first_retry_s=0.1, retry_jitter=0.0))
    assert hold.committed(5.0) == 0.0
    hold.failed(5.0)
    hold.failed(5.5)
    assert hold.committed(7.25) == 2.25
    assert not hold.holding and hold.retries == 0
    assert hold.failed(9.0) == 0.1  # a new hold starts its backoff over


def test_the_bound_in_seconds_is_passed_once() -> None:
    hold = FinalHold(HoldLimits(seconds=3.0, finals=100))
    assert not hold.over_bound(0.0, 1)  # not holding
    hold.failed(0.0)
    assert not hold.over_bound(2.9, 1)
    assert hold.over_bound(3.0, 1)
    assert not hold.over_bound(4.0, 1)  # told once
    assert hold.exceeded


def test_the_bound_in_finals_counts_the_waiting_ones() -> None:
    hold = FinalHold(HoldLimits(seconds=60.0, finals=3))
    hold.failed(0.0)
    assert not hold.over_bound(0.5, 3)
    assert hold.over_bound(0.6, 4)


def test_a_hold_that_ended_in_time_does_not_count_against_the_next() -> None:
    hold = FinalHold(HoldLimits(seconds=3.0))
    hold.failed(0.0)
    hold.committed(2.0)
    hold.failed(100.0)
    assert not hold.over_bound(102.0, 1)
    assert hold.over_bound(103.0, 1)


def test_an_attempt_may_not_run_past_the_bound() -> None:
    hold = FinalHold(HoldLimits(seconds=3.0, attempt_s=10.0, retry_jitter=0.0))
    assert hold.attempt_timeout(now=5.0, began=5.0) == 3.0  # a first attempt: up to the bound
    assert hold.attempt_timeout(now=7.5, began=5.0) == 0.5
    assert hold.attempt_timeout(now=9.0, began=5.0) == 0.05  # at least 50 ms
    hold.failed(8.0, began=5.0)  # a timed-out attempt: the hold counts from the first one
    assert hold.since == 5.0 and hold.over_bound(8.0, waiting=1)
    assert hold.attempt_timeout(now=9.0, began=5.0) == 10.0  # past the bound: attempt_s again
    roomy = FinalHold(HoldLimits(seconds=30.0, attempt_s=10.0))
    assert roomy.attempt_timeout(now=0.0, began=0.0) == 10.0
