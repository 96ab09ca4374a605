"""Pieces the benchmarks share: reference speech, text normalisation and WER, real-time pacing
that records when each frame left, and server processes watched for CPU and memory.

(`bench/streams.py` holds the others: `free_port`, `percentile`, `fmt`, `start_server`.)

Nothing here starts anything on import; every function takes what it needs as arguments (the
benchmarks' command lines are the only configuration).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import numpy.typing as npt
import psutil

from palabre_client import load_audio

SAMPLE_RATE = 16000
"""Every benchmark feeds 16 kHz mono, what Whisper runs at."""

DEFAULT_AUDIO_DIR = Path("/work/shared/audio")
"""Real speech with `refs.json` (see its README); not copied into the repository."""

REPO_ROOT = Path(__file__).resolve().parent.parent

Samples = npt.NDArray[np.float32]


# --- reference speech --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """One file of real speech with its reference text, decoded to 16 kHz mono float32."""

    name: str
    text: str
    samples: Samples = field(repr=False)

    @property
    def seconds(self) -> float:
        """The file's length in seconds."""
        return len(self.samples) / SAMPLE_RATE


def load_references(audio_dir: Path, names: Sequence[str] | None = None) -> list[Reference]:
    """The English files of `audio_dir/refs.json` that have a reference `text` (jfk.flac, sb_*.wav).

    `names`, when given, picks and orders the files. Raises FileNotFoundError when refs.json or a
    file is missing.
    """
    refs: dict[str, dict[str, Any]] = json.loads((audio_dir / "refs.json").read_text())
    chosen = list(names) if names is not None else sorted(n for n, r in refs.items() if r.get("text"))
    out: list[Reference] = []
    for name in chosen:
        entry = refs[name]
        if not entry.get("text") or entry.get("lang") != "en":
            raise ValueError(f"{name}: no English reference text in refs.json")
        out.append(Reference(name, str(entry["text"]), load_audio(audio_dir / name, SAMPLE_RATE)))
    return out


# --- text and WER ------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Lower case, punctuation to spaces (apostrophes kept), whitespace collapsed."""
    return " ".join(re.sub(r"[^\w' ]", " ", text.lower()).split())


@dataclass
class WordErrors:
    """Word error counts summed over any number of (reference, hypothesis) pairs."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_words: int = 0

    def add(self, reference: str, hypothesis: str) -> None:
        """Count the errors of one pair (normalised here; either side may be empty)."""
        ref, hyp = normalise(reference), normalise(hypothesis)
        if not ref:
            self.insertions += len(hyp.split())
            return
        if not hyp:
            n = len(ref.split())
            self.deletions += n
            self.reference_words += n
            return
        out = jiwer.process_words(ref, hyp)
        self.substitutions += out.substitutions
        self.deletions += out.deletions
        self.insertions += out.insertions
        self.reference_words += len(ref.split())

    def __iadd__(self, other: WordErrors) -> WordErrors:
        self.substitutions += other.substitutions
        self.deletions += other.deletions
        self.insertions += other.insertions
        self.reference_words += other.reference_words
        return self

    @property
    def wer(self) -> float:
        """(S + D + I) / N; NaN without reference words."""
        if not self.reference_words:
            return math.nan
        return (self.substitutions + self.deletions + self.insertions) / self.reference_words


# --- figures -----------------------------------------------------------------------------------


def rounded(value: float, digits: int = 3) -> float | None:
    """`value` rounded for JSON, None for NaN (JSON has no NaN)."""
    return None if math.isnan(value) else round(value, digits)


def command_line() -> str:
    """The command that is running, as one would type it again from the repository root."""
    argv = list(sys.argv)
    script = Path(argv[0]).resolve()
    if script.suffix == ".py" and script.is_relative_to(REPO_ROOT):
        module = ".".join(script.relative_to(REPO_ROOT).with_suffix("").parts)
        return shlex.join([".venv/bin/python", "-m", module, *argv[1:]])
    return shlex.join([sys.executable, *argv])


# --- real-time pacing --------------------------------------------------------------------------


def frames_of(samples: Samples, frame_ms: int) -> list[Samples]:
    """`samples` cut into frames of `frame_ms` (the last one may be shorter)."""
    size = SAMPLE_RATE * frame_ms // 1000
    return [samples[i : i + size] for i in range(0, len(samples), size)]


@dataclass
class Pacing:
    """When each frame of a paced stream was sent (event-loop clock, seconds)."""

    start: float = 0.0
    """The schedule's origin: frame k is due at `start` + (samples up to its end) / rate."""
    frame_samples: int = 1
    due: list[float] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)

    def sent_at(self, seconds: float) -> float | None:
        """When the sample at `seconds` into the stream was sent; None before any frame was sent.

        A time past the last sent sample maps to the last frame sent.
        """
        if not self.sent:
            return None
        index = max(0, math.ceil(seconds * SAMPLE_RATE / self.frame_samples) - 1)
        return self.sent[min(index, len(self.sent) - 1)]

    def lateness(self) -> list[float]:
        """How late each frame left, in seconds (a loaded client shows here, not in the server)."""
        return [s - d for s, d in zip(self.sent, self.due, strict=True)]


async def send_paced(
    payloads: Sequence[bytes],
    bytes_per_sample: int,
    send: Callable[[bytes], Awaitable[None]],
    pacing: Pacing,
    *,
    speed: float = 1.0,
) -> None:
    """Send every payload once its last sample would have been recorded, at `speed` x real time.

    The schedule counts from one monotonic start, so a late frame does not delay the next ones.
    All payloads but the last must hold the same number of samples. `pacing` is filled as frames
    leave, so it tells what was sent even when `send` raises part way.
    """
    loop = asyncio.get_running_loop()
    pacing.start = loop.time()
    pacing.frame_samples = max(1, len(payloads[0]) // bytes_per_sample) if payloads else 1
    position = 0
    for payload in payloads:
        position += len(payload) // bytes_per_sample
        due = pacing.start + position / (SAMPLE_RATE * speed)
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(payload)
        pacing.due.append(due)
        pacing.sent.append(loop.time())


# --- server processes --------------------------------------------------------------------------


@dataclass
class Usage:
    """CPU and memory of a process over a stretch of time."""

    wall_s: float
    cpu_s: float
    rss_peak_bytes: int
    rss_end_bytes: int

    @property
    def cpu_share(self) -> float:
        """CPU seconds per wall second (1.0 = one core busy)."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else math.nan


class ServerProcess:
    """A server running as a subprocess, its output in a log file, its CPU and RSS watched.

    CPU is the process's user + system time (all threads, and children); RSS is sampled every
    `sample_every_s` while `measure()` brackets a run.
    """

    def __init__(self, name: str, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        """Watch an already started server (`launch` starts one)."""
        self.name = name
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self._ps = psutil.Process(proc.pid)

    @classmethod
    def launch(cls, name: str, command: list[str], log_path: Path, port: int) -> ServerProcess:
        """Start `command` from the repository root, its output (after the command line) in `log_path`."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            log.write(("$ " + shlex.join(command) + "\n").encode())
            log.flush()
            proc = subprocess.Popen(
                command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=_unbuffered_env()
            )
        return cls(name, proc, port, log_path)

    @property
    def command(self) -> list[str]:
        """The command line the process runs."""
        return [str(a) for a in self.proc.args] if isinstance(self.proc.args, list) else [str(self.proc.args)]

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, probe: Callable[[], bool], timeout: float) -> None:
        """Call `probe` until it returns True; RuntimeError (with the log) if the process dies or
        `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if probe():
                return
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU seconds so far, children included."""
        t = self._ps.cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)

    def rss(self) -> int:
        """Resident memory in bytes, children included."""
        total = int(self._ps.memory_info().rss)
        for child in self._ps.children(recursive=True):
            try:
                total += int(child.memory_info().rss)
            except psutil.Error:
                pass
        return total

    async def measure(self, run: Awaitable[Any], sample_every_s: float = 0.5) -> tuple[Any, Usage]:
        """Await `run` while sampling this process; return its result and the usage meanwhile."""
        peak = self.rss()
        wall0, cpu0 = time.monotonic(), self.cpu_seconds()
        task = asyncio.ensure_future(run)
        while not task.done():
            await asyncio.wait([task], timeout=sample_every_s)
            if self.alive():
                peak = max(peak, self.rss())
        result = task.result()
        end = self.rss() if self.alive() else 0
        cpu = self.cpu_seconds() if self.alive() else math.nan
        return result, Usage(time.monotonic() - wall0, cpu - cpu0, max(peak, end), end)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process: SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on `host:port` now."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _unbuffered_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}
