"""DynamoDB conformance and load for a local endpoint: exactly the calls the product makes
(gateway/adapters/dynamo/: its table from template.yaml, its key shapes, condition and update
expressions, the two GSIs with pagination, TransactWriteItems and the CancellationReasons it
reads), then 8 writers contending on transactions for 30 s and a 50,000-item partition.

    python -m tests.performance.dynamodb_conformance --endpoint http://127.0.0.1:5100
    python -m tests.performance.dynamodb_conformance --endpoint URL --seconds 5 --items 5000 --json out.json

It prints one line per case (pass/fail and why), then the load's figures. The same cases run
as pytest tests against the project's emulator (tests/integration/test_local_dynamodb.py)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

_ser, _de = TypeSerializer(), TypeDeserializer()
Case = Callable[[Any, str], None]
CASES: list[tuple[str, Case]] = []


def case(function: Case) -> Case:
    CASES.append((function.__name__, function))
    return function


def dump(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in item.items()}


def load(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _de.deserialize(v) for k, v in item.items()}


def client_for(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="local",
                        aws_secret_access_key="local",  # noqa: S106 - any key: the endpoint is local
                        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=120,
                                      max_pool_connections=32))


def create_table(client: Any) -> str:
    """The product's table, exactly as template.yaml defines it (and the local stack creates it)."""
    from infra.local.services import create_table as create

    name = f"conformance-{uuid.uuid4().hex[:8]}"
    create(client, name)
    return name


def fails(call: Callable[[], Any], code: str) -> dict[str, Any]:
    """The error response of a call that must fail with ``code``."""
    try:
        call()
    except ClientError as error:
        got = error.response.get("Error", {}).get("Code")
        assert got == code, f"expected {code}, got {got}: {error}"
        return error.response
    raise AssertionError(f"expected {code}, the call succeeded")


def _get(client: Any, table: str, pk: str, sk: str, consistent: bool = True) -> dict[str, Any] | None:
    response = client.get_item(TableName=table, Key=dump({"pk": pk, "sk": sk}), ConsistentRead=consistent)
    return load(response["Item"]) if "Item" in response else None


def _query_all(client: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], int]:
    """Every item of a query, page by page (ExclusiveStartKey): (items, pages)."""
    items, pages = [], 0
    while True:
        response = client.query(**kwargs)
        pages += 1
        items += [load(i) for i in response.get("Items", [])]
        if not response.get("LastEvaluatedKey"):
            return items, pages
        kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


# -- the cases: each is one of the product's calls, in the shape the product sends it -----------
@case
def table_from_template(client: Any, table: str) -> None:
    # create_table (infra/local/services.py): list_tables, create_table, the table_exists waiter
    # (paged: ListTables gives 100 names a page, and a test session's emulator holds more)
    assert table in [n for page in client.get_paginator("list_tables").paginate() for n in page["TableNames"]]
    described = client.describe_table(TableName=table)["Table"]
    assert described["TableStatus"] == "ACTIVE"
    assert {i["IndexName"] for i in described["GlobalSecondaryIndexes"]} == {"gsi1", "gsi2"}


@case
def new_write_creates_once(client: Any, table: str) -> None:
    # Table.new_write: attribute_not_exists(pk); a second write is ConditionalCheckFailed
    item = dump({"pk": "TENANT#t1", "sk": "TENANT", "gsi1pk": "TENANTS", "gsi1sk": "2026#t1", "doc": "{}"})
    client.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)")
    fails(lambda: client.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)"),
          "ConditionalCheckFailedException")
    assert _get(client, table, "TENANT#t1", "TENANT") == load(item)
    assert _get(client, table, "TENANT#t1", "TENANT", consistent=False) == load(item)
    assert _get(client, table, "TENANT#absent", "TENANT") is None


@case
def replace_write_is_optimistic(client: Any, table: str) -> None:
    # Table.replace_write: attribute_exists(pk) AND doc = :expected
    key = {"pk": "KEY#k1", "sk": "KEY"}
    condition = "attribute_exists(pk) AND doc = :expected"
    fails(lambda: client.put_item(TableName=table, Item=dump(key | {"doc": "v1"}),
                                  ConditionExpression="attribute_exists(pk)"), "ConditionalCheckFailedException")
    client.put_item(TableName=table, Item=dump(key | {"doc": "v1"}))
    client.put_item(TableName=table, Item=dump(key | {"doc": "v2"}), ConditionExpression=condition,
                    ExpressionAttributeValues=dump({":expected": "v1"}))
    fails(lambda: client.put_item(TableName=table, Item=dump(key | {"doc": "v3"}), ConditionExpression=condition,
                                  ExpressionAttributeValues=dump({":expected": "v1"})),
          "ConditionalCheckFailedException")
    assert _get(client, table, "KEY#k1", "KEY")["doc"] == "v2"  # type: ignore[index]


@case
def values_round_trip(client: Any, table: str) -> None:
    # what dump() writes: strings, big integers, decimals, bytes (sealed answers), lists of
    # maps (delivery history, with NULL), string lists, maps of numbers (debits), booleans
    item = {"pk": "IDEMPOTENCY#s#k", "sk": "IDEMPOTENCY", "answer": b"\x00\xffsealed", "expires": 1790000000,
            "cost_nano": 123456789012345678, "price": Decimal("0.000001"), "events": ["key.created", "x"],
            "history": [{"at_ms": 1, "status_code": None, "error": "timeout"}], "debits": {"g1": 5}, "on": True}
    client.put_item(TableName=table, Item=dump(item), ConditionExpression="attribute_not_exists(pk)")
    got = _get(client, table, "IDEMPOTENCY#s#k", "IDEMPOTENCY")
    assert got is not None and bytes(got.pop("answer")) == item.pop("answer")
    assert got == item, got


@case
def event_write_sets_only_absent_attributes(client: Any, table: str) -> None:
    # EventLog.event_write: SET #n = if_not_exists(#n, :n), ... (no condition): a second write changes nothing
    key = dump({"pk": "EVENT#e1", "sk": "EVENT"})
    names = ["gsi2pk", "gsi2sk", "type", "body"]

    def write(body: str) -> None:
        client.update_item(TableName=table, Key=key,
                           UpdateExpression="SET " + ", ".join(f"#{n} = if_not_exists(#{n}, :{n})" for n in names),
                           ExpressionAttributeNames={f"#{n}": n for n in names},
                           ExpressionAttributeValues=dump({":gsi2pk": "OUTBOX", ":gsi2sk": "2026-01-01#e1",
                                                           ":type": "key.created", ":body": body}))
    write("first")
    write("second")
    assert _get(client, table, "EVENT#e1", "EVENT")["body"] == "first"  # type: ignore[index]


@case
def rollup_update_adds(client: Any, table: str) -> None:
    # UsageLedger._rollup_update: ADD requests :r, ... SET #d = :d, ... with names
    key = dump({"pk": "USAGE#t1", "sk": "2026-01-01#m#k"})
    for _ in range(2):
        client.update_item(TableName=table, Key=key, UpdateExpression="ADD requests :r, tier_0 :t0, #g0 :g0 "
                           "SET #d = :d, #m = :m", ExpressionAttributeNames={"#d": "date", "#m": "model", "#g0": "g_x"},
                           ExpressionAttributeValues=dump({":r": 3, ":t0": 10, ":g0": 7, ":d": "2026-01-01",
                                                           ":m": "m"}))
    got = _get(client, table, "USAGE#t1", "2026-01-01#m#k")
    assert got == {"pk": "USAGE#t1", "sk": "2026-01-01#m#k", "requests": 6, "tier_0": 20, "g_x": 14,
                   "date": "2026-01-01", "model": "m"}, got


@case
def claim_returns_all_new_or_fails(client: Any, table: str) -> None:
    # DeliveryLog.claim: a three-part condition with a name, SET two attributes, ReturnValues=ALL_NEW
    key = dump({"pk": "DELIVERY#w#e", "sk": "DELIVERY"})
    client.put_item(TableName=table, Item=dump({"pk": "DELIVERY#w#e", "sk": "DELIVERY", "status": "pending",
                                                "attempts": 0, "next_attempt_ms": 5, "gsi2pk": "RETRY",
                                                "gsi2sk": "a", "history": []}))

    def claim() -> dict[str, Any]:
        return client.update_item(
            TableName=table, Key=key, UpdateExpression="SET next_attempt_ms = :until, gsi2sk = :position",
            ConditionExpression="#status = :pending AND next_attempt_ms = :seen AND attempts = :attempts",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=dump({":until": 9, ":position": "b", ":pending": "pending", ":seen": 5,
                                            ":attempts": 0}), ReturnValues="ALL_NEW")
    attributes = load(claim()["Attributes"])
    assert attributes["next_attempt_ms"] == 9 and attributes["gsi2sk"] == "b" and attributes["status"] == "pending"
    fails(claim, "ConditionalCheckFailedException")  # next_attempt_ms is 9 now


@case
def record_attempt_appends_and_removes(client: Any, table: str) -> None:
    # DeliveryLog.record: attempts + :one, list_append, REMOVE of the gsi2 keys (leaves the index)
    client.put_item(TableName=table, Item=dump({"pk": "DELIVERY#w#f", "sk": "DELIVERY", "status": "pending",
                                                "attempts": 0, "next_attempt_ms": 5, "gsi2pk": "RETRY-rec",
                                                "gsi2sk": "a", "history": []}))
    client.update_item(
        TableName=table, Key=dump({"pk": "DELIVERY#w#f", "sk": "DELIVERY"}),
        UpdateExpression="SET attempts = attempts + :one, history = list_append(history, :entry), #status = :status "
                         "REMOVE gsi2pk, gsi2sk, next_attempt_ms",
        ConditionExpression="attempts = :attempts", ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues=dump({":attempts": 0, ":one": 1, ":status": "delivered",
                                        ":entry": [{"at_ms": 1, "status_code": 200, "error": None}]}))
    got = _get(client, table, "DELIVERY#w#f", "DELIVERY")
    assert got == {"pk": "DELIVERY#w#f", "sk": "DELIVERY", "status": "delivered", "attempts": 1,
                   "history": [{"at_ms": 1, "status_code": 200, "error": None}]}, got
    found = client.query(TableName=table, IndexName="gsi2", KeyConditionExpression="gsi2pk = :p",
                         ExpressionAttributeValues=dump({":p": "RETRY-rec"}))
    assert found["Items"] == [], "a removed index key leaves the index"


@case
def mark_dispatched_moves_index_partition(client: Any, table: str) -> None:
    # EventLog.mark_dispatched: SET gsi2pk = :dispatched, condition attribute_exists(pk)
    client.put_item(TableName=table, Item=dump({"pk": "EVENT#m1", "sk": "EVENT", "gsi2pk": "OUTBOX-m",
                                                "gsi2sk": "2026#m1"}))

    def mark(pk: str) -> None:
        client.update_item(TableName=table, Key=dump({"pk": pk, "sk": "EVENT"}), UpdateExpression="SET gsi2pk = :d",
                           ConditionExpression="attribute_exists(pk)", ExpressionAttributeValues=dump({":d": "DONE-m"}))
    mark("EVENT#m1")
    fails(lambda: mark("EVENT#absent"), "ConditionalCheckFailedException")
    assert _get(client, table, "EVENT#absent", "EVENT") is None, "a failed update creates nothing"
    counts = {p: len(_query_all(client, TableName=table, IndexName="gsi2", KeyConditionExpression="gsi2pk = :p",
                                ExpressionAttributeValues=dump({":p": p}))[0]) for p in ("OUTBOX-m", "DONE-m")}
    assert counts == {"OUTBOX-m": 0, "DONE-m": 1}, counts


@case
def conditional_deletes(client: Any, table: str) -> None:
    # Outbox.clear (#c = :c), DeliveryLog's delete_write (attribute_exists), set_rollup's (a = :x AND b = :y)
    client.put_item(TableName=table, Item=dump({"pk": "OUTBOX", "sk": "t1", "change": "c2"}))
    clear = dict(TableName=table, Key=dump({"pk": "OUTBOX", "sk": "t1"}), ConditionExpression="#c = :c",
                 ExpressionAttributeNames={"#c": "change"})
    fails(lambda: client.delete_item(**clear, ExpressionAttributeValues=dump({":c": "c1"})),
          "ConditionalCheckFailedException")
    client.delete_item(**clear, ExpressionAttributeValues=dump({":c": "c2"}))
    assert _get(client, table, "OUTBOX", "t1") is None
    fails(lambda: client.delete_item(TableName=table, Key=dump({"pk": "WEBHOOKS", "sk": "none"}),
                                     ConditionExpression="attribute_exists(pk)"), "ConditionalCheckFailedException")
    client.put_item(TableName=table, Item=dump({"pk": "USAGE#d", "sk": "c", "requests": 2, "prompt_tokens": 5}))
    client.delete_item(TableName=table, Key=dump({"pk": "USAGE#d", "sk": "c"}),
                       ConditionExpression="requests = :er AND prompt_tokens = :et",
                       ExpressionAttributeValues=dump({":er": 2, ":et": 5}))
    assert _get(client, table, "USAGE#d", "c") is None


def put_many(client: Any, table: str, items: list[dict[str, Any]]) -> str:
    """``items`` written as the flusher writes, in transactions of 100 Puts; one by one where
    the endpoint has no TransactWriteItems (so that its queries can still be measured).
    Returns the call used."""
    try:
        for start in range(0, len(items), 100):
            client.transact_write_items(TransactItems=[{"Put": {"TableName": table, "Item": dump(item)}}
                                                       for item in items[start:start + 100]])
        return "TransactWriteItems"
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "UnknownOperationException":
            raise
    for item in items:
        client.put_item(TableName=table, Item=dump(item))
    return "PutItem"


def _fill_partition(client: Any, table: str, pk: str, n: int) -> list[str]:
    """``n`` items in one partition (and in gsi1 under ``pk``)."""
    sks = [f"2026-01-{1 + i % 28:02d}T00:00:{i:06d}Z#req{i}" for i in range(n)]
    put_many(client, table, [{"pk": pk, "sk": sk, "gsi1pk": pk, "gsi1sk": sk, "type": f"t{i % 3}", "n": i}
                             for i, sk in enumerate(sks)])
    return sorted(sks)


@case
def query_pages_in_order(client: Any, table: str) -> None:
    # Table.query / query_all: pk = :pk [AND sk BETWEEN :start AND :end], Limit, both directions,
    # ConsistentRead, ExclusiveStartKey from LastEvaluatedKey; the usage reader's "\uffff" end bound
    sks = _fill_partition(client, table, "LEDGER#q", 250)
    base = dict(TableName=table, KeyConditionExpression="pk = :pk", ExpressionAttributeValues=dump({":pk": "LEDGER#q"}))
    forward, pages = _query_all(client, **base, Limit=100, ConsistentRead=True)
    assert [i["sk"] for i in forward] == sks and pages >= 3, (len(forward), pages)
    backward, _ = _query_all(client, **base, Limit=70, ScanIndexForward=False)
    assert [i["sk"] for i in backward] == sks[::-1]
    ranged, _ = _query_all(client, TableName=table, Limit=30,
                           KeyConditionExpression="pk = :pk AND sk BETWEEN :start AND :end",
                           ExpressionAttributeValues=dump({":pk": "LEDGER#q", ":start": "2026-01-03",
                                                           ":end": "2026-01-04\uffff"}))
    assert [i["sk"] for i in ranged] == [s for s in sks if "2026-01-03" <= s <= "2026-01-04\uffff"]


@case
def index_queries_page_newest_first(client: Any, table: str) -> None:
    # Accounts/AuditLog/DeliveryLog listings: gsi1 (ScanIndexForward False, Limit, cursor);
    # EventLog._read: gsi1sk < :before; DeliveryLog.due: gsi2sk <= :now
    sks = _fill_partition(client, table, "TENANT#g#EVENTS", 120)
    listed, pages = _query_all(client, TableName=table, IndexName="gsi1", Limit=50, ScanIndexForward=False,
                               KeyConditionExpression="gsi1pk = :pk",
                               ExpressionAttributeValues=dump({":pk": "TENANT#g#EVENTS"}))
    assert [i["gsi1sk"] for i in listed] == sks[::-1] and pages >= 3
    below, _ = _query_all(client, TableName=table, IndexName="gsi1", ScanIndexForward=False, Limit=25,
                          KeyConditionExpression="gsi1pk = :pk AND gsi1sk < :before",
                          ExpressionAttributeValues=dump({":pk": "TENANT#g#EVENTS", ":before": sks[60]}))
    assert [i["gsi1sk"] for i in below] == sks[:60][::-1]
    for i, due in enumerate(("2026-01-01T00:00:01.000Z#w#a", "2026-01-01T00:00:02.000Z#w#b",
                             "2026-01-01T00:00:03.000Z#w#c")):
        client.put_item(TableName=table, Item=dump({"pk": f"DELIVERY#due{i}", "sk": "DELIVERY", "gsi2pk": "RETRY-due",
                                                    "gsi2sk": due}))
    now = "2026-01-01T00:00:02.000Z#w#b"
    due_now, _ = _query_all(client, TableName=table, IndexName="gsi2", Limit=1, ScanIndexForward=True,
                            KeyConditionExpression="gsi2pk = :retry AND gsi2sk <= :now",
                            ExpressionAttributeValues=dump({":retry": "RETRY-due", ":now": now}))
    assert [i["pk"] for i in due_now] == ["DELIVERY#due0", "DELIVERY#due1"]


@case
def filtered_query_pages(client: Any, table: str) -> None:
    # EventLog._read with a type: FilterExpression "#type = :type", Limit before the filter
    _fill_partition(client, table, "TENANT#f#EVENTS", 90)
    kwargs = dict(TableName=table, IndexName="gsi1", ScanIndexForward=False, Limit=30,
                  KeyConditionExpression="gsi1pk = :pk", FilterExpression="#type = :type",
                  ExpressionAttributeNames={"#type": "type"},
                  ExpressionAttributeValues=dump({":pk": "TENANT#f#EVENTS", ":type": "t1"}))
    first = client.query(**kwargs)
    assert len(first["Items"]) < 30 and "LastEvaluatedKey" in first, "Limit counts items read, not matched"
    items, _ = _query_all(client, **kwargs)
    assert len(items) == 30 and all(i["type"] == "t1" for i in items)


@case
def start_key_of_another_partition_is_rejected(client: Any, table: str) -> None:
    # Table.query maps a ValidationException on a cursor to 400
    client.put_item(TableName=table, Item=dump({"pk": "AUDIT", "sk": "a"}))
    fails(lambda: client.query(TableName=table, KeyConditionExpression="pk = :pk",
                               ExpressionAttributeValues=dump({":pk": "AUDIT"}),
                               ExclusiveStartKey=dump({"pk": "OTHER", "sk": "a"})), "ValidationException")


@case
def transaction_all_or_nothing(client: Any, table: str) -> None:
    # Table.transact / UsageLedger._commit / webhooks: Put (new), Update (ADD), Delete, ConditionCheck
    client.put_item(TableName=table, Item=dump({"pk": "WEBHOOKS", "sk": "w-old"}))
    ok = [{"Put": {"TableName": table, "Item": dump({"pk": "LEDGER#x", "sk": "1"}),
                   "ConditionExpression": "attribute_not_exists(pk)"}},
          {"Update": {"TableName": table, "Key": dump({"pk": "USAGE#x", "sk": "c"}),
                      "UpdateExpression": "ADD requests :r",
                      "ExpressionAttributeValues": dump({":r": 1})}},
          {"Delete": {"TableName": table, "Key": dump({"pk": "WEBHOOKS", "sk": "w-old"}),
                      "ConditionExpression": "attribute_exists(pk)"}},
          {"ConditionCheck": {"TableName": table, "Key": dump({"pk": "TENANT#x", "sk": "TENANT"}),
                              "ConditionExpression": "attribute_not_exists(pk)"}}]
    client.transact_write_items(TransactItems=ok)
    assert _get(client, table, "LEDGER#x", "1") and _get(client, table, "WEBHOOKS", "w-old") is None
    # the same again: the Put's condition fails, so nothing of it is applied
    again = [ok[0], ok[1], {"Put": {"TableName": table, "Item": dump({"pk": "LEDGER#x", "sk": "2"}),
                                    "ConditionExpression": "attribute_not_exists(pk)"}}]
    response = fails(lambda: client.transact_write_items(TransactItems=again), "TransactionCanceledException")
    codes = [r.get("Code") for r in response.get("CancellationReasons", [])]
    assert codes == ["ConditionalCheckFailed", "None", "None"], codes
    assert _get(client, table, "USAGE#x", "c")["requests"] == 1  # type: ignore[index]
    assert _get(client, table, "LEDGER#x", "2") is None


@case
def transaction_limits(client: Any, table: str) -> None:
    # TRANSACTION_ITEMS = 100 per transaction; one item twice is a ValidationException
    def puts(n: int, prefix: str) -> list[dict[str, Any]]:
        return [{"Put": {"TableName": table, "Item": dump({"pk": f"L#{prefix}", "sk": str(i)})}} for i in range(n)]
    client.transact_write_items(TransactItems=puts(100, "a"))
    fails(lambda: client.transact_write_items(TransactItems=puts(101, "b")), "ValidationException")
    fails(lambda: client.transact_write_items(TransactItems=puts(1, "c") + puts(1, "c")), "ValidationException")


def run_cases(client: Any) -> list[tuple[str, bool, str]]:
    table = create_table(client)
    results = []
    for name, function in CASES:
        try:
            function(client, table)
            results.append((name, True, ""))
        except Exception as error:  # noqa: BLE001 - a case that fails for any reason is a fail
            results.append((name, False, f"{type(error).__name__}: {str(error)[:160]}"))
    return results


# -- load --------------------------------------------------------------------------------------
def contention(client: Any, writers: int, seconds: float) -> dict[str, Any]:
    """``writers`` threads, each committing the flusher's transaction (10 new ledger Puts and
    ADDs to 2 of 4 shared rollup cells) for ``seconds``; a TransactionConflict is retried as
    UsageLedger does. Afterwards the cells' sums must equal the ledger items committed."""
    table = create_table(client)
    committed, errors, conflicts = Counter(), Counter(), Counter()
    stop = time.monotonic() + seconds

    def writer(w: int) -> None:
        n = 0
        while time.monotonic() < stop:
            cells = [(w + n) % 4, (w + n + 1) % 4]
            items = [{"Put": {"TableName": table, "ConditionExpression": "attribute_not_exists(pk)",
                              "Item": dump({"pk": f"LEDGER#w{w}", "sk": f"{n:08d}#{j}", "prompt_tokens": 3})}}
                     for j in range(10)]
            items += [{"Update": {"TableName": table, "Key": dump({"pk": "USAGE#hot", "sk": f"cell{c}"}),
                                  "UpdateExpression": "ADD requests :r", "ExpressionAttributeValues": dump({":r": 5})}}
                      for c in cells]
            try:
                client.transact_write_items(TransactItems=items)
                committed[w] += 1
                n += 1
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "?")
                reasons = [r.get("Code") for r in error.response.get("CancellationReasons", [])]
                if code == "TransactionCanceledException" and "TransactionConflict" in reasons:
                    conflicts[w] += 1
                    time.sleep(0.01)
                else:
                    errors[code] += 1
                    n += 1
            except Exception as error:  # noqa: BLE001 - a dropped connection is an error too
                errors[type(error).__name__] += 1
                n += 1
    started = time.monotonic()
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    total = sum(committed.values())
    cells = _query_all(client, TableName=table, KeyConditionExpression="pk = :pk",
                       ExpressionAttributeValues=dump({":pk": "USAGE#hot"}), ConsistentRead=True)[0]
    consistent = sum(int(c.get("requests", 0)) for c in cells) == total * 2 * 5
    return {"transactions": total, "tx_per_s": round(total / elapsed, 1), "errors": dict(errors),
            "conflicts_retried": sum(conflicts.values()), "sums_consistent": consistent}


def big_partition(client: Any, items: int, timeout_s: float) -> dict[str, Any]:
    """``items`` items in one partition (``put_many``), then: the first page of it,
    the first page of a one-item partition beside it, and every page of it (Limit 1000)."""
    table = create_table(client)
    started = time.monotonic()
    written, call = 0, ""
    try:
        while written < items and time.monotonic() - started < timeout_s:
            call = put_many(client, table, [{"pk": "LEDGER#big", "sk": f"{i:08d}", "gsi1pk": "BIG",
                                             "gsi1sk": f"{i:08d}", "prompt_tokens": i}
                                            for i in range(written, written + 1000)])
            written += 1000
    except Exception as error:  # noqa: BLE001
        return {"written": written, "error": f"{type(error).__name__}: {str(error)[:120]}"}
    fill_s = time.monotonic() - started
    client.put_item(TableName=table, Item=dump({"pk": "LEDGER#small", "sk": "0"}))

    def timed(call: Callable[[], Any], repeat: int = 20) -> float:
        t = time.perf_counter()
        for _ in range(repeat):
            call()
        return round((time.perf_counter() - t) / repeat * 1000, 2)
    page_ms = timed(lambda: client.query(TableName=table, KeyConditionExpression="pk = :pk", Limit=100,
                                         ExpressionAttributeValues=dump({":pk": "LEDGER#big"})))
    index_ms = timed(lambda: client.query(TableName=table, IndexName="gsi1", KeyConditionExpression="gsi1pk = :pk",
                                          Limit=100, ScanIndexForward=False,
                                          ExpressionAttributeValues=dump({":pk": "BIG"})))
    small_ms = timed(lambda: client.query(TableName=table, KeyConditionExpression="pk = :pk",
                                          ExpressionAttributeValues=dump({":pk": "LEDGER#small"})))
    t = time.perf_counter()
    everything, pages = _query_all(client, TableName=table, KeyConditionExpression="pk = :pk", Limit=1000,
                                   ExpressionAttributeValues=dump({":pk": "LEDGER#big"}))
    all_s = round(time.perf_counter() - t, 2)
    exact = [i["sk"] for i in everything] == [f"{i:08d}" for i in range(written)]
    return {"written": written, "filled_with": call, "fill_items_per_s": round(written / fill_s),
            "first_page_ms": page_ms, "index_page_ms": index_ms, "small_partition_ms": small_ms,
            "all_pages_s": all_s, "pages": pages,
            "all_exactly_once": exact}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--fill-timeout", type=float, default=600.0)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    client = client_for(args.endpoint)
    results = run_cases(client)
    for name, passed, why in results:
        print(f"{'PASS' if passed else 'FAIL'}  {name:48} {why}")
    print(f"conformance: {sum(p for _, p, _ in results)}/{len(results)} pass", flush=True)
    load_figures = contention(client, args.writers, args.seconds)
    print(f"contention ({args.writers} writers, {args.seconds:.0f} s): {load_figures}", flush=True)
    size_figures = big_partition(client, args.items, args.fill_timeout)
    print(f"{args.items} items in one partition: {size_figures}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"cases": results, "contention": load_figures, "size": size_figures}))
    return 0 if all(p for _, p, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
