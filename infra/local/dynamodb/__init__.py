"""A local DynamoDB for development and tests only (never deployed): DynamoDB's HTTP API
(JSON 1.0 protocol, what boto3 speaks to AWS) backed by one SQLite file, limited to what
the product calls (gateway/adapters/dynamo/), with DynamoDB's validation of those calls.

    python -m infra.local.dynamodb --host 127.0.0.1 --port 5100 --db .maas/dynamodb.sqlite3

Layout: ``server`` (HTTP, dispatch), ``operations`` (one function per API operation),
``expressions`` (lark grammars, evaluation), ``schema`` (tables, keys, indexes),
``values`` (attribute values, numbers), ``storage`` (SQLite), ``errors``.

Operations: CreateTable, DescribeTable, ListTables, GetItem, PutItem, UpdateItem,
DeleteItem, Query, TransactWriteItems (Put, Update, Delete, ConditionCheck) and a plain
Scan (whole table, for tests that inspect everything at rest). Tables have string keys and
global indexes projecting ALL, as template.yaml's. The expressions are listed in
``expressions``. Any other operation is UnknownOperationException, any other parameter a
ValidationException (never silently ignored). Not modelled: throttling and capacity, TTL,
streams, table and index status transitions (ACTIVE at once), ItemCount, signatures and
IAM. Its conformance with DynamoDB, measured beside dynalite and moto, is
tests/performance/dynamodb_conformance.py (docs/ARCHITECTURE.md has the figures)."""

from infra.local.dynamodb.server import DynamoServer, serve, stop

__all__ = ["DynamoServer", "serve", "stop"]
