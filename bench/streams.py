"""Concurrent live sessions: final latency, partial rate and server cost, batched against sequential.

    python bench/streams.py --sessions 1 4 8 --audio-dir ../shared/audio --model tiny.en --duration 40

For each number of sessions N and each scheduler mode (`--scheduler batched`, then `sequential`;
a fresh `palabre serve` subprocess for each), N sessions stream real speech at `--speed` times
real time (1.0: live pace) through the Python SDK's `StreamSession`, all at once. Each session
speaks a mix of the audio folder's files joined by 1–2 s pauses, starting at a different file and
after a different lead-in, so that the sessions talk at different moments.

Per run it reports:
- final latency p50/p95: arrival of a `final` minus the moment the audio at its `end` was sent
  (t0 + end / speed), pooled over the sessions;
- partials per second per session (partials received / streaming wall time, averaged);
- the scheduler's batch-size distribution and queue wait p50/p95 (`GET /v1/stats`);
- CPU RTF: server CPU seconds used during the run / seconds of audio streamed (all sessions);
- the server's peak RSS (polled each second), finals received and errors;
then, per N, the ratio sequential p95 / batched p95. The figures are printed with the command line
that produced them and written to bench/out/streams.json. They vary with the machine's load.
The server runs with `--no-memory` unless `--server-arg` says otherwise (its embeddings and
summaries would compete for the CPU with the ASR being measured).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from palabre_client import PalabreError, StreamSession
from palabre_client.audio import load_audio, to_pcm16

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_AUDIO = REPO_ROOT.parent / "shared" / "audio"
GENERATED = REPO_ROOT / "tests" / "fixtures" / "generated"
OUT = REPO_ROOT / "bench" / "out" / "streams.json"
SAMPLE_RATE = 16_000
FRAME_MS = 20
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".opus", ".ogg", ".m4a")
HEALTH_TIMEOUT_S = 180.0
DRAIN_TIMEOUT_S = 120.0
"""How long after its last frame a session may wait for `closed`."""

Samples = npt.NDArray[np.float32]


# --- audio ----------------------------------------------------------------------------------------


def file_languages(audio_dir: Path) -> dict[str, str]:
    """Language of each file where the folder says (refs.json `lang` or manifest.json `language`)."""
    out: dict[str, str] = {}
    refs = audio_dir / "refs.json"
    if refs.exists():
        for name, info in json.loads(refs.read_text()).items():
            if isinstance(info, dict) and "lang" in info:
                out[name] = str(info["lang"])
    manifest = audio_dir / "manifest.json"
    if manifest.exists():
        for name, info in json.loads(manifest.read_text()).get("files", {}).items():
            out[name] = str(info.get("language", ""))
    return out


def load_clips(audio_dir: Path, language: str | None) -> list[tuple[str, Samples]]:
    """Every decodable audio file of the folder (of `language` when the folder tells), sorted by name.

    Files with no speech in them by name (`silence*`) are left out.
    """
    languages = file_languages(audio_dir)
    clips: list[tuple[str, Samples]] = []
    for path in sorted(audio_dir.iterdir()):
        if path.suffix.lower() not in AUDIO_EXTENSIONS or path.name.startswith("silence"):
            continue
        if language is not None and languages.get(path.name, language) != language:
            continue
        try:
            samples = load_audio(path, SAMPLE_RATE)
        except Exception as exc:
            print(f"skipped {path.name}: {exc}", file=sys.stderr)
            continue
        if len(samples):
            clips.append((path.name, np.asarray(samples, dtype=np.float32)))
    if not clips:
        raise SystemExit(f"no usable audio in {audio_dir}")
    return clips


def session_audio(clips: list[tuple[str, Samples]], index: int, sessions: int, duration: float) -> Samples:
    """`duration` seconds for session `index`: the clips from a session-specific one on, in a loop.

    Session `index` starts at clip `index * len(clips) // sessions` (then `index` when there are more
    sessions than clips) after a 0–2 s lead-in, and clips are joined by 1–2 s pauses, both drawn
    from a generator seeded with `index`: each session has its own rhythm, and runs are repeatable.
    """
    rng = np.random.default_rng(index)
    need = round(duration * SAMPLE_RATE)
    first = (index * len(clips) // sessions + (index if sessions > len(clips) else 0)) % len(clips)
    parts: list[Samples] = [np.zeros(round(rng.uniform(0.0, 2.0) * SAMPLE_RATE), np.float32)]
    total = len(parts[0])
    k = first
    while total < need:
        clip = clips[k % len(clips)][1]
        gap = np.zeros(round(rng.uniform(1.0, 2.0) * SAMPLE_RATE), np.float32)
        parts += [clip, gap]
        total += len(clip) + len(gap)
        k += 1
    return np.concatenate(parts)[:need]


# --- server ---------------------------------------------------------------------------------------


@dataclass
class Server:
    """A `palabre serve` subprocess."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    def get(self, path: str, timeout: float = 5.0) -> Any:
        """GET a JSON document from the server."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(model: str | None, mode: str, extra: list[str], workdir: Path) -> Server:
    """Start `palabre serve` with `--scheduler mode` and wait until /healthz answers 200 (`model`
    None: no `--model`, the default server's model per language group)."""
    script = Path(sys.executable).parent / "palabre"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "server.cli"]
    port = free_port()
    data_dir = workdir / f"data-{mode}-{port}"
    log_path = workdir / f"server-{mode}-{port}.log"
    cmd = [
        *base,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        *(("--model", model) if model is not None else ()),
        "--scheduler",
        mode,
        *extra,
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    server = Server(proc, port, log_path)
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    server.stop()
    tail = log_path.read_text(errors="replace")[-4000:]
    raise SystemExit(f"server did not become healthy: {shlex.join(cmd)}\n{tail}")


# --- sessions -------------------------------------------------------------------------------------


@dataclass
class SessionResult:
    """What one session saw."""

    audio_s: float
    wall_s: float = 0.0
    finals: int = 0
    spoken_finals: int = 0
    partials: int = 0
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    closed: bool = False


async def run_session(url: str, samples: Samples, speed: float, language: str | None) -> SessionResult:
    """Stream `samples` paced at `speed` x real time, then stop; record every final's latency."""
    pcm = to_pcm16(samples)
    frame = SAMPLE_RATE * FRAME_MS // 1000 * 2
    result = SessionResult(audio_s=len(samples) / SAMPLE_RATE)
    try:
        session = await StreamSession.open(url, language=language)
    except PalabreError as exc:
        result.errors.append(f"open: {exc.code}")
        return result
    t0 = time.monotonic()

    async def send() -> None:
        for offset in range(0, len(pcm), frame):
            chunk = pcm[offset : offset + frame]
            delay = t0 + (offset + len(chunk)) / (2 * SAMPLE_RATE) / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await session.send_audio(chunk)
        await session.stop()

    sender = asyncio.create_task(send())
    try:
        async with asyncio.timeout(result.audio_s / speed + DRAIN_TIMEOUT_S):
            async for event in session:
                kind = event.get("type")
                if kind == "final":
                    now = time.monotonic()
                    result.finals += 1
                    if str(event.get("text", "")).strip():
                        result.spoken_finals += 1
                    result.latencies_s.append(now - (t0 + float(event["end"]) / speed))
                elif kind == "partial":
                    result.partials += 1
                elif kind == "error":
                    result.errors.append(str(event.get("code")))
                elif kind == "closed":
                    result.closed = True
    except TimeoutError:
        result.errors.append("timeout")
    except PalabreError as exc:
        result.errors.append(exc.code)
    finally:
        result.wall_s = time.monotonic() - t0
        if not sender.done():
            sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, PalabreError):
            await sender
        await session.close()
    if not result.closed and not result.errors:
        result.errors.append("no closed")
    return result


async def poll_rss(server: Server, stop: asyncio.Event, peak: list[int]) -> None:
    """Record the server's RSS every second until `stop` is set."""
    while not stop.is_set():
        with contextlib.suppress(Exception):
            stats = await asyncio.to_thread(server.get, "/v1/stats")
            process = stats.get("process", {})
            peak[0] = max(peak[0], int(process.get("rss_bytes", 0)), int(process.get("max_rss_bytes", 0)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def run_load(
    server: Server, audios: list[Samples], speed: float, language: str | None
) -> tuple[list[SessionResult], int]:
    """All sessions at once; returns their results and the server's peak RSS in bytes."""
    stop = asyncio.Event()
    peak = [0]
    poller = asyncio.create_task(poll_rss(server, stop, peak))
    try:
        results = await asyncio.gather(*(run_session(server.url, a, speed, language) for a in audios))
    finally:
        stop.set()
        await poller
    return list(results), peak[0]


# --- one run and the report -----------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0–1) by linear interpolation, None when empty."""
    if not values:
        return None
    return float(np.quantile(np.asarray(values), q))


def run_one(
    n: int, mode: str, args: argparse.Namespace, clips: list[tuple[str, Samples]], workdir: Path
) -> dict[str, Any]:
    """Start a server in `mode`, stream `n` sessions, stop it; the run's figures."""
    language = "en" if args.model.endswith(".en") else args.language
    audios = [session_audio(clips, i, n, args.duration) for i in range(n)]
    server = start_server(args.model, mode, args.server_arg, workdir)
    try:
        before = server.get("/v1/stats")
        started = time.monotonic()
        results, peak_rss = asyncio.run(run_load(server, audios, args.speed, language))
        wall = time.monotonic() - started
        after = server.get("/v1/stats")
    finally:
        server.stop()
    latencies = [x for r in results for x in r.latencies_s]
    audio_total = sum(r.audio_s for r in results)
    cpu = float(after["process"]["cpu_seconds"]) - float(before["process"]["cpu_seconds"])
    asr = after.get("scheduler", {}).get("asr", {})
    asr_before = before.get("scheduler", {}).get("asr", {})
    batch_sizes = {
        size: count - int(asr_before.get("batch_sizes", {}).get(size, 0))
        for size, count in asr.get("batch_sizes", {}).items()
    }
    requests = {
        kind: count - int(asr_before.get("requests", {}).get(kind, 0))
        for kind, count in asr.get("requests", {}).items()
    }
    return {
        "sessions": n,
        "scheduler": mode,
        "audio_seconds": round(audio_total, 2),
        "wall_seconds": round(wall, 2),
        "finals": sum(r.finals for r in results),
        "spoken_finals": sum(r.spoken_finals for r in results),
        "latency_p50_s": percentile(latencies, 0.5),
        "latency_p95_s": percentile(latencies, 0.95),
        "latency_max_s": max(latencies) if latencies else None,
        "partials_per_s_per_session": statistics.fmean(r.partials / r.wall_s for r in results if r.wall_s)
        if any(r.wall_s for r in results)
        else 0.0,
        "batches": int(asr.get("batches", 0)) - int(asr_before.get("batches", 0)),
        "batch_sizes": batch_sizes,
        "requests": requests,
        "dropped_partials": int(asr.get("dropped_partials", 0)) - int(asr_before.get("dropped_partials", 0)),
        "queue_wait_ms_p50": asr.get("queue_wait_ms_p50"),
        "queue_wait_ms_p95": asr.get("queue_wait_ms_p95"),
        "cpu_seconds": round(cpu, 2),
        "cpu_rtf": round(cpu / audio_total, 4) if audio_total else None,
        "rss_max_mb": round(peak_rss / 2**20, 1),
        "errors": [e for r in results for e in r.errors],
        "latencies_s": [round(x, 3) for x in latencies],
        "per_session": [
            {k: v for k, v in asdict(r).items() if k != "latencies_s"} | {"latencies_s": r.latencies_s}
            for r in results
        ],
    }


def fmt(value: float | None, spec: str = ".2f") -> str:
    """A number for the table, '-' when missing."""
    return "-" if value is None else format(value, spec)


def print_table(runs: list[dict[str, Any]]) -> None:
    """The figures of every run, then the sequential/batched p95 ratio per N."""
    header = (
        f"{'N':>3} {'scheduler':<10} {'finals':>6} {'p50 s':>6} {'p95 s':>6} {'part/s':>6} "
        f"{'qw50 ms':>7} {'qw95 ms':>7} {'cpuRTF':>6} {'RSS MB':>7} {'err':>3}  batch sizes"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        sizes = " ".join(f"{k}:{v}" for k, v in sorted(r["batch_sizes"].items(), key=lambda kv: int(kv[0])))
        print(
            f"{r['sessions']:>3} {r['scheduler']:<10} {r['spoken_finals']:>6} {fmt(r['latency_p50_s']):>6} "
            f"{fmt(r['latency_p95_s']):>6} {fmt(r['partials_per_s_per_session']):>6} "
            f"{fmt(r['queue_wait_ms_p50'], '.0f'):>7} {fmt(r['queue_wait_ms_p95'], '.0f'):>7} "
            f"{fmt(r['cpu_rtf'], '.3f'):>6} {fmt(r['rss_max_mb'], '.0f'):>7} {len(r['errors']):>3}  {sizes}"
        )
    print()
    for n in sorted({r["sessions"] for r in runs}):
        p95 = {r["scheduler"]: r["latency_p95_s"] for r in runs if r["sessions"] == n}
        if p95.get("batched") and p95.get("sequential") is not None:
            print(f"N={n}: sequential p95 / batched p95 = {p95['sequential'] / p95['batched']:.2f}")


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run every (N, scheduler) pair, print and save the figures."""
    default_dir = SHARED_AUDIO if SHARED_AUDIO.is_dir() else GENERATED
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8], help="values of N")
    parser.add_argument("--audio-dir", type=Path, default=default_dir, help=f"default {default_dir}")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--language", default="en", help="for a multilingual model (`auto` to detect)")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of audio per session")
    parser.add_argument("--speed", type=float, default=1.0, help="times real time (1: live pace)")
    parser.add_argument(
        "--schedulers", nargs="+", choices=["batched", "sequential"], default=["batched", "sequential"]
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=None,
        help="extra `palabre serve` argument (repeatable; default: --no-memory)",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.server_arg is None:
        args.server_arg = ["--no-memory"]
    command = shlex.join(
        [Path(sys.executable).name, *sys.argv] if argv is None else ["bench/streams.py", *argv]
    )
    print(f"$ {command}")
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )

    clips = load_clips(args.audio_dir, "en" if args.model.endswith(".en") else None)
    print(f"audio: {len(clips)} files from {args.audio_dir}: {', '.join(name for name, _ in clips)}")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="palabre-bench-") as tmp:
        for n in args.sessions:
            for mode in args.schedulers:
                print(f"running N={n} {mode} ({args.duration:.0f} s of audio each)...", flush=True)
                run = run_one(n, mode, args, clips, Path(tmp))
                runs.append(run)
                print(
                    f"  finals {run['spoken_finals']}, p50 {fmt(run['latency_p50_s'])} s, "
                    f"p95 {fmt(run['latency_p95_s'])} s, errors {run['errors'] or 'none'}",
                    flush=True,
                )
    print()
    print_table(runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "command": command,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "audio_files": [name for name, _ in clips],
        "runs": runs,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
