"""deploy/cluster/palabre-cluster.sh, the multi-front-end example of docs/deploy.md, as written:
PostgreSQL and two front-ends started by the script; a conversation streamed on the first is
listed and read on the second; `status` and `stop` do what they say."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shlex
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from palabre_client import stream_file
from tests.conftest import REPO_ROOT, server_command
from tests.postgresql import PostgresServer

pytestmark = pytest.mark.slow

SCRIPT = REPO_ROOT / "deploy" / "cluster" / "palabre-cluster.sh"


def two_free_ports() -> int:
    """A free port whose next one is free too (the script takes consecutive ports), below the
    ephemeral range (where the first front-end's own connections could take the second's port)."""
    for _ in range(100):
        port = random.randrange(20_000, 30_000)
        try:
            for candidate in (port, port + 1):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no two consecutive free ports")


def get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


def test_the_cluster_script_starts_two_front_ends_on_one_store(
    postgres_server: PostgresServer, speech_dir: Path, tmp_path: Path
) -> None:
    first = two_free_ports()
    env = {
        **os.environ,
        "PALABRE_STORE": postgres_server.create_database(),
        "FRONT_ENDS": "2",
        "BASE_PORT": str(first),
        "RUN_DIR": str(tmp_path / "cluster"),
        "PALABRE": shlex.join(server_command()),
        "PALABRE_ARGS": "--model tiny.en --no-memory",
        "PYTHONUNBUFFERED": "1",
    }

    def script(command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
        )

    try:
        started = script("start", timeout=400)
        assert started.returncode == 0, started.stdout + started.stderr
        assert script("status").stdout.count(": up") == 2
        url = f"ws://127.0.0.1:{first}/v1/stream"
        events = asyncio.run(stream_file(url, speech_dir / "en_fox.wav", speed=4))
        conversation_id = next(e for e in events if e["type"] == "ready")["conversation_id"]
        finals = [e["text"] for e in events if e["type"] == "final" and e["text"]]
        listed = get_json(first + 1, "/v1/conversations")["conversations"]
        read = get_json(first + 1, f"/v1/conversations/{conversation_id}")
    finally:
        stopped = script("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert finals and [c["id"] for c in listed] == [conversation_id]
    assert [u["text"] for u in read["utterances"]] == finals
    assert script("status").stdout.count(": down") == 2
    assert not list((tmp_path / "cluster").glob("*.pid"))
