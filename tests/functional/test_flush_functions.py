"""The flush dispatcher and its workers through their real handlers: the scheduled dispatcher
reads the active tenants, publishes the lag and asks for workers; each work order, handed to
the worker handler as Lambda's asynchronous invoke would, drains its share; the daily sweep
lists tenants the index misses. Real Redis, the local DynamoDB."""

from __future__ import annotations

import importlib.util
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.adapters.active_tenants import ActiveTenants
from gateway.adapters.flush_workers import work_order
from gateway.adapters.redis_store import usage_stream
from gateway.domain.usage import UsageEvent
from gateway.models.records import TenantRecord, rfc3339, utcnow
from tests.integration.test_active_tenants import charge
from tests.lambdas import configure, context_for, emf_metrics, handler_for, record_calls

ROOT = Path(__file__).resolve().parents[2]
SCHEDULED = json.loads((ROOT / "events" / "flush_dispatcher" / "scheduled.json").read_text())
SWEEP = json.loads((ROOT / "events" / "flush_dispatcher" / "sweep.json").read_text())


def dispatcher_module() -> Any:
    """functions/flush_dispatcher/app.py loaded fresh, as Lambda loads it (its container from the environment)."""
    spec = importlib.util.spec_from_file_location("functional_dispatcher", ROOT / "functions" / "flush_dispatcher" /
                                                  "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return record_calls(module, "flush_dispatcher")


class Orders:
    """Stands in for the Lambda API in LambdaFlushWorkers.start: keeps the work orders, which
    the test then hands to the real worker handler."""

    def __init__(self) -> None:
        self.orders: list[dict] = []

    def start(self, parts: int, until: float) -> int:
        self.orders += [work_order(part, parts, until) for part in range(parts)]
        return parts


def tenant(container) -> str:
    tenant_id = f"ten_{uuid.uuid4().hex[:10]}"
    container.accounts.create_tenant(TenantRecord(id=tenant_id, name="f", plan="starter",
                                                  created_at=rfc3339(utcnow())))
    container.seeder.seed(tenant_id)
    return tenant_id


@pytest.fixture
def configured(container, monkeypatch):  # type: ignore[no-untyped-def]
    configure(monkeypatch, container.settings.model_copy(update={
        "flush_worker_function": "maas-flusher:live", "flush_worker_events_per_minute": 5, "flush_workers_max": 3}))
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    return container


def test_the_dispatcher_sizes_the_workers_and_their_orders_drain_everything(configured, capsys):
    container = configured
    tenants = [tenant(container) for _ in range(4)]
    charged = {t: set(charge(container.limiter, t, 3)) for t in tenants}
    # WHEN the schedule fires
    module = dispatcher_module()
    orders = Orders()
    module.container.__dict__["flush_workers"] = orders  # handed in, as Container(...) takes clients
    dispatcher = module.handler
    answer = dispatcher(SCHEDULED, context_for("flush_dispatcher"))
    # THEN it saw the 4 tenants and 12 events and asked for workers at 5 events each (at most 3)
    assert answer == {"active": 4, "unflushed": 12, "workers": 3}
    assert [(o["part"], o["parts"]) for o in orders.orders] == [(0, 3), (1, 3), (2, 3)]
    seen = emf_metrics(capsys.readouterr().out)
    assert (seen["ActiveTenants"], seen["FlushWorkers"], seen["UnflushedEvents"]) == (4, 3, 12)
    assert seen["FlusherLagSeconds"] >= 0
    # AND the orders, run by the worker handler (briefly), drain everything exactly once
    worker = handler_for("flusher")
    written = 0
    for order in orders.orders:
        written += worker({**order, "until": time.time() + 0.3}, context_for("flusher"))["written"]
    assert written == 12
    for t in tenants:
        ledger = {i["request_id"] for i in container.usage.ledger_all(t, "2000-01-01", "2100-01-01")}
        assert ledger == charged[t]
    assert ActiveTenants(container.redis).members() == []
    assert dispatcher(SCHEDULED, context_for("flush_dispatcher")) == {"active": 0, "unflushed": 0, "workers": 0}


def test_the_daily_sweep_lists_tenants_the_index_misses(configured):
    container = configured
    lost = tenant(container)
    # entries on a stream the index does not list (written before the index existed)
    container.redis.xadd(usage_stream(lost), UsageEvent(request_id=uuid.uuid4().hex, tenant_id=lost, key_id="k",
                                                        model="all-MiniLM-L6-v2", prompt_tokens=3,
                                                        timestamp_ms=int(time.time() * 1000)).to_fields())
    assert ActiveTenants(container.redis).members() == []
    dispatcher = handler_for("flush_dispatcher")
    assert dispatcher(SWEEP, context_for("flush_dispatcher")) == {"listed": 1}
    assert ActiveTenants(container.redis).members() == [lost]


def test_without_redis_the_dispatcher_fails_and_publishes_no_lag(container, own_redis, monkeypatch, capsys):
    own_redis.kill()
    configure(monkeypatch, container.settings.model_copy(update={
        "redis_url": f"redis://127.0.0.1:{own_redis.port}/0", "flush_worker_function": "maas-flusher:live"}))
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    with pytest.raises(Exception):  # noqa: B017 - any failure: the invocation errs (the errors alarm)
        handler_for("flush_dispatcher")(SCHEDULED, context_for("flush_dispatcher"))
    assert "FlusherLagSeconds" not in emf_metrics(capsys.readouterr().out)  # missing data: the lag alarm fires
