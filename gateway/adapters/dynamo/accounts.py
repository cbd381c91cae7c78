"""Plans, tenants and API keys: the records the billing API manages and every request reads."""

from __future__ import annotations

from datetime import UTC

from gateway.adapters.dynamo.table import GSI1, Item, Table, Write, item_key
from gateway.domain.plans import Plan
from gateway.models.records import KeyRecord, TenantRecord, rfc3339


def _tenant_item(tenant: TenantRecord) -> Item:
    return {"pk": item_key("TENANT", tenant.id), "sk": "TENANT",
            "gsi1pk": "TENANTS", "gsi1sk": item_key(tenant.created_at, tenant.id),
            "doc": tenant.model_dump_json()}


def _key_item(key: KeyRecord) -> Item:
    return {"pk": item_key("KEY", key.id), "sk": "KEY",
            "gsi1pk": item_key("TENANT", key.tenant_id, "KEYS"), "gsi1sk": item_key(key.created_at, key.id),
            "doc": key.model_dump_json()}


class Accounts:
    def __init__(self, table: Table) -> None:
        self.table = table

    # -- plans ---------------------------------------------------------------------------
    def put_plan(self, plan: Plan, version: int) -> None:
        self.table.write(Table.put_write({
            "pk": item_key("PLAN", plan.name), "sk": "PLAN", "gsi1pk": "PLANS", "gsi1sk": plan.name,
            "version": version, "doc": plan.model_dump_json(),
        }), conflict=f"plan {plan.name}")

    def get_plan(self, name: str) -> Plan | None:
        item = self.table.get(item_key("PLAN", name), "PLAN")
        return Plan.model_validate_json(item["doc"]) if item else None

    def list_plans(self) -> list[Plan]:
        return [Plan.model_validate_json(i["doc"]) for i in self.table.query_all(pk="PLANS", index=GSI1)]

    # -- tenants -------------------------------------------------------------------------
    @staticmethod
    def new_tenant_write(tenant: TenantRecord) -> Write:
        return Table.new_write(_tenant_item(tenant))

    @staticmethod
    def tenant_write(tenant: TenantRecord, *, expected: TenantRecord | None = None) -> Write:
        """Overwrite an existing tenant; with ``expected``, only if the stored record is still
        that one (optimistic concurrency)."""
        return Table.replace_write(_tenant_item(tenant), expected.model_dump_json() if expected else None)

    def create_tenant(self, tenant: TenantRecord) -> None:
        self.table.write(self.new_tenant_write(tenant), conflict=f"tenant {tenant.id} already exists")

    def put_tenant(self, tenant: TenantRecord, *, expected: TenantRecord | None = None) -> None:
        self.table.write(self.tenant_write(tenant, expected=expected),
                         conflict=f"tenant {tenant.id} changed concurrently or is gone", code="concurrent_update")

    def get_tenant(self, tenant_id: str, *, consistent: bool = False) -> TenantRecord | None:
        item = self.table.get(item_key("TENANT", tenant_id), "TENANT", consistent=consistent)
        return TenantRecord.model_validate_json(item["doc"]) if item else None

    def list_tenants(self, *, cursor: str | None = None, limit: int = 100) -> tuple[list[TenantRecord], str | None]:
        page = self.table.query(pk="TENANTS", index=GSI1, cursor=cursor, limit=limit)
        return [TenantRecord.model_validate_json(i["doc"]) for i in page.items], page.next_cursor

    def all_tenant_ids(self) -> list[str]:
        return [i["pk"].removeprefix("TENANT#") for i in self.table.query_all(pk="TENANTS", index=GSI1)]

    # -- keys ----------------------------------------------------------------------------
    @staticmethod
    def new_key_write(key: KeyRecord) -> Write:
        return Table.new_write(_key_item(key))

    @staticmethod
    def key_write(key: KeyRecord, *, expected: KeyRecord | None = None) -> Write:
        """Overwrite an existing key; with ``expected``, only if the stored record is still
        that one (a revocation is never lost to a concurrent rotation)."""
        return Table.replace_write(_key_item(key), expected.model_dump_json() if expected else None)

    def create_key(self, key: KeyRecord) -> None:
        self.table.write(self.new_key_write(key), conflict=f"key {key.id} already exists")

    def put_key(self, key: KeyRecord, *, expected: KeyRecord | None = None) -> None:
        self.table.write(self.key_write(key, expected=expected),
                         conflict=f"key {key.id} changed concurrently or is gone", code="concurrent_update")

    @staticmethod
    def expiry_index_write(key: KeyRecord) -> Write | None:
        """An entry in the day partition of the key's expiry (``KEYEXP#<YYYY-MM-DD>``), which
        the key.expiring sweeper reads; None for a key that never expires."""
        stops = key.stops_at()
        if stops is None:
            return None
        return Table.put_write({"pk": item_key("KEYEXP", stops.astimezone(UTC).strftime("%Y-%m-%d")), "sk": key.id,
                                "tenant_id": key.tenant_id, "expires_at": rfc3339(stops)})

    def get_key(self, key_id: str, *, consistent: bool = False) -> KeyRecord | None:
        item = self.table.get(item_key("KEY", key_id), "KEY", consistent=consistent)
        return KeyRecord.model_validate_json(item["doc"]) if item else None

    def list_keys(self, tenant_id: str, *, cursor: str | None = None,
                  limit: int = 100) -> tuple[list[KeyRecord], str | None]:
        page = self.table.query(pk=item_key("TENANT", tenant_id, "KEYS"), index=GSI1, cursor=cursor, limit=limit)
        return [KeyRecord.model_validate_json(i["doc"]) for i in page.items], page.next_cursor
