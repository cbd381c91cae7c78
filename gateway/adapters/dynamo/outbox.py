"""The projection outbox: every admin change marks its tenant here in the same transaction,
and the mark is cleared once Redis holds the change. A change whose projection failed (Redis
unreachable right after the commit) stays marked until the projector (a loop locally, a
scheduled function in AWS) projects the tenant again from DynamoDB. One item per tenant:
marks of several changes collapse into one."""

from __future__ import annotations

from gateway.adapters.dynamo.table import Table, Write, dump
from gateway.errors import ConflictError


class Outbox:
    PARTITION = "OUTBOX"

    def __init__(self, table: Table) -> None:
        self.table = table

    def mark_write(self, tenant_id: str, change_id: str) -> Write:
        return Table.put_write({"pk": self.PARTITION, "sk": tenant_id, "change": change_id})

    def pending(self, limit: int = 100) -> list[tuple[str, str]]:
        """(tenant id, change id) of marked tenants."""
        page = self.table.query(pk=self.PARTITION, limit=limit, consistent=True)
        return [(str(item["sk"]), str(item["change"])) for item in page.items]

    def clear(self, tenant_id: str, change_id: str) -> None:
        """Clear the mark, unless a newer change marked the tenant meanwhile."""
        try:
            self.table.write({"Delete": {"Key": dump({"pk": self.PARTITION, "sk": tenant_id}),
                                         "ConditionExpression": "#c = :c", "ExpressionAttributeNames": {"#c": "change"},
                                         "ExpressionAttributeValues": dump({":c": change_id})}},
                             conflict="a newer change marked the tenant")
        except ConflictError:
            pass
