"""``maas batches work [--loop SECONDS]``: the Batch API's worker against the tables and the
file store directly (the local stack's process; BatchWorkerFunction's work in AWS), like
``maas flush``. Tenants drive their batches with the OpenAI client (``client.batches``)."""

from __future__ import annotations

import argparse
import json
import signal
import threading


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("batches", help="the Batch API's worker (operators)")
    sub = group.add_subparsers(dest="batches_command", required=True)
    work = sub.add_parser("work", help="answer the lines of every batch in progress")
    work.add_argument("--loop", type=float, default=0.0, metavar="SECONDS",
                      help="a pass every SECONDS until stopped (the local stack's batch process)")
    work.set_defaults(run=_work)


def _work(args: argparse.Namespace) -> int:
    from gateway.wiring import Container

    worker = Container().batch_worker
    if not args.loop:
        print(json.dumps({"worked": worker.run_once()}))
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        worker.run_forever(args.loop, stop)
    except KeyboardInterrupt:
        pass
    return 0
