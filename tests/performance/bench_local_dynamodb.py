"""Local DynamoDB benchmark (`python -m tests.performance.bench_local_dynamodb`): the
project's SQLite-backed server (infra/local/dynamodb) as the table grows, with moto's
server as the peer on the same small workload. A script that prints ratios, not a test.

1. Flush throughput: `UsageLedger.record_usage` (the flusher's write: ledger puts + rollup ADDs
   in TransactWriteItems) with batches of 99 events spread over many tenants, on an empty
   table, then on a table preloaded with 10,000 tenants, 200,000 ledger rows and their
   rollups. Goal: the loaded table flushes no worse than 2x slower than the empty one.
   The preload writes the database file directly through the server's own storage layer
   (infra.local.dynamodb.storage: the same encoding, indexes and checks as PutItem, one
   SQLite transaction) while the server is stopped: seconds instead of 8,000 BatchWriteItem
   round trips.
2. Resident memory of the server process at that size (goal: <= 1 GB), beside moto's after
   its small workload (moto grew to 22.8 GB at ~20,000 ledger rows in the local stack).
3. The same small workload on moto and on the new server: events/s and their ratio.
4. Concurrent flushers (threads calling record_usage at once): moto answers them with 500s;
   here they must all succeed.

Timings are noisy on a shared machine: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MODEL = "all-MiniLM-L6-v2"
DAY_MS = 86_400_000
START_MS = 1_790_000_000_000  # 2026-09-21


def client_for(port: int) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id="bench", aws_secret_access_key="bench",
                        config=Config(retries={"max_attempts": 3, "mode": "standard"}, read_timeout=300,
                                      max_pool_connections=16))


class Store:
    """The flusher's write on one table (the ledger repository), and the client and table name
    the set-up uses (the repositories replaced the one Store this script was written for)."""

    def __init__(self, client: Any, table: str) -> None:
        from gateway.adapters.dynamo import Table, UsageLedger

        self.client, self.table = client, table
        self.usage = UsageLedger(Table(client, table))

    def record_usage(self, events: list[Any]) -> int:
        return self.usage.record_usage(events)


def tenant_ids(n: int) -> list[str]:
    return [f"ten_{i:05d}" for i in range(n)]


def event(tenant: str, ts_ms: int) -> Any:
    from gateway.domain.usage import UsageEvent

    return UsageEvent(request_id=uuid.uuid4().hex, tenant_id=tenant, key_id="key_bench", model=MODEL,
                      prompt_tokens=12, timestamp_ms=ts_ms)


def batches(tenants: list[str], count: int, seed: int, start_ms: int) -> list[list[Any]]:
    """``count`` batches of 99 events, each event of a tenant drawn at random."""
    rng = random.Random(seed)
    return [[event(rng.choice(tenants), start_ms + (b * 99 + i) * 10) for i in range(99)] for b in range(count)]


def flush(store: Any, work: list[list[Any]], threads: int = 1) -> dict:
    """Record every batch (``threads`` flushers at once); events/s."""
    errors: list[BaseException] = []
    shares = [work[i::threads] for i in range(threads)]

    def run(share: list[list[Any]]) -> None:
        try:
            for batch in share:
                assert store.record_usage(batch) == len(batch)
        except BaseException as error:  # noqa: BLE001 - counted and reported
            errors.append(error)

    started = time.perf_counter()
    pool = [threading.Thread(target=run, args=(share,)) for share in shares]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    seconds = time.perf_counter() - started
    events = sum(len(b) for b in work)
    return {"events": events, "seconds": seconds, "events_per_s": events / seconds, "errors": len(errors),
            "first_error": repr(errors[0])[:160] if errors else ""}


def preload(db_path: Path, table: str, n_tenants: int, ledger_rows: int) -> float:
    """Tenants, ledger rows and their rollups, written into the database file directly."""
    from collections import Counter

    from boto3.dynamodb.types import TypeSerializer

    from gateway.adapters.dynamo import UsageLedger
    from infra.local.dynamodb.operations import CreateTable
    from infra.local.dynamodb.storage import Database
    from infra.local.template import table_definition

    serializer = TypeSerializer()

    def dump(item: dict) -> dict:
        return {k: serializer.serialize(v) for k, v in item.items()}

    started = time.perf_counter()
    database = Database(db_path)
    CreateTable(database, {"TableName": table, **table_definition()}, "us-east-1")
    schema = database.table(table)
    tenants = tenant_ids(n_tenants)
    rollups: Counter = Counter()
    with database.write() as session:
        def put(item: dict) -> None:
            wire = dump(item)
            session.put(schema, schema.check_item(wire), wire, None)

        for i, tenant in enumerate(tenants):
            created = f"2026-01-01T00:00:00.{i:06d}Z"
            put({"pk": f"TENANT#{tenant}", "sk": "TENANT", "gsi1pk": "TENANTS", "gsi1sk": f"{created}#{tenant}",
                 "doc": f'{{"id":"{tenant}","name":"bench","plan":"pro","created_at":"{created}"}}'})
        for i in range(ledger_rows):
            usage = event(tenants[i % n_tenants], START_MS - 30 * DAY_MS + (i // n_tenants) * DAY_MS // 4)
            put(UsageLedger._ledger_item(usage))
            rollups[(usage.tenant_id, usage.date)] += 1
        for (tenant, date), requests in rollups.items():
            put({"pk": f"USAGE#{tenant}", "sk": f"{date}#{MODEL}", "date": date, "model": MODEL,
                 "requests": requests, "prompt_tokens": 12 * requests})
    database.close()
    return time.perf_counter() - started


def memory_mb(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of a process, MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    from infra.local.services import create_table, dynamodb_service, free_port, moto_service

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--ledger-rows", type=int, default=200_000)
    parser.add_argument("--batches", type=int, default=30, help="batches of 99 events per flush measurement")
    parser.add_argument("--moto-batches", type=int, default=5, help="batches for the moto peer (and its twin run)")
    parser.add_argument("--threads", type=int, default=4, help="concurrent flushers in the last run")
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")

    tenants = tenant_ids(args.tenants)
    rows: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        # 1. empty table, new server; the same small workload on moto
        service = dynamodb_service(free_port(), logs / "empty.sqlite3", logs).start()
        try:
            store = Store(client_for(service.port), "maas-empty")
            create_table(store.client, store.table)
            small = batches(tenants, args.moto_batches, seed=1, start_ms=START_MS)
            rows.append(("new server, empty table, moto's workload", flush(store, small)))
            rows.append(("new server, empty table", flush(store, batches(tenants, args.batches, 2, START_MS + DAY_MS))))
        finally:
            service.stop()
        moto = moto_service(free_port(), logs).start()
        try:
            store = Store(client_for(moto.port), "maas-moto")
            create_table(store.client, store.table)
            rows.append(("moto, empty table, same workload", flush(store, small)))
            moto_rss = memory_mb(moto.process.pid)  # type: ignore[union-attr]
            rows.append(("moto, 4 concurrent flushers", flush(
                store, batches(tenants, args.threads, 5, START_MS + 4 * DAY_MS), threads=args.threads)))
        finally:
            moto.stop()

        # 2. preloaded table
        db_path = logs / "loaded.sqlite3"
        preload_s = preload(db_path, "maas-loaded", args.tenants, args.ledger_rows)
        service = dynamodb_service(free_port(), db_path, logs).start()
        try:
            store = Store(client_for(service.port), "maas-loaded")
            rows.append((f"new server, {args.tenants} tenants / {args.ledger_rows} ledger rows",
                         flush(store, batches(tenants, args.batches, 3, START_MS + 2 * DAY_MS))))
            rows.append((f"new server, same size, {args.threads} concurrent flushers", flush(
                store, batches(tenants, args.batches, 4, START_MS + 3 * DAY_MS), threads=args.threads)))
            rss, peak = memory_mb(service.process.pid)  # type: ignore[union-attr]
            scanned = store.client.describe_table(TableName=store.table)["Table"]["ItemCount"]
        finally:
            service.stop()
        db_mb = sum(p.stat().st_size for p in logs.glob("loaded.sqlite3*")) / 2**20

    results = dict(rows)
    empty = results["new server, empty table"]["events_per_s"]
    loaded = results[f"new server, {args.tenants} tenants / {args.ledger_rows} ledger rows"]["events_per_s"]
    twin = results["new server, empty table, moto's workload"]["events_per_s"]
    peer = results["moto, empty table, same workload"]["events_per_s"]
    print(f"load average: {load_average()}  (2 shared cores: timings are noisy; compare ratios)")
    print(f"preload: {args.tenants} tenants + {args.ledger_rows} ledger rows + rollups straight into the SQLite file "
          f"in {preload_s:.1f} s; table now holds {scanned} items, database {db_mb:.0f} MB")
    print(f"{'run':<58} {'events':>7} {'seconds':>8} {'events/s':>9} {'errors':>7}")
    for name, row in rows:
        print(f"{name:<58} {row['events']:>7} {row['seconds']:>8.2f} {row['events_per_s']:>9.0f} {row['errors']:>7}")
        if row["first_error"]:
            print(f"{'':<4}first error: {row['first_error']}")
    print(f"flush slowdown at {args.ledger_rows} rows vs empty: {empty / loaded:.2f}x (goal <= 2x)")
    print(f"new server vs moto on the same workload: {twin / peer:.1f}x the events/s")
    print(f"server memory at that size: RSS {rss:.0f} MB, peak {peak:.0f} MB (goal <= 1024 MB); "
          f"moto after its small workload: RSS {moto_rss[0]:.0f} MB")
    print(f"load average: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
