"""A table's definition: key schema, secondary indexes, billing; CreateTable's checks,
DescribeTable's shape, and the keys (as ordered bytes) an item is stored and indexed under."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from infra.local.dynamodb import values as av
from infra.local.dynamodb.errors import ValidationException
from infra.local.dynamodb.values import AttributeValue, Item, invalid

_NAME = re.compile(r"^[a-zA-Z0-9_.-]+$")
_PROJECTIONS = ("ALL", "KEYS_ONLY", "INCLUDE")
_NO_KEY = "The provided key element does not match the schema"


def partition_hash(pk: bytes) -> int:
    """Where a partition key lands in Scan order (and in which Scan segment): 62 bits of a
    hash, as DynamoDB orders a Scan by its partitions' hashes."""
    return int.from_bytes(hashlib.blake2b(pk, digest_size=8).digest(), "big") >> 2


SEGMENT_SPACE = 1 << 62


def check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        constraint = "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
    elif len(value) < 3:
        constraint = "Member must have length greater than or equal to 3"
    elif len(value) > 255:
        constraint = "Member must have length less than or equal to 255"
    else:
        return value
    raise ValidationException(f"1 validation error detected: Value '{value}' at '{what}' failed to satisfy "
                              f"constraint: {constraint}")


@dataclass(frozen=True, slots=True)
class KeySchema:
    hash: tuple[str, str]  # (attribute name, S/N/B)
    range: tuple[str, str] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.hash[0],) + ((self.range[0],) if self.range else ())

    def wire(self) -> list[dict[str, str]]:
        elements = [{"AttributeName": self.hash[0], "KeyType": "HASH"}]
        if self.range:
            elements.append({"AttributeName": self.range[0], "KeyType": "RANGE"})
        return elements

    @classmethod
    def parse(cls, elements: Any, types: dict[str, str]) -> KeySchema:
        if not isinstance(elements, list) or not 1 <= len(elements) <= 2:
            raise ValidationException("1 validation error detected: Value at 'keySchema' failed to satisfy "
                                      "constraint: Member must have length less than or equal to 2")
        kinds = [e.get("KeyType") for e in elements]
        if kinds[0] != "HASH":
            raise ValidationException("Invalid KeySchema: The first KeySchemaElement is not a HASH key type")
        if len(kinds) == 2 and kinds[1] != "RANGE":
            raise ValidationException("Invalid KeySchema: The second KeySchemaElement is not a RANGE key type")
        names = [e.get("AttributeName") for e in elements]
        if len(names) == 2 and names[0] == names[1]:
            raise ValidationException("Both the Hash Key and the Range Key element in the KeySchema have the same name")
        missing = [n for n in names if n not in types]
        if missing:
            raise invalid(f"Some index key attributes are not defined in AttributeDefinitions. Keys: "
                          f"[{', '.join(map(str, missing))}], AttributeDefinitions: [{', '.join(types)}]")
        return cls((names[0], types[names[0]]), (names[1], types[names[1]]) if len(names) == 2 else None)


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    key: KeySchema
    projection: dict[str, Any]
    local: bool = False
    throughput: dict[str, int] | None = None

    def project(self, item: Item, table_key: KeySchema) -> Item:
        kind = self.projection["ProjectionType"]
        if kind == "ALL":
            return item
        keep = set(table_key.names) | set(self.key.names)
        if kind == "INCLUDE":
            keep |= set(self.projection.get("NonKeyAttributes", []))
        return {k: v for k, v in item.items() if k in keep}


@dataclass
class TableSchema:
    id: int
    name: str
    key: KeySchema
    attribute_definitions: list[dict[str, str]]
    indexes: dict[str, Index] = field(default_factory=dict)
    billing_mode: str = "PAY_PER_REQUEST"
    throughput: dict[str, int] | None = None
    created: float = field(default_factory=time.time)
    table_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    deletion_protection: bool = False

    # -- definition --------------------------------------------------------------------
    @classmethod
    def create(cls, table_id: int, request: dict[str, Any]) -> TableSchema:
        name = check_name(request.get("TableName"), "tableName")
        definitions = request.get("AttributeDefinitions") or []
        types = _attribute_types(definitions)
        key = KeySchema.parse(request.get("KeySchema"), types)
        billing, throughput = _billing(request)
        schema = cls(table_id, name, key, definitions, billing_mode=billing, throughput=throughput,
                     deletion_protection=bool(request.get("DeletionProtectionEnabled", False)))
        for spec in request.get("GlobalSecondaryIndexes") or []:
            schema.add_index(spec, types, local=False)
        for spec in request.get("LocalSecondaryIndexes") or []:
            schema.add_index(spec, types, local=True)
        used = set(key.names) | {n for i in schema.indexes.values() for n in i.key.names}
        if set(types) != used:
            raise invalid("Number of attributes in KeySchema does not exactly match number of attributes defined in "
                          "AttributeDefinitions")
        return schema

    def add_index(self, spec: dict[str, Any], types: dict[str, str], *, local: bool) -> Index:
        name = check_name(spec.get("IndexName"), "indexName")
        if name in self.indexes:
            raise invalid(f"Duplicate index name: {name}")
        key = KeySchema.parse(spec.get("KeySchema"), types)
        projection = dict(spec.get("Projection") or {})
        kind = projection.get("ProjectionType", "ALL" if not projection else None)
        if kind not in _PROJECTIONS:
            raise invalid(f"Unknown ProjectionType: {kind}")
        if kind == "INCLUDE" and not projection.get("NonKeyAttributes"):
            raise invalid("NonKeyAttributes must be specified for ProjectionType INCLUDE")
        projection["ProjectionType"] = kind
        if local and (key.hash != self.key.hash or self.key.range is None):
            raise invalid("Table KeySchema does not have a range key, which is required when specifying a "
                          "LocalSecondaryIndex" if self.key.range is None else
                          "Index KeySchema does not have the same leading hash key as table KeySchema for index: "
                          f"{name}")
        throughput = spec.get("ProvisionedThroughput")
        if not local and self.billing_mode == "PROVISIONED" and not throughput:
            raise invalid(f"ProvisionedThroughput should not be null for index: {name}")
        if not local and self.billing_mode == "PAY_PER_REQUEST" and throughput:
            raise invalid(f"ProvisionedThroughput should be null for index: {name} when BillingMode is "
                          "PAY_PER_REQUEST")
        index = Index(name, key, projection, local, throughput)
        self.indexes[name] = index
        return index

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "key": [self.key.hash, self.key.range], "definitions": self.attribute_definitions,
            "indexes": [{"name": i.name, "key": [i.key.hash, i.key.range], "projection": i.projection,
                         "local": i.local, "throughput": i.throughput} for i in self.indexes.values()],
            "billing_mode": self.billing_mode, "throughput": self.throughput, "created": self.created,
            "table_id": self.table_id, "deletion_protection": self.deletion_protection,
        }

    @classmethod
    def from_json(cls, table_id: int, data: dict[str, Any]) -> TableSchema:
        def key(pair: list[Any]) -> KeySchema:
            return KeySchema(tuple(pair[0]), tuple(pair[1]) if pair[1] else None)  # type: ignore[arg-type]

        return cls(
            table_id, data["name"], key(data["key"]), data["definitions"],
            {i["name"]: Index(i["name"], key(i["key"]), i["projection"], i["local"], i["throughput"])
             for i in data["indexes"]},
            data["billing_mode"], data["throughput"], data["created"], data["table_id"], data["deletion_protection"],
        )

    def arn(self, region: str) -> str:
        return f"arn:aws:dynamodb:{region}:000000000000:table/{self.name}"

    def describe(self, region: str, *, status: str = "ACTIVE", item_count: int = 0, size: int = 0,
                 index_counts: dict[str, int] | None = None) -> dict[str, Any]:
        throughput = {"NumberOfDecreasesToday": 0, "ReadCapacityUnits": 0, "WriteCapacityUnits": 0,
                      **(self.throughput or {})}
        description: dict[str, Any] = {
            "TableName": self.name, "TableStatus": status, "CreationDateTime": self.created,
            "KeySchema": self.key.wire(), "AttributeDefinitions": self.attribute_definitions,
            "ProvisionedThroughput": throughput, "TableSizeBytes": size, "ItemCount": item_count,
            "TableArn": self.arn(region), "TableId": self.table_id,
            "BillingModeSummary": {"BillingMode": self.billing_mode,
                                   "LastUpdateToPayPerRequestDateTime": self.created},
            "DeletionProtectionEnabled": self.deletion_protection,
        }
        counts = index_counts or {}
        for local, field_name in ((False, "GlobalSecondaryIndexes"), (True, "LocalSecondaryIndexes")):
            indexes = [i for i in self.indexes.values() if i.local == local]
            if not indexes:
                continue
            description[field_name] = [{
                "IndexName": i.name, "KeySchema": i.key.wire(), "Projection": i.projection,
                "IndexSizeBytes": 0, "ItemCount": counts.get(i.name, 0),
                "IndexArn": f"{self.arn(region)}/index/{i.name}",
                **({} if local else {
                    "IndexStatus": "ACTIVE",
                    "ProvisionedThroughput": {"NumberOfDecreasesToday": 0, "ReadCapacityUnits": 0,
                                              "WriteCapacityUnits": 0, **(i.throughput or {})}}),
            } for i in indexes]
        return description

    # -- keys --------------------------------------------------------------------------
    def index(self, name: str) -> Index:
        if name not in self.indexes:
            raise ValidationException(f"The table does not have the specified index: {name}")
        return self.indexes[name]

    def key_of_item(self, item: Item) -> tuple[int, bytes, bytes]:
        """The (hash, partition, sort) bytes an item is stored under; DynamoDB's errors for an
        item whose key attributes are missing, of the wrong type or empty."""
        parts = []
        for name, kind in filter(None, (self.key.hash, self.key.range)):
            value = item.get(name)
            if value is None:
                raise invalid(f"Missing the key {name} in the item")
            actual = av.type_of(value)
            if actual != kind:
                raise invalid(f"Type mismatch for key {name} expected: {kind} actual: {actual}")
            parts.append(_non_empty(value, name))
        pk = parts[0]
        return partition_hash(pk), pk, parts[1] if len(parts) > 1 else b""

    def key_of_request(self, key: Any) -> tuple[Item, tuple[int, bytes, bytes]]:
        """A request's ``Key``: exactly the table's key attributes."""
        if not isinstance(key, dict) or set(key) != set(self.key.names):
            raise ValidationException(_NO_KEY)
        normalized = av.normalize_item(key)
        for name, kind in filter(None, (self.key.hash, self.key.range)):
            if av.type_of(normalized[name]) != kind:
                raise ValidationException(_NO_KEY)
        return normalized, self.key_of_item(normalized)

    def key_attributes(self, item: Item, index: Index | None = None) -> Item:
        names = self.key.names + (index.key.names if index else ())
        return {n: item[n] for n in names if n in item}

    def index_keys(self, item: Item) -> dict[str, tuple[int, bytes, bytes]]:
        """Each index the item belongs in (it has every key attribute of it), with the
        (hash, partition, sort) bytes it sits under there."""
        entries = {}
        for index in self.indexes.values():
            parts = []
            for name, kind in filter(None, (index.key.hash, index.key.range)):
                value = item.get(name)
                if value is None:
                    break
                actual = av.type_of(value)
                if actual != kind:
                    raise invalid(f"Type mismatch for Index Key {name} Expected: {kind} Actual: {actual} "
                                  f"IndexName: {index.name}")
                encoded = av.encode_key(value)
                if not encoded and kind != "N":
                    raise ValidationException(
                        "One or more parameter values are not valid. A value specified for a secondary index key is "
                        "not supported. The AttributeValue for a key attribute cannot contain an empty "
                        f"{'string' if kind == 'S' else 'binary'} value. IndexName: {index.name}, IndexKey: {name}")
                parts.append(encoded)
            else:
                entries[index.name] = (partition_hash(parts[0]), parts[0], parts[1] if len(parts) > 1 else b"")
        return entries

    def check_item(self, item: Item, *, update: bool = False) -> tuple[int, bytes, bytes]:
        """Everything DynamoDB checks of an item before it writes it; its storage key."""
        # an item's JSON is never smaller than its DynamoDB size: count exactly only near the limit
        if len(orjson.dumps(item)) > av.MAX_ITEM_BYTES and av.item_size(item) > av.MAX_ITEM_BYTES:
            raise ValidationException("Item size to update has exceeded the maximum allowed size" if update
                                      else "Item size has exceeded the maximum allowed size")
        key = self.key_of_item(item)
        self.index_keys(item)
        return key


def _non_empty(value: AttributeValue, name: str) -> bytes:
    encoded = av.encode_key(value)
    if not encoded and av.type_of(value) != "N":
        kind = "string" if av.type_of(value) == "S" else "binary"
        raise ValidationException("One or more parameter values are not valid. The AttributeValue for a key "
                                  f"attribute cannot contain an empty {kind} value. Key: {name}")
    return encoded


def _attribute_types(definitions: Any) -> dict[str, str]:
    types: dict[str, str] = {}
    for definition in definitions:
        name, kind = definition.get("AttributeName"), definition.get("AttributeType")
        if kind not in av.KEY_TYPES:
            raise ValidationException(f"1 validation error detected: Value '{kind}' at "
                                      "'attributeDefinitions.member.attributeType' failed to satisfy constraint: "
                                      "Member must satisfy enum value set: [B, N, S]")
        if name in types:
            raise ValidationException("Cannot have two attributes with the same name")
        types[name] = kind
    return types


def _billing(request: dict[str, Any]) -> tuple[str, dict[str, int] | None]:
    mode = request.get("BillingMode") or "PROVISIONED"
    throughput = request.get("ProvisionedThroughput")
    if mode not in ("PROVISIONED", "PAY_PER_REQUEST"):
        raise ValidationException(f"1 validation error detected: Value '{mode}' at 'billingMode' failed to satisfy "
                                  "constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]")
    if mode == "PROVISIONED" and not throughput:
        raise invalid("ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is "
                      "PROVISIONED")
    if mode == "PAY_PER_REQUEST" and throughput:
        raise invalid("Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is "
                      "PAY_PER_REQUEST")
    return mode, throughput
