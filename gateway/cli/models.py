"""``maas models list``: the model catalogue (gateway/assets/models.json) with each plan's
price per 1,000 tokens (infra/plans.json, or ``--plans``). Read from the files this checkout
deploys: no key, no network."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.cli.client import emit
from gateway.domain.plans import DEFAULT_PLANS_FILE, load_catalog
from gateway.domain.registry import CATALOGUE

COLUMNS = ["id", "dimensions", "max_input_tokens", "max_request_tokens", "prices_per_1k_tokens", "aliases"]


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("models", help="the model catalogue and each plan's prices")
    sub = group.add_subparsers(dest="models_command", required=True)
    listing = sub.add_parser("list", help="every catalogued model: dimensions, token limits, price per plan")
    listing.add_argument("--plans", type=Path, default=DEFAULT_PLANS_FILE, help="the plans file (default: %(default)s)")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.set_defaults(run=_list)


def _list(args: argparse.Namespace) -> int:
    plans = load_catalog(args.plans).plans
    rows: list[dict[str, Any]] = []
    table: list[dict[str, Any]] = []
    for spec in CATALOGUE:
        prices = {plan.name: plan.price_listing(spec.id) for plan in plans if plan.includes(spec.id)}
        row = {"id": spec.id, "dimensions": spec.dimensions, "max_input_tokens": spec.max_tokens,
               "max_request_tokens": spec.max_request_tokens, "aliases": list(spec.aliases),
               "description": spec.description, "prices_per_1k_tokens": prices}
        rows.append(row)
        table.append(row | {"aliases": ", ".join(spec.aliases), "prices_per_1k_tokens": ", ".join(
            f"{plan} {price if isinstance(price, str) else 'tiered'}" for plan, price in prices.items())})
    emit(args, {"object": "list", "data": rows}, table, COLUMNS)
    return 0
