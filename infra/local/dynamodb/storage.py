"""SQLite as DynamoDB's storage: the database file is the state.

WAL mode with synchronous=FULL: a commit is on disk before the server answers, so an
acknowledged write survives a SIGKILL (or a power cut). Writes take one lock and one
SQLite transaction each (a TransactWriteItems is one of them), so transactions serialize
and never conflict; reads use pooled connections and see a committed snapshot, concurrently
with the writer.

Layout: ``items`` holds each item (its wire JSON) under (table id, partition hash,
partition key, sort key), a clustered WITHOUT ROWID B-tree: a Query is one range read and
costs the same at any table size. ``index_entries`` maps each index key to the item's key."""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from infra.local.dynamodb.errors import IdempotentParameterMismatchException, ResourceNotFoundException
from infra.local.dynamodb.schema import StorageKey, TableSchema, partition_hash
from infra.local.dynamodb.values import Item

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tables (
    name TEXT PRIMARY KEY,
    id INTEGER NOT NULL UNIQUE,
    definition TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    tid INTEGER NOT NULL, hash INTEGER NOT NULL, pk BLOB NOT NULL, sk BLOB NOT NULL, item BLOB NOT NULL,
    PRIMARY KEY (tid, hash, pk, sk)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_entries (
    tid INTEGER NOT NULL, idx TEXT NOT NULL, ghash INTEGER NOT NULL, gpk BLOB NOT NULL, gsk BLOB NOT NULL,
    hash INTEGER NOT NULL, pk BLOB NOT NULL, sk BLOB NOT NULL,
    PRIMARY KEY (tid, idx, ghash, gpk, gsk, pk, sk)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS client_tokens (token TEXT PRIMARY KEY, digest BLOB NOT NULL, created REAL NOT NULL);
"""
_JOIN = "index_entries e JOIN items i ON i.tid = e.tid AND i.hash = e.hash AND i.pk = e.pk AND i.sk = e.sk"


def _passed(op: str, bound: bytes, start: bytes, forward: bool) -> bool:
    """Whether reading on from ``start`` implies the bound ``op bound`` on the side read towards."""
    if forward and op in (">", ">="):
        return start > bound or (op == ">=" and start == bound)
    if not forward and op in ("<", "<="):
        return start < bound or (op == "<=" and start == bound)
    return False


class Session:
    """One connection inside one SQLite transaction."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    # -- reads -------------------------------------------------------------------------
    def get(self, schema: TableSchema, key: StorageKey) -> Item | None:
        row = self.connection.execute(
            "SELECT item FROM items WHERE tid = ? AND hash = ? AND pk = ? AND sk = ?", (schema.id, *key)
        ).fetchone()
        return orjson.loads(row[0]) if row else None

    def query(self, schema: TableSchema, index: str | None, partition: bytes, *, bounds: list[tuple[str, bytes]],
              forward: bool, after: tuple[bytes, ...] | None) -> Iterator[bytes]:
        """Items of one partition in sort key order, within ``bounds`` (operator, sort key),
        strictly after (in the direction of reading) ``after``: (sk,) for the table,
        (gsk, pk, sk) for an index."""
        params: list[Any] = [schema.id, partition_hash(partition), partition]
        if index is None:
            sort, keys, sql = "sk", "sk", "SELECT item FROM items WHERE tid = ? AND hash = ? AND pk = ?"
        else:
            sort, keys = "e.gsk", "(e.gsk, e.pk, e.sk)"
            sql = f"SELECT i.item FROM {_JOIN} WHERE e.tid = ? AND e.ghash = ? AND e.gpk = ? AND e.idx = ?"
            params.append(index)
        for op, value in bounds:
            if after is not None and _passed(op, value, after[0], forward):
                continue  # the start key is past this bound: SQLite then seeks straight to the start key
            sql += f" AND {sort} {op} ?"
            params.append(value)
        if after is not None:
            sql += f" AND {keys} {'>' if forward else '<'} ({', '.join('?' * len(after))})"
            params.extend(after)
        direction = "" if forward else " DESC"
        sql += f" ORDER BY sk{direction}" if index is None else \
            f" ORDER BY e.gsk{direction}, e.pk{direction}, e.sk{direction}"
        for (item,) in self.connection.execute(sql, params):
            yield item

    def scan(self, schema: TableSchema, after: StorageKey | None) -> Iterator[bytes]:
        """Every item of the table, in storage order, strictly after ``after``."""
        sql, params = "SELECT item FROM items WHERE tid = ?", list[Any]([schema.id])
        if after is not None:
            sql += " AND (hash, pk, sk) > (?, ?, ?)"
            params.extend(after)
        for (item,) in self.connection.execute(sql + " ORDER BY hash, pk, sk", params):
            yield item

    # -- writes (the writer session only) ----------------------------------------------
    def put(self, schema: TableSchema, key: StorageKey, item: Item, old: Item | None) -> None:
        self.connection.execute("INSERT OR REPLACE INTO items (tid, hash, pk, sk, item) VALUES (?, ?, ?, ?, ?)",
                                (schema.id, *key, orjson.dumps(item)))
        self._reindex(schema, key, old, item)

    def delete(self, schema: TableSchema, key: StorageKey, old: Item) -> None:
        self.connection.execute("DELETE FROM items WHERE tid = ? AND hash = ? AND pk = ? AND sk = ?",
                                (schema.id, *key))
        self._reindex(schema, key, old, None)

    def _reindex(self, schema: TableSchema, key: StorageKey, old: Item | None, new: Item | None) -> None:
        before = schema.index_keys(old) if old else {}
        after = schema.index_keys(new) if new else {}
        for name, entry in before.items():
            if after.get(name) != entry:
                self.connection.execute(
                    "DELETE FROM index_entries WHERE tid = ? AND idx = ? AND ghash = ? AND gpk = ? AND gsk = ? "
                    "AND pk = ? AND sk = ?", (schema.id, name, *entry, key[1], key[2]))
        for name, entry in after.items():
            if before.get(name) != entry:
                self.connection.execute(
                    "INSERT OR REPLACE INTO index_entries (tid, idx, ghash, gpk, gsk, hash, pk, sk) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (schema.id, name, *entry, *key))

    def replayed(self, token: str, digest: bytes) -> bool:
        """Whether a TransactWriteItems' ClientRequestToken committed this same request in the
        last 10 minutes (a retry: it is not applied again); the token with another request is an error."""
        self.connection.execute("DELETE FROM client_tokens WHERE created < ?", (time.time() - 600,))
        row = self.connection.execute("SELECT digest FROM client_tokens WHERE token = ?", (token,)).fetchone()
        if row is None:
            self.connection.execute("INSERT INTO client_tokens VALUES (?, ?, ?)", (token, digest, time.time()))
        elif row[0] != digest:
            raise IdempotentParameterMismatchException(
                "The request uses the same client token as a previous, but non-identical request.")
        return row is not None

    def save_table(self, schema: TableSchema) -> None:
        self.connection.execute("INSERT INTO tables (name, id, definition) VALUES (?, ?, ?)",
                                (schema.name, schema.id, schema.to_json().decode()))

    def next_table_id(self) -> int:
        return int(self.connection.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM tables").fetchone()[0])


class Database:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._write_lock = threading.Lock()
        self._writer = self._connect(cache_mib=32)
        self._writer.executescript(_SCHEMA)
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._tables = {name: TableSchema.from_json(table_id, orjson.loads(definition)) for name, table_id, definition
                        in self._writer.execute("SELECT name, id, definition FROM tables")}

    def _connect(self, cache_mib: int = 8) -> sqlite3.Connection:
        """Page caches stay small (the OS caches the file too): one per pooled reader."""
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute(f"PRAGMA cache_size = -{cache_mib * 1024}")
        return connection

    def table(self, name: Any) -> TableSchema:
        schema = self._tables.get(name) if isinstance(name, str) else None
        if schema is None:
            raise ResourceNotFoundException(f"Requested resource not found: Table: {name} not found")
        return schema

    def table_names(self) -> list[str]:
        return sorted(self._tables)

    def register(self, schema: TableSchema) -> None:
        self._tables[schema.name] = schema

    @contextmanager
    def write(self) -> Iterator[Session]:
        """The one writer, in one transaction: committed (to disk) when the block ends,
        rolled back when it raises."""
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield Session(self._writer)
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A pooled reader connection inside one read transaction (a consistent snapshot)."""
        try:
            connection = self._readers.get_nowait()
        except queue.Empty:
            connection = self._connect()
        connection.execute("BEGIN")
        try:
            yield Session(connection)
        finally:
            connection.execute("COMMIT")  # ends the snapshot; nothing was written
            self._readers.put(connection)

    def close(self) -> None:
        with self._write_lock:
            while True:
                try:
                    self._readers.get_nowait().close()
                except queue.Empty:
                    break
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._writer.close()
