"""A local DynamoDB: DynamoDB's HTTP API (JSON 1.0 protocol, what boto3 speaks to AWS)
backed by one SQLite file, for the local stack and the tests.

    python -m infra.local.dynamodb --host 127.0.0.1 --port 5100 --db .maas/dynamodb.sqlite3

Layout: ``server`` (HTTP, dispatch), ``operations`` (one function per API operation),
``expressions`` (lark grammars, evaluation), ``schema`` (tables, keys, indexes),
``values`` (attribute values, numbers, key order), ``storage`` (SQLite), ``errors``.
What it does not implement is listed in docs/ARCHITECTURE.md."""

from infra.local.dynamodb.server import DynamoServer, serve, stop

__all__ = ["DynamoServer", "serve", "stop"]
