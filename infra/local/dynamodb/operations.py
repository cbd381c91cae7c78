"""DynamoDB's operations, one function each: the request's JSON in, the response's JSON
out, DynamoErrors for everything DynamoDB refuses. Writes run in the database's one write
transaction, reads in a read snapshot (storage.py)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import orjson

from infra.local.dynamodb import expressions as ex
from infra.local.dynamodb import values as av
from infra.local.dynamodb.errors import (
    ConditionalCheckFailedException,
    IdempotentParameterMismatchException,
    ResourceInUseException,
    ResourceNotFoundException,
    TransactionCanceledException,
    ValidationException,
)
from infra.local.dynamodb.schema import SEGMENT_SPACE, Index, KeySchema, TableSchema, check_name
from infra.local.dynamodb.storage import Database, StorageKey
from infra.local.dynamodb.values import Item

Request = dict[str, Any]
Response = dict[str, Any]
Operation = Callable[[Database, Request, str], Response]

OPERATIONS: dict[str, Operation] = {}

PAGE_BYTES = 1024 * 1024  # a Query or Scan page stops after 1 MB of items read, as DynamoDB's do
_LEGACY = ("Expected", "AttributeUpdates", "KeyConditions", "QueryFilter", "ScanFilter", "ConditionalOperator")


def operation(function: Operation) -> Operation:
    OPERATIONS[function.__name__] = function
    return function


# -- shared pieces ---------------------------------------------------------------------------
def _required(request: Request, name: str) -> Any:
    if request.get(name) is None:
        raise ValidationException(f"1 validation error detected: Value null at '{name[0].lower() + name[1:]}' failed "
                                  "to satisfy constraint: Member must not be null")
    return request[name]


def _no_legacy(request: Request) -> None:
    for name in _LEGACY:
        if name in request:
            raise ValidationException(f"{name} is a legacy parameter that this local DynamoDB does not implement; "
                                      "use the expression parameters")


@dataclass
class Expressions:
    """A request's parsed expressions and their bound names and values."""

    parsed: dict[str, ex.Parsed]
    bindings: ex.Bindings
    attributes_to_get: list[str] | None = None

    @classmethod
    def of(cls, request: Request, **grammars: str) -> Expressions:
        """``grammars`` maps each expression parameter to its grammar, e.g.
        ``ConditionExpression="condition"``."""
        _no_legacy(request)
        parsed = {}
        for parameter, grammar in grammars.items():
            text = request.get(parameter)
            if text is not None:
                parsed[parameter] = ex.parse(grammar, parameter, text)
        bindings = ex.Bindings(request.get("ExpressionAttributeNames"), request.get("ExpressionAttributeValues"),
                               list(parsed.values()))
        attributes = request.get("AttributesToGet")
        if attributes is not None and "ProjectionExpression" in parsed:
            raise ValidationException("Can not use both expression and non-expression parameters in the same request: "
                                      "Non-expression parameters: {AttributesToGet} Expression parameters: "
                                      "{ProjectionExpression}")
        return cls(parsed, bindings, attributes)

    def holds(self, parameter: str, item: Item | None) -> bool:
        parsed = self.parsed.get(parameter)
        return parsed is None or ex.holds(parsed.tree, item or {}, self.bindings)

    def project(self, item: Item) -> Item:
        if self.attributes_to_get is not None:
            return {k: v for k, v in item.items() if k in self.attributes_to_get}
        parsed = self.parsed.get("ProjectionExpression")
        if parsed is None:
            return item
        return ex.project(item, [self.bindings.path(p) for p in parsed.tree])

    @property
    def projects(self) -> bool:
        return self.attributes_to_get is not None or "ProjectionExpression" in self.parsed


def _return_values(request: Request, allowed: tuple[str, ...]) -> str:
    value = request.get("ReturnValues") or "NONE"
    every = ("NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW")
    if value not in every:
        raise ValidationException(f"1 validation error detected: Value '{value}' at 'returnValues' failed to satisfy "
                                  f"constraint: Member must satisfy enum value set: [{', '.join(every)}]")
    if value not in allowed:
        raise ValidationException("ReturnValues can only be ALL_OLD or NONE")
    return value


def _on_failure_item(spec: Request, old: Item | None) -> Item | None:
    return old if spec.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" else None


def _check(expressions: Expressions, spec: Request, old: Item | None) -> None:
    if not expressions.holds("ConditionExpression", old):
        raise ConditionalCheckFailedException(_on_failure_item(spec, old))


def _units(size: int, *, write: bool, consistent: bool = True) -> float:
    if write:
        return float(max(1, math.ceil(size / 1024)))
    return max(1, math.ceil(size / 4096)) * (1.0 if consistent else 0.5)


def _capacity(request: Request, table: str, units: float) -> Response:
    if request.get("ReturnConsumedCapacity") in ("TOTAL", "INDEXES"):
        return {"ConsumedCapacity": {"TableName": table, "CapacityUnits": units}}
    return {}


def _batch_capacity(request: Request, units: dict[str, float]) -> Response:
    if request.get("ReturnConsumedCapacity") in ("TOTAL", "INDEXES"):
        return {"ConsumedCapacity": [{"TableName": t, "CapacityUnits": u} for t, u in units.items()]}
    return {}


# -- tables ----------------------------------------------------------------------------------
@operation
def CreateTable(db: Database, request: Request, region: str) -> Response:  # noqa: N802 - DynamoDB's names
    with db.write() as session:
        name = check_name(request.get("TableName"), "tableName")
        if db.has_table(name):
            raise ResourceInUseException(f"Table already exists: {name}")
        schema = TableSchema.create(session.next_table_id(), request)
        session.save_table(schema)
        db.register(schema)
    return {"TableDescription": schema.describe(region)}


@operation
def DescribeTable(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    name = _required(request, "TableName")
    with db.read() as session:
        try:
            schema = session.table(name)
        except ResourceNotFoundException:
            raise ResourceNotFoundException(f"Requested resource not found: Table: {name} not found") from None
        count, size, per_index = session.counts(schema)
    return {"Table": schema.describe(region, item_count=count, size=size, index_counts=per_index)}


@operation
def ListTables(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    limit = request.get("Limit") or 100
    if not 1 <= limit <= 100:
        raise ValidationException(f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy "
                                  "constraint: Member must have value less than or equal to 100")
    names = db.table_names()
    start = request.get("ExclusiveStartTableName")
    if start:
        names = [n for n in names if n > start]
    response: Response = {"TableNames": names[:limit]}
    if len(names) > limit:
        response["LastEvaluatedTableName"] = names[limit - 1]
    return response


@operation
def DeleteTable(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    with db.write() as session:
        schema = session.table(_required(request, "TableName"))
        if schema.deletion_protection:
            raise ValidationException("Resource cannot be deleted as it is currently protected against deletion. "
                                      "Disable deletion protection first.")
        count, size, per_index = session.counts(schema)
        session.drop_table(schema)
        db.forget(schema.name)
    return {"TableDescription": schema.describe(region, status="DELETING", item_count=count, size=size,
                                                index_counts=per_index)}


@operation
def UpdateTable(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    """Billing mode, throughput and deletion protection are recorded; a created index is
    built at once from the items already there; a deleted one is dropped."""
    with db.write() as session:
        schema = session.table(_required(request, "TableName"))
        changed = TableSchema.from_json(schema.id, schema.to_json())
        if "BillingMode" in request:
            changed.billing_mode = request["BillingMode"]
            changed.throughput = request.get("ProvisionedThroughput") if changed.billing_mode == "PROVISIONED" else None
        elif "ProvisionedThroughput" in request:
            changed.throughput = request["ProvisionedThroughput"]
        if "DeletionProtectionEnabled" in request:
            changed.deletion_protection = bool(request["DeletionProtectionEnabled"])
        definitions = {d["AttributeName"]: d for d in changed.attribute_definitions}
        for definition in request.get("AttributeDefinitions") or []:
            definitions[definition["AttributeName"]] = definition
        types = {name: d["AttributeType"] for name, d in definitions.items()}
        created: list[Index] = []
        for update in request.get("GlobalSecondaryIndexUpdates") or []:
            if "Create" in update:
                created.append(changed.add_index(update["Create"], types, local=False))
            elif "Delete" in update:
                name = update["Delete"].get("IndexName")
                if changed.indexes.pop(name, None) is None:
                    raise ResourceNotFoundException(f"Requested resource not found: Index: {name} not found")
                session.drop_index(changed, name)
        used = set(changed.key.names) | {n for i in changed.indexes.values() for n in i.key.names}
        changed.attribute_definitions = [d for name, d in definitions.items() if name in used]
        for index in created:
            session.backfill(changed, index)
        session.save_table(changed)
        db.register(changed)
        count, size, per_index = session.counts(changed)
    return {"TableDescription": changed.describe(region, item_count=count, size=size, index_counts=per_index)}


# -- single items ----------------------------------------------------------------------------
@operation
def GetItem(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    expressions = Expressions.of(request, ProjectionExpression="projection")
    with db.read() as session:
        schema = session.table(_required(request, "TableName"))
        _, key = schema.key_of_request(_required(request, "Key"))
        item = session.get(schema, key)
    response: Response = {"Item": expressions.project(item)} if item is not None else {}
    size = av.item_size(item) if item else 0
    return response | _capacity(request, schema.name, _units(size, write=False,
                                                             consistent=bool(request.get("ConsistentRead"))))


@operation
def PutItem(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    return_values = _return_values(request, ("NONE", "ALL_OLD"))
    item = av.normalize_item(_required(request, "Item"))
    expressions = Expressions.of(request, ConditionExpression="condition")
    with db.write() as session:
        schema = session.table(_required(request, "TableName"))
        key = schema.check_item(item)
        old = session.get(schema, key)
        _check(expressions, request, old)
        session.put(schema, key, item, old)
    response: Response = {"Attributes": old} if return_values == "ALL_OLD" and old else {}
    return response | _capacity(request, schema.name, _units(av.item_size(item), write=True))


@operation
def UpdateItem(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    return_values = _return_values(request, ("NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW"))
    expressions = Expressions.of(request, UpdateExpression="update", ConditionExpression="condition")
    with db.write() as session:
        schema = session.table(_required(request, "TableName"))
        key_item, key = schema.key_of_request(_required(request, "Key"))
        old = session.get(schema, key)
        _check(expressions, request, old)
        new, changed = _updated(schema, expressions, old, key_item)
        schema.check_item(new, update=True)
        session.put(schema, key, new, old)
    attributes = {"ALL_OLD": old or {}, "ALL_NEW": new, "UPDATED_OLD": ex.project(old or {}, changed),
                  "UPDATED_NEW": ex.project(new, changed)}.get(return_values)
    response: Response = {"Attributes": attributes} if attributes else {}
    return response | _capacity(request, schema.name, _units(av.item_size(new), write=True))


def _updated(schema: TableSchema, expressions: Expressions, old: Item | None,
             key_item: Item) -> tuple[Item, list[tuple[str | int, ...]]]:
    base = old if old is not None else dict(key_item)
    parsed = expressions.parsed.get("UpdateExpression")
    if parsed is None:
        return base, []
    return ex.apply_update(parsed, base, expressions.bindings, schema.key.names)


@operation
def DeleteItem(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    return_values = _return_values(request, ("NONE", "ALL_OLD"))
    expressions = Expressions.of(request, ConditionExpression="condition")
    with db.write() as session:
        schema = session.table(_required(request, "TableName"))
        _, key = schema.key_of_request(_required(request, "Key"))
        old = session.get(schema, key)
        _check(expressions, request, old)
        if old is not None:
            session.delete(schema, key, old)
    response: Response = {"Attributes": old} if return_values == "ALL_OLD" and old else {}
    return response | _capacity(request, schema.name, _units(av.item_size(old) if old else 0, write=True))


# -- query and scan --------------------------------------------------------------------------
def _select(request: Request, expressions: Expressions, index: Index | None) -> str:
    select = request.get("Select")
    if select is None:
        return "SPECIFIC_ATTRIBUTES" if expressions.projects else "ALL_ATTRIBUTES"
    if select not in ("ALL_ATTRIBUTES", "ALL_PROJECTED_ATTRIBUTES", "SPECIFIC_ATTRIBUTES", "COUNT"):
        raise ValidationException(f"1 validation error detected: Value '{select}' at 'select' failed to satisfy "
                                  "constraint: Member must satisfy enum value set: [SPECIFIC_ATTRIBUTES, COUNT, "
                                  "ALL_ATTRIBUTES, ALL_PROJECTED_ATTRIBUTES]")
    if expressions.projects and select != "SPECIFIC_ATTRIBUTES":
        raise ValidationException(f"Cannot specify the ProjectionExpression when choosing to get {select}")
    if select == "SPECIFIC_ATTRIBUTES" and not expressions.projects:
        raise ValidationException("SPECIFIC_ATTRIBUTES requires a ProjectionExpression or AttributesToGet")
    if select == "ALL_PROJECTED_ATTRIBUTES" and index is None:
        raise ValidationException("ALL_PROJECTED_ATTRIBUTES can be used only when Querying using an IndexName")
    return select


def _limit(request: Request) -> int | None:
    limit = request.get("Limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValidationException(f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy "
                                  "constraint: Member must have value greater than or equal to 1")
    return limit


def _index_of(schema: TableSchema, request: Request) -> Index | None:
    name = request.get("IndexName")
    if name is None:
        return None
    index = schema.index(name)
    if request.get("ConsistentRead") and not index.local:
        raise ValidationException("Consistent reads are not supported on global secondary indexes")
    return index


def _start_key(schema: TableSchema, index: Index | None, request: Request) -> tuple[Item, StorageKey,
                                                                                     StorageKey | None] | None:
    """ExclusiveStartKey: the table key, and the index key when reading an index."""
    start = request.get("ExclusiveStartKey")
    if start is None:
        return None
    names = set(schema.key.names) | (set(index.key.names) if index else set())
    if not isinstance(start, dict) or set(start) != names:
        raise ValidationException("The provided starting key is invalid: The provided key element does not match "
                                  "the schema")
    start = av.normalize_item(start)
    try:
        table_key = schema.key_of_item(start)
        index_key = schema.index_keys(start).get(index.name) if index else None
    except ValidationException:
        raise ValidationException("The provided starting key is invalid: The provided key element does not match "
                                  "the schema") from None
    return start, table_key, index_key


@dataclass
class _Page:
    items: list[Item]
    count: int
    scanned: int
    last: Item | None


def _read_page(rows: Iterator[bytes], expressions: Expressions, filter_name: str, *, limit: int | None,
               keep: Callable[[Item], Item], last_key: Callable[[Item], Item], count_only: bool) -> _Page:
    """Evaluate rows until ``limit`` items were read or 1 MB; the filter applies after
    that, as in DynamoDB, so a page may hold fewer items than ``limit``."""
    items: list[Item] = []
    count = scanned = size = 0
    last: Item | None = None
    with closing(rows):
        for raw in rows:
            item = orjson.loads(raw)
            scanned += 1
            size += len(raw)
            if expressions.holds(filter_name, item):
                count += 1
                if not count_only:
                    items.append(keep(item))
            if (limit is not None and scanned >= limit) or size >= PAGE_BYTES:
                last = last_key(item)
                break
    return _Page(items, count, scanned, last)


def _page_response(page: _Page, select: str) -> Response:
    response: Response = {"Count": page.count, "ScannedCount": page.scanned}
    if select != "COUNT":
        response["Items"] = page.items
    if page.last is not None:
        response["LastEvaluatedKey"] = page.last
    return response


def _keeper(schema: TableSchema, index: Index | None, expressions: Expressions) -> Callable[[Item], Item]:
    if index is None or index.projection["ProjectionType"] == "ALL":
        return expressions.project
    return lambda item: expressions.project(index.project(item, schema.key))


@operation
def Query(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    if request.get("KeyConditionExpression") is None:
        _no_legacy(request)
        raise ValidationException("Either the KeyConditions or KeyConditionExpression parameter must be specified "
                                  "in the request.")
    expressions = Expressions.of(request, KeyConditionExpression="condition", FilterExpression="condition",
                                 ProjectionExpression="projection")
    schema = db.table(_required(request, "TableName"))
    index = _index_of(schema, request)
    keys: KeySchema = index.key if index else schema.key
    key_range = ex.key_range(expressions.parsed["KeyConditionExpression"], expressions.bindings, keys.hash,
                             keys.range)
    if "FilterExpression" in expressions.parsed:
        for path in expressions.parsed["FilterExpression"].paths:
            if (name := expressions.bindings.path(path)[0]) in keys.names:
                raise ValidationException(f"Filter Expression can only contain non-primary key attributes: "
                                          f"Primary key attribute: {name}")
    select = _select(request, expressions, index)
    limit = _limit(request)
    forward = request.get("ScanIndexForward", True) is not False
    bounds = _sort_bounds(key_range)
    partition = av.encode_key(key_range.partition)
    start = _start_key(schema, index, request)
    after = None
    if start is not None:
        start_item, table_key, index_key = start
        if not av.equal(start_item[keys.hash[0]], key_range.partition):
            raise ValidationException("The provided starting key is outside query boundaries based on provided "
                                      "conditions")
        after = (table_key[2],) if index is None else (index_key[2], table_key[1], table_key[2])  # type: ignore[index]
    with db.read() as session:
        page = _read_page(
            session.query(schema, index, partition, forward=forward, after=after, **bounds), expressions,
            "FilterExpression", limit=limit, keep=_keeper(schema, index, expressions),
            last_key=lambda item: schema.key_attributes(item, index), count_only=select == "COUNT")
    return _page_response(page, select) | _capacity(request, schema.name, float(max(1, page.scanned)))


def _sort_bounds(key_range: ex.KeyRange) -> dict[str, Any]:
    if key_range.op is None:
        return {}
    values = [av.encode_key(v) for v in key_range.operands]
    op = key_range.op
    if op == "=":
        return {"low": values[0], "high": values[0]}
    if op in ("<", "<="):
        return {"high": values[0], "high_inclusive": op == "<="}
    if op in (">", ">="):
        return {"low": values[0], "low_inclusive": op == ">="}
    if op == "BETWEEN":
        return {"low": values[0], "high": values[1]}
    successor = av.prefix_successor(values[0])  # begins_with
    return {"low": values[0], **({"high": successor, "high_inclusive": False} if successor is not None else {})}


@operation
def Scan(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    expressions = Expressions.of(request, FilterExpression="condition", ProjectionExpression="projection")
    schema = db.table(_required(request, "TableName"))
    index = _index_of(schema, request)
    select = _select(request, expressions, index)
    limit = _limit(request)
    segment, total = request.get("Segment"), request.get("TotalSegments")
    if (segment is None) != (total is None):
        missing = "TotalSegments" if total is None else "Segment"
        raise ValidationException(f"The {missing} parameter is required but was not present in the request when "
                                  f"{'Segment' if total is None else 'TotalSegments'} parameter is present")
    if total is not None:
        if not 1 <= total <= 1000000:
            raise ValidationException(f"1 validation error detected: Value '{total}' at 'totalSegments' failed to "
                                      "satisfy constraint: Member must have value less than or equal to 1000000")
        if not 0 <= segment < total:
            raise ValidationException(f"The Segment parameter is zero-based and must be less than parameter "
                                      f"TotalSegments: Segment: {segment} is not less than TotalSegments: {total}")
        low_hash, high_hash = segment * SEGMENT_SPACE // total, (segment + 1) * SEGMENT_SPACE // total
    else:
        low_hash, high_hash = 0, SEGMENT_SPACE
    start = _start_key(schema, index, request)
    after: tuple[Any, ...] | None = None
    if start is not None:
        _, table_key, index_key = start
        after = table_key if index is None else (*index_key, table_key[1], table_key[2])  # type: ignore[misc]
    with db.read() as session:
        page = _read_page(
            session.scan(schema, index, low_hash=low_hash, high_hash=high_hash, after=after), expressions,
            "FilterExpression", limit=limit, keep=_keeper(schema, index, expressions),
            last_key=lambda item: schema.key_attributes(item, index), count_only=select == "COUNT")
    return _page_response(page, select) | _capacity(request, schema.name, float(max(1, page.scanned)))


# -- batches ---------------------------------------------------------------------------------
def _request_items(request: Request) -> dict[str, Any]:
    items = _required(request, "RequestItems")
    if not isinstance(items, dict) or not items:
        raise ValidationException("1 validation error detected: Value at 'requestItems' failed to satisfy "
                                  "constraint: Member must have length greater than or equal to 1")
    return items


@operation
def BatchGetItem(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    plan = []
    total = 0
    for table, spec in _request_items(request).items():
        expressions = Expressions.of(spec, ProjectionExpression="projection")
        keys = spec.get("Keys") or []
        total += len(keys)
        plan.append((table, expressions, keys))
    if total > 100:
        raise ValidationException("Too many items requested for the BatchGetItem call")
    responses: dict[str, list[Item]] = {}
    units: dict[str, float] = {}
    with db.read() as session:
        for table, expressions, keys in plan:
            schema = session.table(table)
            storage_keys = [schema.key_of_request(k)[1] for k in keys]
            if len(set(storage_keys)) != len(storage_keys):
                raise ValidationException("Provided list of item keys contains duplicates")
            found = [item for item in (session.get(schema, k) for k in storage_keys) if item is not None]
            responses[table] = [expressions.project(item) for item in found]
            units[table] = float(max(1, len(keys)))
    return {"Responses": responses, "UnprocessedKeys": {}} | _batch_capacity(request, units)


@operation
def BatchWriteItem(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    tables = _request_items(request)
    count = sum(len(entries) for entries in tables.values())
    if count > 25:
        raise ValidationException("1 validation error detected: Value at 'requestItems' failed to satisfy "
                                  "constraint: Map value must satisfy constraint: [Member must have length less than "
                                  "or equal to 25, Member must have length greater than or equal to 1]")
    writes: list[tuple[TableSchema, StorageKey, Item | None]] = []
    for table, entries in tables.items():
        schema = db.table(table)
        seen: set[StorageKey] = set()
        for entry in entries:
            if not isinstance(entry, dict) or len(entry) != 1:
                raise ValidationException("Supplied AttributeValue has more than one datatypes set, must contain "
                                          "exactly one of the supported datatypes")
            if "PutRequest" in entry:
                item = av.normalize_item(entry["PutRequest"].get("Item"))
                key = schema.check_item(item)
                writes.append((schema, key, item))
            elif "DeleteRequest" in entry:
                key = schema.key_of_request(entry["DeleteRequest"].get("Key"))[1]
                writes.append((schema, key, None))
            else:
                raise ValidationException("A WriteRequest must contain a PutRequest or a DeleteRequest")
            if key in seen:
                raise ValidationException("Provided list of item keys contains duplicates")
            seen.add(key)
    units: dict[str, float] = {}
    with db.write() as session:
        for schema, key, item in writes:
            session.table(schema.name)  # still there
            old = session.get(schema, key)
            if item is None:
                if old is not None:
                    session.delete(schema, key, old)
            else:
                session.put(schema, key, item, old)
            units[schema.name] = units.get(schema.name, 0.0) + 1.0
    return {"UnprocessedItems": {}} | _batch_capacity(request, units)


# -- transactions ----------------------------------------------------------------------------
_ACTIONS = {
    "Put": {"ConditionExpression": "condition"},
    "Update": {"UpdateExpression": "update", "ConditionExpression": "condition"},
    "Delete": {"ConditionExpression": "condition"},
    "ConditionCheck": {"ConditionExpression": "condition"},
}


@dataclass
class _Action:
    kind: str
    spec: Request
    schema: TableSchema
    key: StorageKey
    key_item: Item
    expressions: Expressions
    item: Item | None = None  # Put's item


def _transaction_items(request: Request) -> list[Any]:
    items = _required(request, "TransactItems")
    if not isinstance(items, list) or not 1 <= len(items) <= 100:
        raise ValidationException("1 validation error detected: Value at 'transactItems' failed to satisfy "
                                  "constraint: Member must have length less than or equal to 100")
    return items


@operation
def TransactWriteItems(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    actions: list[_Action] = []
    for entry in _transaction_items(request):
        if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in _ACTIONS:
            raise ValidationException("TransactItems can only contain one of Check, Put, Update or Delete")
        kind, spec = next(iter(entry.items()))
        if kind == "Update":
            _required(spec, "UpdateExpression")
        if kind == "ConditionCheck":
            _required(spec, "ConditionExpression")
        expressions = Expressions.of(spec, **_ACTIONS[kind])
        schema = db.table(_required(spec, "TableName"))
        if kind == "Put":
            item = av.normalize_item(_required(spec, "Item"))
            key = schema.check_item(item)
            actions.append(_Action(kind, spec, schema, key, schema.key_attributes(item), expressions, item))
        else:
            key_item, key = schema.key_of_request(_required(spec, "Key"))
            actions.append(_Action(kind, spec, schema, key, key_item, expressions))
    targets = {(a.schema.id, a.key) for a in actions}
    if len(targets) != len(actions):
        raise ValidationException("Transaction request cannot include multiple operations on one item")
    token = request.get("ClientRequestToken")
    digest = hashlib.sha256(orjson.dumps(request.get("TransactItems"), option=orjson.OPT_SORT_KEYS)).digest()
    with db.write() as session:
        if token is not None:
            seen = session.client_token(token)
            if seen is not None and seen != digest:
                raise IdempotentParameterMismatchException(
                    "The request uses the same client token as a previous, but non-identical request.")
            if seen == digest:
                return {}
        olds = [session.get(session.table(a.schema.name), a.key) for a in actions]
        reasons: list[dict[str, Any]] = []
        results: list[Item | None] = []
        for action, old in zip(actions, olds, strict=True):
            reason, result = _evaluate(action, old)
            reasons.append(reason)
            results.append(result)
        if any(reason["Code"] != "None" for reason in reasons):
            raise TransactionCanceledException(reasons)
        for action, old, result in zip(actions, olds, results, strict=True):
            if action.kind in ("Put", "Update"):
                session.put(action.schema, action.key, result, old)  # type: ignore[arg-type]
            elif action.kind == "Delete" and old is not None:
                session.delete(action.schema, action.key, old)
        if token is not None:
            session.remember_client_token(token, digest)
    return {}


def _evaluate(action: _Action, old: Item | None) -> tuple[dict[str, Any], Item | None]:
    """One action of a transaction against the item as it is: its cancellation reason
    ("None" when it would succeed) and the item it would write."""
    if not action.expressions.holds("ConditionExpression", old):
        reason: dict[str, Any] = {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"}
        if (item := _on_failure_item(action.spec, old)) is not None:
            reason["Item"] = item
        return reason, None
    try:
        if action.kind == "Put":
            return {"Code": "None"}, action.item
        if action.kind == "Update":
            new, _ = _updated(action.schema, action.expressions, old, action.key_item)
            action.schema.check_item(new, update=True)
            return {"Code": "None"}, new
    except ValidationException as error:
        return {"Code": "ValidationError", "Message": error.message}, None
    return {"Code": "None"}, None


@operation
def TransactGetItems(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    plan = []
    for entry in _transaction_items(request):
        spec = entry.get("Get") if isinstance(entry, dict) else None
        if spec is None:
            raise ValidationException("TransactGetItems can only contain Get actions")
        expressions = Expressions.of(spec, ProjectionExpression="projection")
        schema = db.table(_required(spec, "TableName"))
        plan.append((schema, schema.key_of_request(_required(spec, "Key"))[1], expressions))
    if len({(s.id, k) for s, k, _ in plan}) != len(plan):
        raise ValidationException("Transaction request cannot include multiple operations on one item")
    responses = []
    with db.read() as session:
        for schema, key, expressions in plan:
            item = session.get(schema, key)
            responses.append({"Item": expressions.project(item)} if item is not None else {})
    return {"Responses": responses}

