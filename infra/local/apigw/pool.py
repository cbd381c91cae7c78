"""Lambda's side of the emulator: the context object, and each function's pool of copies.

Like Lambda, a function copy serves one request at a time: a pool keeps copies, grown on
demand up to `max_copies`, and each copy is a worker process of its own
(infra/local/apigw/worker.py), as each Lambda execution environment is. Powertools keeps the
current event on a class attribute, process-wide, so two requests must never share a process.

A copy that dies (a crash, kill -9) is never handed out again. The pool remembers how each
lost copy ended until the local stack's supervisor collects them (`take_lost`) and starts
replacements (`warm`), with backoff, as the supervisor does for every other service."""

from __future__ import annotations

import importlib.util
import itertools
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from infra.local.apigw.proxy import ACCOUNT_ID, REGION
from infra.local.apigw.routes import FunctionSpec

LOG = logging.getLogger("maas.apigw")

DEFAULT_MAX_COPIES = 32


class LambdaContext:
    """The attributes of the Python runtime's context object that handlers and Powertools use."""

    def __init__(self, spec: FunctionSpec) -> None:
        self.function_name = spec.logical_id
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{spec.logical_id}"
        self.memory_limit_in_mb = spec.memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{spec.logical_id}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + spec.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


Handler = Callable[[dict[str, Any], LambdaContext], Any]
_copy_ids = itertools.count(1)


def _alive(handler: Handler) -> bool:
    return bool(getattr(handler, "alive", True))


class FunctionPool:
    """Independent copies of one function, one request per copy at a time: worker processes
    (isolation="process", the default) or module copies in this process ("module")."""

    def __init__(self, spec: FunctionSpec, max_copies: int = DEFAULT_MAX_COPIES, *, isolation: str = "process") -> None:
        if max_copies < 1:
            raise ValueError("max_copies must be at least 1")
        if isolation not in ("process", "module"):
            raise ValueError("isolation is 'process' or 'module'")
        self.spec = spec
        self.max_copies = max_copies
        # "process": each copy is a worker process, like a Lambda execution environment;
        # "module": a module copy in this process, only for handlers keeping no global state.
        self.isolation = isolation
        self._cond = threading.Condition()
        self._idle: list[Handler] = []
        self._all: list[Handler] = []
        self._created = 0
        self._closed = False
        self._dead: list[Handler] = []  # dropped copies whose processes are not joined yet
        self._lost: list[int | None] = []  # exit statuses of dead copies, until take_lost()

    @property
    def size(self) -> int:
        with self._cond:
            return self._created

    @property
    def closed(self) -> bool:
        return self._closed

    def pids(self) -> list[int]:
        """The worker processes of the live copies (none for module copies)."""
        with self._cond:
            copies = list(self._all)
        return [pid for h in copies if _alive(h) and (pid := getattr(h, "pid", None)) is not None]

    def acquire(self) -> Handler:
        try:
            while True:
                with self._cond:
                    while not self._idle and self._created >= self.max_copies:
                        self._cond.wait()
                    if self._idle:
                        handler = self._idle.pop()  # most recently used first: warm copies stay warm
                        if _alive(handler):
                            return handler
                        self._forget(handler)  # died while idle: never handed out
                        continue
                    self._created += 1
                return self._new_copy()  # outside the lock: a cold start blocks no one else
        finally:
            self._reap()

    def release(self, handler: Handler) -> None:
        with self._cond:
            if self._closed:  # the pool closed while this copy worked or started
                self._dead.append(handler)
            elif _alive(handler):
                self._idle.append(handler)
            else:  # its process died (as a Lambda environment can): the next request gets a new one
                self._forget(handler)
            self._cond.notify()
        self._reap()

    def take_lost(self) -> list[int | None]:
        """The exit statuses of the copies that died since the last call (idle ones are
        found here, busy ones when their request ends), each reported once."""
        with self._cond:
            for handler in [h for h in self._idle if not _alive(h)]:
                self._idle.remove(handler)
                self._forget(handler)
        self._reap()
        with self._cond:
            lost, self._lost = self._lost, []
        return lost

    def warm(self, count: int) -> int:
        """Start up to `count` idle copies (never above max_copies); how many were started.
        Raises what the copy's init raised."""
        started = 0
        for _ in range(count):
            with self._cond:
                if self._closed or self._created >= self.max_copies:
                    break
                self._created += 1
            handler = self._new_copy()
            self.release(handler)
            started += 1
        return started

    def close(self) -> None:
        with self._cond:
            self._closed = True
            copies, self._all, self._idle, self._created = self._all + self._dead, [], [], 0
            self._dead = []
        for handler in copies:
            close = getattr(handler, "close", None)
            if close is not None:
                close()

    def _forget(self, handler: Handler) -> None:
        """Drop a dead copy; the lock is held, so its process is reaped later by _reap."""
        self._created -= 1
        if handler in self._all:
            self._all.remove(handler)
        self._dead.append(handler)

    def _reap(self) -> None:
        """Join the processes of dropped copies (outside the lock) and note how they ended."""
        with self._cond:
            dead, self._dead = self._dead, []
        for handler in dead:
            close = getattr(handler, "close", None)
            if close is not None:
                close()
        if dead:
            with self._cond:
                self._lost.extend(getattr(h, "exitcode", None) for h in dead)

    def _new_copy(self) -> Handler:
        try:
            handler = self._load_process() if self.isolation == "process" else self._load_module()
        except BaseException:
            with self._cond:
                self._created -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._all.append(handler)
        return handler

    def _load_process(self) -> Handler:
        from infra.local.apigw.worker import ProcessHandler

        return ProcessHandler(self.spec.module_path, self.spec.attr)

    def _load_module(self) -> Handler:
        path = self.spec.module_path
        name = f"_apigw_{self.spec.logical_id}_{next(_copy_ids)}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module: ModuleType = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses, pydantic and pickling look modules up here
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        handler = getattr(module, self.spec.attr)
        LOG.debug("loaded %s copy %s from %s", self.spec.logical_id, name, path)
        return handler
