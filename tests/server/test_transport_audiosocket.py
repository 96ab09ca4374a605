"""The AudioSocket transport's per-call settings: a call is diarized as the server's
`telephony_diarize` says (AudioSocket carries none of its own). A real TCP listener; the hub is
the fake of the SIP transport tests."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from server.auth import OpenAccess
from server.codecs.audiosocket import CallId, Hangup, pack
from server.config import ServerConfig
from server.transports.audiosocket import AudioSocketEndpoint, serve_audiosocket
from tests.server.test_transport_sip import FakeHub


@pytest.mark.parametrize("diarize", [False, True])
async def test_a_call_is_diarized_as_the_server_default_says(diarize: bool) -> None:
    hub = FakeHub()
    endpoint = AudioSocketEndpoint(
        hub,  # type: ignore[arg-type]
        OpenAccess("default"),  # type: ignore[arg-type]
        None,
        ServerConfig().limits,
        diarize=diarize,
    )
    server = await serve_audiosocket(endpoint, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    call = uuid.uuid4()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(pack(CallId(call)) + pack(Hangup()))
        await writer.drain()
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()
    finally:
        server.close()
    (live,) = hub.registered
    assert live.start is not None
    assert (live.start.conversation_id, live.start.track, live.start.diarize) == (call.hex, "caller", diarize)


def test_telephony_diarize_needs_a_speaker_model() -> None:
    assert ServerConfig(telephony_diarize=True).telephony_diarize
    with pytest.raises(ValueError, match="telephony_diarize"):
        ServerConfig(telephony_diarize=True, speaker_model="none")
