"""Reconcile: rollups recomputed from the ledger; drift reported per tenant/day/model, the
CLI exits 1 on drift, --fix rewrites the rollups, LedgerDrift reaches CloudWatch (moto)."""

from __future__ import annotations

import json
import uuid
from datetime import date

import boto3

from gateway.cli import main as maas
from gateway.domain.usage import UsageEvent
from gateway.models.records import TenantRecord, rfc3339, utcnow

JAN1 = 1_767_225_600_000
DAY = 86_400_000


def books(container) -> str:
    tid = f"ten_{uuid.uuid4().hex[:8]}"
    container.accounts.create_tenant(TenantRecord(id=tid, name="r", plan="starter", created_at=rfc3339(utcnow())))
    container.usage.record_usage([
        UsageEvent(request_id=uuid.uuid4().hex, tenant_id=tid, key_id="k", model=model, prompt_tokens=5,
                   timestamp_ms=JAN1 + day * DAY + i)
        for day in range(3) for model in ("all-MiniLM-L6-v2", "other") for i in range(4)])
    return tid


def corrupt(container, tid: str) -> None:
    table, client = container.settings.table_name, container.dynamodb
    # one rollup counted twice, one lost, one that no ledger item backs
    client.update_item(TableName=table, Key={"pk": {"S": f"USAGE#{tid}"}, "sk": {"S": "2026-01-01#other#k"}},
                       UpdateExpression="ADD requests :r, prompt_tokens :t",
                       ExpressionAttributeValues={":r": {"N": "1"}, ":t": {"N": "5"}})
    client.delete_item(TableName=table, Key={"pk": {"S": f"USAGE#{tid}"}, "sk": {"S": "2026-01-02#other#k"}})
    client.put_item(TableName=table, Item={"pk": {"S": f"USAGE#{tid}"}, "sk": {"S": "2026-01-20#ghost#k"},
                                           "date": {"S": "2026-01-20"}, "model": {"S": "ghost"}, "key_id": {"S": "k"},
                                           "requests": {"N": "2"}, "prompt_tokens": {"N": "9"}})


def test_rollups_equal_the_ledger_when_nothing_went_wrong(container):
    tid = books(container)
    result = container.reconciler.run(date(2026, 1, 1), date(2026, 1, 31), tenant_ids=[tid])
    assert (result.cells, result.drift, result.unstable) == (6, [], [])


def test_drift_is_found_reported_and_fixed(container, monkeypatch, capsys, moto):
    tid = books(container)
    corrupt(container, tid)
    for name, value in container.settings.to_env().items():  # the CLI builds its container from the environment
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", f"http://127.0.0.1:{moto.port}")

    assert maas(["usage", "reconcile", "--month", "2026-01", "--tenant-id", tid, "--json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert found["drift_cells"] == 3 and found["drift_tokens"] == 5 + 20 + 9
    assert {(d["date"], d["model"], d["ledger_prompt_tokens"], d["rollup_prompt_tokens"]) for d in found["drift"]} == {
        ("2026-01-01", "other", 20, 25), ("2026-01-02", "other", 20, 0), ("2026-01-20", "ghost", 0, 9)}

    cloudwatch = boto3.client("cloudwatch", endpoint_url=f"http://127.0.0.1:{moto.port}")
    names = {m["MetricName"] for m in cloudwatch.list_metrics(Namespace="MaasGateway")["Metrics"]}
    assert {"LedgerDrift", "LedgerDriftTokens"} <= names

    assert maas(["usage", "reconcile", "--month", "2026-01", "--tenant-id", tid, "--fix", "--no-metric"]) == 0
    assert "3 drifting" in capsys.readouterr().out
    assert maas(["usage", "reconcile", "--month", "2026-01", "--tenant-id", tid, "--no-metric"]) == 0
    assert "0 drifting" in capsys.readouterr().out
    rollups = container.usage.rollups(tid, "2026-01-01", "2026-01-31")
    assert sorted((r["sk"], int(r["requests"]), int(r["prompt_tokens"])) for r in rollups) == sorted(
        (f"2026-01-0{d + 1}#{m}#k", 4, 20) for d in range(3) for m in ("all-MiniLM-L6-v2", "other"))
