"""The local DynamoDB (infra/local/dynamodb) against the calls the product makes: the
conformance cases of tests/performance/dynamodb_conformance.py (the script that compared it
with dynalite and moto, docs/ARCHITECTURE.md), each as a test through boto3 over HTTP; then
what it promises beyond them: concurrent transactions that never fail spuriously,
acknowledged writes that survive SIGKILL, refusals of what it does not implement, and the
project's own repositories on it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from infra.local.services import Service, create_table, dynamodb_service, free_port
from tests.performance.dynamodb_conformance import CASES, Case


def client_for(port: int) -> Any:
    return boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=16))


def S(value: str) -> dict:  # noqa: N802 - DynamoDB's type names
    return {"S": value}


def N(value: str | int) -> dict:  # noqa: N802
    return {"N": str(value)}


@pytest.fixture
def local(local_dynamodb: Service) -> Any:
    return client_for(local_dynamodb.port)


def new_table(client: Any) -> str:
    """A table as template.yaml defines the product's."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    create_table(client, name)
    return name


def _sort_keys(items: list[dict]) -> list[str]:
    return [item["sk"]["S"] for item in items]


def query_all(ddb: Any, **kwargs: Any) -> tuple[list[dict], int]:
    """Every item of a paginated Query, and how many pages it took."""
    items, pages = [], 0
    while True:
        response = ddb.query(**kwargs)
        items += response["Items"]
        pages += 1
        if "LastEvaluatedKey" not in response:
            return items, pages
        kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def error_of(call: Callable[[], Any]) -> dict[str, str]:
    with pytest.raises(ClientError) as raised:
        call()
    return raised.value.response["Error"]


# == the conformance cases =========================================================================
@pytest.mark.parametrize(("name", "case"), CASES, ids=[name for name, _ in CASES])
def test_conformance(local, name: str, case: Case) -> None:
    case(local, new_table(local))


# == beyond the cases ==============================================================================
def test_concurrent_transactions_on_one_rollup_all_succeed(local):
    """moto answers 500 to concurrent transactions; DynamoDB serializes them."""
    table = new_table(local)
    threads, per_thread = 8, 40
    failures: list[BaseException] = []

    def work(worker: int) -> None:
        client = client_for(int(local.meta.endpoint_url.rsplit(":", 1)[1]))
        try:
            for i in range(per_thread):
                client.transact_write_items(TransactItems=[
                    {"Put": {"TableName": table, "Item": {"pk": S("ledger"), "sk": S(f"{worker}-{i}")},
                             "ConditionExpression": "attribute_not_exists(pk)"}},
                    {"Update": {"TableName": table, "Key": {"pk": S("rollup"), "sk": S("day")},
                                "UpdateExpression": "ADD requests :one, tokens :t",
                                "ExpressionAttributeValues": {":one": N(1), ":t": N(i + 1)}}},
                ])
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(error)

    pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert failures == []
    rollup = local.get_item(TableName=table, Key={"pk": S("rollup"), "sk": S("day")}, ConsistentRead=True)["Item"]
    assert rollup["requests"] == N(threads * per_thread)
    assert rollup["tokens"] == N(threads * sum(range(1, per_thread + 1)))
    ledger, _ = query_all(local, TableName=table, KeyConditionExpression="pk = :p",
                          ExpressionAttributeValues={":p": S("ledger")})
    assert len(ledger) == threads * per_thread


def test_a_retried_transaction_is_applied_once(local):
    # botocore sends a ClientRequestToken and keeps it on retries: a retry after a lost reply is not applied again
    table = new_table(local)
    items = [{"Update": {"TableName": table, "Key": {"pk": S("r"), "sk": S("1")}, "UpdateExpression": "ADD n :one",
                         "ExpressionAttributeValues": {":one": N(1)}}}]
    local.transact_write_items(TransactItems=items, ClientRequestToken="retry-1")
    local.transact_write_items(TransactItems=items, ClientRequestToken="retry-1")
    assert local.get_item(TableName=table, Key={"pk": S("r"), "sk": S("1")})["Item"]["n"] == N(1)
    other = [{"Put": {"TableName": table, "Item": {"pk": S("r"), "sk": S("2")}}}]
    assert error_of(lambda: local.transact_write_items(TransactItems=other, ClientRequestToken="retry-1"))["Code"] \
        == "IdempotentParameterMismatchException"


@pytest.mark.parametrize(("call", "fragment"), [
    (lambda c, t: c.get_item(TableName=t, Key={"pk": S("a"), "sk": S("b")}, ProjectionExpression="pk"),
     "does not implement the parameters ['ProjectionExpression']"),
    (lambda c, t: c.update_item(TableName=t, Key={"pk": S("a"), "sk": S("b")}, UpdateExpression="SET m.x = :v",
                                ExpressionAttributeValues={":v": N(1)}), "Syntax error"),
    (lambda c, t: c.put_item(TableName=t, Item={"pk": S("a"), "sk": S("b")}, ConditionExpression="status = :s",
                             ExpressionAttributeValues={":s": S("x")}), "reserved keyword; reserved keyword: status"),
    (lambda c, t: c.put_item(TableName=t, Item={"pk": S("a"), "sk": S("b")}, ConditionExpression="a = :s",
                             ExpressionAttributeValues={":s": S("x"), ":t": S("y")}), "unused in expressions"),
    (lambda c, t: c.put_item(TableName=t, Item={"pk": S("a"), "sk": S("b")}, ConditionExpression="#a = :s",
                             ExpressionAttributeValues={":s": S("x")}), "attribute name: #a"),
    (lambda c, t: c.update_item(TableName=t, Key={"pk": S("a"), "sk": S("b")}, UpdateExpression="SET sk = :v",
                                ExpressionAttributeValues={":v": S("x")}), "This attribute is part of the key"),
    (lambda c, t: c.query(TableName=t, IndexName="gsi1", ConsistentRead=True, KeyConditionExpression="gsi1pk = :p",
                          ExpressionAttributeValues={":p": S("x")}), "Consistent reads are not supported"),
    (lambda c, t: c.query(TableName=t, KeyConditionExpression="pk = :p", FilterExpression="sk = :p",
                          ExpressionAttributeValues={":p": S("x")}), "Primary key attribute: sk"),
    (lambda c, t: c.put_item(TableName=t, Item={"pk": S("a"), "sk": S("b"), "big": S("x" * 410_000)}),
     "Item size has exceeded"),
    (lambda c, t: c.put_item(TableName=t, Item={"pk": S("a"), "sk": S("b"), "n": N("1" * 39)}), "38 significant"),
])
def test_refusals(local, call, fragment):
    error = error_of(lambda: call(local, new_table(local)))
    assert error["Code"] == "ValidationException" and fragment in error["Message"], error


def test_operations_the_product_never_calls_are_unknown(local):
    table = new_table(local)
    error = error_of(lambda: local.batch_get_item(RequestItems={table: {"Keys": [{"pk": S("a"), "sk": S("b")}]}}))
    assert error["Code"] == "UnknownOperationException"


def test_a_plain_scan_reads_the_whole_table_in_pages(local):
    # the at-rest checks of tests/integration/test_money.py read everything this way
    table = new_table(local)
    for i in range(25):
        local.put_item(TableName=table, Item={"pk": S(f"p{i % 4}"), "sk": S(f"{i:02d}")})
    seen, start = [], None
    while True:
        page = local.scan(TableName=table, Limit=10, **({"ExclusiveStartKey": start} if start else {}))
        seen += _sort_keys(page["Items"])
        if "LastEvaluatedKey" not in page:
            break
        start = page["LastEvaluatedKey"]
    assert sorted(seen) == [f"{i:02d}" for i in range(25)]


def test_a_query_page_stops_at_one_megabyte(local):
    table = new_table(local)
    blob = "x" * 100_000
    for i in range(30):
        local.put_item(TableName=table, Item={"pk": S("big"), "sk": S(f"{i:02d}"), "blob": S(blob)})
    first = local.query(TableName=table, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": S("big")})
    assert 9 <= first["Count"] <= 11 and "LastEvaluatedKey" in first
    items, pages = query_all(local, TableName=table, KeyConditionExpression="pk = :p",
                             ExpressionAttributeValues={":p": S("big")})
    assert len(items) == 30 and pages == 3


def test_acknowledged_writes_survive_sigkill(tmp_path: Path):
    db_path = tmp_path / "state.sqlite3"
    service = dynamodb_service(free_port(), db_path, tmp_path).start()
    try:
        client = client_for(service.port)
        table = new_table(client)
        for i in range(50):
            client.put_item(TableName=table, Item={"pk": S("p"), "sk": S(f"{i:03d}"), "gsi1pk": S("g"),
                                                   "gsi1sk": S(f"{i:03d}")})
        client.transact_write_items(TransactItems=[
            {"Update": {"TableName": table, "Key": {"pk": S("r"), "sk": S("1")}, "UpdateExpression": "ADD n :five",
                        "ExpressionAttributeValues": {":five": N(5)}}}])
        client.delete_item(TableName=table, Key={"pk": S("p"), "sk": S("000")})
        service.kill()  # SIGKILL right after the last acknowledged write
        assert (tmp_path / "state.sqlite3-wal").exists()
        restarted = dynamodb_service(service.port, db_path, tmp_path).start()
        try:
            client = client_for(restarted.port)
            assert client.describe_table(TableName=table)["Table"]["GlobalSecondaryIndexes"][0]["IndexName"] == "gsi1"
            items, _ = query_all(client, TableName=table, KeyConditionExpression="pk = :p",
                                 ExpressionAttributeValues={":p": S("p")})
            assert _sort_keys(items) == [f"{i:03d}" for i in range(1, 50)]
            indexed, _ = query_all(client, TableName=table, IndexName="gsi1", KeyConditionExpression="gsi1pk = :g",
                                   ExpressionAttributeValues={":g": S("g")})
            assert len(indexed) == 49
            assert client.get_item(TableName=table, Key={"pk": S("r"), "sk": S("1")})["Item"]["n"] == N(5)
        finally:
            restarted.stop()
    finally:
        service.stop()


def test_errors_have_dynamodbs_shape(local_dynamodb: Service):
    import json
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{local_dynamodb.port}/", data=json.dumps({"TableName": "nope-nope"}).encode(),
        headers={"X-Amz-Target": "DynamoDB_20120810.DescribeTable", "Content-Type": "application/x-amz-json-1.0"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=5)
    assert raised.value.code == 400
    body = json.loads(raised.value.read())
    assert body["__type"] == "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException"
    assert "nope-nope" in body["message"]
    unknown = urllib.request.Request(f"http://127.0.0.1:{local_dynamodb.port}/", data=b"{}",
                                     headers={"X-Amz-Target": "DynamoDB_20120810.Frobnicate"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(unknown, timeout=5)
    assert json.loads(raised.value.read())["__type"].endswith("#UnknownOperationException")


# == the project's repositories on the new server ===============================================
@pytest.fixture
def store(local: Any) -> Iterator[Any]:
    from types import SimpleNamespace

    from gateway.adapters.dynamo import Accounts, Table, UsageLedger

    name = f"maas-{uuid.uuid4().hex[:8]}"
    create_table(local, name)
    table = Table(local, name)
    yield SimpleNamespace(table=name, accounts=Accounts(table), usage=UsageLedger(table))


def usage_event(tenant: str, tokens: int = 5, ts_ms: int = 1_790_000_000_000, request_id: str | None = None) -> Any:
    from gateway.domain.usage import UsageEvent

    return UsageEvent(request_id=request_id or uuid.uuid4().hex, tenant_id=tenant, key_id="key_x",
                      model="all-MiniLM-L6-v2", prompt_tokens=tokens, timestamp_ms=ts_ms)


def test_store_table_from_the_template(local, store):
    described = local.describe_table(TableName=store.table)["Table"]
    assert described["KeySchema"][0] == {"AttributeName": "pk", "KeyType": "HASH"}
    assert described["GlobalSecondaryIndexes"][0]["IndexName"] == "gsi1"
    create_table(local, store.table)  # idempotent: the table is already there


def test_store_record_usage_batches_drop_redelivered_events(store):
    tenants = [f"ten_{i}" for i in range(7)]
    events = [usage_event(tenants[i % 7], tokens=i + 1, ts_ms=1_790_000_000_000 + i) for i in range(99 * 3)]
    assert store.usage.record_usage(events) == len(events)
    redelivered = events[:40] + [usage_event(tenants[0], tokens=1000)]
    assert store.usage.record_usage(redelivered) == 1  # 40 transactions items cancelled, then dropped
    for i, tenant in enumerate(tenants):
        mine = [e for e in events if e.tenant_id == tenant]
        extra = 1000 if i == 0 else 0
        rows = store.usage.rollups(tenant, "2026-01-01", "2027-01-01", consistent=True)
        assert sum(int(r["requests"]) for r in rows) == len(mine) + (1 if extra else 0)
        assert sum(int(r["prompt_tokens"]) for r in rows) == sum(e.prompt_tokens for e in mine) + extra
        ledger = list(store.usage.ledger_all(tenant, "2026-01-01", "2027-01-01"))
        assert sorted(r["request_id"] for r in ledger) == sorted(
            [e.request_id for e in mine] + ([redelivered[-1].request_id] if extra else []))


def test_store_ledger_pages(store):
    events = [usage_event("ten_pages", ts_ms=1_790_000_000_000 + i * 1000) for i in range(25)]
    store.usage.record_usage(events)
    seen, cursor = [], None
    while True:
        page = store.usage.ledger("ten_pages", "2026-01-01", "2027-01-01", cursor=cursor, limit=10)
        seen += [row["request_id"] for row in page.items]
        cursor = page.next_cursor
        if not cursor:
            break
    assert seen == [e.request_id for e in events]


def test_store_admin_listings_paginate(store):
    from gateway.errors import InvalidRequestError
    from gateway.models.records import KeyRecord, TenantRecord

    for i in range(12):
        store.accounts.create_tenant(TenantRecord(id=f"ten_{i:02d}", name=f"t{i}", plan="starter",
                                         created_at=f"2026-01-01T00:00:{i:02d}Z"))
    for i in range(5):
        store.accounts.create_key(KeyRecord(id=f"key_{i}", tenant_id="ten_00", scopes=["inference"], key_hash="h",
                                   created_at=f"2026-01-02T00:00:0{i}Z"))
    listed, cursor = [], None
    while True:
        tenants, cursor = store.accounts.list_tenants(cursor=cursor, limit=5)
        listed += [t.id for t in tenants]
        if not cursor:
            break
    assert listed == [f"ten_{i:02d}" for i in range(12)]
    keys, cursor = store.accounts.list_keys("ten_00", limit=3)
    more, end = store.accounts.list_keys("ten_00", cursor=cursor, limit=3)
    assert [k.id for k in keys + more] == [f"key_{i}" for i in range(5)] and end is None
    with pytest.raises(InvalidRequestError):
        store.accounts.list_keys("ten_01", cursor=cursor)  # a cursor of another tenant's listing
