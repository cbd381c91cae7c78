"""DynamoDB: one table (``table.Table``), read and written by small repositories:
``Accounts`` (plans, tenants, keys), ``UsageLedger`` (ledger and rollups), ``AuditLog``.

Nothing here is on the hot path of a tenant request except cached reads."""

from gateway.adapters.dynamo.accounts import Accounts
from gateway.adapters.dynamo.audit import AuditLog
from gateway.adapters.dynamo.table import Page, Table, item_key
from gateway.adapters.dynamo.usage import UsageLedger, pack_transactions

__all__ = ["Accounts", "AuditLog", "Page", "Table", "UsageLedger", "item_key", "pack_transactions"]
