"""The front door of one worker host, as `serve` starts and supervises it: pump + store (+ HTTP
listener), in a process of their own (its body: `service.serve_front_door`).

`avalon-worker serve --listen-http HOST:PORT` starts this process once its ZMQ endpoint is up,
and so does `serve --store URL` on a host that only pulls its orders from a shared store (no
HTTP here: stateless `avalon-worker listener` processes elsewhere take the requests). The process
holds no secret: it sees only the worker's public signup and the requesters' ciphertexts, and
reaches the worker like any client, over ZMQ. Keeping it apart leaves the supervisor's event loop
and the forked worker processes untouched, and gives the HTTP parsing and the store a core of
their own.

`serve` binds the HTTP port itself, before it creates anything (a port in use is a one-line error
and no keys are left behind), keeps it, and hands it to each front-door process it starts. It
supervises that process (`FrontDoor`, with the decisions in `RestartPolicy`): one that dies is
started again with a growing pause, and requests that arrive meanwhile wait in the port's backlog;
one that cannot serve on its first start, or cannot be started again, stops `serve` with one line
saying why. The process reports to `serve` over a pipe: "ready" once it serves, or why it cannot.

It stops on SIGTERM or SIGINT, or when the `serve` process that started it is gone (killed
with SIGKILL, say): in-flight orders left unanswered are then picked up again after their
leases expire, by the next pump for that worker.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from .. import defaults
from ..errors import Error, SetupError
from . import http_guard
from .http_guard import HttpLimits

logger = logging.getLogger(__name__)

READY_PREFIX = "listener on "
PUMP_READY_PREFIX = "pulling orders for worker "
PARENT_CHECK_S = 0.5


@dataclass(frozen=True)
class FrontConfig:
    endpoint: str  # the worker's ZMQ endpoint
    listen: str  # HOST:PORT for HTTP (port 0: any free port), or "" for none
    store: str  # where the store is: a SQLite file or directory, or a postgresql:// URL
    max_request_bytes: int
    result_ttl_s: float = defaults.RESULT_TTL_S
    lease_s: float = defaults.LEASE_S
    max_in_flight: int = defaults.FRONT_MAX_IN_FLIGHT
    max_pending: int = defaults.MAX_PENDING
    log_level: str = "INFO"
    heartbeat_s: float = defaults.HEARTBEAT_S
    stale_after_s: float = defaults.STALE_AFTER_S
    limits: HttpLimits = HttpLimits()
    pending_ttl_s: float = defaults.PENDING_TTL_S

    def to_json(self) -> str:
        """The settings for the front-door process, but the store: it travels in the process's
        environment (`defaults.STORE_ENV`), as a database URL may hold a password."""
        return json.dumps({**asdict(self), "store": None})

    @classmethod
    def from_json(cls, text: str, store: str) -> FrontConfig:
        """The settings `to_json` wrote, with the store; `ValueError` (or `TypeError`) if they are not."""
        values = json.loads(text)
        return cls(**{**values, "store": store, "limits": HttpLimits(**values["limits"])})


class FrontDoorError(Error):
    """The front door stopped and could not be started again: `serve` stops (exit status 1)."""


class FrontDoorSetupError(SetupError):
    """The front door could not serve on its first start (a store that cannot be opened): exit 2."""


def split_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (or [v6]:PORT) → (host, port); ValueError with a message otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen-http needs HOST:PORT, e.g. 127.0.0.1:8080 (got {text!r})")
    return host.strip("[]") or "0.0.0.0", int(port)


def bind_listen(text: str) -> socket.socket:
    """The listening socket for `--listen-http HOST:PORT`; `SetupError` (one line) if the
    address cannot be had, e.g. the port is in use."""
    try:
        host, port = split_listen(text)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, backlog=http_guard.BACKLOG)
    except OSError as exc:
        raise SetupError(f"cannot serve HTTP on {text}: {exc.strerror or exc}") from None


# supervision ---------------------------------------------------------------------------------------


@dataclass
class RestartPolicy:
    """When to start the front door again after it stopped, and when to give up; no I/O, the
    time passed in.

    A front door that has never served is not started again: what stopped it (a store that cannot
    be opened) is a set-up fault, reported at once. Once it has served, it is started again after
    `first_delay_s`, the pause doubling (up to `max_delay_s`) while it keeps stopping within
    `stable_after_s` of its start; after `max_failed_starts` starts in a row that never served,
    it is given up."""

    first_delay_s: float = 0.5
    max_delay_s: float = 8.0
    stable_after_s: float = 30.0
    max_failed_starts: int = 4
    served: bool = False
    failed_starts: int = 0
    delay_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.delay_s = self.first_delay_s

    def ready(self) -> None:
        """The process serves."""
        self.served = True
        self.failed_starts = 0

    def stopped(self, started: float, served: bool, now: float) -> float | None:
        """The process stopped (`served`: after it had reported ready); when to start it
        again, or None to give up."""
        if not self.served:
            return None
        if not served:
            self.failed_starts += 1
            if self.failed_starts >= self.max_failed_starts:
                return None
        if now - started >= self.stable_after_s:
            self.delay_s = self.first_delay_s
        delay = self.delay_s
        self.delay_s = min(self.delay_s * 2, self.max_delay_s)
        return now + delay


def describe_returncode(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class FrontDoor:
    """The front-door process of `serve`, supervised: started by `start`, watched by `check`
    (which the pool's loop calls twice a second), started again as `RestartPolicy` says, and
    stopped by `stop`. `on_failure` is called once if it is given up; `failure` then says why.
    `announce` is printed on standard output the first time it serves."""

    def __init__(self, config: FrontConfig, sock: socket.socket | None, on_failure: Callable[[], None] = lambda: None,
                 policy: RestartPolicy | None = None) -> None:
        self.config = config
        self.sock = sock
        self.on_failure = on_failure
        self.policy = policy or RestartPolicy()
        self.failure: Error | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._status = -1  # the read end of the running process's status pipe
        self._said = b""
        self._started = 0.0
        self._served = False
        self._restart_at: float | None = None

    def begin(self, endpoint: str, now: float) -> None:
        """Start the process for the worker whose endpoint is now bound at `endpoint`;
        `FrontDoorSetupError` if no process can be made."""
        self.config = replace(self.config, endpoint=connectable(endpoint))
        try:
            self.start(now)
        except OSError as exc:
            raise FrontDoorSetupError(f"the HTTP front door cannot be started: {exc.strerror or exc}") from None

    def start(self, now: float) -> None:
        """Start the process (OSError if none can be made)."""
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(read_end, False)
        fds = [write_end] + ([self.sock.fileno()] if self.sock is not None else [])
        arguments = ["--settings", self.config.to_json(), "--status-fd", str(write_end)]
        if self.sock is not None:
            arguments += ["--listen-fd", str(self.sock.fileno())]
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "avalon_worker._cli.front_door", *arguments], stdin=subprocess.DEVNULL,
                env={**os.environ, defaults.STORE_ENV: self.config.store}, pass_fds=fds,
            )
        except OSError:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self._status, self._said, self._started, self._served = read_end, b"", now, False

    def pids(self) -> list[int]:
        """The front door's process, for the supervisor to leave alone when it kills orphans."""
        return [self.process.pid] if self.process is not None and self.process.returncode is None else []

    def close_inherited(self) -> None:
        """In a process forked from `serve` (a worker process): let go of the port and the pipe."""
        if self.sock is not None:
            self.sock.close()
        if self._status >= 0:
            os.close(self._status)

    def check(self, now: float) -> None:
        """Read what the process said, notice if it stopped, start it again when due."""
        if self.failure is not None:
            return
        if self.process is None:
            if self._restart_at is not None and now >= self._restart_at:
                self._restart_at = None
                try:
                    self.start(now)
                except OSError as exc:  # no process could be made (out of memory, of processes)
                    self._started, self._served = now, False
                    self._stopped(f"it could not be started ({exc.strerror or exc})", now)
            return
        self._read_status()
        code = self.process.poll()
        if code is None:
            return
        self._read_status()
        os.close(self._status)
        self._status = -1
        self.process = None
        self._stopped(self._reason() or f"it {describe_returncode(code)}", now, code)

    def _stopped(self, reason: str, now: float, code: int | None = None) -> None:
        again = self.policy.stopped(self._started, self._served, now)
        if again is None:
            self._give_up(reason, code)
            return
        logger.warning("the HTTP front door stopped (%s); starting it again in %.1f s", reason, again - now)
        self._restart_at = again

    def _read_status(self) -> None:
        while True:
            try:
                data = os.read(self._status, 4096)
            except BlockingIOError:
                return
            if not data:
                return
            self._said += data
            if not self._served and b"ready\t" in self._said:
                self._served = True
                first = not self.policy.served
                self.policy.ready()
                announcement = self._said.split(b"ready\t", 1)[1].split(b"\n", 1)[0].decode()
                if first:
                    print(announcement, flush=True)
                else:
                    logger.warning("the HTTP front door serves again")

    def _reason(self) -> str:
        for line in self._said.decode(errors="replace").splitlines():
            if line.startswith("failed\t"):
                return line[len("failed\t"):]
        return ""

    def _give_up(self, reason: str, code: int | None = None) -> None:
        if self.policy.served:
            self.failure = FrontDoorError(
                f"the HTTP front door stopped and could not be started again "
                f"({self.policy.failed_starts} attempts): {reason}")
        elif code == 1:  # it could not reach its store: not a set-up error
            self.failure = FrontDoorError(f"the HTTP front door cannot serve: {reason}")
        else:
            self.failure = FrontDoorSetupError(f"the HTTP front door cannot serve: {reason}")
        self.on_failure()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the process to stop (it gives back the orders it could not finish) and wait; let
        go of the port."""
        process, self.process = self.process, None
        if process is not None:
            stop(process, timeout_s)
        if self._status >= 0:
            os.close(self._status)
            self._status = -1
        if self.sock is not None:
            self.sock.close()


def connectable(endpoint: str) -> str:
    """A bound endpoint as a client reaches it from this host (`*` and 0.0.0.0 → loopback)."""
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:"):
        if endpoint.startswith(wildcard):
            return "tcp://127.0.0.1:" + endpoint[len(wildcard):]
    return endpoint


def stop(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Ask the front door to stop (it gives back the orders it could not finish) and wait."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def status_writer(fd: int) -> Callable[[str, str], None]:
    """Tell `serve` (over the pipe `fd`) "ready" or "failed", with one line of text."""

    def say(kind: str, text: str) -> None:
        if fd < 0:
            if kind == "ready":
                print(text, flush=True)
            return
        try:
            os.write(fd, f"{kind}\t{' '.join(text.split())}\n".encode())
        except OSError:  # `serve` has gone; we stop with it
            pass

    return say
