"""The local stack as `make dev` runs it (`python -m infra.local.stack`, a real process tree),
under SIGKILL: redis-server, the inference server, the flusher and a Lambda copy each come
back by themselves within seconds, the status file and /health show the restart, usage
acknowledged before Redis died still reaches the ledger (Redis's append-only file), and
Ctrl-C stops every process the stack started, leaving its state for the next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from infra.local.services import ROOT, free_port, port_open, redis_service

MODEL = "all-MiniLM-L6-v2"
STARTUP_S = 240  # the model loads on a shared 2-core machine


@dataclass
class RunningStack:
    process: subprocess.Popen
    state_dir: Path
    ports: dict[str, int]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['API']}"

    def status(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "stack-status.json").read_text())["services"]

    def pids(self, service: str) -> list[int]:
        return self.status()[service]["pids"]

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {(self.state_dir / 'admin_key').read_text().strip()}"}

    def redis_client(self) -> redis.Redis:
        password = (self.state_dir / "redis_password").read_text().strip()
        return redis.Redis(port=self.ports["REDIS"], username="maas", password=password)


def wait_for(what: str, check: Callable[[], Any], within_s: float, stack: RunningStack | None = None) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        try:
            result = check()
        except (OSError, ValueError, KeyError, requests.RequestException):
            result = None
        if result:
            return result
        if stack is not None and stack.process.poll() is not None:
            raise AssertionError(f"the stack exited ({stack.process.returncode}) waiting for {what}:\n"
                                 f"{stack.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:.0f} s: {what}")
        time.sleep(0.2)


def descendants(pid: int) -> set[int]:
    """Every process below pid, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextmanager
def run_stack(tmp_path_factory: pytest.TempPathFactory, name: str, *, api_workers: int,
              startup_s: float = STARTUP_S) -> Iterator[RunningStack]:
    """`python -m infra.local.stack` on free ports with its state in a fresh folder, until
    GET /health answers 200; Ctrl-C (SIGKILL after 60 s) when done."""
    model_dir = ROOT / ".maas" / "model"
    if not (model_dir / "model.onnx").exists():
        pytest.fail("the ONNX model is missing: run `make model` (make test does it)")
    state_dir = tmp_path_factory.mktemp(name)
    ports = {port_name: free_port() for port_name in ("API", "INFERENCE", "REDIS", "DYNAMODB")}
    env = {**os.environ, "MAAS_STATE_DIR": str(state_dir), "MAAS_MODEL_DIR": str(model_dir),
           "MAAS_API_WORKERS": str(api_workers), **{f"MAAS_{n}_PORT": str(port) for n, port in ports.items()}}
    log = state_dir.parent / f"{name}-output.log"
    with open(log, "wb") as output:
        # A session of its own, as a terminal's foreground job: Ctrl-C is SIGINT to the group.
        process = subprocess.Popen([sys.executable, "-m", "infra.local.stack"], cwd=ROOT, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    stack = RunningStack(process, state_dir, ports, log)
    try:
        wait_for("GET /health = 200", lambda: requests.get(f"{stack.url}/health", timeout=5).status_code == 200,
                 startup_s, stack)
        yield stack
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with run_stack(tmp_path_factory, "stack", api_workers=2) as stack:
        yield stack


@pytest.fixture(scope="module")
def customer(local_stack: RunningStack) -> dict[str, str]:
    admin = local_stack.admin()
    tenant = requests.post(f"{local_stack.url}/billing/tenants", json={"name": "sup", "plan": "starter"},
                           headers=admin, timeout=30)
    assert tenant.status_code == 201, tenant.text
    key = requests.post(f"{local_stack.url}/billing/tenants/{tenant.json()['id']}/keys", json={}, headers=admin,
                        timeout=30)
    assert key.status_code == 201, key.text
    return {"tenant_id": tenant.json()["id"], "key": key.json()["key"]}


def embed(stack: RunningStack, customer: dict[str, str], text: str) -> requests.Response:
    return requests.post(f"{stack.url}/v1/embeddings", json={"model": MODEL, "input": text},
                         headers={"Authorization": f"Bearer {customer['key']}"}, timeout=60)


def ledger_ids(stack: RunningStack, customer: dict[str, str]) -> set[str]:
    now = datetime.now(UTC)
    params = {"tenant_id": customer["tenant_id"], "start": (now - timedelta(days=1)).strftime("%Y-%m-%d"),
              "end": (now + timedelta(days=1)).strftime("%Y-%m-%d")}
    ids, cursor = set(), None
    while True:
        page = requests.get(f"{stack.url}/billing/usage/events", params={**params, **({"cursor": cursor} if cursor
                            else {})}, headers=stack.admin(), timeout=30).json()
        ids |= {row["request_id"] for row in page["data"]}
        cursor = page.get("next_cursor")
        if not cursor:
            return ids


def kill_and_await_restart(stack: RunningStack, service: str, within_s: float) -> dict[str, Any]:
    """SIGKILL the service's (first) process; wait until the supervisor reports it back."""
    before = stack.status()[service]
    victim = before["pids"][0]
    os.kill(victim, signal.SIGKILL)

    def back() -> dict[str, Any] | None:
        now = stack.status()[service]
        fresh = now["pids"] and victim not in now["pids"]
        return now if now["state"] == "running" and now["restarts"] == before["restarts"] + 1 and fresh else None

    after = wait_for(f"{service} restarted", back, within_s, stack)
    assert after["last_exit"].endswith("killed by SIGKILL")
    assert after["last_restart"] and all(running(pid) for pid in after["pids"])
    return after


# ------------------------------------------------------------------------------------ the tests


def test_every_service_is_supervised_and_shown_in_health(local_stack):
    status = local_stack.status()
    for name in ("redis", "dynamodb", "inference", "flusher", "projector", "lambda:InvokeFunction",
                 "lambda:BillingFunction"):
        assert status[name]["state"] == "running" and status[name]["restarts"] == 0, name
    health = requests.get(f"{local_stack.url}/health", timeout=10).json()
    assert health["status"] == "ok"
    assert health["services"]["redis"] == {"state": "running", "restarts": 0, "last_restart": None,
                                           "last_exit": None}
    assert oct((local_stack.state_dir / "redis_password").stat().st_mode)[-3:] == "600"


def test_redis_requires_its_user(local_stack):
    with pytest.raises(redis.exceptions.AuthenticationError):
        # the default user is disabled (no retries: redis-py retries a refused AUTH with backoff)
        redis.Redis(port=local_stack.ports["REDIS"], retry=Retry(NoBackoff(), 0)).ping()
    assert local_stack.redis_client().ping()


def test_redis_killed_comes_back_with_acknowledged_usage(local_stack, customer):
    # GIVEN an answered request whose usage event is only in Redis (the flusher held)
    [flusher] = local_stack.pids("flusher")
    os.kill(flusher, signal.SIGSTOP)
    try:
        response = embed(local_stack, customer, "written to the append-only file before the answer")
        assert response.status_code == 200, response.text
        request_id = response.headers["x-request-id"]
        # WHEN redis-server is killed -9
        kill_and_await_restart(local_stack, "redis", within_s=60)
    finally:
        os.kill(flusher, signal.SIGCONT)
    # THEN the restarted Redis still has the event, and it reaches the ledger
    wait_for("the request in the ledger", lambda: request_id in ledger_ids(local_stack, customer), 20, local_stack)
    health = requests.get(f"{local_stack.url}/health", timeout=10).json()
    assert health["services"]["redis"]["restarts"] == 1
    assert health["services"]["redis"]["last_exit"] == "killed by SIGKILL"
    wait_for("answers after the restart", lambda: embed(local_stack, customer, "again").status_code == 200, 20)


def test_flusher_killed_comes_back_and_flushes(local_stack, customer):
    kill_and_await_restart(local_stack, "flusher", within_s=60)
    response = embed(local_stack, customer, "after the flusher came back")
    assert response.status_code == 200, response.text
    wait_for("the request in the ledger", lambda: response.headers["x-request-id"] in ledger_ids(local_stack, customer),
             10, local_stack)


def test_a_killed_lambda_copy_is_replaced(local_stack, customer):
    assert embed(local_stack, customer, "warm a copy").status_code == 200
    after = kill_and_await_restart(local_stack, "lambda:InvokeFunction", within_s=90)
    assert after["last_exit"] == "a copy killed by SIGKILL"
    response = embed(local_stack, customer, "served by the new copy")
    assert response.status_code == 200, response.text


def test_inference_killed_comes_back(local_stack, customer):
    kill_and_await_restart(local_stack, "inference", within_s=180)  # loads the model again
    response = embed(local_stack, customer, "the model is back")
    assert response.status_code == 200, response.text
    assert requests.get(f"{local_stack.url}/health", timeout=10).json()["services"]["inference"]["restarts"] == 1


def test_ctrl_c_stops_everything_and_keeps_the_state(local_stack):
    # GIVEN the running tree, and a value written to Redis
    local_stack.redis_client().set("kept", "across restarts")
    tree = descendants(local_stack.process.pid)
    assert len(tree) >= 5  # redis, DynamoDB, inference, flusher, Lambda copies
    # WHEN Ctrl-C reaches the foreground process group
    os.killpg(local_stack.process.pid, signal.SIGINT)
    assert local_stack.process.wait(60) == 0
    # THEN no process it started is left, nor a port it listened on
    assert {pid: command_line(pid) for pid in tree if running(pid)} == {}
    assert not any(port_open(port) for port in local_stack.ports.values())
    assert {s["state"] for s in local_stack.status().values()} == {"stopped"}
    output = local_stack.log.read_text()
    assert "[maas] stopped" in output and "Traceback" not in output
    # AND Redis's state is there for the next run (the same files, the same user)
    password = (local_stack.state_dir / "redis_password").read_text().strip()
    again = redis_service(free_port(), local_stack.state_dir / "redis", local_stack.state_dir, durable=True,
                          user=("maas", password)).start()
    try:
        client = redis.Redis(port=again.port, username="maas", password=password)
        assert client.get("kept") == b"across restarts"
    finally:
        again.stop()
