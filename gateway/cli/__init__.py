"""``maas``: operator, admin and finance commands.

Only the operators' commands (``admin bootstrap``, ``flush``, ``webhooks deliver``,
``projections repair``) touch the tables directly; every other command talks to the HTTP API
with a key, like any client. Each command group registers itself here."""

from __future__ import annotations

import argparse
import sys

from gateway.cli import admin, batches, deploy, finance, keys, models, money, preflight, projections, tenants, webhooks

# preflight and deploy add `maas admin preflight|deploy`, so they come after admin.
GROUPS = [admin, preflight, deploy, tenants, keys, money, finance, webhooks, projections, models, batches]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maas", description="maas-gateway commands")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(commands)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
