"""Private local services as child processes: redis-server, moto's DynamoDB server and the
inference server. Used by ``make dev`` and by the tests (which can also kill them)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


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


@dataclass
class Service:
    name: str
    argv: list[str]
    port: int
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> Service:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(self.argv, env={**os.environ, **self.env}, stdout=log,
                                        stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.name} not ready on port {self.port} after {timeout_s:.0f} s; see {self.log_path}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """As a crash would: SIGKILL, no cleanup."""
        if self.alive:
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        if not self.alive:
            return
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make redis` (apt-get install redis-server)")
    return binary


def redis_service(port: int, workdir: Path, log_dir: Path) -> Service:
    workdir.mkdir(parents=True, exist_ok=True)
    return Service(
        name="redis",
        argv=[redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--dir", str(workdir)],
        port=port,
        ready=lambda: port_open(port),
        log_path=log_dir / "redis.log",
    )


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
    )


def create_table(dynamodb: Any, table_name: str) -> None:
    from infra.local.template import table_definition

    existing = dynamodb.list_tables()["TableNames"]
    if table_name not in existing:
        dynamodb.create_table(TableName=table_name, **table_definition())
        dynamodb.get_waiter("table_exists").wait(TableName=table_name)
