"""The audit log: one entry per admin change, newest first."""

from __future__ import annotations

from typing import Any

from gateway.adapters.dynamo.table import Page, Table, Write, item_key


class AuditLog:
    def __init__(self, table: Table) -> None:
        self.table = table

    @staticmethod
    def entry_write(entry: dict[str, Any]) -> Write:
        """An entry to write in the same transaction as the change it records."""
        return Table.new_write({"pk": "AUDIT", "sk": item_key(entry["timestamp"], entry["id"]), **entry})

    def put(self, entry: dict[str, Any]) -> None:
        self.table.write(self.entry_write(entry), conflict=f"audit entry {entry['id']} already exists")

    def list(self, *, cursor: str | None = None, limit: int = 100) -> Page:
        return self.table.query(pk="AUDIT", cursor=cursor, limit=limit, forward=False)
