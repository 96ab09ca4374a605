"""Soak: N sessions stream for M minutes, with random disconnects and bad messages mixed in.

Starts its own `palabre serve --no-memory` on a free port with a temporary data dir, then runs
`--sessions` concurrent loops for `--minutes`; each loop streams a short test file into a new
conversation and, by chance, cuts the connection mid-stream (no close frame) and resumes the
conversation as the SDK does (`resume_after`, audio resent from `ready.resume_from`), or sends a
bad message (not JSON, then an unknown type). At the end it checks, in the store, that every
final a client received is stored once with its text (`lost`: missing or different;
`duplicated`: a seq received twice, or a text stored twice in one conversation: a resumed stream
that transcribed some audio again), that the server has 0 sessions left, and reads its RSS
(`/v1/stats` `process.rss_bytes`) at start and end.

    python -m bench.soak --sessions 4 --minutes 2 [--audio tests/fixtures/generated/en_fox.wav]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import command_line
from bench.streams import free_port
from palabre_client import PalabreError, StreamSession, load_audio, to_pcm16
from server.store import Store

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AUDIO = REPO_ROOT / "tests" / "fixtures" / "generated" / "en_fox.wav"
FRAME_BYTES = 640
"""20 ms of 16 kHz 16-bit mono."""


@dataclass
class SoakResult:
    """What a soak run found."""

    sessions: int
    minutes: float
    streams: int = 0
    finals: int = 0
    lost: int = 0
    duplicated: int = 0
    disconnects: int = 0
    bad_messages: int = 0
    rss_start: int = 0
    rss_end: int = 0
    sessions_left: int = -1
    received: dict[str, list[dict[str, Any]]] = field(default_factory=dict, repr=False)

    def summary(self) -> str:
        """The one-line report."""
        return (
            f"sessions {self.sessions}, minutes {self.minutes:g}, finals {self.finals}, lost {self.lost}, "
            f"duplicated {self.duplicated}, RSS start/end {self.rss_start / 2**20:.0f}/"
            f"{self.rss_end / 2**20:.0f} MiB (streams {self.streams}, disconnects {self.disconnects}, "
            f"bad messages {self.bad_messages}, sessions left {self.sessions_left})"
        )


def _stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/stats", timeout=5) as resp:
        stats: dict[str, Any] = json.loads(resp.read())
        return stats


def _start_server(data_dir: Path, model: str, log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    script = Path(sys.executable).parent / "palabre"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "server.cli"]
    cmd = [*base, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    cmd += ["--model", model, "--no-memory"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            _stats(port)
            return proc, port
        except OSError:
            time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"server did not start; log: {log_path}")


async def _one_stream(url: str, pcm: bytes, rng: random.Random, result: SoakResult, speed: float) -> None:
    """Stream `pcm` once into a new conversation, maybe fed a bad message, maybe cut mid-stream
    (no close frame) and then resumed as the SDK does: `resume_after` the last final received,
    the rest of the audio resent from `ready.resume_from`."""
    action = rng.choices(["normal", "disconnect", "bad"], weights=[2, 1, 1])[0]
    cut_at = rng.randrange(len(pcm) // 4, len(pcm)) // FRAME_BYTES * FRAME_BYTES
    try:
        session = await StreamSession.open(url)
    except PalabreError:
        return
    conversation_id = session.conversation_id
    finals = result.received.setdefault(conversation_id, [])
    result.streams += 1
    cut = await _send(session, pcm, 0, cut_at if action == "disconnect" else None,
                      cut_at if action == "bad" else None, finals, result, speed)
    if not cut:
        return
    result.disconnects += 1
    last_seq = max((int(f["seq"]) for f in finals), default=-1)
    try:
        session = await StreamSession.open(url, conversation_id=conversation_id, resume_after=last_seq)
    except PalabreError:
        return
    resume_from = session.ready.get("resume_from")
    start = 0 if resume_from is None else int(float(resume_from) * 32000) // 2 * 2
    await _send(session, pcm, min(start, len(pcm)), None, None, finals, result, speed)


async def _send(session: StreamSession, pcm: bytes, start: int, cut_at: int | None, bad_at: int | None,
                finals: list[dict[str, Any]], result: SoakResult, speed: float) -> bool:
    """Stream `pcm[start:]` on `session`, collecting finals with text; True when it was cut."""

    async def receive() -> None:
        async for event in session:
            if event.get("type") == "final" and event.get("text"):
                finals.append(event)

    receiver = asyncio.create_task(receive())
    cut = False
    try:
        began = time.monotonic()
        for offset in range(start, len(pcm), FRAME_BYTES):
            if cut_at is not None and offset >= cut_at:
                session._ws.transport.abort()  # no close frame: a dropped network
                cut = True
                break
            if bad_at is not None and offset == bad_at:
                result.bad_messages += 1
                await session._send("{not json")
                await session._send(json.dumps({"type": "no_such_type"}))
            await session.send_audio(pcm[offset : offset + FRAME_BYTES])
            sent = offset - start + FRAME_BYTES
            await asyncio.sleep(max(0.0, began + sent / 32000 / speed - time.monotonic()))
        else:
            await session.stop()
        async with asyncio.timeout(60):
            await receiver
    except (PalabreError, TimeoutError):
        pass
    finally:
        await session.close()
        receiver.cancel()
    return cut


async def _loop(url: str, pcm: bytes, seed: int, until: float, result: SoakResult, speed: float) -> None:
    rng = random.Random(seed)
    while time.monotonic() < until:
        await _one_stream(url, pcm, rng, result, speed)


def _check(result: SoakResult, db: Path) -> None:
    with Store.open(db) as store:
        for conversation_id, finals in result.received.items():
            rows = store.utterances("default", conversation_id)
            by_seq = {row.seq: row.text for row in rows}
            result.finals += len(finals)
            result.lost += sum(1 for f in finals if by_seq.get(f["seq"]) != f["text"])
            seqs = Counter(f["seq"] for f in finals)
            texts = Counter(row.text for row in rows)
            result.duplicated += sum(n - 1 for n in seqs.values()) + sum(n - 1 for n in texts.values())


def run_soak(
    sessions: int = 4,
    minutes: float = 2.0,
    *,
    audio: Path = DEFAULT_AUDIO,
    model: str = "tiny.en",
    speed: float = 1.0,
    seed: int = 0,
) -> SoakResult:
    """Run the soak against a server started for it; returns the figures (see the module doc)."""
    result = SoakResult(sessions, minutes)
    pcm = to_pcm16(load_audio(audio, 16000))
    with tempfile.TemporaryDirectory(prefix="palabre-soak-") as tmp:
        data_dir = Path(tmp) / "data"
        proc, port = _start_server(data_dir, model, Path(tmp) / "server.log")
        try:
            result.rss_start = int(_stats(port)["process"]["rss_bytes"])
            url = f"ws://127.0.0.1:{port}/v1/stream"
            until = time.monotonic() + minutes * 60

            async def main() -> None:
                await asyncio.gather(
                    *(_loop(url, pcm, seed + i, until, result, speed) for i in range(sessions))
                )

            asyncio.run(main())
            deadline = time.monotonic() + 30  # detached sessions finish their pending finals
            while time.monotonic() < deadline and _stats(port)["sessions"]:
                time.sleep(0.5)
            stats = _stats(port)
            result.sessions_left = int(stats["sessions"])
            result.rss_end = int(stats["process"]["rss_bytes"])
            _check(result, data_dir / "palabre.db")
        finally:
            proc.terminate()
            proc.wait(30)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line: run, print the figures and the command; exit 1 on a loss or a duplicate."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run_soak(
        args.sessions, args.minutes, audio=args.audio, model=args.model, speed=args.speed, seed=args.seed
    )
    print(result.summary())
    print(f"command: {command_line()}")
    ok = result.lost == 0 and result.duplicated == 0 and result.sessions_left == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
