"""Scheduled, daily: proves the books. Recomputes this month's rollups from the ledger (on
the 1st, last month's as well: it is about to be invoiced), records the outcome (GET
/billing/reconcile) and publishes LedgerDrift and LedgerDriftTokens, which LedgerDriftAlarm
and ReconcileNotRunAlarm watch. Reports only: fixing drift is an operator's decision
(`maas usage reconcile --fix`)."""

from datetime import UTC, date, datetime, timedelta
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from gateway.services.reconcile import Reconciler, publish_drift
from gateway.telemetry import logger, traced
from gateway.wiring import Container

SUMMARY_FIELDS = ("month", "tenants", "cells", "drift_cells", "drift_tokens")
container = Container()


def months_to_reconcile(today: date) -> list[tuple[date, date]]:
    """(first day, last day) of each month to check, oldest first."""
    first = today.replace(day=1)
    months = [first]
    if today.day == 1:
        months.insert(0, (first - timedelta(days=1)).replace(day=1))
    return [(m, (m.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)) for m in months]


def reconcile(reconciler: Reconciler, cloudwatch: Any, today: date) -> list[dict[str, Any]]:
    summaries = []
    for first, last in months_to_reconcile(today):
        result = reconciler.run(first, last)
        publish_drift(cloudwatch, result)
        summaries.append({name: result.summary()[name] for name in SUMMARY_FIELDS})
    return summaries


@traced
@logger.inject_lambda_context
def handler(event: dict, context: LambdaContext) -> dict:
    summaries = reconcile(container.reconciler, container.boto_session.client("cloudwatch"),
                          datetime.now(UTC).date())
    for summary in summaries:
        logger.info("reconciled", extra=summary)
    return {"months": summaries}
