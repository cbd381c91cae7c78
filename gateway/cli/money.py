"""``maas credits grant|list``, ``maas budgets set|clear``, ``maas balance``: prepaid credit,
budgets and balances through the billing API, with an admin key.

Every grant carries an Idempotency-Key (``--idempotency-key``, or a fresh one), so the CLI's
own retries after a timeout can never grant twice."""

from __future__ import annotations

import argparse
import uuid
from typing import Any
from urllib.parse import quote

from gateway.cli.client import ApiClient, add_connection_flags, emit, with_client

GRANT_COLUMNS = ["id", "amount", "remaining", "currency", "expires_at", "note", "created_at"]
BALANCE_COLUMNS = ["tenant_id", "mode", "currency", "credits_remaining", "month_to_date_cost", "budget"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    credits = commands.add_parser("credits", help="prepaid credit (billing API, admin key)")
    credit_commands = credits.add_subparsers(dest="credits_command", required=True)
    grant = credit_commands.add_parser("grant", help="grant credit to a tenant (spent soonest-expiring first)")
    grant.add_argument("tenant_id")
    grant.add_argument("amount", help='a decimal amount in the tenant\'s currency, e.g. "10.00"')
    grant.add_argument("--expires-at", help="RFC 3339, e.g. 2030-01-31T00:00:00Z")
    grant.add_argument("--note")
    grant.add_argument("--idempotency-key", help="repeat a grant safely (default: a fresh key per command)")
    grant.set_defaults(run=_grant)
    listing = credit_commands.add_parser("list", help="a tenant's grants, newest first, with what each has left")
    listing.add_argument("tenant_id")
    listing.set_defaults(run=_list)

    budgets = commands.add_parser("budgets", help="monthly money budgets (billing API, admin key)")
    budget_commands = budgets.add_subparsers(dest="budgets_command", required=True)
    set_budget = budget_commands.add_parser("set", help="set a tenant's budget (or a key's, with --key-id)")
    set_budget.add_argument("tenant_id", nargs="?", help="the tenant (or use --key-id)")
    set_budget.add_argument("--key-id", dest="key_id", help="a key's own budget instead of the tenant's")
    set_budget.add_argument("--amount", required=True, help='the monthly amount, e.g. "50.00"')
    set_budget.add_argument("--hard", action="store_true", help="refuse (402) what would pass it; default: alert only")
    set_budget.add_argument("--alert", dest="thresholds", action="append", type=float, default=[],
                            help="alert at this fraction of the budget, in (0, 1] (repeatable)")
    set_budget.set_defaults(run=_set_budget)
    clear = budget_commands.add_parser("clear", help="remove a tenant's budget (or a key's, with --key-id)")
    clear.add_argument("tenant_id", nargs="?")
    clear.add_argument("--key-id", dest="key_id")
    clear.set_defaults(run=_clear_budget)

    balance = commands.add_parser("balance", help="a tenant's credit left, month-to-date cost and budget")
    balance.add_argument("tenant_id")
    balance.set_defaults(run=_balance)

    for parser in (grant, listing, set_budget, clear, balance):
        add_connection_flags(parser)


def _grant(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"amount": args.amount}
    if args.expires_at:
        body["expires_at"] = args.expires_at
    if args.note:
        body["note"] = args.note

    def run(client: ApiClient) -> int:
        granted = client.json("POST", f"/billing/tenants/{quote(args.tenant_id, safe='')}/credits", body=body,
                              idempotency_key=args.idempotency_key or f"cli-{uuid.uuid4().hex}")
        emit(args, granted, [granted], GRANT_COLUMNS)
        return 0

    return with_client(args, run)


def _list(args: argparse.Namespace) -> int:
    def run(client: ApiClient) -> int:
        grants = client.json("GET", f"/billing/tenants/{quote(args.tenant_id, safe='')}/credits")
        emit(args, grants, grants["data"], GRANT_COLUMNS)
        return 0

    return with_client(args, run)


def _target(args: argparse.Namespace) -> str:
    if bool(args.key_id) == bool(args.tenant_id):
        raise SystemExit("maas: give a tenant id or --key-id KEY_ID (one of them)")
    if args.key_id:
        return f"/billing/keys/{quote(args.key_id, safe='')}"
    return f"/billing/tenants/{quote(args.tenant_id, safe='')}"


def _patch_budget(args: argparse.Namespace, budget: dict[str, Any] | None) -> int:
    path = _target(args)

    def run(client: ApiClient) -> int:
        changed = client.json("PATCH", path, body={"budget": budget})
        emit(args, changed, [{"id": changed["id"], "budget": changed.get("budget")}], ["id", "budget"])
        return 0

    return with_client(args, run)


def _set_budget(args: argparse.Namespace) -> int:
    return _patch_budget(args, {"monthly_amount": args.amount, "hard": args.hard, "alert_thresholds": args.thresholds})


def _clear_budget(args: argparse.Namespace) -> int:
    return _patch_budget(args, None)


def _balance(args: argparse.Namespace) -> int:
    def run(client: ApiClient) -> int:
        balance = client.json("GET", f"/billing/tenants/{quote(args.tenant_id, safe='')}/balance")
        emit(args, balance, [balance], BALANCE_COLUMNS)
        return 0

    return with_client(args, run)
