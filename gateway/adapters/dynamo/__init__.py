"""DynamoDB: one table (``table.Table``), read and written by small repositories:
``Accounts`` (plans, tenants, keys), ``UsageLedger`` (ledger and rollups), ``Credits``
(prepaid grants), ``AuditLog``.

Nothing here is on the hot path of a tenant request except cached reads."""

from gateway.adapters.dynamo.accounts import Accounts
from gateway.adapters.dynamo.audit import AuditLog
from gateway.adapters.dynamo.credits import Credits
from gateway.adapters.dynamo.idempotency import Idempotency
from gateway.adapters.dynamo.outbox import Outbox
from gateway.adapters.dynamo.reconciliations import Reconciliations
from gateway.adapters.dynamo.table import Page, Table, item_key
from gateway.adapters.dynamo.usage import CellSums, UsageLedger, pack_transactions, sums_of

__all__ = ["Accounts", "AuditLog", "CellSums", "Credits", "Idempotency", "Outbox", "Page", "Reconciliations", "Table",
           "UsageLedger", "item_key", "pack_transactions", "sums_of"]
