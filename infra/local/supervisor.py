"""The local stack's supervisor: what crashes comes back by itself, as the managed services
it stands in for do (MemoryDB, a SageMaker endpoint, a scheduled Lambda, Lambda copies).

Each unit is watched by a thread of its own. A crash is logged; the unit is restarted after
a backoff (0.5 s, doubling up to 10 s, back to 0.5 s once it stayed up a minute), again and
again until it comes back. Every restart goes to stderr and the supervisor's log, and the
whole view is published as a small JSON file (the status file) that the handlers read for
`GET /health` (MAAS_LOCAL_STATUS_FILE):

    {"version": 1, "stack_pid": 4242, "updated_at": "2026-11-29T12:00:00.000Z",
     "services": {"redis": {"state": "running", "pids": [4250], "restarts": 1,
                            "last_restart": "2026-11-29T11:59:58.120Z",
                            "last_exit": "killed by SIGKILL"}, ...}}

state is "running", "restarting" (down, a restart is due or under way) or "stopped";
timestamps are RFC 3339 UTC; last_exit says how the last crash ended. The file is replaced
atomically, on every change and every couple of seconds (updated_at tells it is current)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from infra.local.apigw.pool import FunctionPool
from infra.local.services import Service, describe_exit

STATUS_VERSION = 1


class Unit(Protocol):
    """Something the supervisor keeps up."""

    name: str

    @property
    def stopped(self) -> bool:
        """Its owner stopped it on purpose: not a crash, nothing to restart."""

    def pids(self) -> list[int]: ...

    def crashed(self) -> str | None:
        """How it went down, reported once per crash; None while it is up (or meant to be down)."""

    def restart(self) -> None:
        """Bring it back; returns once it is ready, raises when it could not come back."""


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 10.0
    reset_after_s: float = 60.0  # up this long since its last restart: the next crash starts over

    def delay(self, attempt: int) -> float:
        return min(self.max_s, self.initial_s * 2**attempt)


class ServiceUnit:
    """A child process (infra/local/services.Service). `after_restart` runs once it is back
    (e.g. DynamoDB: create the table again when the emulator kept nothing)."""

    def __init__(self, service: Service, name: str | None = None,
                 after_restart: Callable[[], None] | None = None) -> None:
        self.service = service
        self.name = name or service.name
        self.after_restart = after_restart
        self._reported: object = None  # the process whose end was reported

    @property
    def stopped(self) -> bool:
        return not self.service.wanted

    def pids(self) -> list[int]:
        pid = self.service.pid
        return [pid] if pid is not None else []

    def crashed(self) -> str | None:
        process = self.service.ended_while_wanted()
        if process is None or process is self._reported:
            return None
        self._reported = process
        return describe_exit(process.returncode)

    def restart(self) -> None:
        self.service.restart()
        if self.after_restart is not None:
            self.after_restart()


class WorkerPoolUnit:
    """A function's copies in the API Gateway emulator: each dead copy is replaced by a new,
    warm one, as the stack restarts every other process that dies."""

    def __init__(self, pool: FunctionPool, name: str | None = None) -> None:
        self.pool = pool
        self.name = name or f"lambda:{pool.spec.logical_id}"
        self._missing = 0

    @property
    def stopped(self) -> bool:
        return self.pool.closed

    def pids(self) -> list[int]:
        return self.pool.pids()

    def crashed(self) -> str | None:
        lost = self.pool.take_lost()
        if not lost:
            return None
        self._missing += len(lost)
        return ", ".join(f"a copy {describe_exit(status)}" for status in lost)

    def restart(self) -> None:
        self.pool.warm(self._missing)  # fewer when requests started copies meanwhile (max_copies)
        self._missing = 0


@dataclass
class UnitStatus:
    state: str = "running"
    restarts: int = 0
    last_restart: str | None = None
    last_exit: str | None = None
    up_since: float = 0.0  # monotonic


def rfc3339(moment: float | None = None) -> str:
    when = datetime.fromtimestamp(time.time() if moment is None else moment, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


class Supervisor:
    def __init__(self, status_file: Path, log_file: Path, *, backoff: Backoff = Backoff(),
                 poll_s: float = 0.2, publish_every_s: float = 2.0) -> None:
        self.status_file = status_file
        self.log_file = log_file
        self.backoff = backoff
        self.poll_s = poll_s
        self.publish_every_s = publish_every_s
        self.units: dict[str, Unit] = {}
        self.status: dict[str, UnitStatus] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def watch(self, unit: Unit) -> None:
        """Keep `unit` up from now on (it is running now)."""
        with self._lock:
            self.units[unit.name] = unit
            self.status[unit.name] = UnitStatus(up_since=time.monotonic())
        self.publish()
        if self._threads:  # started already: watch this one too
            self._spawn(unit)

    def start(self) -> Supervisor:
        for unit in list(self.units.values()):
            self._spawn(unit)
        heartbeat = threading.Thread(target=self._heartbeat, name="supervisor:status", daemon=True)
        heartbeat.start()
        self._threads.append(heartbeat)
        return self

    def halt(self) -> None:
        """No restart starts from now on; call it before stopping the units themselves."""
        self._stop.set()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Halt, wait for the watchers, publish every unit as stopped. Stop the units between
        halt() and stop(): a restart under way then fails at once instead of being waited for."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for status in self.status.values():
                status.state = "stopped"
            watched = bool(self.units)
        if watched:  # a stack that never got going has no status to publish (nor to clobber)
            self.publish()

    def log(self, message: str) -> None:
        line = f"{rfc3339()} {message}"
        print(f"[maas] {message}", file=sys.stderr, flush=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    # -- the status file

    def snapshot(self) -> dict:
        with self._lock:
            units = dict(self.units)
            status = {name: (s.state, s.restarts, s.last_restart, s.last_exit) for name, s in self.status.items()}
        services = {}
        for name, (state, restarts, last_restart, last_exit) in status.items():
            if units[name].stopped:
                state = "stopped"
            services[name] = {"state": state, "pids": units[name].pids() if state != "stopped" else [],
                              "restarts": restarts, "last_restart": last_restart, "last_exit": last_exit}
        return {"version": STATUS_VERSION, "stack_pid": os.getpid(), "updated_at": rfc3339(), "services": services}

    def publish(self) -> None:
        document = json.dumps(self.snapshot(), indent=1)
        self.status_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.status_file.with_name(f".{self.status_file.name}.{threading.get_ident()}")
        partial.write_text(document, encoding="utf-8")
        os.replace(partial, self.status_file)  # readers never see half a file

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.publish_every_s):
            try:
                self.publish()
            except OSError as error:
                self.log(f"status file not written: {error}")

    # -- one unit

    def _spawn(self, unit: Unit) -> None:
        thread = threading.Thread(target=self._watch, args=(unit,), name=f"supervisor:{unit.name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _set(self, name: str, **changes: object) -> None:
        with self._lock:
            status = self.status[name]
            for key, value in changes.items():
                setattr(status, key, value)
        self.publish()

    def _watch(self, unit: Unit) -> None:
        attempt = 0
        while not self._stop.wait(self.poll_s):
            reason = unit.crashed()
            if reason is None:
                continue
            if time.monotonic() - self.status[unit.name].up_since >= self.backoff.reset_after_s:
                attempt = 0
            self.log(f"{unit.name} went down ({reason})")  # logged before published, for readers of both
            self._set(unit.name, state="restarting", last_exit=reason)
            while not self._stop.is_set() and not unit.stopped:  # its owner may stop it meanwhile
                delay = self.backoff.delay(attempt)
                attempt += 1
                self.log(f"{unit.name}: restarting in {delay:.1f} s")
                if self._stop.wait(delay):
                    return
                try:
                    unit.restart()
                except Exception as error:  # noqa: BLE001 - any failure to come back: try again later
                    if self._stop.is_set():
                        return
                    self.log(f"{unit.name}: restart failed ({type(error).__name__}: {error})")
                    continue
                with self._lock:
                    restarts = self.status[unit.name].restarts + 1
                self.log(f"{unit.name} is back (restart {restarts}, pids {unit.pids()})")
                self._set(unit.name, state="running", restarts=restarts, last_restart=rfc3339(),
                          up_since=time.monotonic())
                break
            else:
                if unit.stopped:  # its owner took over: shown as stopped, then running once started
                    self._set(unit.name, state="running", up_since=time.monotonic())
