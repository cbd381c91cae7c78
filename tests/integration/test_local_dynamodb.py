"""The local DynamoDB (infra/local/dynamodb) against DynamoDB's documented behaviour.

The conformance cases run twice, through boto3 over HTTP: against moto's server (an
independent implementation, the reference the project used so far) and against the new
server. Where moto departs from DynamoDB, the case asserts DynamoDB's behaviour and the
moto run is an expected failure (strict, with the reason), so a moto fix shows up.

Then what only the new server promises: concurrent transactions that never fail
spuriously, acknowledged writes that survive SIGKILL, and the project's own repositories on it."""

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


def client_for(port: int) -> Any:
    return boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=16))


@pytest.fixture(params=["moto", "local"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def ddb(backend: str, request: pytest.FixtureRequest) -> Any:
    service: Service = request.getfixturevalue("moto" if backend == "moto" else "local_dynamodb")
    return client_for(service.port)


@pytest.fixture
def moto_deviates(backend: str, request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Mark this case's moto run as an expected failure: moto departs from DynamoDB here."""

    def mark(reason: str) -> None:
        if backend == "moto":
            request.applymarker(pytest.mark.xfail(strict=True, reason=f"moto: {reason}"))

    return mark


def S(value: str) -> dict:  # noqa: N802 - DynamoDB's type names
    return {"S": value}


def N(value: str | int) -> dict:  # noqa: N802
    return {"N": str(value)}


def B(value: bytes) -> dict:  # noqa: N802
    return {"B": value}


def new_table(ddb: Any, *, sort_type: str | None = "S", hash_type: str = "S", gsi: bool = True) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    definitions = [{"AttributeName": "pk", "AttributeType": hash_type}]
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    if sort_type:
        definitions.append({"AttributeName": "sk", "AttributeType": sort_type})
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
    extra: dict[str, Any] = {}
    if gsi:
        definitions += [{"AttributeName": "gsi1pk", "AttributeType": "S"},
                        {"AttributeName": "gsi1sk", "AttributeType": "S"}]
        extra["GlobalSecondaryIndexes"] = [{
            "IndexName": "gsi1", "Projection": {"ProjectionType": "ALL"},
            "KeySchema": [{"AttributeName": "gsi1pk", "KeyType": "HASH"},
                          {"AttributeName": "gsi1sk", "KeyType": "RANGE"}]}]
    ddb.create_table(TableName=name, AttributeDefinitions=definitions, KeySchema=keys,
                     BillingMode="PAY_PER_REQUEST", **extra)
    return name


@pytest.fixture
def table(ddb: Any) -> str:
    return new_table(ddb)


def error_code(call: Callable[[], Any]) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    return raised.value.response["Error"]["Code"]


def fails_validation(call: Callable[[], Any], *fragments: str) -> None:
    with pytest.raises(ClientError) as raised:
        call()
    error = raised.value.response["Error"]
    assert error["Code"] == "ValidationException", error
    for fragment in fragments:
        assert fragment in error["Message"], error


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


# == tables =====================================================================================
def test_create_describe_list_delete_table(ddb):
    name = new_table(ddb)
    table = ddb.describe_table(TableName=name)["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"},
                                  {"AttributeName": "sk", "KeyType": "RANGE"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["gsi1"]
    assert table["GlobalSecondaryIndexes"][0]["Projection"] == {"ProjectionType": "ALL"}
    assert table["TableArn"].endswith(f":table/{name}")
    assert name in ddb.list_tables(Limit=100)["TableNames"] or name in _all_tables(ddb)
    ddb.get_waiter("table_exists").wait(TableName=name)
    assert error_code(lambda: new_table_named(ddb, name)) == "ResourceInUseException"
    assert ddb.delete_table(TableName=name)["TableDescription"]["TableName"] == name
    assert error_code(lambda: ddb.describe_table(TableName=name)) == "ResourceNotFoundException"
    assert error_code(lambda: ddb.get_item(TableName=name, Key={"pk": S("a"), "sk": S("b")})) \
        == "ResourceNotFoundException"


def new_table_named(ddb: Any, name: str) -> None:
    ddb.create_table(TableName=name, AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")


def _all_tables(ddb: Any) -> list[str]:
    names, start = [], None
    while True:
        response = ddb.list_tables(**({"ExclusiveStartTableName": start} if start else {}))
        names += response["TableNames"]
        start = response.get("LastEvaluatedTableName")
        if not start:
            return names


def test_list_tables_paginates(ddb):
    made = sorted(new_table(ddb, gsi=False) for _ in range(3))
    first = ddb.list_tables(Limit=1)
    assert len(first["TableNames"]) == 1 and first["LastEvaluatedTableName"] == first["TableNames"][0]
    assert set(made) <= set(_all_tables(ddb))


def test_create_table_validation(ddb):
    fails_validation(lambda: ddb.create_table(
        TableName=f"t-{uuid.uuid4().hex[:8]}", BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "x", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}]))
    fails_validation(lambda: ddb.create_table(
        TableName=f"t-{uuid.uuid4().hex[:8]}", AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}]))  # PROVISIONED without throughput


def test_update_table_billing_and_a_new_index_over_existing_items(ddb, table):
    ddb.put_item(TableName=table, Item={"pk": S("a"), "sk": S("1"), "color": S("red")})
    ddb.update_table(TableName=table, BillingMode="PROVISIONED",
                     ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5},
                     GlobalSecondaryIndexUpdates=[{"Create": {
                         "IndexName": "by_color", "Projection": {"ProjectionType": "ALL"},
                         "KeySchema": [{"AttributeName": "color", "KeyType": "HASH"}],
                         "ProvisionedThroughput": {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}}}],
                     AttributeDefinitions=[{"AttributeName": "color", "AttributeType": "S"}])
    ddb.get_waiter("table_exists").wait(TableName=table)
    described = ddb.describe_table(TableName=table)["Table"]
    assert described["BillingModeSummary"]["BillingMode"] == "PROVISIONED"
    assert {i["IndexName"] for i in described["GlobalSecondaryIndexes"]} == {"gsi1", "by_color"}
    ddb.put_item(TableName=table, Item={"pk": S("b"), "sk": S("1"), "color": S("red")})
    found = ddb.query(TableName=table, IndexName="by_color", KeyConditionExpression="color = :c",
                      ExpressionAttributeValues={":c": S("red")})["Items"]
    assert sorted(i["pk"]["S"] for i in found) == ["a", "b"]


# == items and types ============================================================================
EVERY_TYPE = {
    "pk": S("types"), "sk": S("1"), "s": S("héllo"), "empty": S(""), "n": N("-12.5"), "b": B(b"\x00\x01\xff"),
    "yes": {"BOOL": True}, "nothing": {"NULL": True},
    "m": {"M": {"inner": S("x"), "deep": {"M": {"n": N(1)}}}}, "l": {"L": [S("a"), N(2), {"L": []}]},
    "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": [b"\x01", b"\x02"]},
}


def _sets_sorted(item: dict) -> dict:
    return {k: ({t: sorted(v[t])} if (t := next(iter(v))) in ("SS", "NS", "BS") else v) for k, v in item.items()}


def test_every_type_round_trips(ddb, table):
    ddb.put_item(TableName=table, Item=EVERY_TYPE)
    item = ddb.get_item(TableName=table, Key={"pk": S("types"), "sk": S("1")}, ConsistentRead=True)["Item"]
    assert _sets_sorted(item) == _sets_sorted(EVERY_TYPE)
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": S("types"), "sk": S("2")})


def test_numbers_come_back_in_canonical_form(ddb, table, moto_deviates):
    moto_deviates("returns numbers as they were sent ('1.50', '1e2'); DynamoDB normalises them")
    ddb.put_item(TableName=table, Item={"pk": S("n"), "sk": S("1"), "a": N("1.50"), "b": N("1e2"), "c": N("-0.0")})
    item = ddb.get_item(TableName=table, Key={"pk": S("n"), "sk": S("1")})["Item"]
    assert (item["a"], item["b"], item["c"]) == (N("1.5"), N("100"), N("0"))


def test_numbers_are_38_digit_decimals(ddb, table):
    big = "1" * 38
    ddb.put_item(TableName=table, Item={"pk": S("n"), "sk": S("1"), "big": N(big), "tenth": N("0.1")})
    updated = ddb.update_item(TableName=table, Key={"pk": S("n"), "sk": S("1")},
                              UpdateExpression="SET tenth = tenth + :two_tenths, big = big - :one",
                              ExpressionAttributeValues={":two_tenths": N("0.2"), ":one": N(1)},
                              ReturnValues="UPDATED_NEW")["Attributes"]
    assert updated == {"tenth": N("0.3"), "big": N("1" * 37 + "0")}


def test_item_size_limit_is_400_kb(ddb, table):
    ddb.put_item(TableName=table, Item={"pk": S("a"), "sk": S("b"), "blob": S("x" * 400_000)})
    fails_validation(lambda: ddb.put_item(TableName=table, Item={"pk": S("a"), "sk": S("c"), "blob": S("x" * 410_000)}),
                     "Item size has exceeded the maximum allowed size")


# == conditions =================================================================================
ITEM = {"pk": S("c"), "sk": S("1"), "n": N(5), "s": S("hello"), "tags": {"SS": ["red", "blue"]},
        "nums": {"NS": ["1", "2"]}, "l": {"L": [S("a"), N(7)]}, "m": {"M": {"leaf": S("deep")}}, "flag": {"BOOL": True}}
VALUES = {":one": N(1), ":five": N(5), ":six": N(6), ":ten": N(10), ":a": S("a"), ":z": S("z"), ":hello": S("hello"),
          ":he": S("he"), ":ell": S("ell"), ":red": S("red"), ":two": N(2), ":seven": N(7), ":deep": S("deep"),
          ":N": S("N"), ":SS": S("SS"), ":S": S("S"), ":green": S("green"), ":five_chars": N(5)}
CONDITIONS = [
    ("n = :five", True), ("n <> :five", False), ("n < :ten", True), ("n <= :five", True), ("n > :six", False),
    ("n >= :five", True), ("s BETWEEN :a AND :z", True), ("n BETWEEN :six AND :ten", False),
    ("n IN (:one, :five)", True), ("n IN (:one, :six)", False), ("NOT n = :five", False),
    ("(n = :one OR n = :five) AND s = :hello", True), ("n = :one OR NOT (s = :hello)", False),
    ("attribute_exists(s)", True), ("attribute_exists(absent)", False), ("attribute_not_exists(absent)", True),
    ("attribute_type(n, :N)", True), ("attribute_type(tags, :SS)", True), ("attribute_type(n, :S)", False),
    ("begins_with(s, :he)", True), ("begins_with(s, :ell)", False), ("contains(s, :ell)", True),
    ("contains(tags, :red)", True), ("contains(tags, :green)", False), ("contains(nums, :two)", True),
    ("contains(l, :seven)", True), ("size(s) = :five_chars", True), ("size(tags) = :two", True),
    ("size(l) > :two", False), ("m.leaf = :deep", True), ("l[1] = :seven", True), ("l[5] = :seven", False),
    ("s < :five", False),  # values of different types never compare
    ("absent = :five", False), ("absent < :five", False),
]


@pytest.mark.parametrize(("expression", "expected"), CONDITIONS, ids=[c[0] for c in CONDITIONS])
def test_condition_expressions(ddb, table, moto_deviates, expression, expected):
    if expression == "s < :five":
        moto_deviates("answers 500 to < between a string and a number")
    ddb.put_item(TableName=table, Item=ITEM)
    used = {k: v for k, v in VALUES.items() if k in expression.replace(",", " ").replace(")", " ").split()
            or f"{k})" in expression or f"{k}," in expression}
    kwargs = {"ExpressionAttributeValues": used} if used else {}
    try:
        ddb.put_item(TableName=table, Item=ITEM, ConditionExpression=expression, **kwargs)
        held = True
    except ClientError as error:
        assert error.response["Error"]["Code"] == "ConditionalCheckFailedException", error.response
        held = False
    assert held is expected
    # the same expression as a filter selects the item exactly when it holds
    scanned = ddb.scan(TableName=table, FilterExpression=expression, **kwargs)
    assert scanned["Count"] == int(expected)


def test_not_equal_holds_for_a_missing_attribute(ddb, table):
    ddb.put_item(TableName=table, Item=ITEM)
    ddb.put_item(TableName=table, Item=ITEM, ConditionExpression="absent <> :five",
                 ExpressionAttributeValues={":five": N(5)})


def test_condition_on_an_absent_item(ddb, table):
    ddb.put_item(TableName=table, Item=ITEM, ConditionExpression="attribute_not_exists(pk)")
    def put_again() -> None:
        ddb.put_item(TableName=table, Item=ITEM, ConditionExpression="attribute_not_exists(pk)")

    assert error_code(put_again) == "ConditionalCheckFailedException"


def test_failed_condition_returns_the_old_item_when_asked(ddb, table):
    ddb.put_item(TableName=table, Item=ITEM)
    with pytest.raises(ClientError) as raised:
        ddb.put_item(TableName=table, Item={"pk": S("c"), "sk": S("1")}, ConditionExpression="n = :one",
                     ExpressionAttributeValues={":one": N(1)}, ReturnValuesOnConditionCheckFailure="ALL_OLD")
    assert raised.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert _sets_sorted(raised.value.response["Item"]) == _sets_sorted(ITEM)


def test_reserved_words_are_used_through_placeholders(ddb, table):
    key = {"pk": S("a"), "sk": S("b")}
    ddb.put_item(TableName=table, Item={**key, "date": S("2024-01-01")})
    ddb.put_item(TableName=table, Item=key, ConditionExpression="#d = :d", ExpressionAttributeNames={"#d": "date"},
                 ExpressionAttributeValues={":d": S("2024-01-01")})


# == what DynamoDB refuses ======================================================================
KEY = {"pk": S("a"), "sk": S("b")}


def _put(**kwargs: Any) -> Callable[[Any, str], Any]:
    return lambda ddb, table: ddb.put_item(TableName=table, **{"Item": KEY, **kwargs})


def _query(**kwargs: Any) -> Callable[[Any, str], Any]:
    return lambda ddb, table: ddb.query(TableName=table, **kwargs)


def _transact(actions: Callable[[str], list]) -> Callable[[Any, str], Any]:
    return lambda ddb, table: ddb.transact_write_items(TransactItems=actions(table))


MOTO_500 = "answers 500 (an internal error), not ValidationException"
# (case, call, a fragment of DynamoDB's message, why moto differs or None)
REFUSALS = [
    ("item without its sort key", _put(Item={"pk": S("a")}), "Missing the key sk", None),
    ("key of the wrong type", _put(Item={"pk": N(1), "sk": S("a")}), "Type mismatch", None),
    ("empty string key", _put(Item={"pk": S(""), "sk": S("a")}), "empty string", None),
    ("index key of the wrong type", _put(Item={**KEY, "gsi1pk": N(1)}), "gsi1pk",
     "does not check the type of an index key attribute"),
    ("get with half a key", lambda ddb, t: ddb.get_item(TableName=t, Key={"pk": S("a")}),
     "The provided key element does not match the schema", "answers 'Validation Exception'"),
    ("get with an extra attribute", lambda ddb, t: ddb.get_item(TableName=t, Key={**KEY, "x": S("c")}),
     "The provided key element does not match the schema", None),
    ("empty set", _put(Item={**KEY, "s": {"SS": []}}), "may not be empty", None),
    ("set with duplicates", _put(Item={**KEY, "s": {"SS": ["x", "x"]}}), "contains duplicates",
     "accepts a set with duplicate members"),
    ("number of 39 digits", _put(Item={**KEY, "x": N("1" * 39)}), "38 significant digits",
     "accepts numbers of any precision"),
    ("unused value", _put(ConditionExpression="attribute_exists(pk)", ExpressionAttributeValues={":u": S("x")}),
     "unused in expressions: keys: {:u}", "accepts unused ExpressionAttributeValues in PutItem"),
    ("unused name", _put(ConditionExpression="attribute_exists(pk)", ExpressionAttributeNames={"#u": "x"}),
     "unused in expressions: keys: {#u}", None),
    ("undefined value", _put(ConditionExpression="a = :nope"), ":nope", MOTO_500),
    ("undefined name", _put(ConditionExpression="#nope = :v", ExpressionAttributeValues={":v": S("x")}), "#nope",
     MOTO_500),
    ("syntax error", _put(ConditionExpression="a = = :v", ExpressionAttributeValues={":v": S("x")}), "Syntax error",
     MOTO_500),
    ("unknown function", _put(ConditionExpression="frobnicate(a)"), "Invalid function name", MOTO_500),
    ("reserved word", _put(ConditionExpression="date = :d", ExpressionAttributeValues={":d": S("x")}),
     "reserved keyword; reserved keyword: date", None),
    ("BETWEEN with bounds reversed", lambda ddb, t: ddb.scan(
        TableName=t, FilterExpression="n BETWEEN :hi AND :lo", ExpressionAttributeValues={":hi": N(10), ":lo": N(1)}),
     "BETWEEN", "does not check the order of BETWEEN's bounds"),
    ("query without the partition key", _query(KeyConditionExpression="sk = :k",
                                               ExpressionAttributeValues={":k": S("k")}), "missed key schema element",
     None),
    ("query with OR", _query(KeyConditionExpression="pk = :p OR sk = :k",
                             ExpressionAttributeValues={":p": S("p"), ":k": S("k")}), "OR",
     "answers 500 to OR in a KeyConditionExpression"),
    ("query of an unknown index", _query(IndexName="nope", KeyConditionExpression="pk = :p",
                                         ExpressionAttributeValues={":p": S("p")}), "nope",
     "answers ResourceNotFoundException for an unknown index"),
    ("consistent read of a global index", _query(IndexName="gsi1", ConsistentRead=True,
                                                 KeyConditionExpression="gsi1pk = :p",
                                                 ExpressionAttributeValues={":p": S("p")}), "Consistent reads", None),
    ("query filtering on a key", _query(KeyConditionExpression="pk = :p", FilterExpression="sk = :k",
                                       ExpressionAttributeValues={":p": S("p"), ":k": S("k")}),
     "Primary key attribute: sk", "accepts key attributes in a Query's FilterExpression"),
    ("batch write of 26", lambda ddb, t: ddb.batch_write_item(RequestItems={
        t: [{"PutRequest": {"Item": {"pk": S("b"), "sk": S(f"{i}")}}} for i in range(26)]}),
     "less than or equal to 25", "accepts more than 25 requests in a BatchWriteItem"),
    ("batch write of one key twice", lambda ddb, t: ddb.batch_write_item(RequestItems={
        t: [{"PutRequest": {"Item": KEY}}] * 2}), "duplicates", None),
    ("batch get of 101", lambda ddb, t: ddb.batch_get_item(RequestItems={
        t: {"Keys": [{"pk": S("b"), "sk": S(f"{i}")} for i in range(101)]}}), "Too many items",
     "accepts more than 100 keys in a BatchGetItem"),
    ("batch get of one key twice", lambda ddb, t: ddb.batch_get_item(RequestItems={t: {"Keys": [KEY, KEY]}}),
     "duplicates", None),
    ("transaction of 101", _transact(lambda t: [{"Put": {"TableName": t, "Item": {"pk": S("t"), "sk": S(f"{i}")}}}
                                                for i in range(101)]), "less than or equal to 100", None),
    ("transaction touching one item twice", _transact(lambda t: [
        {"Put": {"TableName": t, "Item": KEY}}, {"Delete": {"TableName": t, "Key": KEY}}]),
     "multiple operations on one item", None),
]


@pytest.mark.parametrize(("call", "fragment", "moto_reason"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals(ddb, table, moto_deviates, call, fragment, moto_reason):
    if moto_reason:
        moto_deviates(moto_reason)
    ddb.put_item(TableName=table, Item={**KEY, "a": S("x"), "n": N(5)})  # conditions hold: only validation fails
    fails_validation(lambda: call(ddb, table), fragment)


# == updates ====================================================================================
def _update(ddb: Any, table: str, expression: str, values: dict | None = None, names: dict | None = None,
            returns: str = "ALL_NEW") -> dict:
    kwargs: dict[str, Any] = {"ExpressionAttributeValues": values} if values else {}
    if names:
        kwargs["ExpressionAttributeNames"] = names
    return ddb.update_item(TableName=table, Key={"pk": S("u"), "sk": S("1")}, UpdateExpression=expression,
                           ReturnValues=returns, **kwargs).get("Attributes", {})


def test_update_expressions(ddb, table):
    item = _update(ddb, table, "SET tally = :zero, tags = :tags, l = :l, m = :m, gone = :x",
                   {":zero": N(0), ":tags": {"SS": ["a"]}, ":l": {"L": [N(1)]}, ":m": {"M": {"a": N(1)}}, ":x": S("x")})
    assert item["tally"] == N(0)
    item = _update(ddb, table, "SET tally = tally + :five, extra = if_not_exists(extra, :seven), "
                   "l = list_append(l, :more), m.b = :two REMOVE gone",
                   {":five": N(5), ":seven": N(7), ":more": {"L": [N(2)]}, ":two": N(2)})
    assert item["tally"] == N(5) and item["extra"] == N(7) and item["l"] == {"L": [N(1), N(2)]}
    assert item["m"] == {"M": {"a": N(1), "b": N(2)}} and "gone" not in item
    item = _update(ddb, table, "SET tally = tally - :one, extra = if_not_exists(extra, :one)", {":one": N(1)})
    assert item["tally"] == N(4) and item["extra"] == N(7)
    item = _update(ddb, table, "ADD tally :ten, tags :bc, fresh :one",
                   {":ten": N(10), ":bc": {"SS": ["b", "c"]}, ":one": N(1)})
    assert item["tally"] == N(14) and sorted(item["tags"]["SS"]) == ["a", "b", "c"] and item["fresh"] == N(1)
    item = _update(ddb, table, "DELETE tags :a", {":a": {"SS": ["a", "z"]}})
    assert sorted(item["tags"]["SS"]) == ["b", "c"]
    item = _update(ddb, table, "SET l[0] = :nine REMOVE m.a", {":nine": N(9)})
    assert item["l"] == {"L": [N(9), N(2)]} and item["m"] == {"M": {"b": N(2)}}
    item = _update(ddb, table, "DELETE tags :bc", {":bc": {"SS": ["b", "c"]}})
    assert "tags" not in item  # a set emptied by DELETE is removed


def test_update_of_a_path_under_a_missing_map_is_refused(ddb, table):
    _update(ddb, table, "SET m = :m", {":m": {"M": {}}})
    assert _update(ddb, table, "SET m.a = :one", {":one": N(1)})["m"] == {"M": {"a": N(1)}}
    fails_validation(lambda: _update(ddb, table, "SET nope.a = :one", {":one": N(1)}), "document path")


def test_update_return_values(ddb, table):
    _update(ddb, table, "SET a = :one, b = :one", {":one": N(1)})
    assert _update(ddb, table, "SET a = :two", {":two": N(2)}, returns="UPDATED_OLD") == {"a": N(1)}
    assert _update(ddb, table, "SET a = :three", {":three": N(3)}, returns="UPDATED_NEW") == {"a": N(3)}
    old = _update(ddb, table, "SET a = :four", {":four": N(4)}, returns="ALL_OLD")
    assert old == {"pk": S("u"), "sk": S("1"), "a": N(3), "b": N(1)}
    assert _update(ddb, table, "SET a = :five", {":five": N(5)}, returns="NONE") == {}


def test_update_creates_the_item_from_its_key(ddb, table):
    assert _update(ddb, table, "ADD hits :one", {":one": N(1)}) == {"pk": S("u"), "sk": S("1"), "hits": N(1)}


def test_update_errors(ddb, table):
    _update(ddb, table, "SET s = :s", {":s": S("text")})
    fails_validation(lambda: _update(ddb, table, "SET pk = :v", {":v": S("x")}), "part of the key")
    fails_validation(lambda: _update(ddb, table, "SET a = :v, a.b = :v", {":v": S("x")}), "overlap")
    fails_validation(lambda: _update(ddb, table, "SET a = absent + :one", {":one": N(1)}))
    fails_validation(lambda: _update(ddb, table, "ADD s :one", {":one": N(1)}))
    fails_validation(lambda: _update(ddb, table, "SET s = s + :one", {":one": N(1)}))
    fails_validation(lambda: _update(ddb, table, "SET a = :v SET b = :v", {":v": S("x")}))


def test_put_and_delete_return_values(ddb, table):
    key = {"pk": S("r"), "sk": S("1")}
    assert "Attributes" not in ddb.put_item(TableName=table, Item={**key, "v": N(1)}, ReturnValues="ALL_OLD")
    assert ddb.put_item(TableName=table, Item={**key, "v": N(2)}, ReturnValues="ALL_OLD")["Attributes"]["v"] == N(1)
    fails_validation(lambda: ddb.put_item(TableName=table, Item=key, ReturnValues="ALL_NEW"))
    assert ddb.delete_item(TableName=table, Key=key, ReturnValues="ALL_OLD")["Attributes"]["v"] == N(2)
    assert "Attributes" not in ddb.delete_item(TableName=table, Key=key, ReturnValues="ALL_OLD")
    assert error_code(lambda: ddb.delete_item(TableName=table, Key=key, ConditionExpression="attribute_exists(pk)")) \
        == "ConditionalCheckFailedException"


# == query ======================================================================================
@pytest.fixture
def ledger(ddb: Any, table: str) -> str:
    """Partition "p" with sort keys "k00".."k19" (n = 0..19), another partition, and index
    entries for the even ones."""
    for i in range(20):
        item = {"pk": S("p"), "sk": S(f"k{i:02d}"), "n": N(i)}
        if i % 2 == 0:
            item |= {"gsi1pk": S("even"), "gsi1sk": S(f"{19 - i:02d}")}
        ddb.put_item(TableName=table, Item=item)
    ddb.put_item(TableName=table, Item={"pk": S("other"), "sk": S("k00"), "n": N(100)})
    return table


def _sort_keys(items: list[dict]) -> list[str]:
    return [i["sk"]["S"] for i in items]


@pytest.mark.parametrize(("condition", "values", "expected"), [
    ("sk = :a", {":a": S("k05")}, ["k05"]),
    ("sk < :a", {":a": S("k03")}, ["k00", "k01", "k02"]),
    ("sk <= :a", {":a": S("k02")}, ["k00", "k01", "k02"]),
    ("sk > :a", {":a": S("k17")}, ["k18", "k19"]),
    ("sk >= :a", {":a": S("k18")}, ["k18", "k19"]),
    ("sk BETWEEN :a AND :b", {":a": S("k04"), ":b": S("k06")}, ["k04", "k05", "k06"]),
    ("begins_with(sk, :a)", {":a": S("k1")}, [f"k{i}" for i in range(10, 20)]),
])
def test_query_sort_key_conditions(ddb, ledger, condition, values, expected):
    response = ddb.query(TableName=ledger, KeyConditionExpression=f"pk = :p AND {condition}",
                         ExpressionAttributeValues={":p": S("p"), **values})
    assert _sort_keys(response["Items"]) == expected


def test_query_pages_forward_and_backward(ddb, ledger, moto_deviates):
    items, pages = query_all(ddb, TableName=ledger, KeyConditionExpression="pk = :p",
                             ExpressionAttributeValues={":p": S("p")}, Limit=7)
    assert _sort_keys(items) == [f"k{i:02d}" for i in range(20)] and pages == 3
    items, _ = query_all(ddb, TableName=ledger, KeyConditionExpression="pk = :p", ScanIndexForward=False,
                         ExpressionAttributeValues={":p": S("p")}, Limit=6)
    assert _sort_keys(items) == [f"k{i:02d}" for i in reversed(range(20))]
    first = ddb.query(TableName=ledger, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": S("p")},
                      Limit=3)
    assert first["LastEvaluatedKey"] == {"pk": S("p"), "sk": S("k02")}
    moto_deviates("omits LastEvaluatedKey when Limit ends exactly at the last item; DynamoDB does not look ahead")
    exact = ddb.query(TableName=ledger, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": S("p")},
                      Limit=20)
    assert exact["LastEvaluatedKey"] == {"pk": S("p"), "sk": S("k19")}
    assert ddb.query(TableName=ledger, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": S("p")},
                     ExclusiveStartKey=exact["LastEvaluatedKey"])["Items"] == []


def test_query_filter_projection_and_count(ddb, ledger):
    response = ddb.query(TableName=ledger, KeyConditionExpression="pk = :p", FilterExpression="n >= :ten",
                         ExpressionAttributeValues={":p": S("p"), ":ten": N(10)}, Limit=15)
    assert (response["Count"], response["ScannedCount"]) == (5, 15)  # Limit counts items read, not returned
    projected = ddb.query(TableName=ledger, KeyConditionExpression="pk = :p AND sk = :k", ProjectionExpression="#n",
                          ExpressionAttributeNames={"#n": "n"},
                          ExpressionAttributeValues={":p": S("p"), ":k": S("k03")})
    assert projected["Items"] == [{"n": N(3)}]
    counted = ddb.query(TableName=ledger, KeyConditionExpression="pk = :p", Select="COUNT",
                        ExpressionAttributeValues={":p": S("p")})
    assert counted["Count"] == 20 and "Items" not in counted


def test_projection_of_nested_paths(ddb, table):
    ddb.put_item(TableName=table, Item=ITEM)
    item = ddb.get_item(TableName=table, Key={"pk": S("c"), "sk": S("1")},
                        ProjectionExpression="m.leaf, l[1], s")["Item"]
    assert item == {"m": {"M": {"leaf": S("deep")}}, "l": {"L": [N(7)]}, "s": S("hello")}


def test_query_on_a_global_secondary_index(ddb, ledger):
    items, pages = query_all(ddb, TableName=ledger, IndexName="gsi1", KeyConditionExpression="gsi1pk = :e",
                             ExpressionAttributeValues={":e": S("even")}, Limit=4)
    assert [i["gsi1sk"]["S"] for i in items] == sorted(f"{19 - i:02d}" for i in range(0, 20, 2)) and pages == 3
    first = ddb.query(TableName=ledger, IndexName="gsi1", KeyConditionExpression="gsi1pk = :e",
                      ExpressionAttributeValues={":e": S("even")}, Limit=1)
    # an index's LastEvaluatedKey carries the index key and the table key
    assert first["LastEvaluatedKey"] == {"gsi1pk": S("even"), "gsi1sk": S("01"), "pk": S("p"), "sk": S("k18")}
    ranged = ddb.query(TableName=ledger, IndexName="gsi1", ScanIndexForward=False,
                       KeyConditionExpression="gsi1pk = :e AND gsi1sk BETWEEN :a AND :b",
                       ExpressionAttributeValues={":e": S("even"), ":a": S("05"), ":b": S("09")})
    assert [i["gsi1sk"]["S"] for i in ranged["Items"]] == ["09", "07", "05"]


def test_number_sort_keys_order_numerically(ddb):
    table = new_table(ddb, sort_type="N", gsi=False)
    numbers = ["-100", "-10.5", "-10", "-1", "-0.001", "0", "0.001", "0.5", "1", "2", "10", "10.25", "100", "1e20"]
    for n in numbers:
        ddb.put_item(TableName=table, Item={"pk": S("p"), "sk": N(n)})
    items, _ = query_all(ddb, TableName=table, KeyConditionExpression="pk = :p",
                         ExpressionAttributeValues={":p": S("p")})
    assert [float(i["sk"]["N"]) for i in items] == sorted(float(n) for n in numbers)
    between = ddb.query(TableName=table, KeyConditionExpression="pk = :p AND sk BETWEEN :a AND :b",
                        ExpressionAttributeValues={":p": S("p"), ":a": N("-10"), ":b": N("1")})["Items"]
    assert [float(i["sk"]["N"]) for i in between] == [-10, -1, -0.001, 0, 0.001, 0.5, 1]


def test_string_sort_keys_order_by_utf8_bytes(ddb, moto_deviates):
    table = new_table(ddb, gsi=False)
    keys = ["\uffff", "😀", "a", "Z", "é", "ab", "0"]
    for key in keys:
        ddb.put_item(TableName=table, Item={"pk": S("p"), "sk": S(key)})
    items, _ = query_all(ddb, TableName=table, KeyConditionExpression="pk = :p",
                         ExpressionAttributeValues={":p": S("p")})
    assert _sort_keys(items) == sorted(keys, key=lambda k: k.encode())


def test_binary_sort_keys_order_bytewise(ddb):
    table = new_table(ddb, sort_type="B", gsi=False)
    keys = [b"\xff", b"\x00", b"\x01\x02", b"\x01", b"\x80"]
    for key in keys:
        ddb.put_item(TableName=table, Item={"pk": S("p"), "sk": B(key)})
    items, _ = query_all(ddb, TableName=table, KeyConditionExpression="pk = :p",
                         ExpressionAttributeValues={":p": S("p")})
    assert [i["sk"]["B"] for i in items] == sorted(keys)
    prefixed = ddb.query(TableName=table, KeyConditionExpression="pk = :p AND begins_with(sk, :b)",
                         ExpressionAttributeValues={":p": S("p"), ":b": B(b"\x01")})["Items"]
    assert [i["sk"]["B"] for i in prefixed] == [b"\x01", b"\x01\x02"]


# == scan =======================================================================================
def test_scan_pages_filters_and_segments(ddb, ledger):
    everything, start = [], None
    while True:
        response = ddb.scan(TableName=ledger, Limit=6, **({"ExclusiveStartKey": start} if start else {}))
        everything += response["Items"]
        start = response.get("LastEvaluatedKey")
        if not start:
            break
    assert len(everything) == 21 and len({(i["pk"]["S"], i["sk"]["S"]) for i in everything}) == 21
    filtered = ddb.scan(TableName=ledger, FilterExpression="n > :n", ExpressionAttributeValues={":n": N(15)})
    assert sorted(int(i["n"]["N"]) for i in filtered["Items"]) == [16, 17, 18, 19, 100]
    assert filtered["ScannedCount"] == 21
    segments = [ddb.scan(TableName=ledger, Segment=s, TotalSegments=3)["Items"] for s in range(3)]
    keys = [(i["pk"]["S"], i["sk"]["S"]) for segment in segments for i in segment]
    assert len(keys) == 21 and len(set(keys)) == 21
    fails_validation(lambda: ddb.scan(TableName=ledger, Segment=3, TotalSegments=3))


def test_scan_an_index_in_pages(ddb, ledger):
    response = ddb.scan(TableName=ledger, IndexName="gsi1")
    assert response["Count"] == 10 and all(i["gsi1pk"] == S("even") for i in response["Items"])
    first = ddb.scan(TableName=ledger, IndexName="gsi1", Limit=4)
    assert set(first["LastEvaluatedKey"]) == {"pk", "sk", "gsi1pk", "gsi1sk"}
    rest = ddb.scan(TableName=ledger, IndexName="gsi1", ExclusiveStartKey=first["LastEvaluatedKey"])
    assert sorted(i["sk"]["S"] for i in first["Items"] + rest["Items"]) == [f"k{i:02d}" for i in range(0, 20, 2)]


def test_scan_count_and_projection(ddb, ledger):
    counted = ddb.scan(TableName=ledger, Select="COUNT", FilterExpression="n < :five",
                       ExpressionAttributeValues={":five": N(5)})
    assert counted["Count"] == 5 and "Items" not in counted
    projected = ddb.scan(TableName=ledger, ProjectionExpression="sk", FilterExpression="n = :seven",
                         ExpressionAttributeValues={":seven": N(7)})
    assert projected["Items"] == [{"sk": S("k07")}]


def test_update_table_deletes_an_index(ddb, table, moto_deviates):
    ddb.update_table(TableName=table, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "gsi1"}}])
    ddb.get_waiter("table_exists").wait(TableName=table)
    assert ddb.describe_table(TableName=table)["Table"].get("GlobalSecondaryIndexes", []) == []
    moto_deviates("answers ResourceNotFoundException for an unknown index")
    fails_validation(lambda: ddb.query(TableName=table, IndexName="gsi1", KeyConditionExpression="gsi1pk = :p",
                                       ExpressionAttributeValues={":p": S("p")}), "gsi1")


# == batches ====================================================================================
def test_batch_write_and_get(ddb, table):
    other = new_table(ddb, gsi=False)
    ddb.batch_write_item(RequestItems={
        table: [{"PutRequest": {"Item": {"pk": S("b"), "sk": S(f"{i:02d}"), "n": N(i)}}} for i in range(20)],
        other: [{"PutRequest": {"Item": {"pk": S("o"), "sk": S(f"{i}")}}} for i in range(5)],
    })
    response = ddb.batch_write_item(RequestItems={table: [{"DeleteRequest": {"Key": {"pk": S("b"), "sk": S("00")}}}]})
    assert response["UnprocessedItems"] == {}
    got = ddb.batch_get_item(RequestItems={
        table: {"Keys": [{"pk": S("b"), "sk": S(f"{i:02d}")} for i in range(20)], "ProjectionExpression": "n"},
        other: {"Keys": [{"pk": S("o"), "sk": S("1")}]},
    })
    assert sorted(int(i["n"]["N"]) for i in got["Responses"][table]) == list(range(1, 20))
    assert got["Responses"][other] == [{"pk": S("o"), "sk": S("1")}]
    assert got["UnprocessedKeys"] == {}


# == transactions ===============================================================================
def test_transact_write_items_commits_all_actions(ddb, table):
    ddb.put_item(TableName=table, Item={"pk": S("t"), "sk": S("gone")})
    ddb.put_item(TableName=table, Item={"pk": S("t"), "sk": S("check"), "ok": {"BOOL": True}})
    ddb.transact_write_items(TransactItems=[
        {"Put": {"TableName": table, "Item": {"pk": S("t"), "sk": S("new")},
                 "ConditionExpression": "attribute_not_exists(pk)"}},
        {"Update": {"TableName": table, "Key": {"pk": S("t"), "sk": S("rollup")}, "UpdateExpression": "ADD n :one",
                    "ExpressionAttributeValues": {":one": N(1)}}},
        {"Delete": {"TableName": table, "Key": {"pk": S("t"), "sk": S("gone")}}},
        {"ConditionCheck": {"TableName": table, "Key": {"pk": S("t"), "sk": S("check")},
                            "ConditionExpression": "ok = :yes", "ExpressionAttributeValues": {":yes": {"BOOL": True}}}},
    ])
    items = ddb.query(TableName=table, KeyConditionExpression="pk = :t",
                      ExpressionAttributeValues={":t": S("t")})["Items"]
    assert _sort_keys(items) == ["check", "new", "rollup"]


def test_transaction_cancellation_reasons(ddb, table):
    ddb.put_item(TableName=table, Item={"pk": S("t"), "sk": S("exists"), "v": N(1)})
    with pytest.raises(ClientError) as raised:
        ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": table, "Item": {"pk": S("t"), "sk": S("fresh")}}},
            {"Put": {"TableName": table, "Item": {"pk": S("t"), "sk": S("exists")},
                     "ConditionExpression": "attribute_not_exists(pk)",
                     "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}},
            {"Update": {"TableName": table, "Key": {"pk": S("t"), "sk": S("tally")}, "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": N(1)}}},
        ])
    response = raised.value.response
    assert response["Error"]["Code"] == "TransactionCanceledException"
    reasons = response["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["None", "ConditionalCheckFailed", "None"]
    assert reasons[1]["Item"] == {"pk": S("t"), "sk": S("exists"), "v": N(1)}
    assert "[None, ConditionalCheckFailed, None]" in response["Error"]["Message"]
    items = ddb.query(TableName=table, KeyConditionExpression="pk = :t",
                      ExpressionAttributeValues={":t": S("t")})["Items"]
    assert _sort_keys(items) == ["exists"]  # nothing of a cancelled transaction is written


def test_an_update_that_cannot_apply_cancels_its_transaction(ddb, table, moto_deviates):
    """A type mismatch found while applying an update is a cancellation reason
    (ValidationError), not a failure of the whole request."""
    moto_deviates("fails the whole request with ValidationException instead of a ValidationError reason")
    ddb.put_item(TableName=table, Item={"pk": S("t"), "sk": S("text"), "s": S("words")})
    with pytest.raises(ClientError) as raised:
        ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": table, "Item": {"pk": S("t"), "sk": S("fresh")}}},
            {"Update": {"TableName": table, "Key": {"pk": S("t"), "sk": S("text")}, "UpdateExpression": "ADD s :one",
                        "ExpressionAttributeValues": {":one": N(1)}}},
        ])
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert [r["Code"] for r in raised.value.response["CancellationReasons"]] == ["None", "ValidationError"]
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": S("t"), "sk": S("fresh")})


def test_transaction_client_request_token_is_idempotent(ddb, table, moto_deviates):
    moto_deviates("ignores ClientRequestToken: a retried transaction applies twice")
    items = [{"Update": {"TableName": table, "Key": {"pk": S("t"), "sk": S("c")}, "UpdateExpression": "ADD n :one",
                         "ExpressionAttributeValues": {":one": N(1)}}}]
    ddb.transact_write_items(TransactItems=items, ClientRequestToken="token-1")
    ddb.transact_write_items(TransactItems=items, ClientRequestToken="token-1")
    assert ddb.get_item(TableName=table, Key={"pk": S("t"), "sk": S("c")})["Item"]["n"] == N(1)
    assert error_code(lambda: ddb.transact_write_items(
        TransactItems=[{"Put": {"TableName": table, "Item": {"pk": S("t"), "sk": S("x")}}}],
        ClientRequestToken="token-1")) == "IdempotentParameterMismatchException"


def test_transact_get_items(ddb, table, moto_deviates):
    moto_deviates("ignores a ProjectionExpression in TransactGetItems")
    ddb.put_item(TableName=table, Item={"pk": S("g"), "sk": S("1"), "v": N(1), "w": N(2)})
    response = ddb.transact_get_items(TransactItems=[
        {"Get": {"TableName": table, "Key": {"pk": S("g"), "sk": S("1")}, "ProjectionExpression": "v"}},
        {"Get": {"TableName": table, "Key": {"pk": S("g"), "sk": S("2")}}},
    ])
    assert response["Responses"] == [{"Item": {"v": N(1)}}, {}]


# == the new server only ========================================================================
@pytest.fixture
def local(local_dynamodb: Service) -> Any:
    return client_for(local_dynamodb.port)


def test_concurrent_transactions_on_one_rollup_all_succeed(local):
    """moto answers 500 to concurrent transactions; DynamoDB serializes them."""
    table = new_table(local, gsi=False)
    threads, per_thread = 8, 60
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


def test_a_query_page_stops_at_one_megabyte(local):
    table = new_table(local, gsi=False)
    blob = "x" * 100_000
    for start in range(0, 30, 10):
        local.batch_write_item(RequestItems={table: [
            {"PutRequest": {"Item": {"pk": S("big"), "sk": S(f"{i:02d}"), "blob": S(blob)}}}
            for i in range(start, start + 10)]})
    first = local.query(TableName=table, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": S("big")})
    assert 9 <= first["Count"] <= 11 and "LastEvaluatedKey" in first
    items, pages = query_all(local, TableName=table, KeyConditionExpression="pk = :p",
                             ExpressionAttributeValues={":p": S("big")})
    assert len(items) == 30 and pages == 3


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
