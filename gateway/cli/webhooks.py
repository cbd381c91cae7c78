"""``maas webhooks add|list|delete|deliveries`` and ``maas events``: webhooks and the event log
through the billing API, with an admin (events: finance) key. A new webhook's signing secret
is printed once, on stdout.

``maas webhooks deliver [--loop SECONDS]`` is the delivery worker itself (the local stack's
process; an operator's one-off pass): it reads and writes the tables directly, like
``maas flush``."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from gateway.cli.client import ApiClient, add_connection_flags, emit, with_client
from gateway.domain.events import EventType

if TYPE_CHECKING:
    from gateway.wiring import Container

WEBHOOK_COLUMNS = ["id", "url", "events", "created_at"]
DELIVERY_COLUMNS = ["event_id", "event_type", "status", "attempts", "last_attempt_at", "last_status_code",
                    "last_error", "next_attempt_at"]
EVENT_COLUMNS = ["id", "type", "created", "tenant_id", "data"]


def run_forever(container: Container, interval_s: float, stop: threading.Event | None = None) -> None:
    """The delivery loop of the local stack: dispatch, retry, sweep, every ``interval_s``."""
    container.webhook_worker.run_forever(interval_s, stop)


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("webhooks", help="webhooks and their deliveries (billing API, admin key)")
    sub = group.add_subparsers(dest="webhooks_command", required=True)

    add = sub.add_parser("add", help="register a receiver (its signing secret is shown once)")
    add.add_argument("url", help="https URL (the local stack also takes http://127.0.0.1)")
    add.add_argument("--event", dest="events", action="append", required=True, choices=[str(e) for e in EventType],
                     help="an event type to receive (repeatable)")
    add.set_defaults(run=_add)

    listing = sub.add_parser("list", help="every webhook, without secrets")
    listing.set_defaults(run=_list)

    delete = sub.add_parser("delete", help="remove a webhook; its pending deliveries are given up")
    delete.add_argument("webhook_id")
    delete.set_defaults(run=_delete)

    deliveries = sub.add_parser("deliveries", help="a webhook's delivery log, newest first")
    deliveries.add_argument("webhook_id")
    deliveries.set_defaults(run=_deliveries)

    for parser in (add, listing, delete, deliveries):
        add_connection_flags(parser)

    deliver = sub.add_parser("deliver", help="run the delivery worker against the tables (operators)")
    deliver.add_argument("--loop", type=float, default=0.0, metavar="SECONDS",
                         help="a pass every SECONDS until stopped (the local stack's delivery process)")
    deliver.set_defaults(run=_deliver)

    events = commands.add_parser("events", help="the event log, newest first (billing API, finance key)")
    events.add_argument("--type", choices=[str(e) for e in EventType])
    events.add_argument("--tenant-id")
    events.add_argument("--limit", type=int, default=0, help="at most this many (default: all)")
    add_connection_flags(events)
    events.set_defaults(run=_events)


def _add(args: argparse.Namespace) -> int:
    def run(client: ApiClient) -> int:
        webhook = client.json("POST", "/billing/webhooks", body={"url": args.url, "events": args.events})
        emit(args, webhook, [_row(webhook)], WEBHOOK_COLUMNS)
        if not args.json:
            print(f"\nsigning secret of {webhook['id']} (shown once, store it now):", file=sys.stderr)
            print(webhook["secret"])
        return 0

    return with_client(args, run)


def _row(webhook: dict[str, Any]) -> dict[str, Any]:
    return webhook | {"events": ",".join(webhook.get("events") or [])}


def _list(args: argparse.Namespace) -> int:
    def run(client: ApiClient) -> int:
        webhooks = list(client.pages("/billing/webhooks"))
        emit(args, {"object": "list", "data": webhooks}, [_row(w) for w in webhooks], WEBHOOK_COLUMNS)
        return 0

    return with_client(args, run)


def _delete(args: argparse.Namespace) -> int:
    def run(client: ApiClient) -> int:
        client.request("DELETE", f"/billing/webhooks/{quote(args.webhook_id, safe='')}")
        print(f"webhook {args.webhook_id} deleted", file=sys.stderr)
        return 0

    return with_client(args, run)


def _deliveries(args: argparse.Namespace) -> int:
    def run(client: ApiClient) -> int:
        rows = list(client.pages(f"/billing/webhooks/{quote(args.webhook_id, safe='')}/deliveries"))
        emit(args, {"object": "list", "data": rows}, rows, DELIVERY_COLUMNS)
        return 0

    return with_client(args, run)


def _events(args: argparse.Namespace) -> int:
    def run(client: ApiClient) -> int:
        rows = []
        for event in client.pages("/billing/events", {"type": args.type, "tenant_id": args.tenant_id}):
            rows.append(event)
            if args.limit and len(rows) >= args.limit:
                break
        emit(args, {"object": "list", "data": rows},
             [row | {"data": json.dumps(row.get("data"), separators=(",", ":"))} for row in rows], EVENT_COLUMNS)
        return 0

    return with_client(args, run)


def _deliver(args: argparse.Namespace) -> int:
    from gateway.wiring import Container

    container = Container()
    if args.loop:
        try:
            run_forever(container, args.loop)
        except KeyboardInterrupt:
            pass
        return 0
    done = container.webhook_worker.tick()
    results = container.delivery_pool.drain()
    print(json.dumps(done | {str(r): results.count(r) for r in set(results)}))
    return 0
