from stream.scheduler import Request, Scheduler, SchedulerConfig


def req(session: str, kind: str = "partial", seconds: float = 2.0, key: str = "en") -> Request[str]:
    return Request(session_id=session, kind=kind, key=key, seconds=seconds, payload=f"{session}-{kind}")  # type: ignore[arg-type]


def test_finals_before_partials() -> None:
    s: Scheduler[str] = Scheduler(SchedulerConfig(max_batch=1, max_wait_s=0))
    s.submit(req("a", "partial"), 0.0)
    s.submit(req("b", "final"), 0.1)
    batch = s.next_batch(0.2)
    assert batch is not None and batch.requests[0].payload == "b-final"


def test_newer_partial_replaces_pending_one() -> None:
    s: Scheduler[str] = Scheduler(SchedulerConfig(max_batch=1, max_wait_s=0))
    first = req("a")
    assert s.submit(first, 0.0) == []
    assert s.submit(req("a"), 0.5) == [first]
    assert s.pending == 1
    assert s.stats.replaced_partials == 1


def test_final_supersedes_pending_partial_of_same_session() -> None:
    s: Scheduler[str] = Scheduler()
    p = req("a")
    s.submit(p, 0.0)
    assert s.submit(req("a", "final"), 0.1) == [p]


def test_stale_partials_are_shed_but_finals_never() -> None:
    s: Scheduler[str] = Scheduler(SchedulerConfig(partial_max_age_s=1.0))
    s.submit(req("a"), 0.0)
    s.submit(req("b", "final"), 0.0)
    dropped = s.shed_stale(5.0)
    assert [r.session_id for r in dropped] == ["a"]
    assert s.pending == 1


def test_partials_held_back_while_finals_backlog_is_large() -> None:
    s: Scheduler[str] = Scheduler(SchedulerConfig(max_batch=1, shed_partials_above_s=0.5), initial_cost=0.1)
    s.submit(req("p"), 0.0)
    for i in range(3):
        s.submit(req(f"f{i}", "final", seconds=3.0), 0.0)  # 3 × 0.3 s of work > 0.5 s
    kinds = []
    while (b := s.next_batch(1.0)) is not None:
        kinds.append(b.requests[0].kind)
        s.finished(b)
    assert kinds == ["final", "final", "final", "partial"]


def test_no_partial_starts_beside_a_running_final() -> None:
    s: Scheduler[str] = Scheduler(SchedulerConfig(max_wait_s=0))
    s.submit(req("a", "final"), 0.0)
    s.submit(req("b"), 0.0)
    final = s.next_batch(0.0, free_workers=2, workers=2)
    assert final is not None and final.requests[0].kind == "final"
    assert s.next_batch(0.0, free_workers=1, workers=2) is None  # the final has the device
    s.finished(final)
    partial = s.next_batch(0.0, free_workers=2, workers=2)
    assert partial is not None and partial.requests[0].session_id == "b"


def test_partials_beside_finals_when_configured() -> None:
    s: Scheduler[str] = Scheduler(SchedulerConfig(max_wait_s=0, partials_beside_finals=True))
    s.submit(req("a", "final"), 0.0)
    s.submit(req("b"), 0.0)
    assert s.next_batch(0.0, free_workers=2, workers=2) is not None
    partial = s.next_batch(0.0, free_workers=1, workers=2)
    assert partial is not None and partial.requests[0].kind == "partial"


def test_batches_group_compatible_requests_only() -> None:
    s: Scheduler[str] = Scheduler(SchedulerConfig(max_batch=4, max_wait_s=0))
    for i in range(3):
        s.submit(req(f"e{i}", "final", key="en"), 0.0)
    s.submit(req("f", "final", key="fr"), 0.0)
    # Nothing measured yet: the first batch is a single request (measure size 1 first).
    first = s.next_batch(0.0)
    assert first is not None and len(first.requests) == 1
    s.complete(first, 0.2)
    second = s.next_batch(0.0)
    assert second is not None
    assert {r.key for r in second.requests} == {"en"} and len(second.requests) == 2


def test_batch_size_follows_measured_cost() -> None:
    s: Scheduler[str] = Scheduler(SchedulerConfig(max_batch=8, max_wait_s=0))
    # Size 1 costs 0.1 s per audio second; size 2 costs more per second (CPU-like): stay at 1.
    for size, cost in [(1, 0.1), (2, 0.12), (4, 0.13), (8, 0.14)]:
        batch = s._form([req(str(i)) for i in range(size)], 0.0, size)
        s.complete(batch, cost * batch.seconds)
    assert s.choose_batch_size(8) == 1
    # GPU-like: bigger batches are cheaper per second.
    g: Scheduler[str] = Scheduler(SchedulerConfig(max_batch=8, max_wait_s=0))
    for size, cost in [(1, 0.1), (2, 0.06), (4, 0.03), (8, 0.02)]:
        batch = g._form([req(str(i)) for i in range(size)], 0.0, size)
        g.complete(batch, cost * batch.seconds)
    assert g.choose_batch_size(8) == 8
    assert g.choose_batch_size(3) == 8  # aims for 8 and waits (bounded) for more


def test_bounded_wait_then_dispatch() -> None:
    s: Scheduler[str] = Scheduler(SchedulerConfig(max_batch=4, max_wait_s=0.05))
    for size, cost in [(1, 0.1), (2, 0.05), (4, 0.02)]:
        s.complete(s._form([req(str(i)) for i in range(size)], 0.0, size), cost * 2.0 * size)
    s.submit(req("a", "final", seconds=1.0), 1.0)
    s.submit(req("b", "final", seconds=20.0), 1.0)  # too long to share a batch with "a"
    assert s.next_batch(1.01) is None  # waits (bounded) for a request of similar length
    assert s.wake_at(1.01) == 1.05
    batch = s.next_batch(1.06)
    assert batch is not None and [r.session_id for r in batch.requests] == ["a"]


def test_length_similarity_in_a_batch() -> None:
    s: Scheduler[str] = Scheduler(SchedulerConfig(max_batch=2, max_wait_s=0))
    for size, cost in [(1, 0.1), (2, 0.05)]:
        s.complete(s._form([req(str(i)) for i in range(size)], 0.0, size), cost * 2.0 * size)
    s.submit(req("short", "final", seconds=1.0), 0.0)
    s.submit(req("long", "final", seconds=20.0), 0.0)
    s.submit(req("short2", "final", seconds=1.5), 0.0)
    batch = s.next_batch(1.0)
    assert batch is not None
    assert [r.session_id for r in batch.requests] == ["short", "short2"]


def test_sequential_baseline_is_fifo_one_at_a_time() -> None:
    s: Scheduler[str] = Scheduler(SchedulerConfig(sequential=True))
    s.submit(req("a"), 0.0)
    s.submit(req("a"), 0.1)
    s.submit(req("b", "final"), 0.2)
    order = []
    while (b := s.next_batch(1.0)) is not None:
        assert len(b.requests) == 1
        order.append(b.requests[0].kind)
    assert order == ["partial", "partial", "final"]


def test_cancel_forgets_a_session() -> None:
    s: Scheduler[str] = Scheduler()
    s.submit(req("a"), 0.0)
    s.submit(req("a", "final"), 0.0)
    s.submit(req("b", "final"), 0.0)
    gone = s.cancel("a")
    assert len(gone) == 1 and s.pending == 1


def test_partials_leave_a_worker_free_for_finals() -> None:
    s: Scheduler[str] = Scheduler(SchedulerConfig(max_batch=1, max_wait_s=0))
    s.submit(req("a"), 0.0)
    s.submit(req("b"), 0.0)
    first = s.next_batch(0.1, free_workers=2, workers=2)
    assert first is not None and first.requests[0].kind == "partial"
    assert s.next_batch(0.1, free_workers=1, workers=2) is None  # the last worker waits for a final
    s.submit(req("c", "final"), 0.2)
    final = s.next_batch(0.2, free_workers=1, workers=2)
    assert final is not None and final.requests[0].kind == "final"
    s.finished(first)
    s.finished(final)
    second = s.next_batch(0.3, free_workers=2, workers=2)
    assert second is not None and second.requests[0].session_id == "b"


def test_a_single_worker_still_runs_partials() -> None:
    s: Scheduler[str] = Scheduler(SchedulerConfig(max_batch=1, max_wait_s=0))
    s.submit(req("a"), 0.0)
    batch = s.next_batch(0.1, free_workers=1, workers=1)
    assert batch is not None and [(r.session_id, r.kind) for r in batch.requests] == [("a", "partial")]


def test_no_batching_while_each_free_worker_can_take_one_request() -> None:
    s: Scheduler[str] = Scheduler(SchedulerConfig(max_batch=8, max_wait_s=0))
    for size, cost in [(1, 0.1), (2, 0.05), (4, 0.03), (8, 0.02)]:  # GPU-like: batches are cheaper
        s.complete(s._form([req(str(i)) for i in range(size)], 0.0, size), cost * 2.0 * size)
    for i in range(2):
        s.submit(req(f"f{i}", "final"), 0.0)
    batch = s.next_batch(0.0, free_workers=2, workers=2)
    assert batch is not None and len(batch.requests) == 1
    for i in range(8):
        s.submit(req(f"g{i}", "final"), 0.0)
    batch = s.next_batch(0.0, free_workers=1, workers=2)
    assert batch is not None and len(batch.requests) == 8  # backlogged: the cheapest size
