"""A local DynamoDB: DynamoDB's HTTP API (JSON 1.0 protocol, what boto3 speaks to AWS)
backed by one SQLite file, for the local stack and the tests.

    python -m infra.local.dynamodb --host 127.0.0.1 --port 5100 --db .maas/dynamodb.sqlite3

Layout: ``server`` (HTTP, dispatch), ``operations`` (one function per API operation),
``expressions`` (lark grammars, evaluation), ``schema`` (tables, keys, indexes),
``values`` (attribute values, numbers, key order), ``storage`` (SQLite), ``errors``.

Operations: CreateTable, DescribeTable, ListTables, DeleteTable, UpdateTable (billing,
throughput, deletion protection, GSI create/delete), GetItem, PutItem, UpdateItem,
DeleteItem, Query, Scan, BatchGetItem, BatchWriteItem, TransactWriteItems,
TransactGetItems. Not implemented (UnknownOperationException, or ValidationException for
a parameter): PartiQL, streams, TTL, backups, tags, global tables, import/export, the
legacy parameters (Expected, AttributeUpdates, KeyConditions, QueryFilter, ScanFilter,
ConditionalOperator; AttributesToGet works). Not modelled: throttling and capacity
(ConsumedCapacity is an estimate, TOTAL only), table and index status transitions
(everything is ACTIVE at once), the 16 MB batch response limit (nothing is ever
unprocessed), expression length and nesting limits, signatures and IAM. Scan order is by a
hash of the partition key, as in DynamoDB, but not DynamoDB's hash."""

from infra.local.dynamodb.server import DynamoServer, serve, stop

__all__ = ["DynamoServer", "serve", "stop"]
