"""Reconcile: recompute the rollups of a month from the ledger (the source of truth) and
report, or fix, every tenant x day x model x key cell where they differ: requests, tokens,
cost, the credit taken from each grant and the tokens in each price tier. And no grant may
have given more credit than it holds (remaining = amount - spent, never below zero).

A flush landing while a cell is read would show as false drift, so each tenant's rollups
are read before and after its ledger (strongly consistent reads): a cell that changed in
between is read again, and only a stable cell is compared. ``fix`` overwrites a drifting
cell only if it still holds what was read (a conditional write), so it never loses a
concurrent increment.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from gateway.adapters.dynamo import Accounts, CellSums, Credits, Reconciliations, UsageLedger, sums_of
from gateway.domain.money import fmt_nano, to_nano
from gateway.domain.usage import UsageEvent
from gateway.errors import ConflictError

Cell = tuple[str, str, str, int]  # (date, model, key id, ledger shard)
_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Drift:
    tenant_id: str
    date: str
    model: str
    key_id: str
    ledger_requests: int
    ledger_prompt_tokens: int
    ledger_cost: str
    rollup_requests: int
    rollup_prompt_tokens: int
    rollup_cost: str
    fixed: bool = False
    ledger_shard: int = 0  # the cell's ledger partition of the day (0 below 200 requests/s)

    def row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReconcileResult:
    month: str
    tenants: int = 0
    cells: int = 0
    drift: list[Drift] = field(default_factory=list)
    unstable: list[str] = field(default_factory=list)  # cells that kept changing (a flush in progress)
    overspent_grants: list[str] = field(default_factory=list)  # grants whose spent exceeds their amount

    @property
    def drift_tokens(self) -> int:
        return sum(abs(d.ledger_prompt_tokens - d.rollup_prompt_tokens) for d in self.drift)

    def summary(self) -> dict[str, Any]:
        return {"month": self.month, "tenants": self.tenants, "cells": self.cells,
                "drift_cells": len(self.drift), "drift_tokens": self.drift_tokens, "unstable": self.unstable,
                "overspent_grants": self.overspent_grants, "drift": [d.row() for d in self.drift]}


def _ledger_cells(usage: UsageLedger, tenant_id: str, first: date, last: date) -> dict[Cell, CellSums]:
    cells: dict[Cell, CellSums] = defaultdict(CellSums)
    for item in usage.ledger_all(tenant_id, first.isoformat(), last.isoformat(), consistent=True):
        day = datetime.fromtimestamp(int(item["timestamp_ms"]) / 1000, UTC).strftime("%Y-%m-%d")
        cell = (day, item["model"], str(item.get("key_id", "")), int(item.get("ledger_shard", 0)))
        cells[cell].add(UsageEvent(
            request_id=item["request_id"], tenant_id=tenant_id, key_id=str(item.get("key_id", "")),
            model=item["model"], prompt_tokens=int(item["prompt_tokens"]), timestamp_ms=int(item["timestamp_ms"]),
            cost_nano=int(item.get("cost_nano", 0)), debits=str(item.get("debits") or ""),
            tier_tokens=tuple(int(n) for n in item.get("tier_tokens") or ())))
    return dict(cells)


def _rollup_cells(usage: UsageLedger, tenant_id: str, first: date, last: date) -> dict[Cell, CellSums]:
    return {(r["date"], r["model"], str(r.get("key_id", "")), int(r.get("ledger_shard", 0))): sums_of(r)
            for r in usage.rollups(tenant_id, first.isoformat(), last.isoformat(), consistent=True)}


def _cell_name(tenant_id: str, cell: Cell) -> str:
    day, model, key_id, shard = cell
    return f"{tenant_id} {day} {model} {key_id}" + (f" shard {shard}" if shard else "")


def _same(a: CellSums | None, b: CellSums | None) -> bool:
    def norm(s: CellSums | None) -> tuple[Any, ...]:
        s = s or CellSums()
        tiers = list(s.tiers)
        while tiers and tiers[-1] == 0:
            tiers.pop()
        return (s.requests, s.tokens, s.cost_nano, s.credit_nano, tuple(tiers),
                tuple(sorted((g, n) for g, n in s.grants.items() if n)))
    return norm(a) == norm(b)


class Reconciler:
    def __init__(self, *, accounts: Accounts, usage: UsageLedger, credits: Credits,
                 log: Reconciliations | None = None) -> None:
        self.accounts = accounts
        self.usage = usage
        self.credits = credits
        self.log = log

    def run(self, first: date, last: date, *, tenant_ids: list[str] | None = None,
            fix: bool = False) -> ReconcileResult:
        """Check (and with ``fix``, repair) the month; a run over every tenant is recorded as
        the month's reconciliation status."""
        result = ReconcileResult(month=first.strftime("%Y-%m"))
        for tenant_id in tenant_ids if tenant_ids is not None else self.accounts.all_tenant_ids():
            result.tenants += 1
            self._tenant(tenant_id, first, last, fix, result)
            self._grants(tenant_id, last, result)
        if self.log is not None and tenant_ids is None:
            summary = result.summary()
            self.log.put(result.month, {
                "status": "drift" if result.drift or result.overspent_grants else "ok",
                **{k: summary[k] for k in ("tenants", "cells", "drift_cells", "drift_tokens")},
                "unstable_cells": len(result.unstable), "overspent_grants": len(result.overspent_grants)},
                checked_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
        return result

    def _tenant(self, tenant_id: str, first: date, last: date, fix: bool, result: ReconcileResult) -> None:
        pending: set[Cell] | None = None  # None: every cell
        stable: dict[Cell, tuple[CellSums | None, CellSums | None]] = {}
        for _ in range(_ATTEMPTS):
            before = _rollup_cells(self.usage, tenant_id, first, last)
            ledger = _ledger_cells(self.usage, tenant_id, first, last)
            after = _rollup_cells(self.usage, tenant_id, first, last)
            cells = set(before) | set(ledger) | set(after)
            if pending is not None:
                cells &= pending
            moving = {c for c in cells if not _same(before.get(c), after.get(c))}
            for cell in cells - moving:
                stable[cell] = (ledger.get(cell), after.get(cell))
            pending = moving
            if not moving:
                break
        result.unstable += [_cell_name(tenant_id, cell) for cell in sorted(pending or ())]
        result.cells += len(stable)
        for (day, model, key_id, shard), (in_ledger, in_rollup) in sorted(stable.items()):
            if _same(in_ledger, in_rollup):
                continue
            truth, seen = in_ledger or CellSums(), in_rollup or CellSums()
            fixed = False
            if fix:
                try:
                    self.usage.set_rollup(tenant_id, day, model, key_id, sums=truth, expected=in_rollup,
                                          shard=shard)
                    fixed = True
                except ConflictError:
                    result.unstable.append(_cell_name(tenant_id, (day, model, key_id, shard)))
            result.drift.append(Drift(tenant_id, day, model, key_id, truth.requests, truth.tokens,
                                      fmt_nano(truth.cost_nano), seen.requests, seen.tokens, fmt_nano(seen.cost_nano),
                                      fixed, shard))

    def _grants(self, tenant_id: str, last: date, result: ReconcileResult) -> None:
        grants = self.credits.grants(tenant_id, consistent=True)
        if not grants:
            return
        spent: dict[str, int] = defaultdict(int)
        since = min(g.created_at for g in grants)[:10]
        for item in self.usage.ledger_all(tenant_id, since, last.isoformat(), consistent=True):
            for part in filter(None, str(item.get("debits") or "").split(",")):
                grant_id, amount = part.split(":")
                spent[grant_id] += int(amount)
        for grant in grants:
            if spent[grant.id] > to_nano(Decimal(grant.amount)):
                result.overspent_grants.append(f"{tenant_id} {grant.id} spent {fmt_nano(spent[grant.id])} "
                                               f"of {grant.amount}")


def publish_drift(cloudwatch: Any, result: ReconcileResult) -> None:
    """LedgerDrift (cells that differ, overspent grants included) and LedgerDriftTokens, in the
    namespace and with the dimension the LedgerDriftAlarm of template.yaml watches."""
    dimensions = [{"Name": "service", "Value": "maas-gateway"}]
    cloudwatch.put_metric_data(Namespace="MaasGateway", MetricData=[
        {"MetricName": "LedgerDrift", "Dimensions": dimensions, "Unit": "Count",
         "Value": float(len(result.drift) + len(result.overspent_grants))},
        {"MetricName": "LedgerDriftTokens", "Dimensions": dimensions, "Unit": "Count",
         "Value": float(result.drift_tokens)},
    ])
