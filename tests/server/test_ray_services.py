"""The Ray model actor's logic without Ray: two front-ends (`RemoteModelService`) share one
`ModelHost` through a fake actor handle that copies arguments and results by pickling, as Ray does.

What is checked: requests of both front-ends meet in one batch; partial replacement is per
session across front-ends; cancel, model errors and drops reach the right callbacks; the actor
counts requests per front-end; each batch is reported once to a front-end's `on_batch`.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from server.config import ServerConfig
from server.model_service import BatchRecord, BatchService, ModelService
from server.ray_services import ModelHost, ModelInfo, RemoteModelService, actor_name, gpus_of
from stream.interfaces import RequestKind
from stream.scheduler import Request, Scheduler, SchedulerConfig


class FakeMethod:
    """`handle.method.remote(*args)`: starts the call at once, with pickled copies, like Ray."""

    def __init__(self, method: Callable[..., Awaitable[Any]]) -> None:
        self.method = method

    def remote(self, *args: Any) -> asyncio.Task[Any]:
        copied = pickle.loads(pickle.dumps(args))

        async def run() -> Any:
            return pickle.loads(pickle.dumps(await self.method(*copied)))

        return asyncio.ensure_future(run())


class FakeActor:
    """A handle to a `ModelHost` in this process, shaped like a Ray actor handle."""

    def __init__(self, host: ModelHost[str, str]) -> None:
        self.host = host
        self.alive = True
        self.infer = FakeMethod(self._infer)
        self.cancel = FakeMethod(self._cancel)
        self.stats = FakeMethod(self._stats)

    async def _infer(self, caller: str, request: Request[str]) -> Any:
        return await self.host.infer(caller, request)

    async def _cancel(self, session_id: str) -> int:
        return self.host.cancel(session_id)

    async def _stats(self) -> Any:
        if not self.alive:
            raise ConnectionError("actor died")
        return self.host.stats()


@dataclass
class Model:
    """A fake model: upper-cases its inputs, fails on "bad", can be held to queue requests up."""

    batches: list[list[str]] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    running: threading.Event = field(default_factory=threading.Event)
    """Set when a batch has started (and waits at the gate, if it is held)."""

    def __post_init__(self) -> None:
        self.gate.set()

    def run(self, payloads: Sequence[str]) -> list[str]:
        self.running.set()
        self.gate.wait(5)
        if "bad" in payloads:
            raise ValueError("model failed on bad input")
        self.batches.append(list(payloads))
        return [p.upper() for p in payloads]


@dataclass
class Results:
    """What a front-end's callbacks received: payload → ("ok", text) / ("dropped",) / ("error", msg)."""

    got: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def callback(self, request: Request[str], result: str | None, error: BaseException | None) -> None:
        if error is not None:
            self.got[request.payload] = ("error", str(error))
        elif result is None:
            self.got[request.payload] = ("dropped",)
        else:
            self.got[request.payload] = ("ok", result)


def request(session: str, payload: str, kind: RequestKind = "final") -> Request[str]:
    return Request(session_id=session, kind=kind, key="en", seconds=1.0, payload=payload)


@dataclass
class Cluster:
    model: Model
    host: ModelHost[str, str]
    actor: FakeActor
    a: RemoteModelService[str, str]
    b: RemoteModelService[str, str]


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    model = Model()
    service = ModelService[str, str](
        "asr", model.run, Scheduler[str](SchedulerConfig(max_wait_s=0.2, max_batch=8)), 1
    )
    host = ModelHost(service, ModelInfo("fake", "cpu", concurrency=1))
    actor = FakeActor(host)
    a = RemoteModelService[str, str]("asr", actor, "front-a", host.info, poll_s=0.05)
    b = RemoteModelService[str, str]("asr", actor, "front-b", host.info, poll_s=0.05)
    a.start()
    b.start()
    yield Cluster(model, host, actor, a, b)
    await a.close()
    await b.close()
    model.gate.set()
    await host.close()


async def held(cluster: Cluster, timeout: float = 5.0) -> None:
    """Wait until the (gated) model has started a batch: requests submitted now queue behind it."""
    async with asyncio.timeout(timeout):
        while not cluster.model.running.is_set():
            await asyncio.sleep(0.01)


async def host_queued(cluster: Cluster, count: int, timeout: float = 5.0) -> None:
    """Wait until the actor holds `count` calls (the held one included)."""
    async with asyncio.timeout(timeout):
        while len(cluster.host._waiting) < count:
            await asyncio.sleep(0.01)


async def settle(results: Results, *payloads: str, timeout: float = 5.0) -> None:
    """Wait until every payload has an answer."""
    async with asyncio.timeout(timeout):
        while not all(p in results.got for p in payloads):
            await asyncio.sleep(0.01)


def test_remote_service_is_a_batch_service() -> None:
    def takes(_: BatchService[str, str]) -> None: ...

    takes(RemoteModelService[str, str]("asr", object(), "c", ModelInfo("m", "cpu")))  # type-checked


async def test_requests_of_two_front_ends_share_a_batch(cluster: Cluster) -> None:
    # The first batch is of size 1 (the scheduler measures size 1 first), then size 2 is tried.
    # It is held while both front-ends submit, so that they share the next one however slow the
    # machine (no 0.2 s window to meet).
    got_a, got_b = Results(), Results()
    cluster.model.gate.clear()
    cluster.a.submit(request("warm", "w"), got_a.callback)
    await held(cluster)
    cluster.a.submit(request("sa", "from a"), got_a.callback)
    cluster.b.submit(request("sb", "from b"), got_b.callback)
    await host_queued(cluster, 3)
    cluster.model.gate.set()
    await settle(got_a, "w", "from a")
    await settle(got_b, "from b")
    assert got_a.got == {"w": ("ok", "W"), "from a": ("ok", "FROM A")}
    assert got_b.got == {"from b": ("ok", "FROM B")}
    assert sorted(cluster.model.batches[-1]) == ["from a", "from b"]

    stats = await cluster.a.refresh()
    assert stats is not None
    assert stats.callers["front-a"].completed == 2
    assert stats.callers["front-b"].completed == 1
    assert cluster.a.scheduler.stats.batch_sizes == {1: 1, 2: 1}
    assert cluster.a.compute_seconds > 0 and cluster.a.seconds_done == 3.0
    described = cluster.a.describe()
    assert set(described["callers"]) == {"front-a", "front-b"}
    assert described["batches"] == 2


async def test_partials_are_replaced_per_session_across_front_ends(cluster: Cluster) -> None:
    got_a, got_b = Results(), Results()
    cluster.model.gate.clear()  # the worker is held: the requests below queue up
    cluster.a.submit(request("hold", "held"), got_a.callback)
    await held(cluster)
    cluster.a.submit(request("s1", "p1", "partial"), got_a.callback)
    cluster.b.submit(request("s2", "q1", "partial"), got_b.callback)
    await asyncio.sleep(0.05)
    cluster.a.submit(request("s1", "p2", "partial"), got_a.callback)
    await settle(got_a, "p1")
    assert got_a.got["p1"] == ("dropped",)
    cluster.model.gate.set()
    await settle(got_a, "held", "p2")
    await settle(got_b, "q1")
    assert got_a.got["p2"] == ("ok", "P2")
    assert got_b.got["q1"] == ("ok", "Q1")
    assert cluster.host.callers["front-a"].dropped == 1
    assert cluster.host.callers["front-b"].dropped == 0


async def test_cancel_forgets_a_sessions_queued_requests(cluster: Cluster) -> None:
    got = Results()
    cluster.model.gate.clear()
    cluster.a.submit(request("hold", "held"), got.callback)
    await held(cluster)
    cluster.a.submit(request("gone", "c1"), got.callback)
    await asyncio.sleep(0.05)
    assert [r.payload for r in cluster.a.cancel("gone")] == ["c1"]
    async with asyncio.timeout(5):
        while cluster.host.callers["front-a"].dropped == 0:  # the actor answered the call: dropped
            await asyncio.sleep(0.01)
    cluster.model.gate.set()
    await settle(got, "held")
    await asyncio.sleep(0.1)
    assert "c1" not in got.got  # a cancelled request's callback never runs
    assert cluster.a.cancel("gone") == []
    assert not cluster.host._waiting


async def test_model_errors_reach_the_callback(cluster: Cluster) -> None:
    got = Results()
    cluster.b.submit(request("s", "bad"), got.callback)
    await settle(got, "bad")
    assert got.got["bad"][0] == "error"
    assert "bad input" in got.got["bad"][1]
    assert cluster.host.callers["front-b"].failed == 1
    with pytest.raises(ValueError, match="bad input"):
        await cluster.b.call(request("s", "bad"))


async def test_each_batch_is_reported_once_to_on_batch(cluster: Cluster) -> None:
    records: list[BatchRecord] = []
    cluster.a.on_batch = records.append
    await cluster.a.call(request("warm", "w"))
    got = Results()
    cluster.a.submit(request("x", "x1"), got.callback)
    cluster.a.submit(request("y", "y1"), got.callback)
    await settle(got, "x1", "y1")
    assert [r.size for r in records] == [1, 2]


async def test_running_follows_the_actor(cluster: Cluster) -> None:
    async with asyncio.timeout(5):
        while not cluster.a.running:
            await asyncio.sleep(0.01)
    cluster.actor.alive = False
    async with asyncio.timeout(5):
        while cluster.a.running:
            await asyncio.sleep(0.01)
    assert cluster.a.describe()["reachable"] is False


def test_actor_names_and_gpu_fractions() -> None:
    config = ServerConfig(model="base", embedder="minilm", ray_asr_gpus=0.15, ray_embed_gpus=0.1)
    assert actor_name("asr", config) == "asr:base"
    assert actor_name("embed", config) == "embed:minilm"
    assert gpus_of("asr", config) == 0.15
    assert gpus_of("embed", config) == 0.1
    assert gpus_of("asr", ServerConfig(ray_asr_gpus=2)) == 2
    with pytest.raises(ValueError, match="fraction"):
        gpus_of("asr", ServerConfig(ray_asr_gpus=1.5))


def test_no_ray_import_without_ray() -> None:
    import subprocess
    import sys

    code = "import server.app, sys; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
