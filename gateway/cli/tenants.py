"""``maas tenants create|list|show|update``: the billing API's tenants, with an admin key."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

from gateway.cli.client import ApiClient, add_connection_flags, emit, with_client

COLUMNS = ["id", "name", "plan", "status", "requests_per_minute", "tokens_per_minute", "monthly_tokens",
           "max_concurrent_requests", "created_at"]
LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "monthly_tokens", "max_concurrent_requests")


def _row(tenant: dict[str, Any]) -> dict[str, Any]:
    return tenant | dict(tenant.get("limits") or {})


def _limit(text: str) -> tuple[str, int | None]:
    """``name=value`` (an override) or ``name=`` / ``name=plan`` (back to the plan's value)."""
    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in LIMIT_FIELDS:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME one of {', '.join(LIMIT_FIELDS)}")
    if value.strip() in ("", "plan"):
        return name, None
    try:
        return name, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: not an integer: {value!r}") from None


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("tenants", help="tenants (billing API, admin key)")
    sub = group.add_subparsers(dest="tenants_command", required=True)

    create = sub.add_parser("create", help="create a tenant on a plan")
    create.add_argument("name")
    create.add_argument("--plan", required=True, help="plan id (see GET /billing/plans)")
    create.set_defaults(run=_create)

    listing = sub.add_parser("list", help="every tenant (follows pagination)")
    listing.set_defaults(run=_list)

    show = sub.add_parser("show", help="one tenant, with its effective limits")
    show.add_argument("tenant_id")
    show.set_defaults(run=_show)

    update = sub.add_parser("update", help="change a tenant's plan, status or limit overrides")
    update.add_argument("tenant_id")
    update.add_argument("--plan")
    state = update.add_mutually_exclusive_group()
    state.add_argument("--suspend", dest="status", action="store_const", const="suspended")
    state.add_argument("--activate", dest="status", action="store_const", const="active")
    update.add_argument("--limit", action="append", type=_limit, default=[], metavar="NAME=VALUE",
                        help="override a limit; NAME= drops the override (repeatable)")
    update.set_defaults(run=_update)

    for parser in (create, listing, show, update):
        add_connection_flags(parser)


def _create(args: argparse.Namespace) -> int:
    def run(client: ApiClient) -> int:
        tenant = client.json("POST", "/billing/tenants", body={"name": args.name, "plan": args.plan})
        emit(args, tenant, [_row(tenant)], COLUMNS)
        return 0

    return with_client(args, run)


def _list(args: argparse.Namespace) -> int:
    def run(client: ApiClient) -> int:
        tenants = list(client.pages("/billing/tenants"))
        emit(args, {"object": "list", "data": tenants}, [_row(t) for t in tenants], COLUMNS)
        return 0

    return with_client(args, run)


def _show(args: argparse.Namespace) -> int:
    def run(client: ApiClient) -> int:
        tenant = client.json("GET", f"/billing/tenants/{quote(args.tenant_id, safe='')}")
        emit(args, tenant, [_row(tenant)], COLUMNS)
        return 0

    return with_client(args, run)


def _update(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.plan:
        body["plan"] = args.plan
    if args.status:
        body["status"] = args.status
    if args.limit:
        body["limits"] = dict(args.limit)
    if not body:
        print("maas: nothing to update: pass --plan, --suspend/--activate or --limit", file=sys.stderr)
        return 2

    def run(client: ApiClient) -> int:
        tenant = client.json("PATCH", f"/billing/tenants/{quote(args.tenant_id, safe='')}", body=body)
        emit(args, tenant, [_row(tenant)], COLUMNS)
        return 0

    return with_client(args, run)
