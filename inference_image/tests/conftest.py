"""Fixtures: the real exported model (exported once, reused while valid) and real server
processes on free ports."""

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The exported model: ``$MAAS_MODEL_DIR`` or ``<repo>/.maas/model``, exported if needed."""
    from inference_image.export import export

    out = Path(os.environ.get("MAAS_MODEL_DIR") or REPO / ".maas" / "model").resolve()
    export(out)  # returns at once when the report matches the files
    return out


@pytest.fixture(scope="session")
def st_model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from inference_image.export import source_dir

    return SentenceTransformer(str(source_dir()), device="cpu")


@pytest.fixture(scope="session")
def tokenizer(model_dir: Path) -> Any:
    from inference_image.tokenizer import load_tokenizer

    return load_tokenizer(model_dir / "tokenizer.json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProc:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def get(self, path: str, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
        return http("GET", self.url + path, timeout=timeout)

    def post(self, path: str, body: Any, timeout: float = 60,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return http("POST", self.url + path, data, timeout=timeout, headers=headers)

    def metric(self, name: str) -> float:
        """Sum of all samples of ``name`` (exact sample name, any labels)."""
        _, _, text = self.get("/metrics")
        total = 0.0
        for line in text.decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def http(method: str, url: str, data: bytes | None = None, timeout: float = 60,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


READY_S = 180.0


def start_server(model_dir: Path, log_path: Path, *, wait_ready: bool = True,
                 **env: str) -> ServerProc:
    """Start the server; return once /ping says 200 (or, without ``wait_ready``, once it
    answers at all)."""
    port = free_port()
    full_env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1",
                "MAAS_MODEL_DIR": str(model_dir), "MAAS_LOG_LEVEL": "warning",
                # MiniLM alone unless a test asks for more (test_models.py serves both).
                "MAAS_MODELS": "all-MiniLM-L6-v2", **env}
    log = log_path.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "inference_image.server"], cwd=REPO,
                            env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = ServerProc(f"http://127.0.0.1:{port}", proc, log_path)
    # (the local stack's deadline for the same model load: a loaded 2-core machine took more
    # than 60 s)
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            if server.get("/ping", timeout=1)[0] == 200 or not wait_ready:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server not ready within {READY_S:.0f} s:\n{server.log()}")


def stop_server(server: ServerProc) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=35)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture(scope="session")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One server with the default settings, shared by the tests that do not change them."""
    srv = start_server(model_dir, tmp_path_factory.mktemp("server") / "server.log")
    yield srv
    stop_server(srv)


@pytest.fixture
def make_server(model_dir: Path,
                tmp_path: Path) -> Iterator[Callable[..., ServerProc]]:
    """Start a server with extra environment variables; stopped after the test."""
    started: list[ServerProc] = []

    def make(wait_ready: bool = True, **env: str) -> ServerProc:
        srv = start_server(model_dir, tmp_path / f"server{len(started)}.log",
                           wait_ready=wait_ready, **env)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        stop_server(srv)
