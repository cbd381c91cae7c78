"""Finance commands.

    maas usage report   --month YYYY-MM [--tenant-id T] [--group-by day,model,tenant]
                        [--format table|csv|json] [--out FILE]
    maas usage events   --month YYYY-MM --tenant-id T [--format csv|json] [--out FILE]
    maas invoices       --month YYYY-MM [--format table|csv|json] [--out FILE]
    maas usage reconcile --month YYYY-MM [--tenant-id T ...] [--fix] [--json] [--no-metric]

``report``, ``events`` and ``invoices`` read the finance API with a ``finance`` (or admin)
key, like any client (CSV is the API's own, byte for byte; ``events`` follows next_cursor
with a progress bar). ``reconcile`` is an operator command: it reads the table directly
with AWS credentials (like ``maas admin bootstrap``), exits 1 on drift it did not fix,
and publishes the LedgerDrift metric the LedgerDriftAlarm watches.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import fields
from datetime import date
from pathlib import Path
from typing import Any

from gateway.cli.client import ApiClient, add_connection_flags, print_table, with_client
from gateway.errors import InvalidRequestError
from gateway.services.reconcile import Drift
from gateway.services.reports import (
    EVENT_COLUMNS,
    INVOICE_COLUMNS,
    SUBTOTAL_COLUMNS,
    USAGE_COLUMNS,
    csv_writer,
    parse_month,
)

DRIFT_COLUMNS = [f.name for f in fields(Drift)]


def month_range(value: str) -> tuple[date, date]:
    """The API's own month parsing, as an argparse type."""
    try:
        return parse_month(value)
    except InvalidRequestError:
        raise argparse.ArgumentTypeError(f"month must be YYYY-MM, not {value!r}") from None


def _month(value: str) -> str:
    month_range(value)
    return value


@contextlib.contextmanager
def _output(path: Path | None, *, binary: bool = False) -> Iterator[Any]:
    if path is None:
        yield sys.stdout.buffer if binary else sys.stdout
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb" if binary else "w", newline="" if not binary else None) as handle:
        yield handle


class _Progress:
    """A rich progress bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, description: str, total: int | None, enabled: bool) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task(description, total=total)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


# -- report, events, invoices (through the API) ------------------------------------------
def _report(args: argparse.Namespace) -> int:
    first, last = month_range(args.month)
    fmt = "json" if args.json else args.format
    params = {"start": first.isoformat(), "end": last.isoformat(), "tenant_id": args.tenant_id,
              "group_by": args.group_by}

    def run(client: ApiClient) -> int:
        with _Progress(f"usage {args.month}", 1, not args.no_progress) as progress:
            if fmt == "csv":
                _, data, _ = client.request("GET", "/billing/usage", params=params | {"format": "csv"})
                with _output(args.out, binary=True) as out:
                    out.write(data)
                progress.advance()
                return 0
            body = client.json("GET", "/billing/usage", params=params)
            progress.advance()
        with _output(args.out) as out:
            if fmt == "json":
                json.dump(body, out, indent=2)
                out.write("\n")
            else:
                with contextlib.redirect_stdout(out):
                    print_table(body["data"], USAGE_COLUMNS)
        return 0

    return with_client(args, run)


def _events(args: argparse.Namespace) -> int:
    """The ledger of one tenant for a month, every page, with a progress bar whose total
    is the month's request count from the usage report."""
    first, last = month_range(args.month)
    fmt = "json" if args.json else args.format
    params = {"start": first.isoformat(), "end": last.isoformat(), "tenant_id": args.tenant_id}

    def run(client: ApiClient) -> int:
        expected = None
        if not args.no_progress and sys.stderr.isatty():
            rows = client.json("GET", "/billing/usage", params=params | {"group_by": "tenant"})["data"]
            expected = sum(int(r["requests"]) for r in rows)
        count = 0
        with _output(args.out) as out, _Progress(f"ledger {args.tenant_id} {args.month}", expected,
                                                 not args.no_progress) as progress:
            write = csv_writer(out, EVENT_COLUMNS) if fmt == "csv" else None
            if write is None:
                out.write('{"object":"list","data":[')
            for row in client.pages("/billing/usage/events", params | {"limit": args.page_size}):
                if write is not None:
                    write(row)
                else:
                    out.write(("," if count else "") + "\n" + json.dumps(row))
                count += 1
                progress.advance()
            if write is None:
                out.write("\n]}\n")
        print(f"{count} ledger rows", file=sys.stderr)
        return 0

    return with_client(args, run)


def _invoices(args: argparse.Namespace) -> int:
    month_range(args.month)
    fmt = "json" if args.json else args.format

    def run(client: ApiClient) -> int:
        with _Progress(f"invoices {args.month}", 1, not args.no_progress) as progress:
            if fmt == "csv":
                _, data, _ = client.request("GET", "/billing/invoices", params={"month": args.month, "format": "csv"})
                with _output(args.out, binary=True) as out:
                    out.write(data)
                return 0
            body = client.json("GET", "/billing/invoices", params={"month": args.month})
            progress.advance()
        with _output(args.out) as out:
            if fmt == "json":
                json.dump(body, out, indent=2)
                out.write("\n")
                return 0
            with contextlib.redirect_stdout(out):
                print(f"invoices for {body['month']}")
                print_table(body["data"], INVOICE_COLUMNS)
                print()
                print_table(body.get("subtotals", []), SUBTOTAL_COLUMNS)
                print()
                print_table(body.get("totals", []), ["currency", "requests", "prompt_tokens", "amount"])
        return 0

    return with_client(args, run)


# -- reconcile (direct, operators) --------------------------------------------------------
def _reconcile(args: argparse.Namespace) -> int:
    from gateway.services.reconcile import publish_drift
    from gateway.wiring import Container

    first, last = month_range(args.month)
    c = Container()
    result = c.reconciler.run(first, last, tenant_ids=args.tenant_id or None, fix=args.fix)
    drift = result.drift
    if args.json:
        json.dump(result.summary(), sys.stdout, indent=2)
        print()
    else:
        print(f"reconciled {result.month}: {result.tenants} tenant(s), {result.cells} cell(s), "
              f"{len(drift)} drifting, {result.drift_tokens} token(s) of drift")
        if drift:
            print_table([d.row() for d in drift], DRIFT_COLUMNS)
        for cell in result.unstable:
            print(f"unstable (kept changing, not compared): {cell}")
        for grant in result.overspent_grants:
            print(f"overspent grant: {grant}")
    if not args.no_metric:
        _publish(c, result, publish_drift)
    unfixed = [d for d in drift if not d.fixed]
    return 1 if unfixed or result.unstable or result.overspent_grants else 0


def _publish(c: Any, result: Any, publish: Any) -> None:
    local = c.settings.dynamodb_endpoint and not (os.environ.get("AWS_ENDPOINT_URL_CLOUDWATCH")
                                                  or os.environ.get("AWS_ENDPOINT_URL"))
    if local:
        return  # an emulated table: there is no CloudWatch to tell
    try:
        publish(c.boto_session.client("cloudwatch"), result)
    except Exception as error:  # the report stands even if the metric cannot be sent
        print(f"maas: LedgerDrift metric not published: {type(error).__name__}: {error}", file=sys.stderr)


def _with_output_flags(parser: argparse.ArgumentParser, formats: tuple[str, ...]) -> None:
    add_connection_flags(parser)
    parser.add_argument("--month", required=True, type=_month, help="calendar month, UTC (YYYY-MM)")
    parser.add_argument("--format", choices=formats, default=formats[0])
    parser.add_argument("--out", type=Path, help="write to this file instead of stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(commands: argparse._SubParsersAction) -> None:
    usage = commands.add_parser("usage", help="usage reports, ledger export and reconciliation")
    usage_commands = usage.add_subparsers(dest="usage_command", required=True)

    report = usage_commands.add_parser("report", help="priced usage of a month (finance API)")
    _with_output_flags(report, ("table", "csv", "json"))
    report.add_argument("--tenant-id")
    report.add_argument("--group-by", help="day, model, tenant (comma separated; default all three)")
    report.set_defaults(run=_report)

    events = usage_commands.add_parser("events", help="export a tenant's request-level ledger for a month")
    _with_output_flags(events, ("csv", "json"))
    events.add_argument("--tenant-id", required=True)
    events.add_argument("--page-size", type=int, default=1000)
    events.set_defaults(run=_events)

    reconcile = usage_commands.add_parser(
        "reconcile", help="recompute rollups from the ledger; exit 1 on drift (AWS credentials, direct)")
    reconcile.add_argument("--month", required=True, type=_month)
    reconcile.add_argument("--tenant-id", action="append", help="only this tenant (repeatable)")
    reconcile.add_argument("--fix", action="store_true", help="rewrite drifting rollups from the ledger")
    reconcile.add_argument("--json", action="store_true")
    reconcile.add_argument("--no-metric", action="store_true", help="do not publish LedgerDrift")
    reconcile.set_defaults(run=_reconcile)

    invoices = commands.add_parser("invoices", help="a month's invoice lines, subtotals and totals (finance API)")
    _with_output_flags(invoices, ("table", "csv", "json"))
    invoices.set_defaults(run=_invoices)

