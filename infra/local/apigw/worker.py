"""A function copy in its own process, as Lambda runs each execution environment.

Handlers keep per-invocation state in process-wide places (Powertools stores the current
event on a class attribute), so two concurrent invocations must never share a process.
The emulator's pool (infra/local/apigw/pool.py) holds one worker process per copy; each
serves one request at a time.
With MAAS_LAMBDA_LOG set, a worker's stdout and stderr (logs, EMF metrics) go to that file.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any


class HandlerFailed(Exception):
    """The handler raised; the message carries the worker's traceback (for the log only)."""


class CopyKilled(HandlerFailed):
    """The copy's process was killed by a signal mid-request (kill -9, the OOM killer): an
    outage of the machine it ran on, not a fault of the request."""


class _Context:
    def __init__(self, attributes: dict[str, Any], remaining_ms: int) -> None:
        self.__dict__.update(attributes)
        self._deadline = time.monotonic() + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _serve(conn: Connection, module_path: str, attr: str, search_path: list[str]) -> None:
    # Ctrl-C reaches the whole foreground process group: the emulator, not the terminal,
    # decides when a copy ends (a request in flight finishes, then the pipe closes).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.path[:0] = [p for p in search_path if p not in sys.path]
    log_path = os.environ.get("MAAS_LAMBDA_LOG")
    if log_path:  # what CloudWatch Logs would get: the handler's stdout and stderr
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
    try:
        spec = importlib.util.spec_from_file_location("lambda_function", module_path)
        assert spec is not None and spec.loader is not None, f"cannot load {module_path}"
        module = importlib.util.module_from_spec(spec)
        sys.modules["lambda_function"] = module
        spec.loader.exec_module(module)
        handler = getattr(module, attr)
    except BaseException:
        conn.send((False, traceback.format_exc()))
        return
    conn.send((True, None))
    while True:
        try:
            event, attributes, remaining_ms = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send((True, handler(event, _Context(attributes, remaining_ms))))
        except BaseException:
            conn.send((False, traceback.format_exc()))


class ProcessHandler:
    """Callable like the handler itself; runs it in a dedicated worker process."""

    _mp = multiprocessing.get_context("spawn")

    def __init__(self, module_path: Path, attr: str) -> None:
        self._lost = False
        self._conn, child = self._mp.Pipe()
        self._process = self._mp.Process(target=_serve, args=(child, str(module_path), attr, list(sys.path)),
                                         daemon=True, name=f"lambda:{module_path.parent.name}")
        self._process.start()
        child.close()
        try:
            ok, detail = self._conn.recv()
        except (EOFError, OSError):
            self._process.join(timeout=1)
            ok, detail = False, f"the process ended during init (exit status {self._process.exitcode})"
        if not ok:
            self.close()
            raise ImportError(f"init of {module_path} failed:\n{detail}")

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        attributes = {k: v for k, v in vars(context).items() if not k.startswith("_")}
        try:
            self._conn.send((event, attributes, context.get_remaining_time_in_millis()))
            ok, payload = self._conn.recv()
        except (EOFError, OSError) as error:
            self._lost = True  # the pipe broke: the process is gone or going, never reuse it
            self._process.join(timeout=1)
            status = self._process.exitcode
            if status is not None and status < 0:
                raise CopyKilled(f"worker process killed by signal {-status}") from None
            raise HandlerFailed(f"worker process died: {error}") from None
        if not ok:
            raise HandlerFailed(payload)
        return payload

    @property
    def alive(self) -> bool:
        return not self._lost and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def exitcode(self) -> int | None:
        """The exit status once the process ended and was joined (-N: killed by signal N)."""
        return self._process.exitcode

    def close(self) -> None:
        self._conn.close()
        self._process.join(timeout=2)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
