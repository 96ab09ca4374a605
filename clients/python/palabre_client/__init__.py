"""Python SDK and command-line client for Palabre, the real-time speech server.

Stream audio and read events as they come::

    from palabre_client import StreamSession

    async with await StreamSession.open("ws://127.0.0.1:8765/v1/stream", language="en") as session:
        await session.send_audio(pcm16_bytes)
        await session.stop()
        async for event in session:          # ready was consumed by open(); ends after `closed`
            if event["type"] == "final":
                print(event["start"], event["end"], event["text"])

Or stream a whole file at real-time pace: ``events = await stream_file(url, "call.mp3")``.
The command line does the same: ``palabre-client stream call.mp3``.
"""

from palabre_client.audio import DEFAULT_SAMPLE_RATE, load_audio, to_pcm16
from palabre_client.client import (
    DEFAULT_URL,
    ClientErrorCode,
    Event,
    PalabreError,
    StreamSession,
    stream_file,
)
from palabre_client.memory import ask, export, search

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SAMPLE_RATE",
    "DEFAULT_URL",
    "ClientErrorCode",
    "Event",
    "PalabreError",
    "StreamSession",
    "__version__",
    "ask",
    "export",
    "load_audio",
    "search",
    "stream_file",
    "to_pcm16",
]
