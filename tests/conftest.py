"""Shared fixtures: the synthesised test speech and real Palabre servers for end-to-end tests.

- `speech_dir` (session): runs tests/fixtures/make_speech.py once into tests/fixtures/generated/
  and returns that folder (its manifest.json holds each file's reference text and times).
- `speech_manifest` (session): that manifest, parsed.
- `palabre_server` (per test, a factory): `palabre_server("tiny.en", "--scheduler", "sequential")`
  returns a running server, started once per (model, extra arguments) for the whole test
  session and stopped at its end. Its log goes to a file; when a test that used a server fails,
  the log's tail is attached to the failure report.

A crash is a failure, never restarted silently: after each test, every pooled server it used must
still be running and answer /healthz, or that test fails (with the server's exit code and log);
a server found dead by a later `get()` fails that test too before a fresh one is started; and
each server must exit with status 0 when SIGTERM stops it at the end of the session.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.postgresql import PostgresServer, postgresql_bin, start_postgres
from tests.requirements import missing, require_tool

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures"
GENERATED = FIXTURES / "generated"
HEALTH_TIMEOUT_S = 120.0
ALIVE_CHECK_TIMEOUT_S = 10.0
"""How long /healthz may take to answer the check after each test (a loaded machine is slow)."""
STOP_TIMEOUT_S = 30.0
"""How long a server may take to exit after SIGTERM before it is killed (and the kill reported).

A server closing WebRTC peers and draining finals on a loaded 2-core machine has taken over 10 s.
"""
LOG_TAIL_CHARS = 6000

SERVERS_USED = pytest.StashKey[list["PalabreServer"]]()


# --- test speech ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    """The folder of synthesised test speech (built once per session; skipped files are cached)."""
    require_tool("espeak-ng")
    proc = subprocess.run(
        [sys.executable, str(FIXTURES / "make_speech.py"), str(GENERATED), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"make_speech.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return GENERATED


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    """The recorded speech (refs.json lists it): PALABRE_SHARED_AUDIO, default ../shared/audio of the
    repository. Tests using it are marked `real_speech`; skipped when it is missing, failed in CI."""
    folder = Path(os.environ.get("PALABRE_SHARED_AUDIO", REPO_ROOT.parent / "shared" / "audio"))
    if not (folder / "refs.json").is_file():
        message = f"no recorded speech in {folder} (set PALABRE_SHARED_AUDIO)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on a free loopback port for the whole session (`tests/postgresql.py`)."""
    if postgresql_bin() is None:
        missing("PostgreSQL is not installed (./dev setup installs the postgresql package)")
    server = start_postgres(free_port())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def speech_manifest(speech_dir: Path) -> dict[str, Any]:
    """`manifest.json` of the test speech: {"files": {name: {"language", "text", "utterances": [...]}}}."""
    manifest: dict[str, Any] = json.loads((speech_dir / "manifest.json").read_text())
    return manifest


# --- real servers --------------------------------------------------------------------------------


@dataclass
class PalabreServer:
    """A `palabre serve` subprocess listening on 127.0.0.1."""

    model: str | None
    """The `--model` given; None: the default server (a model per language group)."""
    args: tuple[str, ...]
    port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    _log_file: Any = field(repr=False, default=None)
    death_reported: bool = False
    """Whether a test has already failed because this server died (see `problem`)."""

    @property
    def url(self) -> str:
        """The WebSocket streaming endpoint."""
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    @property
    def http(self) -> str:
        """Base HTTP URL (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.poll() is None

    def problem(self, timeout: float = ALIVE_CHECK_TIMEOUT_S) -> str | None:
        """None when the process runs and /healthz answers 200; else what is wrong with it.

        A server that fails to answer gets a moment to finish exiting, so a crash under way when
        the test ended is reported with its exit code.
        """
        if self.proc.poll() is not None:
            return f"exited with code {self.proc.returncode}"
        try:
            with urllib.request.urlopen(self.http + "/healthz", timeout=timeout) as resp:
                if resp.status == 200:
                    return None
                failure = f"/healthz answered {resp.status}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            failure = f"/healthz failed: {exc}"
        try:
            return f"exited with code {self.proc.wait(2.0)}"
        except subprocess.TimeoutExpired:
            return f"running, but {failure}"

    def describe(self) -> str:
        """`palabre serve` with its model and arguments, for messages."""
        return f"palabre server {self.model} {' '.join(self.args)} (port {self.port})"

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The last `chars` characters of the server's combined stdout/stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<no log: {exc}>"
        return text[-chars:]

    def get_json(self, path: str, timeout: float = 5.0) -> Any:
        """GET `path` and parse the JSON body."""
        with urllib.request.urlopen(self.http + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_command() -> list[str]:
    """How to run the server: the `palabre` console script next to this Python, else `-m server.cli`."""
    script = Path(sys.executable).parent / "palabre"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "server.cli"]


def start_server(
    model: str | None,
    args: tuple[str, ...],
    workdir: Path,
    *,
    timeout: float = HEALTH_TIMEOUT_S,
    attempts: int = 3,
) -> PalabreServer:
    """Start `palabre serve` on a free port and wait for `/healthz` to answer 200.

    Retries on another port when the process dies early (a port taken between probe and bind);
    raises RuntimeError, with the server's log, when it never becomes healthy.
    """
    last_error = ""
    for attempt in range(attempts):
        port = free_port()
        data_dir = workdir / f"data-{port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = workdir / f"server-{port}.log"
        log_file = open(log_path, "wb")  # closed by PalabreServer.stop
        cmd = [
            *server_command(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            *(("--model", model) if model is not None else ()),
            *args,
        ]
        log_file.write(("$ " + " ".join(cmd) + "\n").encode())
        log_file.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        server = PalabreServer(model, args, port, data_dir, log_path, proc, log_file)
        if wait_healthy(server, timeout):
            return server
        server.stop()
        last_error = f"attempt {attempt + 1}: server on port {port} exited with {proc.returncode}"
        log = server.log_tail()
        if "address already in use" not in log.lower():
            raise RuntimeError(f"palabre serve never became healthy ({last_error}). Log:\n{log}")
    raise RuntimeError(f"palabre serve could not start: {last_error}")


def wait_healthy(server: PalabreServer, timeout: float) -> bool:
    """Poll GET /healthz until 200 (True), the process exits or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            return False
        try:
            with urllib.request.urlopen(server.http + "/healthz", timeout=2.0) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.25)
    return False


class ServerPool:
    """One running server per (model, extra arguments) for the whole session."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: dict[tuple[str | None, tuple[str, ...]], PalabreServer] = {}

    def get(self, model: str | None, args: tuple[str, ...]) -> PalabreServer:
        """The running server for this configuration, started as needed.

        A server that died is replaced by a fresh one only once a test has failed for it: if no
        test has yet (it died between tests), this test fails, and the next one gets a new server.
        """
        key = (model, args)
        server = self.servers.get(key)
        if server is not None and not server.alive():
            server.stop()
            del self.servers[key]
            if not server.death_reported:
                server.death_reported = True
                pytest.fail(
                    f"{server.describe()} died (exit code {server.proc.returncode}) after the last test "
                    f"that used it had passed. Log:\n{server.log_tail()}",
                    pytrace=False,
                )
            server = None
        if server is None:
            error = ""
            try:
                server = start_server(model, args, self.workdir)
            except RuntimeError as exc:
                error = str(exc)
            if server is None:
                pytest.fail(error, pytrace=False)  # outside `except`: no chained traceback
            self.servers[key] = server
        return server

    def close(self) -> list[str]:
        """Stop every server (SIGTERM); what went wrong with those that did not exit with status 0."""
        failures = []
        for server in self.servers.values():
            was_running = server.alive()
            server.stop()
            if server.proc.returncode != 0 and not server.death_reported:
                when = (
                    f"on SIGTERM (killed after {STOP_TIMEOUT_S:.0f} s if -9)"
                    if was_running
                    else "before the end of the session"
                )
                failures.append(
                    f"{server.describe()} exited with code {server.proc.returncode} {when}. "
                    f"Log:\n{server.log_tail()}"
                )
        self.servers.clear()
        return failures


@pytest.fixture(scope="session")
def _server_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    pool = ServerPool(tmp_path_factory.mktemp("palabre-servers"))
    yield pool
    failures = pool.close()
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


@pytest.fixture
def palabre_server(_server_pool: ServerPool, request: pytest.FixtureRequest) -> Callable[..., PalabreServer]:
    """A factory: `palabre_server(model="tiny.en", *extra_args)` → a running, healthy PalabreServer
    (`model=None`: the default server, `tiny.en` for English and `base` for the other languages).

    Servers are shared across the session per (model, extra args); the ones a test used have their
    log tail attached to its report when it fails.
    """
    used = request.node.stash.setdefault(SERVERS_USED, [])

    def get(model: str | None = "tiny.en", *args: str) -> PalabreServer:
        server = _server_pool.get(model, tuple(args))
        if server not in used:
            used.append(server)
        return server

    return get


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Fail a passing test after which a server it used is dead or deaf; attach the logs of the
    servers a failing test used to its report."""
    report = yield
    if report.when == "call" and report.passed:
        for server in item.stash.get(SERVERS_USED, []):
            problem = None if server.death_reported else server.problem()
            if problem is not None:
                server.death_reported = not server.alive()
                report.outcome = "failed"
                report.longrepr = f"{server.describe()} {problem} after this test (a crash is a failure)"
    if report.failed:
        for server in item.stash.get(SERVERS_USED, []):
            server.death_reported = server.death_reported or not server.alive()
            state = "running" if server.alive() else f"exited {server.proc.returncode}"
            report.sections.append(
                (f"palabre server {server.model} {' '.join(server.args)} ({state}) log", server.log_tail())
            )
    return report
