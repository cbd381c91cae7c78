"""The scheduled ReconcileFunction through its real handler: it measures the month's drift
between ledger and rollups, records it (GET /billing/reconcile) and publishes it where
LedgerDriftAlarm looks (the local DynamoDB, and moto's server as CloudWatch)."""

from __future__ import annotations

import importlib.util
import json
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from gateway.adapters.dynamo import CellSums
from gateway.domain.usage import UsageEvent
from gateway.models.records import TenantRecord, rfc3339, utcnow
from tests.lambdas import configure, context_for, record_calls

ROOT = Path(__file__).resolve().parents[2]


def reconcile_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("functional_reconcile", ROOT / "functions" / "reconcile" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return record_calls(module, "reconcile")


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


def test_scheduled_event_publishes_the_months_drift(container, moto, monkeypatch):
    # GIVEN a tenant whose ledger holds 3 requests of 5 tokens this month, and a rollup that
    # says 2 requests of 10 tokens (drift: 5 tokens); the function is configured as in AWS,
    # its CloudWatch client finds moto's server
    moto_url = f"http://127.0.0.1:{moto.port}"
    configure(monkeypatch, container.settings)
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", moto_url)
    tenant = f"ten_{uuid.uuid4().hex[:10]}"
    container.accounts.create_tenant(TenantRecord(id=tenant, name="r", plan="starter", created_at=rfc3339(utcnow())))
    now_ms = int(time.time() * 1000)
    events = [UsageEvent(request_id=uuid.uuid4().hex, tenant_id=tenant, key_id="key_r", model="all-MiniLM-L6-v2",
                         prompt_tokens=5, timestamp_ms=now_ms) for _ in range(3)]
    assert container.usage.record_usage(events) == 3
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    container.usage.set_rollup(tenant, today, "all-MiniLM-L6-v2", "key_r", sums=CellSums(requests=2, tokens=10),
                               expected=CellSums(requests=3, tokens=15))
    # WHEN the schedule fires
    scheduled = json.loads((ROOT / "events" / "reconcile" / "scheduled.json").read_text())
    result = reconcile_module().handler(scheduled, context_for("reconcile"))
    # THEN the drift is measured and published in the alarm's namespace and dimension
    this_month = result["months"][-1]
    assert this_month["month"] == datetime.now(UTC).strftime("%Y-%m")
    assert (this_month["drift_cells"], this_month["drift_tokens"]) == (1, 5)
    cloudwatch = cloudwatch_client(moto_url, container.settings.aws_region)
    assert drift_datapoints(cloudwatch) == {"LedgerDrift": 1.0, "LedgerDriftTokens": 5.0}
    # AND finance can read the outcome
    status = container.reports.reconciliation(this_month["month"])
    assert (status["status"], status["drift_cells"], status["drift_tokens"]) == ("drift", 1, 5)


def test_no_drift_publishes_zero(container, moto):
    cloudwatch = cloudwatch_client(f"http://127.0.0.1:{moto.port}", "ap-southeast-2")  # a region no other test uses
    tenant = f"ten_{uuid.uuid4().hex[:10]}"
    container.accounts.create_tenant(TenantRecord(id=tenant, name="r", plan="starter", created_at=rfc3339(utcnow())))
    container.usage.record_usage([UsageEvent(request_id=uuid.uuid4().hex, tenant_id=tenant, key_id="k",
                                             model="all-MiniLM-L6-v2", prompt_tokens=7,
                                             timestamp_ms=int(time.time() * 1000))])
    summaries = reconcile_module().reconcile(container.reconciler, cloudwatch, datetime.now(UTC).date())
    assert summaries[-1]["drift_cells"] == 0 and summaries[-1]["tenants"] >= 1
    assert drift_datapoints(cloudwatch) == {"LedgerDrift": 0.0, "LedgerDriftTokens": 0.0}
