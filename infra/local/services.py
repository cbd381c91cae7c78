"""Private local services as child processes, for development and tests only: redis-server,
the DynamoDB emulator (infra/local/dynamodb), moto's server (the tests' CloudWatch,
EventBridge, SSM and Secrets Manager), the inference server, the flusher, webhook delivery and
projector loops. Used by ``make dev`` (under infra/local/supervisor.py,
which restarts what crashes) and by the tests (which can also kill them).

A service's owner starts and stops it: `start()` marks it wanted, `stop()` and `kill()` mark
it not wanted, so the supervisor leaves it down. A process that ends any other way (a crash,
`kill -9` from outside) is restarted by the supervisor with `restart()`."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _ends_within(process: subprocess.Popen, seconds: float) -> bool:
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def describe_exit(status: int | None) -> str:
    """A process's exit status in words: "killed by SIGKILL", "exit code 3"."""
    if status is None:
        return "still running"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit code {status}"


@dataclass
class Service:
    name: str
    argv: list[str]
    port: int
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    ready_timeout_s: float = 60.0
    # Ready only once it stayed up this long too: for a process with no port to probe, so a
    # start that crashes at once counts as a failed start, not as a start and a crash.
    settle_s: float = 0.0
    # The process gets SIGKILL when the thread that started it ends, even by kill -9 of this
    # process (Linux, setpriv --pdeathsig): no orphan holds a port. Only for services started
    # and restarted from threads that outlive them (the stack's main and supervisor threads).
    die_with_parent: bool = False
    # Started by its owner and not stopped since: a process that ends is a crash.
    wanted: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start(self, timeout_s: float | None = None) -> Service:
        """Start it (again) and wait until it is ready."""
        with self._lock:
            self.wanted = True
            process = self._spawn()
        return self._await_ready(process, timeout_s)

    def restart(self, timeout_s: float | None = None) -> Service:
        """The supervisor's start: only while still wanted (never after its owner's stop),
        and not twice (its owner may have started it again meanwhile)."""
        with self._lock:
            if not self.wanted:
                raise RuntimeError(f"{self.name} was stopped")
            process = self.process if self.alive and self.process is not None else self._spawn()
        return self._await_ready(process, timeout_s)

    def ended_while_wanted(self) -> subprocess.Popen | None:
        """The current process, if it ended though nobody stopped it: a crash."""
        with self._lock:  # wanted and process change together (start, stop, kill)
            process = self.process
            if self.wanted and process is not None and process.poll() is not None:
                return process
        return None

    def _spawn(self) -> subprocess.Popen:
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *self.argv] if self.die_with_parent and _SETPRIV else self.argv
        try:
            self.process = subprocess.Popen(argv, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # the child has its own copy
        return self.process

    def _await_ready(self, process: subprocess.Popen, timeout_s: float | None) -> Service:
        timeout_s = self.ready_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{self.name} {describe_exit(process.returncode)}; see {self.log_path}")
            if self.ready() and not _ends_within(process, self.settle_s):
                return self
            time.sleep(0.1)
        self._end(process, signal.SIGKILL)
        raise TimeoutError(f"{self.name} not ready on port {self.port} after {timeout_s:.0f} s; see {self.log_path}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.alive and self.process is not None else None

    def kill(self) -> None:
        """As a crash would: SIGKILL, no cleanup. Its owner's act: the supervisor leaves it down."""
        with self._lock:
            self.wanted = False
            if self.process is not None:
                self._end(self.process, signal.SIGKILL)

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            self.wanted = False
            if self.process is None or self.process.poll() is not None:
                return
            self._end(self.process, signal.SIGTERM, timeout_s)

    @staticmethod
    def _end(process: subprocess.Popen, sig: signal.Signals, timeout_s: float = 10.0) -> None:
        """Signal the process's group (its own session) and reap it; SIGKILL after timeout_s."""
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make redis` (apt-get install redis-server)")
    return binary


def redis_service(port: int, workdir: Path, log_dir: Path, *, durable: bool = False,
                  user: tuple[str, str] | None = None) -> Service:
    """A private redis-server on 127.0.0.1:port with its files in workdir.

    durable: as MemoryDB is, an append-only file fsynced before every reply (appendfsync
    always), so an acknowledged write survives kill -9 and a restart on the same workdir.
    user: (name, password) of the only user, as MemoryDB's ACLs have one; the default user
    is then disabled. The password goes into redis.conf (mode 0600) only as its SHA-256."""
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [f"port {port}", "bind 127.0.0.1", f'dir "{workdir}"', 'save ""', "daemonize no"]
    lines += ["appendonly yes", "appendfsync always"] if durable else ["appendonly no"]
    if user is not None:
        name, password = user
        # Disabled, but with every permission: redis-server replays the append-only file as the
        # default user, and a MULTI/EXEC it may not run is dropped (NOPERM) while loading.
        lines += ["user default off ~* &* +@all",
                  f"user {name} on #{hashlib.sha256(password.encode()).hexdigest()} ~* &* +@all"]
    config = workdir / "redis.conf"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return Service(
        name="redis",
        argv=[redis_binary(), str(config)],
        port=port,
        ready=lambda: _redis_answers(port),
        log_path=log_dir / "redis.log",
    )


def _redis_answers(port: int) -> bool:
    """Listening and done loading its append-only file (it answers LOADING until then)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH", b"-NOPERM"))


def moto_service(port: int, log_dir: Path) -> Service:
    return Service(
        name="dynamodb (moto)",
        argv=[sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        port=port,
        ready=lambda: http_ok(f"http://127.0.0.1:{port}/moto-api/"),
        log_path=log_dir / "moto.log",
    )


def dynamodb_service(port: int, db_path: Path, log_dir: Path) -> Service:
    """The project's own DynamoDB (infra/local/dynamodb): SQLite-backed, durable in ``db_path``."""
    return Service(
        name="dynamodb",
        argv=[sys.executable, "-m", "infra.local.dynamodb", "--host", "127.0.0.1", "--port", str(port),
              "--db", str(db_path), "--log-level", "WARNING"],
        port=port,
        ready=lambda: http_ok(f"http://127.0.0.1:{port}/"),
        log_path=log_dir / "dynamodb.log",
    )


def inference_service(port: int, model_dir: Path, log_dir: Path, extra_env: dict[str, str] | None = None) -> Service:
    return Service(
        name="inference",
        argv=[sys.executable, "-m", "inference_image.server"],
        port=port,
        ready=lambda: http_ok(f"http://127.0.0.1:{port}/ping"),
        env={"PORT": str(port), "HOST": "127.0.0.1", "MAAS_MODEL_DIR": str(model_dir), **(extra_env or {})},
        log_path=log_dir / "inference.log",
        ready_timeout_s=180.0,  # loads the model
    )


def webhooks_service(interval_s: float, env: dict[str, str], log_dir: Path) -> Service:
    """The webhook delivery worker as its own process (DeliveryFunction's work in AWS): stored
    events to the webhooks subscribed to them, with retries, and the key.expiring sweep."""
    return Service(
        name="webhooks",
        argv=[sys.executable, "-m", "gateway.cli", "webhooks", "deliver", "--loop", str(interval_s)],
        port=0,
        ready=lambda: True,
        env=env,
        log_path=log_dir / "webhooks.log",
        settle_s=1.0,
    )


def batches_service(interval_s: float, env: dict[str, str], log_dir: Path) -> Service:
    """The Batch API's worker as its own process (BatchWorkerFunction's work in AWS)."""
    return Service(
        name="batches",
        argv=[sys.executable, "-m", "gateway.cli", "batches", "work", "--loop", str(interval_s)],
        port=0,
        ready=lambda: True,
        env=env,
        log_path=log_dir / "batches.log",
        settle_s=1.0,
    )


def files_service(port: int, env: dict[str, str], log_dir: Path) -> Service:
    """The Batch API's files by signed URL (infra/local/file_server.py; S3 presigns them in AWS)."""
    return Service(
        name="files",
        argv=[sys.executable, "-m", "infra.local.file_server", "--port", str(port)],
        port=port,
        ready=lambda: port_open(port),
        env=env,
        log_path=log_dir / "files.log",
    )


def flusher_service(interval_s: float, env: dict[str, str], log_dir: Path) -> Service:
    """The flusher loop as its own process (the scheduled FlusherFunction's work, every
    interval_s): usage streams in Redis -> the DynamoDB ledger. It listens on no port."""
    return Service(
        name="flusher",
        argv=[sys.executable, "-m", "gateway.cli", "flush", "--json", "--loop", str(interval_s)],
        port=0,
        ready=lambda: True,
        env=env,
        log_path=log_dir / "flusher.log",
        settle_s=1.0,
    )


def projector_service(interval_s: float, env: dict[str, str], log_dir: Path) -> Service:
    """The projector loop as its own process (ProjectorFunction's work in AWS): admin changes
    committed to DynamoDB whose Redis projection failed are projected again, every interval_s."""
    return Service(
        name="projector",
        argv=[sys.executable, "-m", "gateway.cli", "projections", "repair", "--loop", str(interval_s)],
        port=0,
        ready=lambda: True,
        env=env,
        log_path=log_dir / "projector.log",
        settle_s=1.0,
    )


def create_table(dynamodb: Any, table_name: str) -> None:
    from infra.local.template import table_definition

    existing = [n for page in dynamodb.get_paginator("list_tables").paginate() for n in page["TableNames"]]
    if table_name not in existing:
        dynamodb.create_table(TableName=table_name, **table_definition())
        dynamodb.get_waiter("table_exists").wait(TableName=table_name)
