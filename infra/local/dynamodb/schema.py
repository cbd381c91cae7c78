"""A table's definition: key schema and global secondary indexes (string keys, projection
ALL: what template.yaml declares); CreateTable's checks, DescribeTable's shape, and the
keys (as bytes) an item is stored and indexed under."""

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
from infra.local.dynamodb.values import Item, invalid

_NAME = re.compile(r"^[a-zA-Z0-9_.-]{3,255}$")
_NO_KEY = "The provided key element does not match the schema"
StorageKey = tuple[int, bytes, bytes]  # (partition hash, partition key bytes, sort key bytes)
KeyNames = tuple[str, str | None]  # (hash key, range key)


def partition_hash(pk: bytes) -> int:
    """62 bits of a hash of the partition key: the storage layout's first key column (kept so
    that database files written by earlier versions read the same)."""
    return int.from_bytes(hashlib.blake2b(pk, digest_size=8).digest(), "big") >> 2


def check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValidationException(f"1 validation error detected: Value '{value}' at '{what}' failed to satisfy "
                                  "constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]{3,255}")
    return value


def _key_names(elements: Any, types: dict[str, str]) -> KeyNames:
    kinds = [e.get("KeyType") for e in elements] if isinstance(elements, list) else []
    if kinds not in (["HASH"], ["HASH", "RANGE"]):
        raise ValidationException("Invalid KeySchema: it must be one HASH key, optionally followed by one RANGE key")
    names = [e.get("AttributeName") for e in elements]
    if any(types.get(n) != "S" for n in names):
        raise invalid("this local DynamoDB takes only key attributes that are defined, of type S")
    return names[0], names[1] if len(names) == 2 else None


@dataclass
class TableSchema:
    id: int
    name: str
    key: KeyNames
    definition: dict[str, Any]  # as stored (the request's AttributeDefinitions and indexes)
    indexes: dict[str, KeyNames] = field(default_factory=dict)

    @classmethod
    def create(cls, table_id: int, request: dict[str, Any]) -> TableSchema:
        name = check_name(request.get("TableName"), "tableName")
        definitions = request.get("AttributeDefinitions") or []
        types = {d.get("AttributeName"): d.get("AttributeType") for d in definitions}
        indexes: dict[str, KeyNames] = {}
        for spec in request.get("GlobalSecondaryIndexes") or []:
            if (spec.get("Projection") or {}).get("ProjectionType", "ALL") != "ALL":
                raise ValidationException("this local DynamoDB takes only indexes with ProjectionType ALL")
            indexes[check_name(spec.get("IndexName"), "indexName")] = _key_names(spec.get("KeySchema"), types)
        if request.get("LocalSecondaryIndexes"):
            raise ValidationException("this local DynamoDB takes no LocalSecondaryIndexes")
        schema = cls(table_id, name, _key_names(request.get("KeySchema"), types), {
            "name": name, "definitions": definitions, "created": time.time(), "table_id": str(uuid.uuid4()),
            "billing_mode": request.get("BillingMode") or "PROVISIONED"}, indexes)
        used = {n for k in (schema.key, *indexes.values()) for n in k if n}
        if set(types) != used:
            raise invalid("Number of attributes in KeySchema does not exactly match number of attributes defined in "
                          "AttributeDefinitions")
        return schema

    def to_json(self) -> bytes:
        # the layout of earlier versions' files: "key" and "indexes" as [[name, type], [name, type] | None]
        def pair(names: KeyNames) -> list[Any]:
            return [[names[0], "S"], [names[1], "S"] if names[1] else None]
        return orjson.dumps(self.definition | {"key": pair(self.key), "indexes": [
            {"name": n, "key": pair(k), "projection": {"ProjectionType": "ALL"}, "local": False, "throughput": None}
            for n, k in self.indexes.items()]})

    @classmethod
    def from_json(cls, table_id: int, data: dict[str, Any]) -> TableSchema:
        def names(pair: list[Any]) -> KeyNames:
            return pair[0][0], pair[1][0] if pair[1] else None
        return cls(table_id, data["name"], names(data["key"]), data,
                   {i["name"]: names(i["key"]) for i in data["indexes"]})

    def describe(self, region: str) -> dict[str, Any]:
        arn = f"arn:aws:dynamodb:{region}:000000000000:table/{self.name}"

        def wire(names: KeyNames) -> list[dict[str, str]]:
            return [{"AttributeName": n, "KeyType": kind}
                    for n, kind in zip(names, ("HASH", "RANGE"), strict=True) if n]
        described = {
            "TableName": self.name, "TableStatus": "ACTIVE", "CreationDateTime": self.definition["created"],
            "KeySchema": wire(self.key), "AttributeDefinitions": self.definition["definitions"],
            "TableArn": arn, "TableId": self.definition["table_id"], "ItemCount": 0, "TableSizeBytes": 0,
            "BillingModeSummary": {"BillingMode": self.definition["billing_mode"]},
        }
        if self.indexes:
            described["GlobalSecondaryIndexes"] = [
                {"IndexName": n, "KeySchema": wire(k), "Projection": {"ProjectionType": "ALL"}, "IndexStatus": "ACTIVE",
                 "IndexArn": f"{arn}/index/{n}"} for n, k in self.indexes.items()]
        return described

    # -- keys --------------------------------------------------------------------------
    def index(self, name: Any) -> KeyNames:
        if name not in self.indexes:
            raise ValidationException(f"The table does not have the specified index: {name}")
        return self.indexes[name]

    @staticmethod
    def _key(item: Item, names: KeyNames, what: str) -> StorageKey | None:
        """The (hash, partition, sort) bytes of ``item`` under a key schema; None when it lacks
        one of the key's attributes (an index it is not in)."""
        parts = []
        for name in filter(None, names):
            value = item.get(name)
            if value is None:
                return None
            if av.type_of(value) != "S":
                raise invalid(f"Type mismatch for {what} {name} expected: S actual: {av.type_of(value)}")
            if not value["S"]:
                raise ValidationException("One or more parameter values are not valid. The AttributeValue for a key "
                                          f"attribute cannot contain an empty string value. Key: {name}")
            parts.append(value["S"].encode())
        return partition_hash(parts[0]), parts[0], parts[1] if len(parts) > 1 else b""

    def key_of_item(self, item: Item) -> StorageKey:
        key = self._key(item, self.key, "key")
        if key is None:
            raise invalid(f"Missing the key {self.key[0] if self.key[0] not in item else self.key[1]} in the item")
        return key

    def key_of_request(self, key: Any) -> tuple[Item, StorageKey]:
        """A request's ``Key``: exactly the table's key attributes."""
        if not isinstance(key, dict) or set(key) != set(filter(None, self.key)):
            raise ValidationException(_NO_KEY)
        normalized = av.normalize_item(key)
        if any(av.type_of(v) != "S" for v in normalized.values()):
            raise ValidationException(_NO_KEY)
        return normalized, self.key_of_item(normalized)

    def key_attributes(self, item: Item, index: str | None = None) -> Item:
        names = self.key + (self.indexes[index] if index else ())
        return {n: item[n] for n in names if n and n in item}

    def index_keys(self, item: Item) -> dict[str, StorageKey]:
        """Each index the item belongs in (it has every key attribute of it), with its key there."""
        keys = {name: self._key(item, names, "Index Key") for name, names in self.indexes.items()}
        return {name: key for name, key in keys.items() if key is not None}

    def check_item(self, item: Item) -> StorageKey:
        """What DynamoDB checks of an item before it writes it; its storage key. The size is
        the wire JSON's, a little more than DynamoDB counts."""
        if len(orjson.dumps(item)) > 400 * 1024:
            raise ValidationException("Item size has exceeded the maximum allowed size")
        self.index_keys(item)
        return self.key_of_item(item)
