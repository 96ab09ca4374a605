"""The session outbox and writer: order, commit before delivery, slow consumers cut off."""

from __future__ import annotations

import asyncio

from server.live import Outbox, write_events
from stream.events import Closed, Final, Partial, ServerEvent


def final(seq: int) -> Final:
    return Final(f"c:{seq}", f"text {seq}", float(seq), seq + 0.5, "en", seq)


def partial(seq: int) -> Partial:
    return Partial(f"c:{seq}", "x", "", "x", 0.0, 0.1)


async def test_a_consumer_that_cannot_keep_up_with_finals_is_cut_off_but_every_final_is_stored() -> None:
    stored: list[int] = []
    sent: list[ServerEvent] = []
    blocked = asyncio.Event()

    async def commit(event: Final) -> list[ServerEvent]:
        stored.append(event.seq)
        return [event]

    async def send(event: ServerEvent) -> None:
        sent.append(event)
        await blocked.wait()  # the client never reads: the first send never completes

    overflowed: list[bool] = []
    outbox = Outbox(send, max_events=8, on_overflow=lambda: overflowed.append(True))
    writer = asyncio.create_task(write_events(outbox, commit, lambda _event: None))
    outbox.put(final(0))
    await asyncio.sleep(0.01)  # the writer takes it and blocks in send
    for seq in range(1, 20):
        outbox.put(partial(seq))
        outbox.put(final(seq))
    outbox.put(Closed(20))
    await asyncio.sleep(0.05)
    assert overflowed == [True]
    blocked.set()  # the stuck send returns; nothing more is sent, everything is committed
    await asyncio.wait_for(writer, 5)
    assert stored == list(range(20))
    assert len(sent) == 1
    assert outbox.dropped_partials > 0


async def test_events_go_out_in_order_with_finals_committed_first() -> None:
    order: list[str] = []

    async def commit(event: Final) -> list[ServerEvent]:
        order.append(f"commit {event.seq}")
        return [event]

    async def send(event: ServerEvent) -> None:
        order.append(f"send {event.type}")

    outbox = Outbox(send)
    writer = asyncio.create_task(write_events(outbox, commit, lambda e: order.append(f"observe {e.type}")))
    outbox.put(partial(0))
    outbox.put(final(0))
    outbox.put(Closed(1))
    await asyncio.wait_for(writer, 5)
    assert order == [
        "observe partial",
        "send partial",
        "commit 0",
        "observe final",
        "send final",
        "observe closed",
        "send closed",
    ]
