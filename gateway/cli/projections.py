"""``maas projections repair [--loop SECONDS]``: the projector. An admin change commits to
DynamoDB with a projection mark (gateway/adapters/dynamo/outbox.py), then goes to Redis and
the mark is cleared; a mark still there means Redis missed the change (it went away right
after the commit). This re-projects every marked tenant from DynamoDB and clears its mark.

It reads and writes the table and Redis directly, like ``maas flush``: the local stack runs it
as a supervised process (``--loop 0.5``); in AWS, ProjectorFunction does the same work
(functions/projector/app.py)."""

from __future__ import annotations

import argparse
import json
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.wiring import Container


def repair_forever(container: Container, interval_s: float, stop: threading.Event | None = None) -> None:
    """A pass every ``interval_s``; a pass that finds a store away logs it and waits for the next."""
    from gateway.adapters.outages import is_outage
    from gateway.services.projections import repair_all

    stop = stop or threading.Event()
    while True:
        try:
            run = repair_all(container.billing)
        except Exception as error:
            if not is_outage(error):
                raise
            print(json.dumps({"repaired": 0, "error": type(error).__name__}), flush=True)
        else:
            if run.repaired:
                print(json.dumps({"repaired": run.repaired, "pending": run.pending}), flush=True)
        if stop.wait(interval_s):
            return


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("projections", help="the Redis projection of admin changes (operators)")
    sub = group.add_subparsers(dest="projections_command", required=True)
    repair = sub.add_parser("repair", help="re-project the tenants whose last change Redis missed")
    repair.add_argument("--loop", type=float, default=0.0, metavar="SECONDS",
                        help="a pass every SECONDS until stopped (the local stack's projector process)")
    repair.set_defaults(run=_repair)


def _repair(args: argparse.Namespace) -> int:
    from gateway.services.projections import repair_all
    from gateway.wiring import Container

    container = Container()
    if args.loop:
        try:
            repair_forever(container, args.loop)
        except KeyboardInterrupt:
            pass
        return 0
    run = repair_all(container.billing)
    print(json.dumps({"repaired": run.repaired, "pending": run.pending}), flush=True)
    return 0
