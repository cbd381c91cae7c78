"""Finance reports: priced usage rows, the request-level ledger, monthly invoices.

Usage and invoices read the rollups (tenant x day x model, kept by the flusher; the
ledger is the source of truth and ``maas usage reconcile`` proves they agree); the events
listing reads the ledger itself. Money follows the rounding rule of gateway/domain/money.py:
usage costs are exact, invoice lines are rounded once to the cent (half to even) and
totals are sums of rounded lines. CSV: a header row, ISO dates, plain decimal strings,
CRLF line ends (RFC 4180), UTF-8 without a byte order mark."""

from __future__ import annotations

import calendar
import csv
import io
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import IO, Any

from gateway.adapters.dynamo import Accounts, Reconciliations, UsageLedger, sums_of
from gateway.domain.batches import model_of_label
from gateway.domain.money import fmt, fmt_minor, from_nano, total, usage_cost
from gateway.domain.plans import Plan
from gateway.errors import InvalidRequestError, NotFoundError
from gateway.models.records import TenantRecord, rfc3339
from gateway.services.limits import LimitsResolver

DIMENSIONS = ("tenant", "day", "model")
USAGE_COLUMNS = ["tenant_id", "date", "model", "requests", "prompt_tokens", "cost", "currency"]
EVENT_COLUMNS = ["request_id", "key_id", "model", "prompt_tokens", "timestamp", "cost"]
# The contract's columns first; what prepaid credit covered and the price tiers after them.
INVOICE_COLUMNS = ["month", "tenant_id", "tenant_name", "plan", "model", "requests", "prompt_tokens",
                   "unit_price_per_1k_tokens", "amount", "currency", "credits_applied", "amount_due", "billing_mode",
                   "tier_tokens"]
SUBTOTAL_COLUMNS = ["month", "tenant_id", "tenant_name", "requests", "prompt_tokens", "amount", "currency",
                    "credits_applied", "amount_due"]
MAX_RANGE_DAYS = 366
MAX_PAGE = 1000


_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")  # calendar dates only: no week (2026-W01-1) or ordinal forms
_MONTH = re.compile(r"^[0-9]{4}-[0-9]{2}$")


def parse_date(value: str | None, param: str) -> date:
    if not value:
        raise InvalidRequestError(f"'{param}' is required (YYYY-MM-DD).", param=param)
    try:
        if not _DATE.match(value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequestError(f"'{param}' must be a date as YYYY-MM-DD.", param=param) from None


def parse_range(start: str | None, end: str | None) -> tuple[date, date]:
    first, last = parse_date(start, "start"), parse_date(end, "end")
    if last < first:
        raise InvalidRequestError("'end' is before 'start'.", param="end")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise InvalidRequestError(f"A report spans at most {MAX_RANGE_DAYS} days.", param="end")
    return first, last


def parse_month(value: str | None) -> tuple[date, date]:
    try:
        if not value or not _MONTH.match(value):
            raise ValueError
        first = datetime.strptime(value, "%Y-%m").date()
    except ValueError:
        raise InvalidRequestError("'month' must be YYYY-MM.", param="month") from None
    return first, first.replace(day=calendar.monthrange(first.year, first.month)[1])


def parse_group_by(value: str | None) -> tuple[str, ...]:
    if not value:
        return DIMENSIONS
    chosen = tuple(dict.fromkeys(part.strip() for part in value.split(",")))
    unknown = [part for part in chosen if part not in DIMENSIONS]
    if unknown:
        raise InvalidRequestError(f"group_by takes {', '.join(DIMENSIONS)} (comma separated).", param="group_by")
    return chosen


# What makes a spreadsheet run a cell as a formula (OWASP's CSV injection list), also in
# full width (＝, ＋, －, ＠: NFKC folds them) and after leading blanks, NBSP included,
# which spreadsheets skip.
_FORMULA_CHARS = frozenset("=+-@\t\r\n")
_PLAIN_NUMBER = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?$")


def _cell(value: Any) -> Any:
    """A CSV cell; text a spreadsheet would run as a formula (a tenant named "=HYPERLINK(...)")
    gets a leading apostrophe. Plain numbers (``-5``, ``0.25``) are left alone."""
    if value is None:
        return ""
    if isinstance(value, str) and value and not _PLAIN_NUMBER.match(value):
        head = unicodedata.normalize("NFKC", value.lstrip()[:1] or value[:1])
        if value[0] in _FORMULA_CHARS or head in _FORMULA_CHARS:
            return "'" + value
    return value


def csv_writer(out: IO[str], columns: list[str]) -> Callable[[dict[str, Any]], None]:
    """RFC 4180 rows, CRLF line ends, quoting only where needed, formula-safe cells: writes
    the header row now and returns the function that writes one row."""
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    return lambda row: writer.writerow({k: _cell(row.get(k)) for k in columns})


def to_csv(rows: Iterable[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    write = csv_writer(buffer, columns)
    for row in rows:
        write(row)
    return buffer.getvalue()


class ReportsService:
    def __init__(self, *, accounts: Accounts, usage: UsageLedger, limits: LimitsResolver,
                 reconciliations: Reconciliations | None = None) -> None:
        self.accounts = accounts
        self.ledger = usage
        self.limits = limits
        self.reconciliations = reconciliations

    def reconciliation(self, month: str | None) -> dict[str, Any]:
        """When the month's books were last proved (ledger = rollups, no grant overspent) and
        what was found; ``not_run`` before the first reconciliation of the month."""
        first, _ = parse_month(month)
        label = first.strftime("%Y-%m")
        found = self.reconciliations.get(label) if self.reconciliations is not None else None
        view: dict[str, Any] = {"object": "reconciliation", "month": label, "status": "not_run", "checked_at": None,
                                "tenants": 0, "cells": 0, "drift_cells": 0, "drift_tokens": 0,
                                "unstable_cells": 0, "overspent_grants": 0}
        if found:
            view |= {k: (int(v) if isinstance(v, Decimal) else v) for k, v in found.items() if k in view}
        return view

    def _tenants(self, tenant_id: str | None) -> list[TenantRecord]:
        if tenant_id:
            tenant = self.accounts.get_tenant(tenant_id)
            if tenant is None:
                raise NotFoundError(f"No tenant '{tenant_id}'.", param="tenant_id", code="tenant_not_found")
            return [tenant]
        tenants: list[TenantRecord] = []
        cursor = None
        while True:
            page, cursor = self.accounts.list_tenants(cursor=cursor, limit=1000)
            tenants += page
            if not cursor:
                return tenants

    def _cost(self, tenant: TenantRecord, rollup: dict[str, Any]) -> tuple[Decimal, str]:
        """A rollup's exact cost (the sum of its requests' costs, fixed at admission) and
        currency. Rollups written before costs were recorded are priced at the plan's flat price."""
        plan = self.limits.plan(tenant.plan)
        if "cost_nano" in rollup:
            return from_nano(int(rollup["cost_nano"])), plan.currency
        price = plan.price_per_1k_tokens.get(rollup["model"], Decimal(0))
        return usage_cost(int(rollup["prompt_tokens"]), price), plan.currency

    def usage(self, *, start: str | None, end: str | None, tenant_id: str | None = None,
              group_by: str | None = None) -> list[dict[str, Any]]:
        first, last = parse_range(start, end)
        dimensions = parse_group_by(group_by)
        cells: dict[tuple[str | None, ...], dict[str, Any]] = {}
        for tenant in self._tenants(tenant_id):
            for rollup in self.ledger.rollups(tenant.id, first.isoformat(), last.isoformat()):
                cost, currency = self._cost(tenant, rollup)
                key = (
                    tenant.id if "tenant" in dimensions else None,
                    rollup["date"] if "day" in dimensions else None,
                    rollup["model"] if "model" in dimensions else None,
                    currency,
                )
                cell = cells.setdefault(key, {"requests": 0, "prompt_tokens": 0, "cost": Decimal(0)})
                tokens = int(rollup["prompt_tokens"])
                cell["requests"] += int(rollup["requests"])
                cell["prompt_tokens"] += tokens
                cell["cost"] += cost
        rows = [
            {"tenant_id": t, "date": d, "model": m, "requests": c["requests"],
             "prompt_tokens": c["prompt_tokens"], "cost": fmt(c["cost"]), "currency": cur}
            for (t, d, m, cur), c in cells.items()
        ]
        return sorted(rows, key=lambda r: (r["date"] or "", r["tenant_id"] or "", r["model"] or ""))

    def events(self, *, tenant_id: str | None, start: str | None, end: str | None,
               cursor: str | None, limit: int | str | None = 100) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the ledger, oldest first; ``next_cursor`` continues it."""
        if not tenant_id:
            raise InvalidRequestError("'tenant_id' is required.", param="tenant_id")
        limit = parse_limit(limit)
        first, last = parse_range(start, end)
        self._tenants(tenant_id)
        page = self.ledger.ledger(tenant_id, first.isoformat(), last.isoformat(), cursor=cursor, limit=limit)
        return [_event_row(item) for item in page.items], page.next_cursor

    def invoices(self, *, month: str | None) -> dict[str, Any]:
        """One line per tenant and model with usage in the month. A line's amount is its exact
        cost (the sum of its requests' costs) rounded once, half to even, to the currency's
        minor unit; prepaid credit applied and the tokens in each price tier are shown beside
        it. Each tenant's subtotal and the grand totals per currency are sums of rounded lines."""
        first, last = parse_month(month)
        label = first.strftime("%Y-%m")
        lines: list[dict[str, Any]] = []
        for tenant in self._tenants(None):
            plan = self.limits.plan(tenant.plan)
            per_model: dict[str, _Line] = defaultdict(_Line)
            for rollup in self.ledger.rollups(tenant.id, first.isoformat(), last.isoformat()):
                line = per_model[rollup["model"]]
                sums = sums_of(rollup)
                line.requests += sums.requests
                line.tokens += sums.tokens
                line.cost += self._cost(tenant, rollup)[0]
                line.credit += from_nano(sums.credit_nano)
                for i, n in enumerate(sums.tiers):
                    line.tiers[i] += n
            for model, line in sorted(per_model.items()):
                if line.requests == 0:
                    continue
                currency = plan.currency
                lines.append({
                    "month": label, "tenant_id": tenant.id, "tenant_name": tenant.name, "plan": tenant.plan,
                    "model": model, "requests": line.requests, "prompt_tokens": line.tokens,
                    "unit_price_per_1k_tokens": _unit_price(plan, model),
                    "amount": fmt_minor(line.cost, currency),
                    "credits_applied": fmt_minor(line.credit, currency),
                    "amount_due": fmt_minor(line.cost - line.credit, currency),
                    "currency": currency, "billing_mode": tenant.billing.mode,
                    "tiers": [{"up_to": tier.up_to, "price_per_1k_tokens": fmt(tier.price_per_1k_tokens),
                               "tokens": line.tiers.get(i, 0)} for i, tier in enumerate(plan.tiers.get(model, []))],
                })
                # In CSV the tiers read "up to 1000000 @ 0.02: 1200 tokens; above @ 0.01: 0 tokens".
                lines[-1]["tier_tokens"] = "; ".join(
                    f"{'above' if t['up_to'] is None else 'up to ' + str(t['up_to'])} @ {t['price_per_1k_tokens']}: "
                    f"{t['tokens']} tokens" for t in lines[-1]["tiers"])
        return {"month": label, "lines": lines, **invoice_totals(lines)}


@dataclass
class _Line:
    requests: int = 0
    tokens: int = 0
    cost: Decimal = Decimal(0)
    credit: Decimal = Decimal(0)
    tiers: dict[int, int] = field(default_factory=lambda: defaultdict(int))


def parse_limit(value: int | str | None) -> int:
    if value is None or value == "":
        return 100
    try:
        limit = int(value)
    except (TypeError, ValueError):
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequestError(f"'limit' is an integer from 1 to {MAX_PAGE}.", param="limit")
    return limit


def invoice_totals(lines: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per-tenant subtotals and grand totals per currency, each the sum of rounded lines."""
    tenants: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    currencies: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        tenants[(line["tenant_id"], line["currency"])].append(line)
        currencies[line["currency"]].append(line)

    def summed(group: list[dict[str, Any]]) -> dict[str, Any]:
        currency = group[0]["currency"]
        return {"requests": sum(x["requests"] for x in group),
                "prompt_tokens": sum(x["prompt_tokens"] for x in group),
                "amount": fmt_minor(total(Decimal(x["amount"]) for x in group), currency),
                "credits_applied": fmt_minor(total(Decimal(x["credits_applied"]) for x in group), currency),
                "amount_due": fmt_minor(total(Decimal(x["amount_due"]) for x in group), currency)}

    return {
        "subtotals": [{"month": group[0]["month"], "tenant_id": tenant_id, "tenant_name": group[0]["tenant_name"],
                       **summed(group), "currency": currency}
                      for (tenant_id, currency), group in tenants.items()],
        "totals": [{"currency": currency, **summed(group)} for currency, group in sorted(currencies.items())],
    }


def _event_row(item: dict[str, Any]) -> dict[str, Any]:
    moment = datetime.fromtimestamp(int(item["timestamp_ms"]) / 1000, UTC)
    return {
        "request_id": item["request_id"],
        "key_id": item["key_id"],
        "model": item["model"],
        "prompt_tokens": int(item["prompt_tokens"]),
        "timestamp": rfc3339(moment),
        # What the request was charged, exactly (its model's price on the tenant's plan).
        "cost": fmt(from_nano(int(item["cost_nano"]))) if "cost_nano" in item else None,
    }


def _unit_price(plan: Plan, label: str) -> str:
    """An invoice line's price per 1,000 tokens: the model's online or batch price (a batch's
    usage is its own line, ``<model>@batch``), or "tiered"."""
    model, batch = model_of_label(label)
    if batch:
        listed = plan.batch_price_listing(model)
        return listed if isinstance(listed, str) else "tiered"
    return fmt(plan.price_per_1k_tokens.get(model, Decimal(0))) if model not in plan.tiers else "tiered"
