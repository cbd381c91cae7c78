"""Prepaid credit grants. What each grant has left is not stored here: Redis holds it live
(debited at admission) and the usage rollups hold what was spent from it (``g_<grant id>``),
so remaining = amount - spent is derived from the ledger, the source of truth."""

from __future__ import annotations

from gateway.adapters.dynamo.table import Table, Write, item_key
from gateway.models.records import CreditGrant


class Credits:
    def __init__(self, table: Table) -> None:
        self.table = table

    @staticmethod
    def grant_write(grant: CreditGrant) -> Write:
        return Table.new_write({"pk": item_key("GRANTS", grant.tenant_id), "sk": item_key(grant.created_at, grant.id),
                                "doc": grant.model_dump_json()})

    def grants(self, tenant_id: str, *, consistent: bool = False) -> list[CreditGrant]:
        """Every grant of the tenant, oldest first."""
        return [CreditGrant.model_validate_json(item["doc"])
                for item in self.table.query_all(pk=item_key("GRANTS", tenant_id), consistent=consistent)]
