"""The usage ledger (one item per charged request, the source of truth) and its rollups
(tenant x day x model x key sums, what reports read).

Write-sharded ledger. A tenant's ledger items live in one partition per day and shard,
``LEDGER#<tenant>#<day>#<shard>`` (sort key ``<RFC 3339>#<request id>``); the shard is part of
the usage event (``gateway.domain.usage.ledger_shard``: a function of the request id, and 0 for
every tenant below 200 requests/s), so a redelivered event meets the item it wrote before.
Each shard has its own rollup cell (sort key ``<day>#<model>#<key>``, plus ``#<shard>`` above
shard 0, attribute ``ledger_shard``), written in the same transaction as the shard's ledger
items: the rollups say which partitions of a day hold items, and two flush lanes writing two
shards never contend for one rollup item.

Items written before the sharding stay where they are, in ``LEDGER#<tenant>`` (a stream entry
from that time, without a shard, still goes there); every reader merges that partition with the
day partitions, in sort-key order, so old and new items read as one ledger."""

from __future__ import annotations

import heapq
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from gateway.adapters.dynamo.table import (
    TRANSACTION_ITEMS,
    Item,
    Page,
    Table,
    Write,
    decode_cursor,
    dump,
    encode_cursor,
    error_code,
    item_key,
)
from gateway.domain.usage import UsageEvent
from gateway.errors import InvalidRequestError
from gateway.models.records import rfc3339

_CONFLICT_RETRIES = 3
Cell = tuple[str, str, str, str, int]  # tenant, day, model, key, ledger shard
_END = "\uffff"


def _cell(event: UsageEvent) -> Cell:
    return (event.tenant_id, event.date, event.model, event.key_id, event.ledger_shard or 0)


def rollup_sk(date: str, model: str, key_id: str, shard: int = 0) -> str:
    return item_key(date, model, key_id, *([str(shard)] if shard else []))


def legacy_ledger_pk(tenant_id: str) -> str:
    """The partition of the items written before the ledger was sharded."""
    return item_key("LEDGER", tenant_id)


def ledger_pk(tenant_id: str, date: str, shard: int | None) -> str:
    if shard is None:
        return legacy_ledger_pk(tenant_id)
    return item_key("LEDGER", tenant_id, date, str(shard))


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
            "pk": ledger_pk(event.tenant_id, event.date, event.ledger_shard),
            "sk": item_key(rfc3339(event.moment), event.request_id),
            "ledger_shard": event.ledger_shard or None,
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
        tenant_id, date, model, key_id, shard = cell
        return {"pk": item_key("USAGE", tenant_id), "sk": rollup_sk(date, model, key_id, shard)}

    def _rollup_update(self, cell: Cell, sums: CellSums) -> Write:
        _, date, model, key_id, shard = cell
        names = {"#d": "date", "#m": "model", "#k": "key_id"}
        values: dict[str, Any] = {":r": sums.requests, ":t": sums.tokens, ":c": sums.cost_nano,
                                  ":cr": sums.credit_nano, ":d": date, ":m": model, ":k": key_id}
        sets = ["#d = :d", "#m = :m", "#k = :k"]
        if shard:  # shard 0 cells stay as they were before sharding
            names["#s"] = "ledger_shard"
            values[":s"] = shard
            sets.append("#s = :s")
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
            "UpdateExpression": "ADD " + ", ".join(adds) + " SET " + ", ".join(sets),
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

    def record_usage(self, events: Iterable[UsageEvent], *, lanes: int = 1) -> int:
        """Write ledger items and rollup increments together, idempotently: a ledger item
        is keyed by its request, so a redelivered event cancels its transaction and is
        then dropped from it. Events are packed so that a tenant x day x model x key x shard
        cell is split across transactions only when it alone exceeds one (99 events): a batch
        of up to 99 events costs one rollup write per cell. With ``lanes`` > 1, transactions
        that share no rollup cell are committed concurrently (a hot tenant's shards), those
        that share one in order. Returns how many events were new; if any transaction fails,
        the error propagates after the others have finished (the caller acknowledges nothing)."""
        chunks = pack_transactions(events)
        if lanes <= 1 or len(chunks) <= 1:
            return sum(self._commit(chunk) for chunk in chunks)
        groups = _independent(chunks)
        if len(groups) == 1:
            return sum(self._commit(chunk) for chunk in groups[0])
        with ThreadPoolExecutor(min(lanes, len(groups)), thread_name_prefix="ledger-lane") as pool:
            futures = [pool.submit(lambda group: sum(self._commit(chunk) for chunk in group), group)
                       for group in groups]
        return sum(future.result() for future in futures)

    def set_rollup(self, tenant_id: str, date: str, model: str, key_id: str, *, sums: CellSums,
                   expected: CellSums | None, shard: int = 0) -> None:
        """Overwrite one rollup cell with what the ledger says (reconcile --fix), only if it
        still holds ``expected`` (None = absent): a flush that lands in between makes this a
        ConflictError rather than a lost increment."""
        key = self._rollup_key((tenant_id, date, model, key_id, shard))
        conflict = f"rollup {tenant_id} {date} {model} {key_id} {shard} changed during reconcile"
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
        item = {**key, "date": date, "model": model, "key_id": key_id, "ledger_shard": shard or None,
                "requests": sums.requests,
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
        """One page of the tenant's ledger between ``start`` and ``end`` (days), oldest first,
        merged from every partition; ``next_cursor`` (opaque, absent on the last page) names the
        last item returned, so it continues exactly there whatever was written meanwhile."""
        after = self._position(tenant_id, start, end, cursor)
        items: list[Item] = []
        for item in self._merged(tenant_id, start, end, after=after, page=limit + 1):
            items.append(item)
            if len(items) > limit:
                break
        if len(items) <= limit:
            return Page(items=items, next_cursor=None)
        last = items[limit - 1]
        return Page(items=items[:limit],
                    next_cursor=encode_cursor(dump({"pk": legacy_ledger_pk(tenant_id), "sk": last["sk"]})))

    def ledger_all(self, tenant_id: str, start: str, end: str, *, consistent: bool = False) -> Iterator[Item]:
        """Every ledger item of the tenant between ``start`` and ``end`` (days), oldest first."""
        return self._merged(tenant_id, start, end, after=None, page=1000, consistent=consistent)

    @staticmethod
    def _position(tenant_id: str, start: str, end: str, cursor: str | None) -> str | None:
        """The sort key a cursor continues after. It has the shape of the unsharded ledger's
        own cursors ({pk, sk}, base64), which therefore still work; one for another tenant or
        outside the listing's range is a 400."""
        key = decode_cursor(cursor, pk=legacy_ledger_pk(tenant_id))
        if key is None:
            return None
        after = str(key["sk"]["S"])
        if not start <= after <= end + _END:
            raise InvalidRequestError("cursor is not valid for this listing", param="cursor")
        return after

    def _merged(self, tenant_id: str, start: str, end: str, *, after: str | None, page: int,
                consistent: bool = False) -> Iterator[Item]:
        """The ledger in sort-key order: the legacy partition and each day's shard partitions
        (the days and shards the rollups name), each read page by page and only once the
        merge reaches its day. An event present twice (a legacy item and a sharded one, which
        only a flush straddling the upgrade could write) is returned once."""
        first_day = max(start, after[:10]) if after else start
        shards: dict[str, set[int]] = defaultdict(set)
        for rollup in self.rollups(tenant_id, first_day, end, consistent=consistent):
            shards[str(rollup["date"])].add(int(rollup.get("ledger_shard", 0)))
        days = sorted(shards)
        heap: list[tuple[str, int, _Partition]] = []
        order = 0

        def push(partition: _Partition) -> None:
            nonlocal order
            head = partition.head()
            if head is not None:
                heapq.heappush(heap, (str(head["sk"]), order, partition))
                order += 1

        push(_Partition(self.table, legacy_ledger_pk(tenant_id), start, end + _END, after, page, consistent))
        last: str | None = None
        while True:
            # a day's partitions open once nothing earlier than that day is left to merge
            while days and (not heap or heap[0][0] >= days[0]):
                day = days.pop(0)
                per_shard = max(16, 2 * page // len(shards[day]))
                for shard in sorted(shards[day]):
                    push(_Partition(self.table, ledger_pk(tenant_id, day, shard), max(start, day),
                                    min(end + _END, day + _END), after, min(page, per_shard), consistent))
            if not heap:
                return
            sk, _, partition = heapq.heappop(heap)
            item = partition.pop()
            push(partition)
            if sk != last:
                last = sk
                yield item


class _Partition:
    """One ledger partition's items between ``lo`` and ``hi`` after ``after``, page by page."""

    def __init__(self, table: Table, pk: str, lo: str, hi: str, after: str | None, page: int,
                 consistent: bool) -> None:
        self.table, self.pk, self.lo, self.hi, self.page, self.consistent = table, pk, lo, hi, page, consistent
        # a position inside the range resumes after it; one before the range starts at its start
        self.cursor = encode_cursor(dump({"pk": pk, "sk": after})) if after and after >= lo else None
        self.done = bool(after and after >= hi)
        self.items: list[Item] = []

    def head(self) -> Item | None:
        while not self.items and not self.done:
            page = self.table.query(pk=self.pk, start=self.lo, end=self.hi, cursor=self.cursor, limit=self.page,
                                    consistent=self.consistent)
            self.items, self.cursor = page.items[::-1], page.next_cursor
            self.done = not page.next_cursor
        return self.items[-1] if self.items else None

    def pop(self) -> Item:
        return self.items.pop()


def _independent(chunks: list[list[UsageEvent]]) -> list[list[list[UsageEvent]]]:
    """The chunks in groups that share no rollup cell with another group (a cell split over
    several transactions keeps them in one group, in order)."""
    owner: dict[Cell, int] = {}
    parent = list(range(len(chunks)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, chunk in enumerate(chunks):
        for cell in {_cell(event) for event in chunk}:
            if cell in owner:
                parent[root(i)] = root(owner[cell])
            else:
                owner[cell] = i
    groups: dict[int, list[list[UsageEvent]]] = defaultdict(list)
    for i, chunk in enumerate(chunks):
        groups[root(i)].append(chunk)
    return list(groups.values())

