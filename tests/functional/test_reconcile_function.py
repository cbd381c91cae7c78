"""The scheduled ReconcileFunction through its real handler: it measures the month's drift
between ledger and rollups and publishes it where LedgerDriftAlarm looks (real DynamoDB API
and CloudWatch API, both moto's server)."""

from __future__ import annotations

import importlib.util
import json
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from gateway.models.records import TenantRecord, UsageEvent, rfc3339, utcnow
from tests.functional.test_events import context_for

ROOT = Path(__file__).resolve().parents[2]


def reconcile_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("functional_reconcile", ROOT / "functions" / "reconcile" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("today, months", [
    (date(2026, 11, 29), [(date(2026, 11, 1), date(2026, 11, 30))]),
    (date(2026, 12, 1), [(date(2026, 11, 1), date(2026, 11, 30)), (date(2026, 12, 1), date(2026, 12, 31))]),
    (date(2027, 1, 1), [(date(2026, 12, 1), date(2026, 12, 31)), (date(2027, 1, 1), date(2027, 1, 31))]),
    (date(2028, 2, 10), [(date(2028, 2, 1), date(2028, 2, 29))]),
])
def test_months_to_reconcile(today, months):
    # The 1st also closes the month before, which is about to be invoiced.
    assert reconcile_module().months_to_reconcile(today) == months


def drift_datapoints(cloudwatch) -> dict[str, float]:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    values = {}
    for name in ("LedgerDrift", "LedgerDriftTokens"):
        stats = cloudwatch.get_metric_statistics(
            Namespace="MaasGateway", MetricName=name, Dimensions=[{"Name": "service", "Value": "maas-gateway"}],
            StartTime=now - timedelta(hours=1), EndTime=now + timedelta(minutes=1), Period=3600,
            Statistics=["Maximum"])
        values[name] = max((p["Maximum"] for p in stats["Datapoints"]), default=-1.0)
    return values


def cloudwatch_client(endpoint: str, region: str):  # type: ignore[no-untyped-def]
    return boto3.client("cloudwatch", endpoint_url=endpoint, region_name=region)


def test_scheduled_event_publishes_the_months_drift(container, dynamodb_endpoint, monkeypatch):
    import gateway.wiring

    # GIVEN a tenant whose ledger holds 3 requests of 5 tokens this month, and a rollup that
    # says 2 requests of 10 tokens (drift: 5 tokens); moto's server answers every service at
    # one address, where the handler's own CloudWatch client finds it
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", dynamodb_endpoint)
    monkeypatch.setattr(gateway.wiring, "_container", container)
    tenant = f"ten_{uuid.uuid4().hex[:10]}"
    container.store.create_tenant(TenantRecord(id=tenant, name="r", plan="starter", created_at=rfc3339(utcnow())))
    now_ms = int(time.time() * 1000)
    events = [UsageEvent(request_id=uuid.uuid4().hex, tenant_id=tenant, key_id="key_r", model="all-MiniLM-L6-v2",
                         prompt_tokens=5, timestamp_ms=now_ms) for _ in range(3)]
    assert container.store.record_usage(events) == 3
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    container.store.set_rollup(tenant, today, "all-MiniLM-L6-v2", requests=2, prompt_tokens=10, expected=(3, 15))
    # WHEN the schedule fires
    scheduled = json.loads((ROOT / "events" / "reconcile" / "scheduled.json").read_text())
    result = reconcile_module().handler(scheduled, context_for("reconcile"))
    # THEN the drift is measured and published in the alarm's namespace and dimension
    this_month = result["months"][-1]
    assert this_month["month"] == datetime.now(UTC).strftime("%Y-%m")
    assert (this_month["drift_cells"], this_month["drift_tokens"]) == (1, 5)
    cloudwatch = cloudwatch_client(dynamodb_endpoint, container.settings.aws_region)
    assert drift_datapoints(cloudwatch) == {"LedgerDrift": 1.0, "LedgerDriftTokens": 5.0}


def test_no_drift_publishes_zero(container, dynamodb_endpoint):
    cloudwatch = cloudwatch_client(dynamodb_endpoint, "ap-southeast-2")  # a region no other test publishes to
    tenant = f"ten_{uuid.uuid4().hex[:10]}"
    container.store.create_tenant(TenantRecord(id=tenant, name="r", plan="starter", created_at=rfc3339(utcnow())))
    container.store.record_usage([UsageEvent(request_id=uuid.uuid4().hex, tenant_id=tenant, key_id="k",
                                             model="all-MiniLM-L6-v2", prompt_tokens=7,
                                             timestamp_ms=int(time.time() * 1000))])
    summaries = reconcile_module().reconcile(container.store, cloudwatch, datetime.now(UTC).date())
    assert summaries[-1]["drift_cells"] == 0 and summaries[-1]["tenants"] >= 1
    assert drift_datapoints(cloudwatch) == {"LedgerDrift": 0.0, "LedgerDriftTokens": 0.0}
