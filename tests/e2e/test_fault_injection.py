"""Fault injection on the local stack as `make dev` runs it (`python -m infra.local.stack`, a
real process tree), under steady load from several client processes (CONTRACT.md §10).

Tenants are made through the API: two postpaid and two prepaid ones with credit under load,
one whose monthly quota and one whose credit are spent before the faults start (kept under a
light load all along), and an admin client making changes (tenants, credits, keys,
revocations, suspensions, each POST with an Idempotency-Key) the whole time.

1. Faults: redis-server, the inference server, the flusher, one Lambda copy of the tenant API
   and the local DynamoDB are each killed with SIGKILL, in a random order at random moments,
   ROUNDS times; the stack's supervisor brings each back.
2. Redis loses its data, twice: killed with its append-only files deleted, then FLUSHALL (the
   load pauses and the stack drains first: usage not yet in DynamoDB would go with them). The
   spent quota and credit stay spent (tenants are seeded again from DynamoDB).
3. After recovery:
   - every answer was 200, or 503/504 with Retry-After (the spent tenants: 429/402), never a
     500, never no answer;
   - the ledger holds every 200 exactly once and no refused or failed request; the reports
     (rollups) agree with it; the quota was never passed by a token, nor the credit by a nano;
   - each admin call that failed left all of its change with its audit entry, or nothing, and
     its retry (same Idempotency-Key) completed it; Redis says what DynamoDB says (the
     projector repaired what an outage made it miss).

The recovery times (kill -> the supervisor has it back -> the first 200 of a request started
after the kill) are printed and written to $MAAS_FAULT_REPORT (docs/BENCHMARKS.md). The seed
of the random schedule is printed; MAAS_FAULT_SEED replays it."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.adapters.redis_store import tenant_key
from infra.local.services import ROOT
from tests.e2e.load_clients import MODEL, Load, Target
from tests.e2e.test_local_stack import RunningStack, run_stack, wait_for

# pytest-xdist (make test): the load and fault tests run one after another on one worker,
# never beside each other (tests/conftest.py, pytest_xdist_make_scheduler).
pytestmark = pytest.mark.xdist_group("heavy")

SEED = int(os.environ.get("MAAS_FAULT_SEED") or time.time())
ROUNDS = int(os.environ.get("MAAS_FAULT_ROUNDS") or 2)
CLIENTS = 4
VICTIMS = ("redis", "inference", "flusher", "lambda:InvokeFunction", "dynamodb", "projector")
# The local emulator's answer for a Lambda copy killed under its request (infra/local/apigw/proxy.py).
COPY_LOST = "The function's execution environment was lost; retry"
STARTUP_S = 240
RESTART_S = {"inference": 240}  # it loads the model again; the others are back in seconds
OUTAGE = {503, 504}  # with Retry-After
QUOTA_INPUT = [1037]  # "a": 3 tokens with [CLS] and [SEP]
QUOTA_REQUESTS = 10
BROKE_INPUT = [1037] * 254  # 256 tokens: 0.00128 at the starter plan's 0.0050 per 1,000
BROKE_CREDIT = "0.01"  # 7 such requests (0.00896); the 8th would pass it
UNLIMITED = {"requests_per_minute": 1_000_000, "tokens_per_minute": 100_000_000, "max_concurrent_requests": 256}


# ------------------------------------------------------------------------------ the stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with run_stack(tmp_path_factory, "fault-stack", api_workers=CLIENTS + 4, startup_s=STARTUP_S) as running:
        yield running


class Admin:
    """The admin API with the stack's bootstrap key (read again: a DynamoDB restart may renew it)."""

    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        self.session = requests.Session()

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {**self.stack.admin(), **kwargs.pop("headers", {})}
        return self.session.request(method, self.stack.url + path, headers=headers, timeout=60, **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        """A call that must succeed; retried through an outage (a restart under way)."""
        deadline = time.monotonic() + 120
        while True:
            response = self.call(method, path, **kwargs)
            if response.status_code < 300:
                return response.json() if response.content else None
            assert response.status_code in OUTAGE and "Retry-After" in response.headers, (path, response.text)
            assert time.monotonic() < deadline, f"{method} {path}: {response.status_code} {response.text}"
            time.sleep(0.5)

    def pages(self, path: str, **params: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.ok("GET", path, params={**params, **({"cursor": cursor} if cursor else {})})
            rows += page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return rows


def window() -> dict[str, str]:
    now = datetime.now(UTC)
    return {"start": (now - timedelta(days=1)).strftime("%Y-%m-%d"),
            "end": (now + timedelta(days=1)).strftime("%Y-%m-%d")}


def embed(stack: RunningStack, key: str, payload: Any, tenant: str) -> dict[str, Any]:
    """One request of the test's own, recorded as the load clients record theirs."""
    started = time.time()
    response = requests.post(f"{stack.url}/v1/embeddings", json={"model": MODEL, "input": payload},
                             headers={"Authorization": f"Bearer {key}"}, timeout=60)
    record = {"tenant": tenant, "status": response.status_code, "t0": started, "t1": time.time(),
              "rid": response.headers.get("x-request-id"), "retry_after": response.headers.get("Retry-After")}
    body = response.json()
    if response.status_code == 200:
        record |= {"tokens": body["usage"]["prompt_tokens"], "cost": body["usage"]["cost"]}
    else:
        record |= {"code": body["error"]["code"], "message": body["error"]["message"]}
    return record


# ------------------------------------------------------------------------------ tenants


@dataclass
class Tenants:
    ids: dict[str, str] = field(default_factory=dict)  # name -> tenant id
    keys: dict[str, str] = field(default_factory=dict)  # name -> inference key
    credit: dict[str, Decimal] = field(default_factory=dict)  # prepaid name -> granted
    setup: list[dict[str, Any]] = field(default_factory=list)  # the test's own requests

    def targets(self) -> list[Target]:
        return [Target("post-1", self.keys["post-1"], 1.0), Target("post-2", self.keys["post-2"], 1.0),
                Target("pre-1", self.keys["pre-1"], 1.0), Target("pre-2", self.keys["pre-2"], 1.0),
                Target("quota", self.keys["quota"], 0.1, [QUOTA_INPUT]),
                Target("broke", self.keys["broke"], 0.1, [BROKE_INPUT])]


def make_tenants(stack: RunningStack, admin: Admin) -> Tenants:
    tenants = Tenants()
    quota_tokens = QUOTA_REQUESTS * (len(QUOTA_INPUT) + 2)
    for name in ("post-1", "post-2", "pre-1", "pre-2", "quota", "broke"):
        tenant = admin.ok("POST", "/billing/tenants", json={"name": f"faults {name}", "plan": "starter"},
                          headers={"Idempotency-Key": f"setup-{name}"})
        limits = UNLIMITED | ({"monthly_tokens": quota_tokens} if name == "quota" else {})
        admin.ok("PATCH", f"/billing/tenants/{tenant['id']}", json={"limits": limits})
        if name.startswith("pre") or name == "broke":
            admin.ok("PATCH", f"/billing/tenants/{tenant['id']}", json={"billing": {"mode": "prepaid"}})
            amount = BROKE_CREDIT if name == "broke" else "100.00"
            admin.ok("POST", f"/billing/tenants/{tenant['id']}/credits", json={"amount": amount},
                     headers={"Idempotency-Key": f"setup-credit-{name}"})
            tenants.credit[name] = Decimal(amount)
        key = admin.ok("POST", f"/billing/tenants/{tenant['id']}/keys", json={"name": "load"},
                       headers={"Idempotency-Key": f"setup-key-{name}"})
        tenants.ids[name], tenants.keys[name] = tenant["id"], key["key"]
    # The quota and the credit of two tenants are spent before any fault.
    for name, payload, refusal in (("quota", [QUOTA_INPUT], 429), ("broke", [BROKE_INPUT], 402)):
        while True:
            record = embed(stack, tenants.keys[name], payload, name) | {"setup": True}
            tenants.setup.append(record)
            if record["status"] == refusal:
                break
            assert record["status"] == 200, record
    return tenants


# ------------------------------------------------------------------------------ the admin client


@dataclass
class AdminCall:
    op: str
    method: str
    path: str
    body: dict[str, Any] | None
    idempotency_key: str | None
    status: int = 0
    retry_after: str | None = None
    answer: Any = None
    label: str = ""


class AdminClient:
    """An admin making changes all along (one at a time), each kind projected to Redis:
    tenants, credit grants and keys (POSTs with an Idempotency-Key), revocations, suspensions."""

    def __init__(self, stack: RunningStack, admin: Admin, tenant_id: str) -> None:
        self.stack, self.admin, self.tenant_id = stack, admin, tenant_id
        self.calls: list[AdminCall] = []
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._parked = threading.Event()
        self._thread = threading.Thread(target=self._run, name="admin-client", daemon=True)
        self._last_key: str | None = None
        self._suspended = False

    def start(self) -> AdminClient:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)

    def pause(self) -> None:
        self._pause.set()
        assert self._parked.wait(120), "the admin client did not park"

    def resume(self) -> None:
        self._parked.clear()
        self._pause.clear()

    def send(self, call: AdminCall) -> AdminCall:
        headers = {"Idempotency-Key": call.idempotency_key} if call.idempotency_key else {}
        try:
            response = self.admin.call(call.method, call.path, json=call.body, headers=headers)
        except requests.RequestException as error:
            call.status, call.answer = 0, str(error)
            return call
        call.status, call.retry_after = response.status_code, response.headers.get("Retry-After")
        call.answer = response.json() if response.content else None
        return call

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            if self._pause.is_set():
                self._parked.set()
                while self._pause.is_set() and not self._stop.is_set():
                    time.sleep(0.05)
                continue
            number += 1
            label = f"adm-{number}-{uuid.uuid4().hex[:6]}"
            for call in self._calls(label):
                self.calls.append(self.send(call))
                if call.op == "key" and call.status == 201:
                    self._last_key = call.answer["id"]
            time.sleep(0.3)

    def _calls(self, label: str) -> list[AdminCall]:
        t = self.tenant_id
        calls = [
            AdminCall("tenant", "POST", "/billing/tenants", {"name": label, "plan": "starter"}, f"{label}-t",
                      label=label),
            AdminCall("credit", "POST", f"/billing/tenants/{t}/credits", {"amount": "1.00", "note": label},
                      f"{label}-c", label=label),
            AdminCall("key", "POST", f"/billing/tenants/{t}/keys", {"name": label}, f"{label}-k", label=label),
        ]
        if self._last_key:
            calls.append(AdminCall("revoke", "DELETE", f"/billing/keys/{self._last_key}", None, None,
                                   label=self._last_key))
        self._suspended = not self._suspended
        calls.append(AdminCall("status", "PATCH", f"/billing/tenants/{t}",
                               {"status": "suspended" if self._suspended else "active"}, None, label=label))
        return calls


# ------------------------------------------------------------------------------ faults


@dataclass
class Kill:
    service: str
    killed_at: float
    back_at: float
    pid: int
    how: str = "SIGKILL"


def kill_and_await(stack: RunningStack, service: str, rng: random.Random, *, lose_data: bool = False) -> Kill:
    """SIGKILL one process of the service (a random one of a pool's); wait until the supervisor
    has it back. lose_data (redis): its append-only files are deleted before the restart."""
    # A pool may hold no process for a moment (its copies all replaced): wait for one.
    wait_for(f"{service} has a process", lambda: bool(stack.status()[service]["pids"]), 60, stack)
    before = stack.status()[service]
    victim = rng.choice(before["pids"])
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    if lose_data:
        shutil.rmtree(stack.state_dir / "redis" / "appendonlydir")  # the supervisor waits 0.5 s at least

    def back() -> bool:
        now = stack.status()[service]
        return now["state"] == "running" and now["restarts"] > before["restarts"] and victim not in now["pids"]

    wait_for(f"{service} restarted", back, RESTART_S.get(service, 60), stack)
    return Kill(service, killed_at, time.time(), victim, "SIGKILL + append-only files deleted" if lose_data
                else "SIGKILL")


def await_drained(stack: RunningStack, admin: Admin, records: list[dict[str, Any]], tenants: Tenants) -> None:
    """Every usage event is in the ledger: no usage stream holds anything, and every 200 is there."""
    redis = stack.redis_client()

    def streams_empty() -> bool:
        return all(redis.xlen(stream) == 0 for stream in redis.scan_iter(match="{t:*}:usage", count=1000))

    wait_for("the usage streams drained", streams_empty, 90, stack)
    wanted = defaultdict(set)
    for record in records:
        if record["status"] == 200:
            wanted[record["tenant"]].add(record["rid"])
    for name, rids in wanted.items():
        tenant_id = tenants.ids[name]
        wait_for(f"{name}'s 200s in the ledger", lambda t=tenant_id, rids=rids: rids <= ledger_ids(admin, t), 60, stack)


def ledger_rows(admin: Admin, tenant_id: str) -> list[dict[str, Any]]:
    return admin.pages("/billing/usage/events", tenant_id=tenant_id, **window())


def ledger_ids(admin: Admin, tenant_id: str) -> set[str]:
    return {row["request_id"] for row in ledger_rows(admin, tenant_id)}


def probe_spent(stack: RunningStack, tenants: Tenants) -> list[dict[str, Any]]:
    """Right after Redis lost its data: the spent quota and credit are still spent (the tenants
    are seeded from DynamoDB), and a postpaid tenant is served (and charged) as before."""
    found = []
    for name, payload, expected, code in (("quota", [QUOTA_INPUT], 429, "insufficient_quota"),
                                          ("broke", [BROKE_INPUT], 402, "insufficient_credits"),
                                          ("post-1", "after the loss", 200, None)):
        deadline = time.monotonic() + 60
        while True:
            record = embed(stack, tenants.keys[name], payload, name)
            found.append(record)
            if record["status"] not in OUTAGE:
                break
            assert time.monotonic() < deadline, record
            time.sleep(0.25)
        assert (record["status"], record.get("code")) == (expected, code), record
    return found


# ------------------------------------------------------------------------------ the test


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_nothing_acknowledged_is_lost_nothing_spent_is_forgotten(stack: RunningStack, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    print(f"\n[faults] seed {SEED} (MAAS_FAULT_SEED={SEED} replays this schedule), {ROUNDS} rounds", flush=True)
    admin = Admin(stack)
    tenants = make_tenants(stack, admin)
    changes = admin.ok("POST", "/billing/tenants", json={"name": "faults admin target", "plan": "starter"})
    load = Load(stack.url, tenants.targets(), tmp_path, clients=CLIENTS, seed=SEED).start()
    admin_client = AdminClient(stack, admin, changes["id"]).start()
    probes: list[dict[str, Any]] = []
    kills: list[Kill] = []
    try:
        wait_for("the load is served", lambda: sum(r["status"] == 200 for r in load.records()) >= 20, 120, stack)

        # 1. every service killed, ROUNDS times, in a random order, at random moments
        schedule = [victim for _ in range(ROUNDS) for victim in rng.sample(VICTIMS, len(VICTIMS))]
        for service in schedule:
            time.sleep(rng.uniform(1.0, 4.0))
            kills.append(kill_and_await(stack, service, rng))
            print(f"[faults] {service}: back after {kills[-1].back_at - kills[-1].killed_at:.1f} s", flush=True)

        # 2. Redis loses its data, twice, with the load paused and the stack drained
        for how in ("files", "flushall"):
            time.sleep(rng.uniform(2.0, 5.0))
            load.pause()
            admin_client.pause()
            await_drained(stack, admin, load.records() + tenants.setup + probes, tenants)
            redis = stack.redis_client()
            redis.set("faults:marker", "1")
            if how == "files":
                kills.append(kill_and_await(stack, "redis", rng, lose_data=True))
            else:
                redis.flushall()
            assert stack.redis_client().get("faults:marker") is None, "Redis kept its data"
            probes += probe_spent(stack, tenants)
            load.resume()
            admin_client.resume()
        time.sleep(5)
    finally:
        load.stop()
        admin_client.stop()

    # 3. after recovery
    wait_for("every service running", lambda: all(s["state"] == "running" for s in stack.status().values()), 240,
             stack)
    records = load.records() + tenants.setup + probes
    await_drained(stack, admin, records, tenants)
    report = recovery_report(kills, load.records())
    print_report(report, records)
    if os.environ.get("MAAS_FAULT_REPORT"):
        Path(os.environ["MAAS_FAULT_REPORT"]).write_text(json.dumps(report, indent=1))

    check_answers(records)
    check_ledger(admin, tenants, records, sum(kill.service.startswith("lambda:") for kill in kills))
    check_money(admin, tenants, records)
    check_admin_calls(stack, admin, admin_client)
    check_projection(stack, admin)


# ------------------------------------------------------------------------------ the checks


def check_answers(records: list[dict[str, Any]]) -> None:
    """200, or an outage's 503/504 with Retry-After; the spent tenants' refusals; nothing else."""
    allowed = {"quota": {(429, "insufficient_quota")}, "broke": {(402, "insufficient_credits")}}
    wrong = []
    for record in records:
        status = record["status"]
        if status == 200 and (record["tenant"] not in allowed or record.get("setup")):
            continue
        if status in OUTAGE and (record.get("retry_after") or "").isdigit() and int(record["retry_after"]) >= 1:
            continue
        if (status, record.get("code")) in allowed.get(record["tenant"], set()):
            continue
        wrong.append(record)
    assert wrong == [], f"{len(wrong)} answers outside 200 / 503+Retry-After / 504+Retry-After: {wrong[:10]}"


def check_ledger(admin: Admin, tenants: Tenants, records: list[dict[str, Any]], copies_killed: int) -> None:
    """Every 200 in the ledger once, no other answer there, and the reports agree with it.

    One exception, as anywhere an answer can be lost on its way: a Lambda copy killed after
    its request was charged and before the answer left it (a window of well under a
    millisecond per request; docs/ARCHITECTURE.md, "Under failure"). Such a request is in
    the ledger and was answered 503 COPY_LOST: at most one per copy killed, and counted."""
    lost = {r["rid"]: r for r in records if r["status"] == 503 and r.get("message") == COPY_LOST}
    charged_but_lost = 0
    for name, tenant_id in tenants.ids.items():
        mine = [r for r in records if r["tenant"] == name]
        ok = {r["rid"]: r for r in mine if r["status"] == 200}
        rows = ledger_rows(admin, tenant_id)
        ids = [row["request_id"] for row in rows]
        assert len(ids) == len(set(ids)), f"{name}: a request is in the ledger twice"
        extra = set(ids) - set(ok)
        assert set(ok) <= set(ids), f"{name}: 200s missing from the ledger: {sorted(set(ok) - set(ids))[:5]}"
        assert extra <= set(lost), f"{name}: in the ledger but not answered 200: {sorted(extra - set(lost))[:5]}"
        charged_but_lost += len(extra)
        lost_tokens = sum(row["prompt_tokens"] for row in rows if row["request_id"] in extra)
        assert sum(row["prompt_tokens"] for row in rows) == sum(r["tokens"] for r in ok.values()) + lost_tokens, name
        if extra:
            continue  # their cost is in no answer: the reports are checked against the answers elsewhere
        usage = admin.ok("GET", "/billing/usage", params={"tenant_id": tenant_id, "group_by": "tenant", **window()})
        totals = (sum(row["requests"] for row in usage["data"]), sum(row["prompt_tokens"] for row in usage["data"]),
                  sum(Decimal(row["cost"]) for row in usage["data"]))
        assert totals == (len(ok), sum(r["tokens"] for r in ok.values()),
                          sum(Decimal(r["cost"]) for r in ok.values())), name
    print(f"[faults] charged requests whose answer was lost with their Lambda copy: {charged_but_lost} "
          f"({len(lost)} requests answered '{COPY_LOST}', {copies_killed} copies killed)", flush=True)
    assert charged_but_lost <= copies_killed


def check_money(admin: Admin, tenants: Tenants, records: list[dict[str, Any]]) -> None:
    """The quota never passed by one token, the credit never by one nano, across every fault and
    both losses of Redis's data; what a prepaid tenant has left is never more than it paid for."""
    spent = defaultdict(lambda: (0, Decimal(0)))
    for record in records:
        if record["status"] == 200:
            tokens, cost = spent[record["tenant"]]
            spent[record["tenant"]] = (tokens + record["tokens"], cost + Decimal(record["cost"]))
    assert spent["quota"][0] == QUOTA_REQUESTS * (len(QUOTA_INPUT) + 2)  # spent at the start, never again
    assert spent["broke"][1] <= tenants.credit["broke"] < spent["broke"][1] + Decimal("0.00128")
    for name, granted in tenants.credit.items():
        balance = admin.ok("GET", f"/billing/tenants/{tenants.ids[name]}/balance")
        remaining = Decimal(balance["credits_remaining"])
        assert Decimal(0) <= remaining <= granted - spent[name][1], (name, remaining, granted, spent[name])


def check_admin_calls(stack: RunningStack, admin: Admin, client: AdminClient) -> None:
    """A call that failed left its whole change with its audit entry, or nothing; its retry
    (the same Idempotency-Key) completed it; every change is there once, with one entry."""
    calls = client.calls
    assert calls, "the admin client made no call"
    bad = [c for c in calls if not (c.status < 300 or (c.status in OUTAGE and (c.retry_after or "").isdigit()))]
    assert bad == [], [(c.op, c.status, c.answer) for c in bad[:10]]
    failed = [c for c in calls if c.status >= 300]

    def state() -> tuple[Counter, Counter, Counter, dict[str, dict], list[dict]]:
        tenants = Counter(t["name"] for t in admin.pages("/billing/tenants"))
        grants = Counter(g["note"] for g in admin.ok("GET", f"/billing/tenants/{client.tenant_id}/credits")["data"])
        keys = admin.pages(f"/billing/tenants/{client.tenant_id}/keys")
        audit = admin.pages("/billing/audit")
        return tenants, grants, Counter(k["name"] for k in keys), {k["id"]: k for k in keys}, audit

    def entries(audit: list[dict], action: str, field_name: str, value: str) -> int:
        return sum(1 for e in audit if e["action"] == action and (e.get("details") or {}).get(field_name) == value)

    tenants, grants, keys, _, audit = state()
    for call in failed:  # all or nothing, before any retry
        if call.op == "tenant":
            assert tenants[call.label] == entries(audit, "tenant.create", "name", call.label) <= 1, call
        elif call.op == "credit":
            assert grants[call.label] == entries(audit, "credits.grant", "note", call.label) <= 1, call
        elif call.op == "key":
            assert keys[call.label] == entries(audit, "key.create", "name", call.label) <= 1, call
    print(f"[faults] admin calls: {len(calls)}, {len(failed)} answered 503/504 "
          f"({Counter(c.op for c in failed)}), retried", flush=True)

    for call in failed:  # the retry completes it
        deadline = time.monotonic() + 120
        while client.send(call).status >= 300:
            assert call.status in OUTAGE, (call.op, call.status, call.answer)
            assert time.monotonic() < deadline, (call.op, call.status, call.answer)
            time.sleep(0.5)

    tenants, grants, keys, by_id, audit = state()
    for call in calls:
        if call.op == "tenant":
            assert tenants[call.label] == entries(audit, "tenant.create", "name", call.label) == 1, call
            [entry] = [e for e in audit if e["action"] == "tenant.create" and e["details"]["name"] == call.label]
            assert entry["target"] == call.answer["id"]
        elif call.op == "credit":
            assert grants[call.label] == entries(audit, "credits.grant", "note", call.label) == 1, call
        elif call.op == "key":
            assert keys[call.label] == entries(audit, "key.create", "name", call.label) == 1, call
            assert by_id[call.answer["id"]]["name"] == call.label
        elif call.op == "revoke":
            assert by_id[call.label]["revoked_at"], call
            assert sum(1 for e in audit if e["action"] == "key.revoke" and e["target"] == call.label) == 1, call


def check_projection(stack: RunningStack, admin: Admin) -> None:
    """Redis says what DynamoDB says of every tenant (status) and key (revoked), and no change
    is still waiting for its projection."""
    redis = stack.redis_client()

    def projected() -> list[str]:
        wrong = []
        for tenant in admin.pages("/billing/tenants"):
            status = redis.get(tenant_key(tenant["id"], "status"))
            if status is not None and status.decode() != tenant["status"]:
                wrong.append(f"{tenant['id']}: Redis says {status.decode()}, DynamoDB {tenant['status']}")
            for key in admin.pages(f"/billing/tenants/{tenant['id']}/keys"):
                state = redis.hget(tenant_key(tenant["id"], "keys"), key["id"])
                if key["revoked_at"] and redis.exists(tenant_key(tenant["id"], "cfg")) and state != b"0":
                    wrong.append(f"{key['id']}: revoked, but not in Redis")
        return wrong

    wait_for("Redis says what DynamoDB says", lambda: projected() == [], 30, stack)
    outbox = json.loads(subprocess.run(
        [sys.executable, "-m", "gateway.cli", "projections", "repair"], cwd=ROOT, capture_output=True, text=True,
        check=True, env=stack_env(stack)).stdout.strip().splitlines()[-1])
    assert outbox == {"repaired": 0, "pending": 0}


def stack_env(stack: RunningStack) -> dict[str, str]:
    """What the stack's own processes see (infra/local/stack.py handler_env)."""
    return {**os.environ, "MAAS_TABLE_NAME": "maas-local",
            "MAAS_DYNAMODB_ENDPOINT": f"http://127.0.0.1:{stack.ports['DYNAMODB']}",
            "MAAS_REDIS_URL": f"redis://127.0.0.1:{stack.ports['REDIS']}/0", "MAAS_REDIS_USERNAME": "maas",
            "MAAS_REDIS_PASSWORD": (stack.state_dir / "redis_password").read_text().strip(),
            "MAAS_KEY_PEPPER": (stack.state_dir / "pepper").read_text().strip()}


# ------------------------------------------------------------------------------ the numbers


def recovery_report(kills: list[Kill], records: list[dict[str, Any]]) -> dict[str, Any]:
    served = sorted((r["t0"], r["t1"]) for r in records if r["status"] == 200 and r["tenant"] not in ("quota", "broke"))
    rows = []
    for kill in kills:
        first = next((t1 for t0, t1 in served if t0 >= kill.killed_at), None)
        rows.append({"service": kill.service, "how": kill.how, "restart_s": round(kill.back_at - kill.killed_at, 2),
                     "first_200_s": round(first - kill.killed_at, 2) if first else None})
    def spread(values: list[float]) -> dict[str, Any]:
        values = sorted(values)
        return {"count": len(values), "p50": round(statistics.median(values), 1) if values else None,
                "p95": round(values[int(0.95 * (len(values) - 1))], 1) if values else None}

    return {"seed": SEED, "rounds": ROUNDS, "clients": CLIENTS, "load_avg": os.getloadavg(), "kills": rows,
            "breaker_503_ms": spread([(r["t1"] - r["t0"]) * 1000 for r in records
                                      if r.get("code") == "inference_unavailable"]),
            "ok_200_ms": spread([(t1 - t0) * 1000 for t0, t1 in served])}


def print_report(report: dict[str, Any], records: list[dict[str, Any]]) -> None:
    answers = Counter((r["status"], r.get("code")) for r in records)
    print(f"[faults] {len(records)} requests: {dict(answers.most_common())}", flush=True)
    print("[faults] service                 how                                   restart  first 200", flush=True)
    for row in report["kills"]:
        first = f"{row['first_200_s']:.2f} s" if row["first_200_s"] is not None else "-"
        print(f"[faults] {row['service']:<23} {row['how']:<37} {row['restart_s']:>6.2f} s  {first}", flush=True)
    print(f"[faults] end to end, ms: breaker 503s {report['breaker_503_ms']}, 200s {report['ok_200_ms']}; "
          f"load average {report['load_avg']}", flush=True)
