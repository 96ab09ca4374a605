"""A throwaway PostgreSQL server for tests: Debian's `initdb` and `pg_ctl` in a temporary directory.

PostgreSQL refuses to run as root, so as root the cluster belongs to an unprivileged user
(`palabre-test`, created with `useradd` when missing) and its commands run through `runuser`.
The server listens on a free loopback TCP port only (no Unix socket), with password
authentication for the user `palabre`; `PostgresServer.create_database` makes a fresh database
for each test that wants one. `./dev setup` installs the `postgresql` package.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

TEST_USER = "palabre-test"
"""The unprivileged system user that owns the cluster when the tests run as root."""
ROLE = "palabre"
PASSWORD = "palabre-test-password"


def postgresql_bin() -> Path | None:
    """The newest `/usr/lib/postgresql/<version>/bin` that holds `initdb`, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name)
    )
    return Path(found[-1]).parent if found else None


def _as_owner(command: list[str], owner: str | None) -> list[str]:
    return command if owner is None else ["runuser", "-u", owner, "--", *command]


def _ensure_test_user() -> str:
    try:
        subprocess.run(["id", "-u", TEST_USER], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
            check=True,
            capture_output=True,
        )
    return TEST_USER


@dataclass
class PostgresServer:
    """A running test cluster on 127.0.0.1:`port`."""

    bin_dir: Path
    root: Path
    port: int
    owner: str | None
    """The system user running it (None: the current one)."""
    options: str = ""
    """The server's command-line options (`pg_ctl -o`), for `start_again`."""

    def url(self, database: str, password: str = PASSWORD) -> str:
        """The connection URI of a database of this server, as user `palabre`."""
        return f"postgresql://{ROLE}:{password}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser; returns psql's output."""
        command = [str(self.bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        proc = subprocess.run(
            _as_owner([*command, "-d", database, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], self.owner),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return proc.stdout

    def dump(self, database: str) -> str:
        """`pg_dump` of a database (plain SQL, schema and every row), as the superuser."""
        command = [str(self.bin_dir / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        proc = subprocess.run(
            _as_owner([*command, "-d", database], self.owner),
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return proc.stdout

    def create_database(self) -> str:
        """A new empty database owned by `palabre`; returns its connection URI."""
        name = "t_" + secrets.token_hex(6)
        self.psql(f"CREATE DATABASE {name} OWNER {ROLE}")
        return self.url(name)

    def shut_down(self) -> None:
        """Stop the server (`pg_ctl stop -m fast`: its connections are cut), keeping its files."""
        subprocess.run(
            _as_owner(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "stop"],
                self.owner,
            ),
            capture_output=True,
            timeout=60,
        )

    def start_again(self) -> None:
        """Start the server that `shut_down` stopped, on the same port (waits until it accepts)."""
        command = [str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "log")]
        subprocess.run(
            _as_owner([*command, "-o", self.options, "-w", "start"], self.owner),
            capture_output=True,
            check=True,
            timeout=120,
        )

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its files."""
        self.shut_down()
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(port: int, *, fsync: bool = False) -> PostgresServer:
    """initdb a cluster in a new temporary directory and start it on `port` (RuntimeError if it fails).

    `fsync` off (for tests: faster, and a test server need not survive a power loss); benchmarks
    turn it on, as PostgreSQL's default is.
    """
    bin_dir = postgresql_bin()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)")
    owner = _ensure_test_user() if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="palabre-pg-"))
    root.chmod(0o755)
    if owner is not None:
        shutil.chown(root, owner)
    data = root / "data"
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k '' -c max_connections=300"
    options += f" -c fsync={'on' if fsync else 'off'}"
    server = PostgresServer(bin_dir, root, port, owner, options)

    def run(command: list[str]) -> None:
        proc = subprocess.run(_as_owner(command, owner), capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stdout}\n{proc.stderr}")

    run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]
    )
    (data / "pg_hba.conf").write_text(
        "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
    )
    run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "start"])
    server.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
    return server
