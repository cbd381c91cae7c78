"""``maas keys create|list|revoke|rotate``: API keys through the billing API, with an admin
key. A new key's secret is printed once, on stdout; everything else goes to stderr."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

from gateway.cli.client import ApiClient, add_connection_flags, emit, with_client

COLUMNS = ["id", "name", "scopes", "status", "created_at", "expires_at", "revoked_at"]


def _row(key: dict[str, Any]) -> dict[str, Any]:
    return key | {"scopes": ",".join(key.get("scopes") or [])}


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("keys", help="API keys (billing API, admin key)")
    sub = group.add_subparsers(dest="keys_command", required=True)

    create = sub.add_parser("create", help="issue a key for a tenant (the secret is shown once)")
    create.add_argument("tenant_id")
    create.add_argument("--name")
    create.add_argument("--scope", dest="scopes", action="append",
                        help="inference, usage:read, finance or admin (repeatable; default inference + usage:read)")
    create.add_argument("--expires-at", help="RFC 3339, e.g. 2030-01-31T00:00:00Z")
    create.set_defaults(run=_create)

    listing = sub.add_parser("list", help="a tenant's keys, without secrets")
    listing.add_argument("tenant_id")
    listing.set_defaults(run=_list)

    revoke = sub.add_parser("revoke", help="revoke a key: it stops working on the next request")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=_revoke)

    rotate = sub.add_parser("rotate", help="issue a successor; the old key works until the grace ends")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace-seconds", type=int, default=0)
    rotate.set_defaults(run=_rotate)

    for parser in (create, listing, revoke, rotate):
        add_connection_flags(parser)


def _issued(args: argparse.Namespace, key: dict[str, Any]) -> None:
    if args.json:
        emit(args, key, [], COLUMNS)
        return
    emit(args, key, [_row(key)], COLUMNS)
    print(f"\nkey {key['id']} (shown once, store it now):", file=sys.stderr)
    print(key["key"])


def _create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.name is not None:
        body["name"] = args.name
    if args.scopes:
        body["scopes"] = args.scopes
    if args.expires_at:
        body["expires_at"] = args.expires_at

    def run(client: ApiClient) -> int:
        _issued(args, client.json("POST", f"/billing/tenants/{quote(args.tenant_id, safe='')}/keys", body=body))
        return 0

    return with_client(args, run)


def _list(args: argparse.Namespace) -> int:
    def run(client: ApiClient) -> int:
        keys = list(client.pages(f"/billing/tenants/{quote(args.tenant_id, safe='')}/keys"))
        emit(args, {"object": "list", "data": keys}, [_row(k) for k in keys], COLUMNS)
        return 0

    return with_client(args, run)


def _revoke(args: argparse.Namespace) -> int:
    def run(client: ApiClient) -> int:
        client.request("DELETE", f"/billing/keys/{quote(args.key_id, safe='')}")
        if args.json:
            emit(args, {"id": args.key_id, "revoked": True}, [], COLUMNS)
        else:
            print(f"revoked {args.key_id}")
        return 0

    return with_client(args, run)


def _rotate(args: argparse.Namespace) -> int:
    def run(client: ApiClient) -> int:
        _issued(args, client.json("POST", f"/billing/keys/{quote(args.key_id, safe='')}/rotate",
                                  body={"grace_seconds": args.grace_seconds}))
        return 0

    return with_client(args, run)
