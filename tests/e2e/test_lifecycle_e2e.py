"""The data lifecycle end to end: exports parsed by independent parsers, erase (HTTP and `palabre
erase` beside the server) through the real server, store and index, also after a restart that
reloads the index, and the audit log of it all."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import wave
from pathlib import Path
from typing import Any

import pytest
import srt
import webvtt

from palabre_client import ask, export, stream_file
from tests.conftest import REPO_ROOT, PalabreServer, start_server

pytestmark = pytest.mark.slow


def request(server: PalabreServer, method: str, path: str) -> tuple[int, Any]:
    """(status, JSON body) of an HTTP request, errors included."""
    req = urllib.request.Request(server.http + path, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


PACED = ("--set", "limits.audio_rate_policy=pace")
"""The files are sent as fast as the connection allows (`speed=0`): the server paces them rather
than refusing audio faster than its rate limit."""


def search(server: PalabreServer, q: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = server.get_json(
        "/v1/search?" + urllib.parse.urlencode({"q": q, "k": 20}), timeout=60
    )["results"]
    return results


def absent(server: PalabreServer, conversation_id: str) -> None:
    """The conversation is in no list, read or search of the server."""
    listed = server.get_json("/v1/conversations")["conversations"]
    assert conversation_id not in {c["id"] for c in listed}
    assert request(server, "GET", f"/v1/conversations/{conversation_id}")[0] == 404
    for q in ("marketing budget", "main competitor Globex", "hire engineers", "quick brown fox"):
        hits = search(server, q)
        assert all(h["conversation_id"] != conversation_id for h in hits), hits


def audio_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def check_exports(server: PalabreServer, conversation_id: str, duration: float) -> None:
    """The streamed meeting exports as WebVTT and SRT that independent parsers read, with a cue per
    final inside the audio, and as text, Markdown minutes and JSON."""
    finals = server.get_json(f"/v1/conversations/{conversation_id}")["utterances"]
    vtt = asyncio.run(export(conversation_id, format="vtt", url=server.url))
    captions = webvtt.from_buffer(io.StringIO(vtt)).captions
    assert [c.identifier for c in captions] == [u["utterance_id"] for u in finals]
    assert all(0 <= c.start_in_seconds < c.end_in_seconds <= duration + 0.5 for c in captions), vtt
    assert [c.text for c in captions] == [u["text"] for u in finals]
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "palabre_client.cli",
            "export",
            conversation_id,
            "--format",
            "srt",
            "--url",
            server.url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    subtitles = list(srt.parse(cli.stdout))
    assert len(subtitles) == len(finals) and cli.returncode == 0, cli.stderr
    assert all(0 <= s.start.total_seconds() < s.end.total_seconds() <= duration + 0.5 for s in subtitles)
    text = asyncio.run(export(conversation_id, format="txt", url=server.url))
    assert len(text.splitlines()) == len(finals)
    minutes = asyncio.run(export(conversation_id, format="md", url=server.url))
    assert "## Participants" in minutes and "## Transcript" in minutes and finals[1]["text"] in minutes
    exported = json.loads(asyncio.run(export(conversation_id, format="json", url=server.url)))
    assert [(u["utterance_id"], u["text"], u["start"]) for u in exported["utterances"]] == [
        (u["utterance_id"], u["text"], u["start"]) for u in finals
    ]
    assert set(exported["utterances"][0]) == set(finals[0])  # every field
    assert request(server, "GET", f"/v1/conversations/{conversation_id}/transcript?format=doc")[0] == 400


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lifecycle")


def palabre(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_erase_removes_a_conversation_from_reads_search_and_answers_also_after_a_restart(
    speech_dir: Path, workdir: Path
) -> None:
    data_dir = workdir / "data"
    server = start_server("tiny.en", ("--data-dir", str(data_dir), *PACED), workdir)
    try:
        meeting = asyncio.run(stream_file(server.url, speech_dir / "en_meeting.wav", speed=0))
        fox = asyncio.run(stream_file(server.url, speech_dir / "en_fox.wav", speed=0))
        erased_id, kept_id = meeting[0]["conversation_id"], fox[0]["conversation_id"]
        deadline = time.monotonic() + 60  # finals are indexed in the background
        while not any("competitor" in h["text"].lower() for h in search(server, "main competitor Globex")):
            assert time.monotonic() < deadline, "the meeting never became searchable"
            time.sleep(0.5)

        check_exports(server, erased_id, audio_seconds(speech_dir / "en_meeting.wav"))

        status, body = request(server, "DELETE", f"/v1/conversations/{erased_id}")
        assert status == 200 and body["erased"]["utterances"] == 5, body
        assert request(server, "DELETE", f"/v1/conversations/{erased_id}")[0] == 404  # idempotent
        absent(server, erased_id)
        assert server.get_json(f"/v1/conversations/{kept_id}")["utterances"]
        done = asyncio.run(ask("What is the marketing budget?", url=server.url, scope="tenant"))
        assert all(not c.startswith(f"{erased_id}:") for c in done["citations"]), done
        assert all(p["utterance_id"].split(":")[0] != erased_id for p in done.get("passages", []))

        # A live session of a conversation being erased is closed with `conversation_erased`.
        def erase_when_ready(event: dict[str, Any]) -> None:
            if event["type"] == "ready":
                path = f"/v1/conversations/{event['conversation_id']}"
                threading.Thread(target=request, args=(server, "DELETE", path)).start()

        live = asyncio.run(
            stream_file(
                server.url,
                speech_dir / "en_meeting.wav",
                speed=1.0,
                on_event=erase_when_ready,
                reconnect=False,
            )
        )
        errors = [e for e in live if e["type"] == "error"]
        assert errors and errors[-1]["code"] == "conversation_erased", [e["type"] for e in live]
        absent(server, live[0]["conversation_id"])
        audit = server.get_json("/v1/audit?limit=1000")["audit"]
        actions = {(a["action"], a["conversation_id"]) for a in audit}
        assert {("erase", erased_id), ("erase", live[0]["conversation_id"]), ("ask", None)} <= actions
        assert {("export", erased_id)} <= actions
        assert {"list", "read", "search"} <= {a["action"] for a in audit}
        assert all(a["actor"] == "open" for a in audit)
        assert "budget" not in json.dumps(audit).lower()  # no transcript text, no query
    finally:
        server.stop()

    # `palabre erase` on the store beside a running server; the restarted server reloads its index.
    server = start_server("tiny.en", ("--data-dir", str(data_dir), "--llm", "none", *PACED), workdir)
    try:
        absent(server, erased_id)
        assert any(h["conversation_id"] == kept_id for h in search(server, "quick brown fox"))
        done_erase = palabre("erase", "--data-dir", str(data_dir), "--conversation", kept_id)
        assert done_erase.returncode == 0 and "erased conversation" in done_erase.stdout, done_erase
        assert "fox" not in done_erase.stdout.lower()  # what was erased, never the text
        absent(server, kept_id)
        again = palabre("erase", "--data-dir", str(data_dir), "--conversation", kept_id)
        assert again.returncode == 1
        # `palabre purge --before 2100-01-01` erases every conversation older (all of them).
        again_fox = asyncio.run(stream_file(server.url, speech_dir / "en_fox.wav", speed=0))[0][
            "conversation_id"
        ]
        purged = palabre("purge", "--data-dir", str(data_dir), "--before", "2100-01-01")
        assert purged.returncode == 0 and "purged 1 conversations" in purged.stdout, purged
        absent(server, again_fox)
        assert server.get_json("/v1/conversations")["conversations"] == []
        logged = palabre("audit", "--data-dir", str(data_dir))
        rows = [json.loads(line) for line in logged.stdout.splitlines()]
        assert any(
            r["actor"] == "cli" and r["action"] == "erase" and r["conversation_id"] == kept_id for r in rows
        )
    finally:
        server.stop()
