"""End-to-end: a synthesised call streamed with `redact: ["phone","email","card"]` through the real
server (tiny.en): what the recogniser wrote for the phone number (and whatever else the rules
redact) appears nowhere in the data dir (the SQLite file, its WAL, the index files) nor in the
events received; the finals say `[PHONE]` instead.

The control transcript (what tiny.en writes for the same audio without redaction) comes from the
engine directly, so the unredacted text never enters the server's store. espeak-ng's digits read
one by one are heard reliably; its e-mail addresses and grouped card numbers are not (tiny.en
writes "salesat email.com", "4,532015112230366"), and Whisper base understands espeak-ng French
too badly for a French call, so those cases are covered by the labelled set
(tests/stream/test_redaction.py) rather than here.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from palabre_client import stream_file
from stream.interfaces import AsrInput
from stream.redaction import Redactor
from tests.e2e.test_vocabulary_e2e import espeak, write_wav

pytestmark = pytest.mark.slow

CALL = [
    "Hello, this is the support line.",
    "My phone number is 0 6 1 2 3 4 5 6 7 8.",
    "Email me at sales@gmail.com.",
    "My card number is 4 5 3 2 0 1 5 1 1 2 8 3 0 3 6 6.",
]
KINDS = ["phone", "email", "card"]


def secrets_in(transcript: str) -> set[str]:
    """The redacted spans of a transcript, and their digits without separators."""
    redactor = Redactor(KINDS)  # type: ignore[arg-type]
    spans = [transcript[s.start : s.end] for s in redactor.spans(transcript, "en")]
    return set(spans) | {re.sub(r"\D", "", s) for s in spans if re.sub(r"\D", "", s)}


async def synthesised_call(tmp_path: Path) -> tuple[Path, set[str]]:
    """The call as a WAV file, and the secrets in what tiny.en writes for it (heard by the engine
    directly, so the unredacted text never enters a server's store)."""
    from models.registry import load_asr

    pcm = np.concatenate([np.concatenate([espeak(s, 16_000), np.zeros(8000, "<i2")]) for s in CALL])
    wav = write_wav(tmp_path / "call.wav", pcm, 16_000)
    engine = await asyncio.to_thread(load_asr, "tiny.en")
    control = [
        (
            await asyncio.to_thread(
                engine.transcribe_batch, [AsrInput(espeak(s, 16_000).astype(np.float32) / 32768, "en")]
            )
        )[0].text
        for s in CALL
    ]
    secrets = set().union(*(secrets_in(text) for text in control))
    assert "0612345678" in secrets, control  # the phone number is heard, so the test means something
    return wav, secrets


async def test_redacted_numbers_are_nowhere_on_disk_or_on_the_wire(
    palabre_server: Any, tmp_path: Path
) -> None:
    wav, secrets = await synthesised_call(tmp_path)
    server = palabre_server("tiny.en")
    events = await stream_file(server.url, wav, language="en", speed=4.0, redact=KINDS)
    finals = [e for e in events if e["type"] == "final"]
    assert any("[PHONE]" in e["text"] for e in finals), finals
    wire = repr(events)
    await asyncio.sleep(2.0)  # let the memory embed, index and save
    files = [p for p in server.data_dir.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".db") for p in files)
    for secret in secrets:
        assert secret not in wire, secret
        for path in files:
            data = path.read_bytes()
            assert secret.encode() not in data, (secret, path)
            assert secret.encode("utf-16-le") not in data, (secret, path)
