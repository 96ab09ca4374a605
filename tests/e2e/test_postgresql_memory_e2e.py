"""Two front-ends with conversation memory and `--auth` on one PostgreSQL database.

A meeting streamed on front-end A is searchable on front-end B within 3 s of its last final (B's
index follows the store's change feed and embeds A's finals itself) and B's answer cites A's
utterances; a token created once (`palabre token create --store URL`) works on both, and once
revoked is refused by both within `auth_cache_s`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from palabre_client import Event, ask, stream_file
from tests.conftest import PalabreServer, server_command, start_server
from tests.postgresql import PostgresServer

pytestmark = pytest.mark.slow

MEETING = "en_meeting.wav"
AUTH_CACHE_S = 1.0
VISIBLE_WITHIN_S = 3.0


def token_command(*args: str) -> str:
    proc = subprocess.run([*server_command(), "token", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def get(server: PalabreServer, path: str, token: str) -> tuple[int, Any]:
    request = urllib.request.Request(server.http + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def search(server: PalabreServer, token: str, q: str) -> list[dict[str, Any]]:
    status, body = get(server, "/v1/search?" + urllib.parse.urlencode({"q": q}), token)
    assert status == 200, body
    results: list[dict[str, Any]] = body["results"]
    return results


def test_memory_and_tokens_are_shared_by_front_ends(
    postgres_server: PostgresServer, speech_dir: Path, tmp_path: Path
) -> None:
    url = postgres_server.create_database()
    created = token_command(
        "create", "--store", url, "--tenant", "acme", "--scope", "stream", "--scope", "read"
    )
    token = created.splitlines()[-1]
    args = ("--store", url, "--auth", "--set", f"auth_cache_s={AUTH_CACHE_S}")
    a = start_server("tiny.en", args, tmp_path / "a")
    try:
        b = start_server("tiny.en", args, tmp_path / "b")
    except BaseException:
        a.stop()
        raise
    try:
        last_final = [0.0]

        def seen(event: Event) -> None:
            if event["type"] == "final":
                last_final[0] = time.monotonic()

        events = asyncio.run(
            stream_file(a.url, speech_dir / MEETING, language="en", speed=1.5, token=token, on_event=seen)
        )
        finals = [e for e in events if e["type"] == "final" and e["text"]]
        competitor = next(f for f in finals if "competitor" in f["text"].lower())
        while not any(
            hit["utterance_id"] == competitor["utterance_id"] for hit in search(b, token, "competitor")
        ):
            assert time.monotonic() - last_final[0] < VISIBLE_WITHIN_S, "not searchable on B in time"
            time.sleep(0.1)
        conversation_id = events[0]["conversation_id"]
        done = asyncio.run(
            ask("What is the marketing budget?", url=b.url, conversation_id=conversation_id, token=token)
        )
        budget = next(f for f in finals if "budget" in f["text"].lower())
        assert budget["utterance_id"] in done["citations"], json.dumps(done)

        token_id = token_command("list", "--store", url).splitlines()[1].split()[0]
        token_command("revoke", "--store", url, token_id)
        time.sleep(AUTH_CACHE_S + 0.2)
        assert [get(server, "/v1/conversations", token)[0] for server in (a, b)] == [401, 401]
    finally:
        a.stop()
        b.stop()
