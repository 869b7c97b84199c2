"""A real PostgreSQL server for the tests: Debian's `postgresql` binaries, `initdb` in a temporary
directory, run as an unprivileged user on a free 127.0.0.1 port, removed afterwards.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
`postgres` account the Debian package creates (or `nobody` without it). Nothing is installed or
configured system-wide: no cluster of `pg_ctlcluster`, no systemd unit, no Unix socket.
"""

from __future__ import annotations

import os
import pwd
import random
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SUPERUSER = "postgres"


class PostgresUnavailable(Exception):
    """PostgreSQL cannot be had on this machine; the message says why."""


def find_bindir() -> Path:
    """The directory holding `initdb`, `pg_ctl` and `postgres`: `$POSTGRES_BINDIR`, Debian's
    newest `/usr/lib/postgresql/N/bin`, or `PATH`."""
    candidates = []
    if os.environ.get("POSTGRES_BINDIR"):
        candidates.append(Path(os.environ["POSTGRES_BINDIR"]))

    def version(path: Path) -> int:
        return int(path.parent.name) if path.parent.name.isdigit() else 0

    candidates += sorted((p.parent for p in Path("/usr/lib/postgresql").glob("*/bin")), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if all((directory / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    raise PostgresUnavailable("the PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed")


def _account() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("POSTGRES_TEST_USER", ""), "postgres", "nobody"):
        if not name:
            continue
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and no unprivileged account (postgres, nobody) to run PostgreSQL as")


def _plain(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"not a plain SQL name: {name!r}")
    return name


def free_port() -> int:
    """A port free on 127.0.0.1 now, below Linux's ephemeral range (32768 and up), where the
    ports that other tests' sockets are given (bound to port 0, or connecting) never land."""
    for _ in range(100):
        port = random.randrange(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free port on 127.0.0.1 between 20000 and 32000")


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory. `fsync` off (the default) keeps the tests
    fast; a crash of the server process loses nothing either way, only a power cut would."""

    def __init__(self, *, fsync: bool = False, settings: Sequence[str] = ()) -> None:
        self.bindir = find_bindir()
        self.settings = tuple(settings)  # more `name=value` server settings (`-c`), e.g. for a benchmark
        self.account = _account()
        self.root = Path(tempfile.mkdtemp(prefix="avalon-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._started = False  # once it has started, its port is in its clients' URLs
        self.fsync = fsync
        try:
            if self.account is not None:
                os.chown(self.root, self.account.pw_uid, self.account.pw_gid)
            self._run(
                "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                "--locale=C", "--no-sync",
            )
        except BaseException:
            self.remove()
            raise

    def has_library(self, name: str) -> bool:
        """Whether the server can load the shared library `name` (a contrib module, e.g.
        `pg_stat_statements`, packaged with Debian's server)."""
        return (self.bindir.parent / "lib" / f"{name}.so").is_file()

    @property
    def user(self) -> str:
        return self.account.pw_name if self.account is not None else pwd.getpwuid(os.geteuid()).pw_name

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.root), "TZ": "UTC"}
        kwargs: dict[str, Any] = {}
        if self.account is not None:
            kwargs = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
        try:
            result = subprocess.run(
                [str(self.bindir / program), *args], capture_output=True, text=True, env=env, cwd=self.root,
                timeout=timeout, **kwargs,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise PostgresUnavailable(f"{program} could not run: {exc}") from None
        if check and result.returncode != 0:
            raise PostgresUnavailable(f"{program} failed ({result.returncode}): {(result.stderr or result.stdout)[-2000:]}")
        return result

    def start(self, retries: int = 3) -> None:
        """Start (or start again, on the same port and data) and wait until it accepts connections."""
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            "-c unix_socket_directories=''",
            f"-c fsync={'on' if self.fsync else 'off'}",
            "-c max_connections=200",
            *(f"-c {setting}" for setting in self.settings),
        ]
        result = self._run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", " ".join(options),
            check=False,
        )
        if result.returncode != 0 and not self._started and "Address already in use" in self.log_tail() and retries:
            self.port = free_port()  # taken between our look and the server's bind: another port, as no client has ours
            self.start(retries - 1)
            return
        if result.returncode != 0:
            raise PostgresUnavailable(f"the server did not start: {self.log_tail()}")
        self._started = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` (roll back sessions, checkpoint) or `immediate` (as a crash)."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60", check=False)

    def running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def execute(self, statements: Sequence[str], database: str = "postgres") -> None:
        """Run statements outside a transaction (as `CREATE DATABASE` needs) as the superuser."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as connection:
            for statement in statements:
                connection.execute(statement)  # type: ignore[arg-type]

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        self.execute([f"CREATE DATABASE {_plain(name)}"])
        return self.url(name)

    def create_schema(self, name: str) -> str:
        """A new empty schema in the `postgres` database; a URL whose connections see only it
        (a database would take a second to make; a schema takes milliseconds)."""
        self.execute([f"CREATE SCHEMA {_plain(name)}"])
        return f"{self.url()}?options=-csearch_path%3D{name}"

    def remove(self) -> None:
        """Stop the server if it runs and delete its directory."""
        if self.data.exists():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
