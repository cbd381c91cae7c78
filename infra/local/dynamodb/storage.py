"""SQLite as DynamoDB's storage: the database file is the state.

WAL mode with synchronous=FULL: a commit is on disk before the server answers, so an
acknowledged write survives a SIGKILL (or a power cut). Writes take one lock and one
SQLite transaction each (a TransactWriteItems is one of them), so transactions serialize
and never conflict; reads use pooled connections and see a committed snapshot, concurrently
with the writer.

Layout: ``items`` holds each item (its wire JSON) under (table id, partition hash,
partition key bytes, sort key bytes), a clustered WITHOUT ROWID B-tree: a Query is one
range read, a Scan walks partitions in hash order (so segments are hash ranges), and
neither slows down as the table grows beyond the log of its size. ``index_entries`` maps
each secondary index key to the item's primary key in the same way."""

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

from infra.local.dynamodb.errors import ResourceNotFoundException
from infra.local.dynamodb.schema import Index, TableSchema, partition_hash
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
CREATE TABLE IF NOT EXISTS client_tokens (
    token TEXT PRIMARY KEY, digest BLOB NOT NULL, created REAL NOT NULL
);
"""

StorageKey = tuple[int, bytes, bytes]  # (partition hash, partition key bytes, sort key bytes)
CLIENT_TOKEN_SECONDS = 600


class Session:
    """One connection inside one SQLite transaction."""

    def __init__(self, connection: sqlite3.Connection, database: Database) -> None:
        self.connection = connection
        self.database = database

    def table(self, name: Any) -> TableSchema:
        return self.database.table(name)

    # -- reads -------------------------------------------------------------------------
    def get(self, schema: TableSchema, key: StorageKey) -> Item | None:
        row = self.connection.execute(
            "SELECT item FROM items WHERE tid = ? AND hash = ? AND pk = ? AND sk = ?", (schema.id, *key)
        ).fetchone()
        return orjson.loads(row[0]) if row else None

    def query(self, schema: TableSchema, index: Index | None, partition: bytes, *, low: bytes | None = None,
              low_inclusive: bool = True, high: bytes | None = None, high_inclusive: bool = True,
              forward: bool = True, after: tuple[bytes, ...] | None = None) -> Iterator[bytes]:
        """Items of one partition in sort key order, between ``low`` and ``high``, strictly
        after (in the direction of reading) the key ``after``: (sk,) for the table,
        (gsk, pk, sk) for an index."""
        sort, params = ("sk", [schema.id, partition_hash(partition), partition]) if index is None else \
            ("e.gsk", [schema.id, index.name, partition_hash(partition), partition])
        # a start key inside the range replaces the bound it passed, so SQLite seeks straight to it
        if after is not None and forward and (low is None or after[0] > low or (after[0] == low and low_inclusive)):
            low = None
        if after is not None and not forward and (
                high is None or after[0] < high or (after[0] == high and high_inclusive)):
            high = None
        where = []
        if low is not None:
            where.append(f"{sort} {'>=' if low_inclusive else '>'} ?")
            params.append(low)
        if high is not None:
            where.append(f"{sort} {'<=' if high_inclusive else '<'} ?")
            params.append(high)
        direction = "" if forward else " DESC"
        if index is None:
            if after is not None:
                where.append(f"sk {'>' if forward else '<'} ?")
                params.append(after[0])
            sql = ("SELECT item FROM items WHERE tid = ? AND hash = ? AND pk = ?"
                   + "".join(f" AND {w}" for w in where) + f" ORDER BY sk{direction}")
        else:
            if after is not None:
                where.append(f"(e.gsk, e.pk, e.sk) {'>' if forward else '<'} (?, ?, ?)")
                params.extend(after)
            sql = ("SELECT i.item FROM index_entries e JOIN items i ON i.tid = e.tid AND i.hash = e.hash "
                   "AND i.pk = e.pk AND i.sk = e.sk WHERE e.tid = ? AND e.idx = ? AND e.ghash = ? AND e.gpk = ?"
                   + "".join(f" AND {w}" for w in where)
                   + f" ORDER BY e.gsk{direction}, e.pk{direction}, e.sk{direction}")
        for (item,) in self.connection.execute(sql, params):
            yield item

    def scan(self, schema: TableSchema, index: Index | None, *, low_hash: int, high_hash: int,
             after: tuple[Any, ...] | None = None) -> Iterator[bytes]:
        """Items whose partition hash is in [low_hash, high_hash), in Scan order, strictly
        after ``after``: (hash, pk, sk) for the table, (ghash, gpk, gsk, pk, sk) for an index.
        The row-value bound alone lets SQLite seek to ``after`` instead of reading up to it."""
        if after is not None and after[0] < low_hash:
            after = None  # a start key from below this segment
        if index is None:
            sql = "SELECT item FROM items WHERE tid = ? AND hash < ?"
            params: list[Any] = [schema.id, high_hash]
            if after is not None:
                sql += " AND (hash, pk, sk) > (?, ?, ?)"
                params.extend(after)
            else:
                sql += " AND hash >= ?"
                params.append(low_hash)
            sql += " ORDER BY hash, pk, sk"
        else:
            sql = ("SELECT i.item FROM index_entries e JOIN items i ON i.tid = e.tid AND i.hash = e.hash "
                   "AND i.pk = e.pk AND i.sk = e.sk WHERE e.tid = ? AND e.idx = ? AND e.ghash < ?")
            params = [schema.id, index.name, high_hash]
            if after is not None:
                sql += " AND (e.ghash, e.gpk, e.gsk, e.pk, e.sk) > (?, ?, ?, ?, ?)"
                params.extend(after)
            else:
                sql += " AND e.ghash >= ?"
                params.append(low_hash)
            sql += " ORDER BY e.ghash, e.gpk, e.gsk, e.pk, e.sk"
        for (item,) in self.connection.execute(sql, params):
            yield item

    def counts(self, schema: TableSchema) -> tuple[int, int, dict[str, int]]:
        """Item count, total item bytes, item count per index."""
        count, size = self.connection.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(item)), 0) FROM items WHERE tid = ?", (schema.id,)).fetchone()
        per_index = dict(self.connection.execute(
            "SELECT idx, COUNT(*) FROM index_entries WHERE tid = ? GROUP BY idx", (schema.id,)).fetchall())
        return count, size, per_index

    # -- writes (writer session only) --------------------------------------------------
    def put(self, schema: TableSchema, key: StorageKey, item: Item, old: Item | None) -> None:
        self.connection.execute("INSERT OR REPLACE INTO items (tid, hash, pk, sk, item) VALUES (?, ?, ?, ?, ?)",
                                (schema.id, *key, orjson.dumps(item)))
        if schema.indexes:
            self._reindex(schema, key, old, item)

    def delete(self, schema: TableSchema, key: StorageKey, old: Item | None) -> None:
        self.connection.execute("DELETE FROM items WHERE tid = ? AND hash = ? AND pk = ? AND sk = ?",
                                (schema.id, *key))
        if schema.indexes and old is not None:
            self._reindex(schema, key, old, None)

    def _reindex(self, schema: TableSchema, key: StorageKey, old: Item | None, new: Item | None) -> None:
        before = schema.index_keys(old) if old else {}
        after = schema.index_keys(new) if new else {}
        for name, (ghash, gpk, gsk) in before.items():
            if after.get(name) != (ghash, gpk, gsk):
                self.connection.execute(
                    "DELETE FROM index_entries WHERE tid = ? AND idx = ? AND ghash = ? AND gpk = ? AND gsk = ? "
                    "AND pk = ? AND sk = ?", (schema.id, name, ghash, gpk, gsk, key[1], key[2]))
        for name, (ghash, gpk, gsk) in after.items():
            if before.get(name) != (ghash, gpk, gsk):
                self.connection.execute(
                    "INSERT OR REPLACE INTO index_entries (tid, idx, ghash, gpk, gsk, hash, pk, sk) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (schema.id, name, ghash, gpk, gsk, *key))

    def backfill(self, schema: TableSchema, index: Index) -> None:
        """A new index over the items already there."""
        rows = self.connection.execute("SELECT hash, pk, sk, item FROM items WHERE tid = ?", (schema.id,)).fetchall()
        for hash_, pk, sk, raw in rows:
            entry = schema.index_keys(orjson.loads(raw)).get(index.name)
            if entry:
                self.connection.execute(
                    "INSERT OR REPLACE INTO index_entries (tid, idx, ghash, gpk, gsk, hash, pk, sk) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (schema.id, index.name, *entry, hash_, pk, sk))

    def drop_index(self, schema: TableSchema, name: str) -> None:
        self.connection.execute("DELETE FROM index_entries WHERE tid = ? AND idx = ?", (schema.id, name))

    def save_table(self, schema: TableSchema) -> None:
        self.connection.execute("INSERT OR REPLACE INTO tables (name, id, definition) VALUES (?, ?, ?)",
                                (schema.name, schema.id, orjson.dumps(schema.to_json()).decode()))

    def drop_table(self, schema: TableSchema) -> None:
        self.connection.execute("DELETE FROM tables WHERE id = ?", (schema.id,))
        self.connection.execute("DELETE FROM items WHERE tid = ?", (schema.id,))
        self.connection.execute("DELETE FROM index_entries WHERE tid = ?", (schema.id,))

    def next_table_id(self) -> int:
        return self.connection.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM tables").fetchone()[0]

    def client_token(self, token: str) -> bytes | None:
        """The digest of the transaction a ClientRequestToken was first used for (in the last 10 minutes)."""
        self.connection.execute("DELETE FROM client_tokens WHERE created < ?", (time.time() - CLIENT_TOKEN_SECONDS,))
        row = self.connection.execute("SELECT digest FROM client_tokens WHERE token = ?", (token,)).fetchone()
        return row[0] if row else None

    def remember_client_token(self, token: str, digest: bytes) -> None:
        self.connection.execute("INSERT OR REPLACE INTO client_tokens (token, digest, created) VALUES (?, ?, ?)",
                                (token, digest, time.time()))


class Database:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._write_lock = threading.Lock()
        self._writer = self._connect(cache_mib=32)
        self._writer.executescript(_SCHEMA)
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._tables: dict[str, TableSchema] = {}
        for name, table_id, definition in self._writer.execute("SELECT name, id, definition FROM tables"):
            self._tables[name] = TableSchema.from_json(table_id, orjson.loads(definition))

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
            raise ResourceNotFoundException("Requested resource not found")
        return schema

    def table_names(self) -> list[str]:
        return sorted(self._tables)

    def has_table(self, name: str) -> bool:
        return name in self._tables

    @contextmanager
    def write(self) -> Iterator[Session]:
        """The one writer, in one transaction: committed (to disk) when the block ends,
        rolled back when it raises. The table cache follows the outcome."""
        with self._write_lock:
            tables = dict(self._tables)
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield Session(self._writer, self)
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                self._tables = tables
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
            yield Session(connection, self)
        finally:
            connection.execute("COMMIT")  # ends the snapshot; nothing was written
            self._readers.put(connection)

    def register(self, schema: TableSchema) -> None:
        self._tables[schema.name] = schema

    def forget(self, name: str) -> None:
        self._tables.pop(name, None)

    def close(self) -> None:
        with self._write_lock:
            while True:
                try:
                    self._readers.get_nowait().close()
                except queue.Empty:
                    break
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._writer.close()
