"""The local stack's supervisor (infra/local/supervisor.py) over real processes: a crash is
restarted with backoff (doubling, capped, reset after a stable minute, here shortened), each
restart is logged and published in the status file, a service its owner stopped stays down,
and a dead Lambda copy of the emulator is replaced by a warm one."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.local.apigw import build_app
from infra.local.services import Service
from infra.local.supervisor import Backoff, ServiceUnit, Supervisor, WorkerPoolUnit

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "apigw" / "template.yaml"
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
FAILS = ["sh", "-c", "exit 3"]  # ends at once, well within settle_s even on a loaded machine


def sleeper(tmp_path: Path, name: str = "sleeper") -> Service:
    return Service(name=name, argv=list(SLEEPER), port=0, ready=lambda: True, log_path=tmp_path / f"{name}.log",
                   settle_s=0.2)


def wait_for(what: str, check: Callable[[], Any], within_s: float = 10.0) -> Any:
    deadline = time.monotonic() + within_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        time.sleep(0.05)
    return result


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    sup = Supervisor(tmp_path / "status.json", tmp_path / "supervisor.log",
                     backoff=Backoff(initial_s=0.1, max_s=0.4, reset_after_s=1.0), poll_s=0.05, publish_every_s=0.2)
    yield sup
    sup.stop()


def published(sup: Supervisor, name: str) -> dict[str, Any]:
    return json.loads(sup.status_file.read_text())["services"][name]


def log_of(sup: Supervisor) -> str:
    return sup.log_file.read_text() if sup.log_file.exists() else ""


def delays(sup: Supervisor, name: str) -> list[str]:
    return [line.rsplit(" in ", 1)[1] for line in log_of(sup).splitlines()
            if f" {name}: restarting in " in line]


def test_a_crash_is_restarted_logged_and_published(supervisor, tmp_path):
    service = sleeper(tmp_path).start()
    try:
        supervisor.watch(ServiceUnit(service))
        supervisor.start()
        first = service.pid
        assert published(supervisor, "sleeper") == {"state": "running", "pids": [first], "restarts": 0,
                                                    "last_restart": None, "last_exit": None}
        os.kill(first, signal.SIGKILL)  # a crash: not the owner's stop
        back = wait_for("restarted", lambda: (s := published(supervisor, "sleeper"))["restarts"] == 1
                        and s["state"] == "running" and s)
        assert back["pids"] == [service.pid] and service.pid != first
        assert back["last_exit"] == "killed by SIGKILL" and back["last_restart"].endswith("Z")
        log = log_of(supervisor)
        assert "sleeper went down (killed by SIGKILL)" in log and "sleeper is back (restart 1" in log
        document = json.loads(supervisor.status_file.read_text())
        assert document["version"] == 1 and document["stack_pid"] == os.getpid()
    finally:
        service.stop()


def test_failing_restarts_back_off_doubling_up_to_the_cap_then_come_back(supervisor, tmp_path):
    service = sleeper(tmp_path).start()
    try:
        supervisor.watch(ServiceUnit(service))
        supervisor.start()
        service.argv = list(FAILS)  # from now on every restart fails at once
        os.kill(service.pid, signal.SIGKILL)
        wait_for("four failed restarts", lambda: log_of(supervisor).count("restart failed") >= 4)
        assert published(supervisor, "sleeper")["state"] == "restarting"
        assert "exit code 3" in log_of(supervisor)
        service.argv = list(SLEEPER)
        wait_for("back", lambda: published(supervisor, "sleeper")["state"] == "running")
        assert delays(supervisor, "sleeper")[:4] == ["0.1 s", "0.2 s", "0.4 s", "0.4 s"]
        assert published(supervisor, "sleeper")["restarts"] == 1  # one restart that worked
    finally:
        service.stop()


def test_backoff_starts_over_once_it_stayed_up(supervisor, tmp_path):
    service = sleeper(tmp_path).start()
    try:
        supervisor.watch(ServiceUnit(service))
        supervisor.start()
        for restarts in (1, 2):  # two crashes in a row: the second waits longer
            os.kill(service.pid, signal.SIGKILL)
            wait_for("restarted", lambda n=restarts: published(supervisor, "sleeper")["restarts"] == n)
        time.sleep(1.2)  # up longer than reset_after_s
        os.kill(service.pid, signal.SIGKILL)
        wait_for("restarted", lambda: published(supervisor, "sleeper")["restarts"] == 3)
        assert delays(supervisor, "sleeper") == ["0.1 s", "0.2 s", "0.1 s"]
    finally:
        service.stop()


def test_what_its_owner_stops_stays_down(supervisor, tmp_path):
    service = sleeper(tmp_path).start()
    try:
        supervisor.watch(ServiceUnit(service))
        supervisor.start()
        service.kill()  # the owner's kill (as the fault-injection tests do): not a crash
        time.sleep(0.5)
        assert not service.alive
        assert published(supervisor, "sleeper")["state"] == "stopped"
        assert "went down" not in log_of(supervisor)
        service.start()  # and the owner's start puts it back under watch
        wait_for("running", lambda: published(supervisor, "sleeper") == {
            "state": "running", "pids": [service.pid], "restarts": 0, "last_restart": None, "last_exit": None})
        os.kill(service.pid, signal.SIGKILL)
        wait_for("restarted", lambda: published(supervisor, "sleeper")["restarts"] == 1)
    finally:
        service.stop()


def test_nothing_restarts_after_halt_and_stop_publishes_stopped(supervisor, tmp_path):
    service = sleeper(tmp_path).start()
    try:
        supervisor.watch(ServiceUnit(service))
        supervisor.start()
        supervisor.halt()
        os.kill(service.pid, signal.SIGKILL)
        time.sleep(0.5)
        assert not service.alive
        supervisor.stop()
        assert published(supervisor, "sleeper")["state"] == "stopped"
        assert published(supervisor, "sleeper")["pids"] == []
    finally:
        service.stop()


def test_a_dead_lambda_copy_is_replaced_by_a_warm_one(supervisor):
    app = build_app(FIXTURE, max_copies=2)
    try:
        pool = app.pools["EchoFunction"]
        assert pool.warm(1) == 1
        supervisor.watch(WorkerPoolUnit(pool))
        supervisor.start()
        [victim] = pool.pids()
        os.kill(victim, signal.SIGKILL)
        back = wait_for("replaced", lambda: (s := published(supervisor, "lambda:EchoFunction"))["restarts"] == 1
                        and s["state"] == "running" and s, within_s=30)
        assert back["last_exit"] == "a copy killed by SIGKILL"
        assert len(back["pids"]) == 1 and victim not in back["pids"]
        assert pool.size == 1  # replaced, not added
        app.close()
        assert published(supervisor, "lambda:EchoFunction")["state"] in ("running", "stopped")
        supervisor.publish()
        assert published(supervisor, "lambda:EchoFunction")["state"] == "stopped"
    finally:
        app.close()
