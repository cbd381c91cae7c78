"""Finance on the running local stack, through HTTP: the finance API with a finance key
(JSON and CSV), a tenant's own usage only on /v1/usage, and the `maas` finance commands."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gateway.cli import main as maas
from tests.e2e.conftest import Api

MODEL = "all-MiniLM-L6-v2"


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def window() -> dict[str, str]:
    now = datetime.now(UTC)
    day = timedelta(days=1)
    return {"start": (now - day).strftime("%Y-%m-%d"), "end": (now + day).strftime("%Y-%m-%d")}


@pytest.fixture(scope="module")
def finance(stack, admin) -> Api:
    created = admin.post("/billing/tenants/ten_operators/keys", json={"name": "finance", "scopes": ["finance"]})
    assert created.status_code == 201, created.text
    return Api(stack.api_url, created.json()["key"])


def spend(stack, tenant: dict, texts: list[str]) -> list[tuple[str, int]]:
    api = Api(stack.api_url, tenant["key"])
    charged = []
    for text in texts:
        response = api.post("/v1/embeddings", json={"model": MODEL, "input": text})
        assert response.status_code == 200, response.text
        charged.append((response.headers["x-request-id"], response.json()["usage"]["prompt_tokens"]))
    return charged


def ledger(finance: Api, tenant_id: str, **params) -> list[dict]:
    rows, cursor = [], None
    while True:
        page = finance.get("/billing/usage/events", params={"tenant_id": tenant_id, **window(), **params,
                                                           **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["object"] == "list"
        rows += body["data"]
        cursor = body.get("next_cursor")
        if not cursor:
            return rows


def wait_for_ledger(finance: Api, tenant_id: str, count: int, within_s: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + within_s
    while True:
        rows = ledger(finance, tenant_id)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_finance_api_reports_usage_events_and_invoices(stack, admin, tenant, finance):
    charged = spend(stack, tenant, ["a", "hello world", "the quick brown fox"])
    rows = wait_for_ledger(finance, tenant["id"], 3)
    # the ledger: one row per charged request, paginated (limit 2 -> two pages)
    assert sorted(r["request_id"] for r in rows) == sorted(rid for rid, _ in charged)
    assert len(ledger(finance, tenant["id"], limit=2)) == 3
    # usage rows, priced exactly from the plan (starter: 0.0050 per 1k tokens)
    tokens = sum(n for _, n in charged)
    usage = finance.get("/billing/usage", params={**window(), "tenant_id": tenant["id"]}).json()
    assert usage["object"] == "list" and "next_cursor" not in usage
    assert [(r["tenant_id"], r["model"], r["requests"], r["prompt_tokens"], r["currency"]) for r in usage["data"]] == [
        (tenant["id"], MODEL, 3, tokens, "USD")]
    assert Decimal(usage["data"][0]["cost"]) == Decimal(tokens) * Decimal("0.005") / 1000
    # CSV: a header row, CRLF, the same numbers
    as_csv = finance.get("/billing/usage", params={**window(), "tenant_id": tenant["id"], "format": "csv"})
    assert as_csv.headers["Content-Type"].startswith("text/csv")
    assert as_csv.text.startswith("tenant_id,date,model,requests,prompt_tokens,cost,currency\r\n")
    assert list(csv.DictReader(io.StringIO(as_csv.text)))[0]["cost"] == usage["data"][0]["cost"]
    # the month's invoice has this tenant's line; totals are sums of lines
    invoice = finance.get("/billing/invoices", params={"month": today()[:7]}).json()
    line = next(x for x in invoice["data"] if x["tenant_id"] == tenant["id"])
    assert (line["model"], line["requests"], line["prompt_tokens"]) == (MODEL, 3, tokens)
    usd = next(t for t in invoice["totals"] if t["currency"] == "USD")
    assert Decimal(usd["amount"]) == sum(Decimal(x["amount"]) for x in invoice["data"] if x["currency"] == "USD")
    # scope: an inference key is no finance key
    denied = Api(stack.api_url, tenant["key"]).get("/billing/usage", params=window())
    assert denied.status_code == 403 and denied.json()["error"]["code"]


def test_v1_usage_shows_only_the_callers_tenant(stack, admin, finance):
    tenants = []
    for name in ("left", "right"):
        created = admin.post("/billing/tenants", json={"name": name, "plan": "starter"}).json()
        key = admin.post(f"/billing/tenants/{created['id']}/keys", json={"scopes": ["inference", "usage:read"]})
        tenants.append(created | {"key": key.json()["key"]})
    left, right = tenants
    spend(stack, left, ["one"])
    spend(stack, right, ["two words", "three more words"])
    wait_for_ledger(finance, right["id"], 2)
    wait_for_ledger(finance, left["id"], 1)
    deadline = time.monotonic() + 5
    while True:
        mine = Api(stack.api_url, left["key"]).get("/v1/usage", params={**window(), "tenant_id": right["id"]})
        assert mine.status_code == 200, mine.text
        if mine.json()["data"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    rows = mine.json()["data"]
    assert rows and {r["tenant_id"] for r in rows} == {left["id"]}  # tenant_id=right is ignored
    assert sum(r["requests"] for r in rows) == 1
    theirs = Api(stack.api_url, right["key"]).get("/v1/usage", params=window()).json()["data"]
    assert {r["tenant_id"] for r in theirs} == {right["id"]} and sum(r["requests"] for r in theirs) == 2


def test_finance_cli_reports_exports_and_invoices(stack, tenant, finance, tmp_path, capsys):
    spend(stack, tenant, ["cli one", "cli two"])
    wait_for_ledger(finance, tenant["id"], 2)
    key = finance.session.headers["Authorization"].removeprefix("Bearer ")
    flags = ["--url", stack.api_url, "--key", key]
    month = today()[:7]

    out = tmp_path / "usage.csv"
    assert maas(["usage", "report", "--month", month, "--format", "csv", "--out", str(out), *flags]) == 0
    text = out.read_bytes().decode()
    assert text.startswith("tenant_id,date,model,requests,prompt_tokens,cost,currency\r\n")
    assert tenant["id"] in text

    events = tmp_path / "events.csv"
    assert maas(["usage", "events", "--month", month, "--tenant-id", tenant["id"], "--page-size", "1",
                 "--out", str(events), *flags]) == 0
    rows = list(csv.DictReader(io.StringIO(events.read_text())))
    assert len(rows) == 2 and set(rows[0]) == {"request_id", "key_id", "model", "prompt_tokens", "cost", "timestamp"}
    assert all(Decimal(row["cost"]) >= 0 for row in rows)  # each request's exact cost, a plain decimal

    capsys.readouterr()
    assert maas(["usage", "report", "--month", month, "--tenant-id", tenant["id"], *flags]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["TENANT_ID", "DATE", "MODEL", "REQUESTS", "PROMPT_TOKENS", "COST",
                                             "CURRENCY"] and tenant["id"] in table
    assert maas(["invoices", "--month", month, *flags]) == 0
    assert tenant["id"] in capsys.readouterr().out
    assert maas(["invoices", "--month", month, "--format", "json", *flags]) == 0
    invoice = json.loads(capsys.readouterr().out)
    assert any(x["tenant_id"] == tenant["id"] for x in invoice["data"])

    with pytest.raises(SystemExit):
        maas(["invoices", "--month", "2026-13", *flags])
