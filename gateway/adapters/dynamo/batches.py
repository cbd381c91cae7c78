"""The Batch API's records: a tenant's files and batches (``TENANT#<id>`` / ``FILE#<id>``,
``BATCH#<id>``), and the index of batches the worker still owes work (``BATCHES#ACTIVE``),
written in the same transaction as each status change that enters or leaves it."""

from __future__ import annotations

import time

from gateway.adapters.dynamo.table import Table, Write, item_key
from gateway.domain.batches import ACTIVE
from gateway.models.batches import BatchRecord, FileRecord

ACTIVE_PK = "BATCHES#ACTIVE"


def _file_item(record: FileRecord) -> dict[str, object]:
    return {"pk": item_key("TENANT", record.tenant_id), "sk": item_key("FILE", record.id),
            "doc": record.model_dump_json()}


def _batch_item(record: BatchRecord) -> dict[str, object]:
    return {"pk": item_key("TENANT", record.tenant_id), "sk": item_key("BATCH", record.id),
            "doc": record.model_dump_json()}


def _active_item(record: BatchRecord) -> dict[str, object]:
    return {"pk": ACTIVE_PK, "sk": item_key(record.tenant_id, record.id), "tenant_id": record.tenant_id,
            "batch_id": record.id}


class BatchRecords:
    def __init__(self, table: Table) -> None:
        self.table = table

    # -- files ---------------------------------------------------------------------------
    def create_file(self, record: FileRecord) -> None:
        self.table.write(Table.new_write(_file_item(record)), conflict=f"file {record.id} already exists")

    def put_file(self, record: FileRecord) -> None:
        """Create or overwrite (a batch's output file, written again by a resumed worker)."""
        self.table.write(Table.put_write(_file_item(record)), conflict=f"file {record.id}")

    def get_file(self, tenant_id: str, file_id: str) -> FileRecord | None:
        item = self.table.get(item_key("TENANT", tenant_id), item_key("FILE", file_id), consistent=True)
        return FileRecord.model_validate_json(item["doc"]) if item and not item.get("deleted") else None

    def delete_file(self, record: FileRecord) -> None:
        """A tombstone, not a DeleteItem (the tenant API's role deletes nothing); DynamoDB's TTL
        removes it a day later."""
        self.table.write(Table.put_write({**_file_item(record), "deleted": True,
                                          "expires": int(time.time()) + 24 * 3600}), conflict=f"file {record.id}")

    # -- batches -------------------------------------------------------------------------
    def create_batch(self, record: BatchRecord) -> None:
        self.table.transact([Table.new_write(_batch_item(record)), Table.put_write(_active_item(record))],
                            conflict=f"batch {record.id} already exists")

    def get_batch(self, tenant_id: str, batch_id: str) -> BatchRecord | None:
        item = self.table.get(item_key("TENANT", tenant_id), item_key("BATCH", batch_id), consistent=True)
        return BatchRecord.model_validate_json(item["doc"]) if item else None

    def replace_batch(self, record: BatchRecord, expected: BatchRecord) -> None:
        """Write ``record`` only if the stored one is still ``expected`` (a ConflictError
        otherwise); leaving the active states takes it out of the worker's index."""
        writes: list[Write] = [Table.replace_write(_batch_item(record), expected.model_dump_json())]
        if record.status not in ACTIVE and expected.status in ACTIVE:
            active = _active_item(record)
            writes.append({"Delete": {"Key": {"pk": {"S": active["pk"]}, "sk": {"S": active["sk"]}}}})
        self.table.transact(writes, conflict=f"batch {record.id} changed concurrently", code="concurrent_update")

    def list_batches(self, tenant_id: str, *, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        """Newest first (batch ids sort by creation time), those older than ``after``; and
        whether more follow."""
        end = item_key("BATCH", after) if after else item_key("BATCH", "\uffff")
        page = self.table.query(pk=item_key("TENANT", tenant_id), start=item_key("BATCH", ""), end=end,
                                limit=limit + 2, forward=False, consistent=True)
        records = [BatchRecord.model_validate_json(i["doc"]) for i in page.items]
        records = [r for r in records if r.id != after]
        return records[:limit], len(records) > limit or page.next_cursor is not None

    def active(self) -> list[tuple[str, str]]:
        """(tenant id, batch id) of every batch with work left, oldest tenants' first."""
        return [(str(i["tenant_id"]), str(i["batch_id"])) for i in self.table.query_all(pk=ACTIVE_PK, consistent=True)]
