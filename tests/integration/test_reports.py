"""Finance reports on moto's server: usage rows and their grouping, CSV, the paginated
ledger, invoices (CONTRACT.md §6)."""

from __future__ import annotations

import csv
import io
import uuid
from decimal import Decimal

import pytest

from gateway.domain.money import tiered_cost
from gateway.domain.usage import UsageEvent
from gateway.errors import InvalidRequestError
from gateway.models.records import TenantRecord, rfc3339, utcnow
from gateway.services.reports import EVENT_COLUMNS, INVOICE_COLUMNS, USAGE_COLUMNS, to_csv

JAN1 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000
MODEL = "all-MiniLM-L6-v2"


def tenant(container, plan: str, name: str) -> str:
    tid = f"ten_{uuid.uuid4().hex[:8]}"
    container.accounts.create_tenant(TenantRecord(id=tid, name=name, plan=plan, created_at=rfc3339(utcnow())))
    return tid


def charge(container, tid: str, tokens: list[int], day: int = 0) -> list[UsageEvent]:
    """Charged requests, each with the cost admission fixed for it (the plan's flat price)."""
    plan = container.limits.plan(container.accounts.get_tenant(tid).plan)
    events = [UsageEvent(request_id=uuid.uuid4().hex, tenant_id=tid, key_id="key_1", model=MODEL,
                         prompt_tokens=n, timestamp_ms=JAN1 + day * DAY + i * 1000,
                         cost_nano=tiered_cost(0, n, plan.pricing(MODEL))[0]) for i, n in enumerate(tokens)]
    container.usage.record_usage(events)
    return events


@pytest.fixture
def books(container):  # type: ignore[no-untyped-def]
    a, b = tenant(container, "starter", "Acme, Inc."), tenant(container, "pro", "Beta")
    charge(container, a, [3, 3, 3], day=0)        # 9 tokens on Jan 1
    charge(container, a, [1000], day=1)            # 1,000 tokens on Jan 2
    charge(container, b, [2500] * 2, day=0)        # 5,000 tokens on Jan 1
    charge(container, b, [7], day=40)              # February: outside January
    return container.reports, a, b


def test_usage_rows_by_tenant_day_and_model_with_exact_costs(books):
    reports, a, b = books
    rows = reports.usage(start="2026-01-01", end="2026-01-31")
    assert {(r["tenant_id"], r["date"]) for r in rows} == {(a, "2026-01-01"), (a, "2026-01-02"), (b, "2026-01-01")}
    by_key = {(r["tenant_id"], r["date"]): r for r in rows}
    assert by_key[(a, "2026-01-01")] == {"tenant_id": a, "date": "2026-01-01", "model": MODEL, "requests": 3,
                                         "prompt_tokens": 9, "cost": "0.000045", "currency": "USD"}
    assert by_key[(a, "2026-01-02")]["cost"] == "0.005"
    assert by_key[(b, "2026-01-01")]["cost"] == "0.01"


def test_group_by_folds_the_other_dimensions(books):
    reports, a, b = books
    by_tenant = reports.usage(start="2026-01-01", end="2026-01-31", group_by="tenant")
    assert {r["tenant_id"]: (r["requests"], r["prompt_tokens"], r["cost"]) for r in by_tenant} == {
        a: (4, 1009, "0.005045"), b: (2, 5000, "0.01")}
    assert all(r["date"] is None and r["model"] is None for r in by_tenant)
    by_day = reports.usage(start="2026-01-01", end="2026-01-31", group_by="day")
    assert [(r["date"], r["prompt_tokens"], r["cost"]) for r in by_day] == [
        ("2026-01-01", 5009, "0.010045"), ("2026-01-02", 1000, "0.005")]
    by_model = reports.usage(start="2026-01-01", end="2026-01-31", group_by="model", tenant_id=a)
    assert [(r["model"], r["requests"]) for r in by_model] == [(MODEL, 4)]
    with pytest.raises(InvalidRequestError):
        reports.usage(start="2026-01-01", end="2026-01-31", group_by="week")


def test_csv_opens_cleanly_in_a_spreadsheet(books):
    reports, a, _ = books
    text = to_csv(reports.usage(start="2026-01-01", end="2026-01-31", tenant_id=a), USAGE_COLUMNS)
    assert text.startswith(",".join(USAGE_COLUMNS) + "\r\n")
    assert text.count("\r\n") == 3 and "\n" not in text.replace("\r\n", "")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["date"] for r in rows] == ["2026-01-01", "2026-01-02"]
    assert [r["cost"] for r in rows] == ["0.000045", "0.005"]  # never 4.5E-5
    invoice = reports.invoices(month="2026-01")
    text = to_csv(invoice["lines"], INVOICE_COLUMNS)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == 2 and set(parsed[0]) == set(INVOICE_COLUMNS)
    assert any(r["tenant_name"] == "Acme, Inc." for r in parsed)  # the comma is quoted, not a new column


def test_events_are_the_ledger_paginated_with_utc_timestamps(books):
    reports, a, _ = books
    seen, cursor = [], None
    while True:
        rows, cursor = reports.events(tenant_id=a, start="2026-01-01", end="2026-01-31", cursor=cursor, limit=2)
        seen += rows
        if not cursor:
            break
    assert len(seen) == 4 and set(seen[0]) == set(EVENT_COLUMNS)
    assert seen[0]["timestamp"] == "2026-01-01T00:00:00.000Z"
    assert [r["prompt_tokens"] for r in seen] == [3, 3, 3, 1000]
    with pytest.raises(InvalidRequestError):
        reports.events(tenant_id=None, start="2026-01-01", end="2026-01-31", cursor=None)
    with pytest.raises(InvalidRequestError):
        reports.events(tenant_id=a, start="2026-01-01", end="2026-01-31", cursor=None, limit="0")


def test_invoice_has_a_line_per_tenant_and_model_subtotals_and_totals(books):
    reports, a, b = books
    invoice = reports.invoices(month="2026-01")
    lines = {line["tenant_id"]: line for line in invoice["lines"]}
    assert set(lines) == {a, b}  # the operators' tenant has no usage: no line
    assert (lines[a]["requests"], lines[a]["prompt_tokens"], lines[a]["unit_price_per_1k_tokens"],
            lines[a]["amount"]) == (4, 1009, "0.005", "0.01")  # 0.005045 -> 0.01
    assert (lines[b]["prompt_tokens"], lines[b]["amount"]) == (5000, "0.01")
    assert invoice["totals"] == [{"currency": "USD", "requests": 6, "prompt_tokens": 6009, "amount": "0.02",
                                  "credits_applied": "0.00", "amount_due": "0.02"}]
    assert sum(Decimal(s["amount"]) for s in invoice["subtotals"]) == Decimal("0.02")
    assert reports.invoices(month="2026-03")["lines"] == []
    with pytest.raises(InvalidRequestError):
        reports.invoices(month="2026-1")


def test_csv_never_hands_a_spreadsheet_a_formula(container):
    tid = tenant(container, "starter", '=HYPERLINK("http://evil.example","pay")')
    charge(container, tid, [10])
    invoice = container.reports.invoices(month="2026-01")
    [row] = [r for r in csv.DictReader(io.StringIO(to_csv(invoice["lines"], INVOICE_COLUMNS)))
             if r["tenant_id"] == tid]
    assert row["tenant_name"] == '\'=HYPERLINK("http://evil.example","pay")'
    assert to_csv([{"cost": "-0.5"}], ["cost"]) == "cost\r\n-0.5\r\n"  # numbers stay numbers
