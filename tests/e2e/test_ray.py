"""`palabre serve --ray`: two front-ends share one ASR actor in a local Ray cluster, and one
PostgreSQL store.

A Ray head (`ray start --head --block`, 2 CPUs, its own temporary folder and ports, token
authentication with a token made for the test) runs in its own process group; two
`palabre serve --ray ADDRESS` front-ends (separate data directories) attach to it, the first one
to start creating the detached ASR actor that both then use. Two different speech files are
streamed at once, one to each front-end: each gets its own words, the actor's figures count
requests from both front-ends, and each front-end lists and reads the conversation streamed on
the other (`--store postgresql://…`, a real PostgreSQL started by the `postgres_server` fixture).
Then the actor is killed: Ray restarts it and a third stream works.

Teardown, even on failure: the front-ends, then the head (SIGTERM; it stops its Ray processes,
and the workers, which run in sessions of their own, exit with their raylet), then SIGKILL to
whatever is left of the head's process group. Not `ray stop`, which would stop every Ray cluster
of the machine, not only this test's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from palabre_client import stream_file
from tests.conftest import PalabreServer, free_port, start_server
from tests.postgresql import PostgresServer
from tests.requirements import missing, require_module

pytestmark = pytest.mark.slow

HEAD_START_TIMEOUT_S = 120.0
STREAM_TIMEOUT_S = 180.0
WORDS = {
    "en_speaker_a.wav": {"parrot", "turtle", "elephant", "rabbit", "cat", "horse"},
    "en_speaker_b.wav": {"trains", "paris", "berlin", "flights", "london", "madrid", "buses", "chicago"},
}
"""Words of each file that the other file does not have."""


@dataclass
class RayHead:
    """A `ray start --head --block` process, leader of its own process group."""

    proc: subprocess.Popen[bytes]
    address: str
    temp_dir: Path
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # ray start --block stops the processes it started
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers of this head only
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_ray_head(workdir: Path) -> RayHead:
    """A one-node cluster on 127.0.0.1 with 2 CPUs, on free ports, dashboard off."""
    # Ray's socket paths live under the temporary folder and must stay short (108 bytes).
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    port = free_port()
    log_path = workdir / "ray-head.log"
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        f"--dashboard-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
    ]
    # The token comes from the environment (set by the fixture for the front-ends too).
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    head = RayHead(proc, f"127.0.0.1:{port}", temp_dir, log_path)
    deadline = time.monotonic() + HEAD_START_TIMEOUT_S
    while "Ray runtime started" not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = head.log_tail()
            head.stop()
            pytest.fail(f"the Ray head did not start:\n{tail}", pytrace=False)
        time.sleep(0.25)
    return head


@pytest.fixture
def ray_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RayHead]:
    """A running head; the token is in this process's environment, which front-ends inherit."""
    require_module("ray")  # pip install -e '.[ray]'
    if not (Path(sys.executable).parent / "ray").exists():
        missing(f"ray is installed, but not its `ray` command next to {sys.executable}")
    # Ray 2.60 turns token authentication on when ~/.ray/auth_token exists, for `ray start` but not
    # for drivers given an explicit address: set the mode and the token explicitly, for all.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    head = start_ray_head(tmp_path)
    try:
        yield head
    finally:
        head.stop()


def parent_of(pid: int) -> int:
    """The parent process id of `pid` (Linux)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def words_of(events: list[dict[str, Any]]) -> set[str]:
    text = " ".join(e["text"] for e in events if e["type"] == "final")
    return set(re.findall(r"[a-z]+", text.lower()))


async def test_two_front_ends_share_one_asr_actor(
    ray_head: RayHead, postgres_server: PostgresServer, speech_dir: Path, tmp_path: Path
) -> None:
    args = ("--ray", ray_head.address, "--no-memory", "--store", postgres_server.create_database())
    servers: list[PalabreServer] = []
    try:
        # Both start at once: one creates the named actor, the other finds it (get_if_exists).
        failures: list[str] = []
        with ThreadPoolExecutor(2) as pool:
            starting = [pool.submit(start_server, "tiny.en", args, tmp_path / name) for name in "ab"]
            for future in starting:
                try:
                    servers.append(future.result())
                except RuntimeError as error:
                    failures.append(str(error))
        assert not failures, "\n".join(failures)
        front_a, front_b = servers
        assert front_a.data_dir != front_b.data_dir

        files = ["en_speaker_a.wav", "en_speaker_b.wav"]
        async with asyncio.timeout(STREAM_TIMEOUT_S):
            results = await asyncio.gather(
                stream_file(front_a.url, speech_dir / files[0], language="en", speed=2.0),
                stream_file(front_b.url, speech_dir / files[1], language="en", speed=2.0),
            )
        for name, other, events in ((files[0], files[1], results[0]), (files[1], files[0], results[1])):
            assert not [e for e in events if e["type"] == "error"], events
            assert events[-1]["type"] == "closed"
            heard = words_of(events)
            assert len(heard & WORDS[name]) >= len(WORDS[name]) - 2, (name, sorted(heard))
            assert not heard & WORDS[other], (name, sorted(heard & WORDS[other]))

        # One store: each front-end lists and reads the conversation streamed on the other.
        for events, reader in ((results[0], front_b), (results[1], front_a)):
            conversation_id = next(e["conversation_id"] for e in events if e["type"] == "ready")
            listed = reader.get_json("/v1/conversations")["conversations"]
            assert conversation_id in {c["id"] for c in listed}, listed
            stored = reader.get_json(f"/v1/conversations/{conversation_id}")["utterances"]
            finals = [e["text"] for e in events if e["type"] == "final" and e["text"]]
            assert [u["text"] for u in stored] == finals

        # The actor's figures (each front-end polls them every second) count both front-ends:
        # 3 finals each, and the partials.
        deadline = time.monotonic() + 10
        while True:
            asr = front_a.get_json("/v1/stats")["scheduler"]["asr"]
            callers = asr["ray"].get("callers", {})
            if (len(callers) == 2 and asr["requests"]["final"] >= 6) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert len(callers) == 2, asr["ray"]
        assert {c.split(":")[1] for c in callers} == {str(front_a.port), str(front_b.port)}
        assert all(c["submitted"] >= 3 for c in callers.values()), callers
        assert asr["requests"]["final"] >= 6, asr
        stats_b = front_b.get_json("/v1/stats")
        assert stats_b["scheduler"]["asr"]["ray"]["pid"] == asr["ray"]["pid"]  # one actor
        assert stats_b["asr"]["model"] == "tiny.en"

        # A crashed actor is restarted by Ray (max_restarts=-1) and serves on.
        actor_pid = asr["ray"]["pid"]
        assert os.getpgid(parent_of(actor_pid)) == ray_head.proc.pid  # a worker of this test's raylet
        os.kill(actor_pid, signal.SIGKILL)
        async with asyncio.timeout(STREAM_TIMEOUT_S):
            events = await stream_file(front_b.url, speech_dir / files[0], language="en", speed=3.0)
        assert not [e for e in events if e["type"] == "error"], events
        assert len(words_of(events) & WORDS[files[0]]) >= len(WORDS[files[0]]) - 2, events
        deadline = time.monotonic() + 10
        while front_b.get_json("/v1/stats")["scheduler"]["asr"]["ray"].get("pid") == actor_pid:
            assert time.monotonic() < deadline, "the actor's figures still name the killed process"
            await asyncio.sleep(0.5)
    except BaseException:
        for server in servers:
            print(f"--- front-end {server.port} log ---\n{server.log_tail()}")
        print(f"--- ray head log ---\n{ray_head.log_tail()}")
        raise
    finally:
        for server in servers:
            server.stop()
