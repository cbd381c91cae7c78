"""The outcome of each reconciliation of a month, so finance can see when the books were last
proved and what was found (GET /billing/reconcile)."""

from __future__ import annotations

from typing import Any

from gateway.adapters.dynamo.table import Table, item_key


class Reconciliations:
    PARTITION = "RECONCILE"

    def __init__(self, table: Table) -> None:
        self.table = table

    def put(self, month: str, summary: dict[str, Any], checked_at: str) -> None:
        self.table.write(Table.put_write({"pk": self.PARTITION, "sk": item_key(month), "month": month,
                                          "checked_at": checked_at, **summary}),
                         conflict="reconciliation")

    def get(self, month: str) -> dict[str, Any] | None:
        return self.table.get(self.PARTITION, item_key(month), consistent=True)
