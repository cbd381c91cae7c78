"""The usage ledger (one item per charged request, the source of truth) and its rollups
(tenant x day x model sums, what reports read)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from gateway.adapters.dynamo.table import TRANSACTION_ITEMS, Item, Page, Table, Write, dump, error_code, item_key
from gateway.domain.usage import UsageEvent
from gateway.models.records import rfc3339

_CONFLICT_RETRIES = 3
Cell = tuple[str, str, str]  # tenant, day, model


def _cell(event: UsageEvent) -> Cell:
    return (event.tenant_id, event.date, event.model)


def pack_transactions(events: Iterable[UsageEvent]) -> list[list[UsageEvent]]:
    """Group events (one per request id) into transactions of at most 100 items, counting
    one rollup update per tenant x day x model cell in each. First fit by cell, largest
    first: a cell is split only when it alone has more than 99 events."""
    cells: dict[Cell, dict[str, UsageEvent]] = defaultdict(dict)
    for event in events:
        cells[_cell(event)].setdefault(event.request_id, event)
    pieces: list[list[UsageEvent]] = []
    for group in sorted(cells.values(), key=len, reverse=True):
        batch = sorted(group.values(), key=lambda e: (e.timestamp_ms, e.request_id))
        pieces += [batch[i : i + TRANSACTION_ITEMS - 1] for i in range(0, len(batch), TRANSACTION_ITEMS - 1)]
    chunks: list[list[UsageEvent]] = []
    sizes: list[int] = []  # items in each chunk: its events plus one per cell
    for piece in pieces:
        need = len(piece) + 1
        for i, size in enumerate(sizes):
            if size + need <= TRANSACTION_ITEMS:
                chunks[i] += piece
                sizes[i] += need
                break
        else:
            chunks.append(list(piece))
            sizes.append(need)
    return chunks


class UsageLedger:
    def __init__(self, table: Table) -> None:
        self.table = table

    # -- writes ----------------------------------------------------------------------------
    @staticmethod
    def _ledger_item(event: UsageEvent) -> Item:
        return {
            "pk": item_key("LEDGER", event.tenant_id),
            "sk": item_key(rfc3339(event.moment), event.request_id),
            "request_id": event.request_id,
            "key_id": event.key_id,
            "model": event.model,
            "prompt_tokens": event.prompt_tokens,
            "timestamp_ms": event.timestamp_ms,
        }

    @staticmethod
    def _rollup_key(cell: Cell) -> dict[str, Any]:
        tenant_id, date, model = cell
        return {"pk": item_key("USAGE", tenant_id), "sk": item_key(date, model)}

    def _rollup_update(self, cell: Cell, requests: int, tokens: int) -> Write:
        _, date, model = cell
        return {"Update": {
            "Key": dump(self._rollup_key(cell)),
            "UpdateExpression": "ADD requests :r, prompt_tokens :t SET #d = :d, #m = :m",
            "ExpressionAttributeNames": {"#d": "date", "#m": "model"},
            "ExpressionAttributeValues": dump({":r": requests, ":t": tokens, ":d": date, ":m": model}),
        }}

    def _writes(self, events: list[UsageEvent]) -> list[Write]:
        """Ledger puts first (write i is events[i], so cancellation reasons map back to
        events), then one rollup increment per tenant x day x model present."""
        writes = [Table.new_write(self._ledger_item(event)) for event in events]
        sums: dict[Cell, list[int]] = defaultdict(lambda: [0, 0])
        for event in events:
            cell = sums[_cell(event)]
            cell[0] += 1
            cell[1] += event.prompt_tokens
        return writes + [self._rollup_update(cell, requests, tokens) for cell, (requests, tokens) in sums.items()]

    def _commit(self, events: list[UsageEvent]) -> int:
        """One transaction. Events whose ledger item exists already (a redelivery) are
        dropped and the rest committed again, so each is counted once; any other failure
        propagates and the caller leaves the events unacknowledged."""
        conflicts = 0
        while events:
            items = [{kind: {"TableName": self.table.name, **request}}
                     for write in self._writes(events) for kind, request in write.items()]
            try:
                self.table.client.transact_write_items(TransactItems=items)
                return len(events)
            except ClientError as error:
                if error_code(error) != "TransactionCanceledException":
                    raise
                codes = [r.get("Code") or "None" for r in error.response.get("CancellationReasons", [])]
                if "TransactionConflict" in codes and conflicts < _CONFLICT_RETRIES:
                    conflicts += 1  # another flusher is updating the same rollup: try again
                    time.sleep(0.05 * conflicts)
                    continue
                duplicates = {i for i, code in enumerate(codes[: len(events)]) if code == "ConditionalCheckFailed"}
                if not duplicates or any(code not in ("None", "ConditionalCheckFailed") for code in codes):
                    raise
                events = [event for i, event in enumerate(events) if i not in duplicates]
        return 0

    def record_usage(self, events: Iterable[UsageEvent]) -> int:
        """Write ledger items and rollup increments together, idempotently: a ledger item
        is keyed by its request, so a redelivered event cancels its transaction and is
        then dropped from it. Events are packed so that a tenant x day x model cell is
        split across transactions only when it alone exceeds one (99 events): a batch of
        up to 99 events costs one rollup write per cell. Returns how many events were new."""
        return sum(self._commit(chunk) for chunk in pack_transactions(events))

    def set_rollup(self, tenant_id: str, date: str, model: str, *, requests: int, prompt_tokens: int,
                   expected: tuple[int, int] | None) -> None:
        """Overwrite one rollup cell with what the ledger says (reconcile --fix), only if it
        still holds ``expected`` (requests, tokens; None = absent): a flush that lands in
        between makes this a ConflictError rather than a lost increment."""
        key = self._rollup_key((tenant_id, date, model))
        conflict = f"rollup {tenant_id} {date} {model} changed during reconcile"
        if expected is None:
            condition, values = "attribute_not_exists(pk)", None
        else:
            condition = "requests = :er AND prompt_tokens = :et"
            values = {":er": expected[0], ":et": expected[1]}
        if requests == 0 and prompt_tokens == 0:
            if expected is not None:
                self.table.write({"Delete": {"Key": dump(key), "ConditionExpression": condition,
                                             "ExpressionAttributeValues": dump(values or {})}},
                                 conflict=conflict, code="concurrent_update")
            return
        item = {**key, "date": date, "model": model, "requests": requests, "prompt_tokens": prompt_tokens}
        self.table.write(Table.put_write(item, condition=condition, values=values),
                         conflict=conflict, code="concurrent_update")

    # -- reads -----------------------------------------------------------------------------
    def rollups(self, tenant_id: str, start: str, end: str, *, consistent: bool = False) -> list[Item]:
        return list(self.table.query_all(pk=item_key("USAGE", tenant_id), start=f"{start}#", end=f"{end}#\uffff",
                                         consistent=consistent))

    def ledger(self, tenant_id: str, start: str, end: str, *, cursor: str | None = None, limit: int = 100) -> Page:
        return self.table.query(pk=item_key("LEDGER", tenant_id), start=start, end=f"{end}\uffff",
                                cursor=cursor, limit=limit)

    def ledger_all(self, tenant_id: str, start: str, end: str, *, consistent: bool = False) -> Iterator[Item]:
        return self.table.query_all(pk=item_key("LEDGER", tenant_id), start=start, end=f"{end}\uffff",
                                    consistent=consistent)

