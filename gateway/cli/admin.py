"""``maas admin bootstrap`` and ``maas flush``: the only commands that touch the tables
directly (operators, with AWS credentials)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.wiring import Container


def bootstrap(plans_file: Path | None = None, tenant_name: str = "operators", c: Container | None = None) -> dict:
    """Load the plan catalog into the table and issue an admin key on the operators'
    tenant. Safe to run again: plans are overwritten by their file, a new key is issued."""
    from gateway.domain.keys import hash_key, new_key
    from gateway.domain.plans import DEFAULT_PLANS_FILE, load_catalog
    from gateway.domain.scopes import Scope
    from gateway.errors import ConflictError
    from gateway.models.records import KeyRecord, TenantRecord, rfc3339, utcnow
    from gateway.wiring import Container

    c = c or Container()
    catalog = load_catalog(plans_file or DEFAULT_PLANS_FILE)
    for plan in catalog.plans:
        c.accounts.put_plan(plan, catalog.version)
    tenant = TenantRecord(id="ten_operators", name=tenant_name, plan="internal", created_at=rfc3339(utcnow()))
    try:
        c.accounts.create_tenant(tenant)
    except ConflictError:
        pass
    parsed = new_key()
    c.accounts.create_key(KeyRecord(id=parsed.key_id, tenant_id=tenant.id, name="bootstrap admin",
                                 scopes=[Scope.ADMIN.value], key_hash=hash_key(parsed.plaintext, c.pepper),
                                 created_at=rfc3339(utcnow())))
    return {"plans": [p.name for p in catalog.plans], "tenant_id": tenant.id, "key_id": parsed.key_id,
            "key": parsed.plaintext}


def write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    os.chmod(path, 0o600)


def subcommands(commands: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The `maas admin` group's subcommands, for the modules that add to it (preflight, deploy)."""
    admin = commands.choices["admin"]  # registered first (GROUPS)
    return next(a for a in admin._actions if isinstance(a, argparse._SubParsersAction))


def register(commands: argparse._SubParsersAction) -> None:
    admin = commands.add_parser("admin", help="direct administration of the tables (operators only)")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    boot = admin_commands.add_parser("bootstrap", help="load plans and issue the first admin key")
    boot.add_argument("--plans", type=Path, help="plan catalog (default infra/plans.json)")
    boot.add_argument("--key-file", type=Path, help="also write the key to this file (mode 0600)")
    boot.set_defaults(run=_bootstrap)
    flush = commands.add_parser("flush", help="drain the usage streams into the ledger (once, or in a loop)")
    flush.add_argument("--json", action="store_true", help="one JSON line per run")
    flush.add_argument("--loop", type=float, default=0.0, metavar="SECONDS",
                       help="flush every SECONDS until stopped (the local stack's flusher process); "
                            "starts with --sweep")
    flush.add_argument("--sweep", action="store_true",
                       help="first list every tenant whose streams hold entries the active index misses "
                            "(after an upgrade; reads the tenant list)")
    flush.set_defaults(run=_flush)


def _bootstrap(args: argparse.Namespace) -> int:
    result = bootstrap(args.plans)
    if args.key_file:
        write_secret(args.key_file, result["key"])
    print(f"plans loaded: {', '.join(result['plans'])}", file=sys.stderr)
    print(f"admin key {result['key_id']} (shown once):", file=sys.stderr)
    print(result["key"])
    return 0


def _flush(args: argparse.Namespace) -> int:
    import time

    from gateway.wiring import Container

    flusher = Container().flusher
    if args.sweep or args.loop:
        try:
            listed = flusher.sweep()
            print(f"swept: {len(listed)} tenant(s) with unflushed entries listed", file=sys.stderr, flush=True)
        except Exception as error:  # a loop goes on: the daily sweep, or the next start, catches up
            print(f"sweep failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            if not args.loop:
                return 1
    while True:
        outcome = flusher.flush()
        print(json.dumps(outcome.__dict__) if args.json else
              f"read {outcome.read}, written {outcome.written}, errors {len(outcome.errors)}", flush=True)
        if not args.loop:
            return 1 if outcome.errors else 0
        time.sleep(args.loop)
