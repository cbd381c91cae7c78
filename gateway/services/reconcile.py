"""Reconcile: recompute the rollups of a month from the ledger (the source of truth) and
report, or fix, every tenant x day x model cell where they differ.

A flush landing while a cell is read would show as false drift, so each tenant's rollups
are read before and after its ledger (strongly consistent reads): a cell that changed in
between is read again, and only a stable cell is compared. ``fix`` overwrites a drifting
cell only if it still holds what was read (a conditional write), so it never loses a
concurrent increment.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

from gateway.adapters.dynamo import Accounts, UsageLedger
from gateway.errors import ConflictError

Cell = tuple[str, str]  # (date, model)
_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Drift:
    tenant_id: str
    date: str
    model: str
    ledger_requests: int
    ledger_prompt_tokens: int
    rollup_requests: int
    rollup_prompt_tokens: int
    fixed: bool = False

    def row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReconcileResult:
    month: str
    tenants: int = 0
    cells: int = 0
    drift: list[Drift] | None = None
    unstable: list[str] | None = None  # cells that kept changing (a flush in progress)

    @property
    def drift_tokens(self) -> int:
        return sum(abs(d.ledger_prompt_tokens - d.rollup_prompt_tokens) for d in self.drift or [])

    def summary(self) -> dict[str, Any]:
        return {"month": self.month, "tenants": self.tenants, "cells": self.cells,
                "drift_cells": len(self.drift or []), "drift_tokens": self.drift_tokens,
                "unstable": self.unstable or [], "drift": [d.row() for d in self.drift or []]}


def _ledger_cells(usage: UsageLedger, tenant_id: str, first: date, last: date) -> dict[Cell, tuple[int, int]]:
    cells: dict[Cell, list[int]] = defaultdict(lambda: [0, 0])
    for item in usage.ledger_all(tenant_id, first.isoformat(), last.isoformat(), consistent=True):
        day = datetime.fromtimestamp(int(item["timestamp_ms"]) / 1000, UTC).strftime("%Y-%m-%d")
        cell = cells[(day, item["model"])]
        cell[0] += 1
        cell[1] += int(item["prompt_tokens"])
    return {k: (v[0], v[1]) for k, v in cells.items()}


def _rollup_cells(usage: UsageLedger, tenant_id: str, first: date, last: date) -> dict[Cell, tuple[int, int]]:
    return {(r["date"], r["model"]): (int(r.get("requests", 0)), int(r.get("prompt_tokens", 0)))
            for r in usage.rollups(tenant_id, first.isoformat(), last.isoformat(), consistent=True)}


class Reconciler:
    def __init__(self, *, accounts: Accounts, usage: UsageLedger) -> None:
        self.accounts = accounts
        self.usage = usage

    def run(self, first: date, last: date, *, tenant_ids: list[str] | None = None,
            fix: bool = False) -> ReconcileResult:
        result = ReconcileResult(month=first.strftime("%Y-%m"), drift=[], unstable=[])
        for tenant_id in tenant_ids if tenant_ids is not None else self.accounts.all_tenant_ids():
            result.tenants += 1
            self._tenant(tenant_id, first, last, fix, result)
        return result

    def _tenant(self, tenant_id: str, first: date, last: date, fix: bool, result: ReconcileResult) -> None:
        assert result.drift is not None and result.unstable is not None
        pending: set[Cell] | None = None  # None: every cell
        stable: dict[Cell, tuple[tuple[int, int], tuple[int, int]]] = {}
        for _ in range(_ATTEMPTS):
            before = _rollup_cells(self.usage, tenant_id, first, last)
            ledger = _ledger_cells(self.usage, tenant_id, first, last)
            after = _rollup_cells(self.usage, tenant_id, first, last)
            cells = set(before) | set(ledger) | set(after)
            if pending is not None:
                cells &= pending
            moving = {c for c in cells if before.get(c) != after.get(c)}
            for cell in cells - moving:
                stable[cell] = (ledger.get(cell, (0, 0)), after.get(cell, (0, 0)))
            pending = moving
            if not moving:
                break
        result.unstable += [f"{tenant_id} {d} {m}" for d, m in sorted(pending or ())]
        result.cells += len(stable)
        for (day, model), (in_ledger, in_rollup) in sorted(stable.items()):
            if in_ledger == in_rollup:
                continue
            fixed = False
            if fix:
                try:
                    self.usage.set_rollup(tenant_id, day, model, requests=in_ledger[0], prompt_tokens=in_ledger[1],
                                          expected=in_rollup if in_rollup != (0, 0) else None)
                    fixed = True
                except ConflictError:
                    result.unstable.append(f"{tenant_id} {day} {model}")
            result.drift.append(Drift(tenant_id, day, model, in_ledger[0], in_ledger[1], in_rollup[0],
                                      in_rollup[1], fixed))


def publish_drift(cloudwatch: Any, result: ReconcileResult) -> None:
    """LedgerDrift (cells that differ) and LedgerDriftTokens, in the namespace and with the
    dimension the LedgerDriftAlarm of template.yaml watches."""
    dimensions = [{"Name": "service", "Value": "maas-gateway"}]
    cloudwatch.put_metric_data(Namespace="MaasGateway", MetricData=[
        {"MetricName": "LedgerDrift", "Dimensions": dimensions, "Unit": "Count",
         "Value": float(len(result.drift or []))},
        {"MetricName": "LedgerDriftTokens", "Dimensions": dimensions, "Unit": "Count",
         "Value": float(result.drift_tokens)},
    ])
