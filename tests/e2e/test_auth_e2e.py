"""End-to-end: API tokens, scopes and tenant isolation on a real `palabre serve --auth`.

One server (tiny.en, conversation memory on, an Origin allow-list) for the module. Tokens are
made with `palabre token create` as a subprocess on the server's data dir while it runs. Tenant
`alpha` streams a sentence; tenant `bravo` must not see it by listing, by id, by search, by
asking, nor by resuming its conversation id.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from palabre_client import PalabreError, StreamSession, ask, search, stream_file
from tests.conftest import PalabreServer, server_command

pytestmark = pytest.mark.slow

ORIGIN = "https://app.example"
SESSIONS_PER_TENANT = 2
SERVER_ARGS = (
    "--auth",
    "--allowed-origin",
    ORIGIN,
    "--set",
    f"limits.max_sessions_per_tenant={SESSIONS_PER_TENANT}",
)
TIMEOUT_S = 60.0


# --- helpers ---------------------------------------------------------------------------------------


def create_token(server: PalabreServer, tenant: str, *scopes: str) -> str:
    """`palabre token create` on the server's data dir; the token is the last line it prints."""
    scope_args = [arg for scope in scopes for arg in ("--scope", scope)]
    cmd = [*server_command(), "token", "create", "--data-dir", str(server.data_dir), "--tenant", tenant]
    proc = subprocess.run([*cmd, *scope_args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip().splitlines()[-1]
    assert token.startswith("plb_"), proc.stdout
    return token


def token_command(server: PalabreServer, *args: str) -> str:
    cmd = [*server_command(), "token", *args, "--data-dir", str(server.data_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def get(server: PalabreServer, path: str, token: str | None = None) -> tuple[int, Any]:
    """GET `path` with an optional bearer token: (status, parsed JSON body)."""
    request = urllib.request.Request(server.http + path)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def first_event_and_close(
    url: str, messages: Sequence[str] = (), **kwargs: Any
) -> tuple[Any, int | None]:
    """Open `url`, send `messages`, return the first event and the close code once closed."""
    async with connect(url, **kwargs) as ws:
        for message in messages:
            await ws.send(message)
        event = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
        try:
            async with asyncio.timeout(TIMEOUT_S):
                async for _ in ws:
                    pass
        except ConnectionClosed:
            pass
        return event, ws.close_code


async def said_in_a_conversation(server: PalabreServer, path: Path, token: str) -> str:
    """Stream `path` with `token` at 4x; the id of the conversation its finals went to."""
    events = await stream_file(server.url, path, speed=4, token=token)
    finals = [e for e in events if e["type"] == "final" and e["text"]]
    assert finals, events
    return str(finals[0]["utterance_id"].rsplit(":", 1)[0])


@pytest.fixture
def server(palabre_server: Any) -> PalabreServer:
    result: PalabreServer = palabre_server("tiny.en", *SERVER_ARGS)
    return result


# --- tests -------------------------------------------------------------------------------------------


async def test_every_endpoint_needs_a_token_and_its_scope(server: PalabreServer) -> None:
    reader = create_token(server, "alpha", "read")
    admin = create_token(server, "alpha", "admin")

    assert get(server, "/healthz")[0] == 200, "the health check stays open"
    status, body = get(server, "/v1/conversations")
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert get(server, "/v1/conversations", "plb_not-a-token")[0] == 401
    assert get(server, "/v1/conversations", reader)[0] == 200
    assert get(server, f"/v1/conversations?token={urllib.parse.quote(reader)}")[0] == 200
    status, body = get(server, "/v1/stats", reader)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert get(server, "/v1/stats", admin)[0] == 200

    event, code = await first_event_and_close(server.url)
    assert (event["code"], code) == ("unauthorized", 1008)
    with pytest.raises(PalabreError) as info:
        await StreamSession.open(server.url, token=reader)
    assert info.value.code == "forbidden", "streaming needs the stream scope"

    realtime = f"ws://127.0.0.1:{server.port}/v1/realtime?intent=transcription"
    event, code = await first_event_and_close(realtime)
    assert (event["type"], event["error"]["code"], code) == ("error", "unauthorized", 1008)
    event, code = await first_event_and_close(
        realtime, additional_headers={"Authorization": f"Bearer {reader}"}
    )
    assert (event["error"]["code"], code) == ("forbidden", 1008)

    twilio = f"ws://127.0.0.1:{server.port}/v1/telephony/twilio"
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": "MZ1",
        "start": {
            "streamSid": "MZ1",
            "callSid": "CA1",
            "accountSid": "AC1",
            "tracks": ["inbound"],
            "customParameters": {"token": reader},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
    for token, reason in ((None, "unauthorized"), (reader, "forbidden")):
        start["start"]["customParameters"] = {"token": token} if token else {}  # type: ignore[index]
        async with connect(twilio) as ws:
            await ws.send(json.dumps(start))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT_S)
            assert (ws.close_code, ws.close_reason) == (1008, reason)


async def test_origin_allow_list(server: PalabreServer) -> None:
    token = create_token(server, "alpha", "stream")
    with pytest.raises(InvalidStatus) as info:
        async with connect(server.url, origin="https://evil.example"):  # type: ignore[arg-type]
            pass
    assert info.value.response.status_code == 403
    url = f"{server.url}?token={urllib.parse.quote(token)}"  # as a browser would: no headers
    async with connect(url, origin=ORIGIN) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(json.dumps({"type": "stop"}))
        async for _ in ws:
            pass


async def test_tenants_are_isolated(server: PalabreServer, speech_dir: Path) -> None:
    alpha = create_token(server, "alpha", "stream", "read")
    bravo = create_token(server, "bravo", "stream", "read")

    conversation, bravo_conversation = [
        await said_in_a_conversation(server, speech_dir / "en_fox.wav", token) for token in (alpha, bravo)
    ]

    # Listing and reading by id.
    _, listed = get(server, "/v1/conversations", alpha)
    assert conversation in [c["id"] for c in listed["conversations"]]
    _, listed = get(server, "/v1/conversations", bravo)
    assert conversation not in [c["id"] for c in listed["conversations"]]
    assert get(server, f"/v1/conversations/{conversation}", alpha)[0] == 200
    status, body = get(server, f"/v1/conversations/{conversation}", bravo)
    assert (status, body["error"]["code"]) == (404, "conversation_not_found")

    # Search: alpha finds its words (once indexed); bravo finds nothing of alpha's.
    deadline = time.monotonic() + TIMEOUT_S
    while not (hits := await search("quick brown fox", url=server.url, token=alpha)):
        assert time.monotonic() < deadline, "alpha's utterance was never indexed"
        await asyncio.sleep(0.5)
    assert hits[0]["conversation_id"] == conversation
    while not (hits := await search("quick brown fox", url=server.url, token=bravo)):
        assert time.monotonic() < deadline, "bravo's utterance was never indexed"
        await asyncio.sleep(0.5)
    assert {h["conversation_id"] for h in hits} == {bravo_conversation}, hits  # the same words, its own
    status, body = get(server, f"/v1/search?q=fox&conversation={conversation}", bravo)
    assert (status, body["error"]["code"]) == (404, "conversation_not_found")

    # Asking: about alpha's conversation by id, or about everything bravo has.
    with pytest.raises(PalabreError) as info:
        await ask("What jumped?", url=server.url, conversation_id=conversation, token=bravo)
    assert info.value.code == "conversation_not_found"
    done = await ask("What jumped over the dog?", url=server.url, scope="tenant", token=bravo, timeout=120)
    assert done["citations"], done  # bravo has the same words: something is cited, only bravo's
    assert all(c.rsplit(":", 1)[0] == bravo_conversation for c in done["citations"]), done

    # Resuming alpha's conversation id.
    with pytest.raises(PalabreError) as info:
        await StreamSession.open(server.url, conversation_id=conversation, token=bravo)
    assert info.value.code == "bad_start"
    session = await StreamSession.open(server.url, conversation_id=conversation, token=alpha)
    await session.stop()
    await session.close()


async def test_watchers_see_only_their_own_tenant(server: PalabreServer, speech_dir: Path) -> None:
    """/v1/watch with --auth: alpha's and bravo's watchers each follow their own tenant's conversation
    from start to end, and nothing bravo's watcher receives names alpha's conversation."""
    tokens = {tenant: create_token(server, tenant, "stream", "read") for tenant in ("alpha", "bravo")}
    received: dict[str, list[dict[str, Any]]] = {tenant: [] for tenant in tokens}
    watch = f"ws://127.0.0.1:{server.port}/v1/watch?token="

    async def follow(tenant: str, ws: Any) -> None:
        async for message in ws:
            received[tenant].append(json.loads(message))

    def ended(tenant: str, conversation: str) -> bool:
        return any(
            m["type"] == "conversation.ended" and m["conversation_id"] == conversation
            for m in received[tenant]
        )

    async with (
        connect(watch + urllib.parse.quote(tokens["alpha"])) as alpha_ws,
        connect(watch + urllib.parse.quote(tokens["bravo"])) as bravo_ws,
    ):
        for ws in (alpha_ws, bravo_ws):
            assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))["type"] == "snapshot"
        followers = [
            asyncio.create_task(follow("alpha", alpha_ws)),
            asyncio.create_task(follow("bravo", bravo_ws)),
        ]
        try:
            alpha, bravo = await asyncio.gather(
                *(said_in_a_conversation(server, speech_dir / "en_fox.wav", tokens[t]) for t in tokens)
            )
            async with asyncio.timeout(TIMEOUT_S):
                while not (ended("alpha", alpha) and ended("bravo", bravo)):
                    await asyncio.sleep(0.1)
        finally:
            for task in followers:
                task.cancel()
    for tenant, mine, theirs in (("alpha", alpha, bravo), ("bravo", bravo, alpha)):
        finals = [m for m in received[tenant] if m["type"] == "final"]
        assert finals and {m["conversation_id"] for m in finals} == {mine}, received[tenant]
        assert theirs not in json.dumps(received[tenant]), f"{tenant}'s watcher saw the other's conversation"


async def test_stream_scope_may_ask_only_about_its_own_conversation(server: PalabreServer) -> None:
    streamer = create_token(server, "alpha", "stream")
    session = await StreamSession.open(server.url, token=streamer)
    try:
        await session._send(json.dumps({"type": "ask", "question": "anything?", "scope": "tenant"}))
        errors = []
        async with asyncio.timeout(TIMEOUT_S):
            async for event in session:
                if event["type"] == "error":
                    errors.append(event)
                    break
        assert [e["code"] for e in errors] == ["forbidden"], "the tenant-wide ask was not refused"
    finally:
        await session.stop()
        await session.close()


async def test_revoked_tokens_stop_working_within_seconds(server: PalabreServer) -> None:
    token = create_token(server, "alpha", "read")
    assert get(server, "/v1/conversations", token)[0] == 200
    listing = token_command(server, "list", "--tenant", "alpha")
    assert token not in listing
    token_id = listing.strip().splitlines()[-1].split()[0]
    token_command(server, "revoke", token_id)
    deadline = time.monotonic() + 10  # auth_cache_s is 5 s
    while get(server, "/v1/conversations", token)[0] != 401:
        assert time.monotonic() < deadline, "a revoked token still works"
        await asyncio.sleep(0.5)


async def test_realtime_sessions_belong_to_the_token_tenant(server: PalabreServer) -> None:
    """A Realtime session (here: only silence) lands in the token's tenant, not the default one."""
    token = create_token(server, "charlie", "stream", "read")
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?intent=transcription"
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        assert json.loads(await ws.recv())["type"].endswith("session.created")
        audio = base64.b64encode(b"\x00\x00" * 2400).decode()
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        await asyncio.sleep(0.5)
    deadline = time.monotonic() + TIMEOUT_S
    while not get(server, "/v1/conversations", token)[1]["conversations"]:
        assert time.monotonic() < deadline, "no conversation for tenant charlie"
        await asyncio.sleep(0.5)


async def test_sessions_are_capped_per_tenant(server: PalabreServer) -> None:
    """alpha's sessions beyond the cap are refused (overloaded, 1013) while bravo still gets one."""
    admin = create_token(server, "alpha", "admin")
    alpha = create_token(server, "alpha", "stream")
    bravo = create_token(server, "bravo", "stream")
    deadline = time.monotonic() + TIMEOUT_S
    while get(server, "/v1/stats", admin)[1]["sessions"] > 0:  # sessions of earlier tests finishing
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    sessions = [await StreamSession.open(server.url, token=alpha) for _ in range(SESSIONS_PER_TENANT)]
    try:
        with pytest.raises(PalabreError) as info:
            await StreamSession.open(server.url, token=alpha)
        assert info.value.code == "overloaded"
        other = await StreamSession.open(server.url, token=bravo)
        sessions.append(other)
    finally:
        for session in sessions:
            await session.stop()
            await session.close()
