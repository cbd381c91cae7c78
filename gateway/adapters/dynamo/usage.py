"""The usage ledger (one item per charged request, the source of truth) and its rollups
(tenant x day x model sums, what reports read)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from gateway.adapters.dynamo.table import TRANSACTION_ITEMS, Item, Page, Table, Write, dump, error_code, item_key
from gateway.domain.usage import UsageEvent
from gateway.models.records import rfc3339

_CONFLICT_RETRIES = 3
Cell = tuple[str, str, str, str]  # tenant, day, model, key


def _cell(event: UsageEvent) -> Cell:
    return (event.tenant_id, event.date, event.model, event.key_id)


def rollup_sk(date: str, model: str, key_id: str) -> str:
    return item_key(date, model, key_id)


def grant_attribute(grant_id: str) -> str:
    """The rollup attribute that sums the credit a cell took from one grant."""
    return f"g_{grant_id}"


@dataclass
class CellSums:
    requests: int = 0
    tokens: int = 0
    cost_nano: int = 0
    credit_nano: int = 0
    tiers: list[int] = field(default_factory=list)
    grants: dict[str, int] = field(default_factory=dict)

    def add(self, event: UsageEvent) -> None:
        self.requests += 1
        self.tokens += event.prompt_tokens
        self.cost_nano += event.cost_nano
        for i, n in enumerate(event.tier_tokens):
            self.tiers += [0] * (i + 1 - len(self.tiers))
            self.tiers[i] += n
        for grant, amount in event.debited().items():
            self.grants[grant] = self.grants.get(grant, 0) + amount
            self.credit_nano += amount


def pack_transactions(events: Iterable[UsageEvent]) -> list[list[UsageEvent]]:
    """Group events (one per request id) into transactions of at most 100 items, counting
    one rollup update per tenant x day x model x key cell in each. First fit by cell, largest
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


def sums_of(item: Item) -> CellSums:
    """What one rollup item holds (its tier and grant attributes included)."""
    tiers = sorted((int(name.removeprefix("tier_")), int(value)) for name, value in item.items()
                   if name.startswith("tier_"))
    dense = [0] * (tiers[-1][0] + 1 if tiers else 0)
    for index, n in tiers:
        dense[index] = n
    return CellSums(requests=int(item.get("requests", 0)), tokens=int(item.get("prompt_tokens", 0)),
                    cost_nano=int(item.get("cost_nano", 0)), credit_nano=int(item.get("credit_nano", 0)), tiers=dense,
                    grants={name.removeprefix("g_"): int(value) for name, value in item.items()
                            if name.startswith("g_")})


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
            "cost_nano": event.cost_nano,
            "debits": event.debits or None,
            "tier_tokens": list(event.tier_tokens) or None,
        }

    @staticmethod
    def _rollup_key(cell: Cell) -> dict[str, Any]:
        tenant_id, date, model, key_id = cell
        return {"pk": item_key("USAGE", tenant_id), "sk": rollup_sk(date, model, key_id)}

    def _rollup_update(self, cell: Cell, sums: CellSums) -> Write:
        _, date, model, key_id = cell
        names = {"#d": "date", "#m": "model", "#k": "key_id"}
        values: dict[str, Any] = {":r": sums.requests, ":t": sums.tokens, ":c": sums.cost_nano,
                                  ":cr": sums.credit_nano, ":d": date, ":m": model, ":k": key_id}
        adds = ["requests :r", "prompt_tokens :t", "cost_nano :c", "credit_nano :cr"]
        for i, n in enumerate(sums.tiers):
            adds.append(f"tier_{i} :t{i}")
            values[f":t{i}"] = n
        for i, (grant, amount) in enumerate(sorted(sums.grants.items())):
            names[f"#g{i}"] = grant_attribute(grant)
            adds.append(f"#g{i} :g{i}")
            values[f":g{i}"] = amount
        return {"Update": {
            "Key": dump(self._rollup_key(cell)),
            "UpdateExpression": "ADD " + ", ".join(adds) + " SET #d = :d, #m = :m, #k = :k",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": dump(values),
        }}

    def _writes(self, events: list[UsageEvent]) -> list[Write]:
        """Ledger puts first (write i is events[i], so cancellation reasons map back to
        events), then one rollup increment per tenant x day x model x key present."""
        writes = [Table.new_write(self._ledger_item(event)) for event in events]
        sums: dict[Cell, CellSums] = defaultdict(CellSums)
        for event in events:
            sums[_cell(event)].add(event)
        return writes + [self._rollup_update(cell, cell_sums) for cell, cell_sums in sums.items()]

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

    def set_rollup(self, tenant_id: str, date: str, model: str, key_id: str, *, sums: CellSums,
                   expected: CellSums | None) -> None:
        """Overwrite one rollup cell with what the ledger says (reconcile --fix), only if it
        still holds ``expected`` (None = absent): a flush that lands in between makes this a
        ConflictError rather than a lost increment."""
        key = self._rollup_key((tenant_id, date, model, key_id))
        conflict = f"rollup {tenant_id} {date} {model} {key_id} changed during reconcile"
        if expected is None:
            condition, values = "attribute_not_exists(pk)", None
        else:
            condition = "requests = :er AND prompt_tokens = :et"
            values = {":er": expected.requests, ":et": expected.tokens}
        if sums.requests == 0:
            if expected is not None:
                self.table.write({"Delete": {"Key": dump(key), "ConditionExpression": condition,
                                             "ExpressionAttributeValues": dump(values or {})}},
                                 conflict=conflict, code="concurrent_update")
            return
        item = {**key, "date": date, "model": model, "key_id": key_id, "requests": sums.requests,
                "prompt_tokens": sums.tokens, "cost_nano": sums.cost_nano, "credit_nano": sums.credit_nano,
                **{f"tier_{i}": n for i, n in enumerate(sums.tiers)},
                **{grant_attribute(g): n for g, n in sums.grants.items()}}
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

