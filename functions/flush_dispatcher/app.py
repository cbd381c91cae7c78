"""Scheduled, every minute: looks at the active tenants (the index the admission scripts keep),
publishes the flush lag, and starts as many flush workers as the backlog calls for, each
invoked asynchronously with its share of the tenants for the coming minute. Daily (``{"task":
"sweep"}``) it lists again any tenant with entries the index does not hold (a safety net)."""

import time

from aws_lambda_powertools.utilities.typing import LambdaContext

from gateway.telemetry import MetricUnit, logger, metrics, traced
from gateway.wiring import Container

container = Container()

# Workers stop starting passes this long before the next dispatch (the schedule's minute), so
# one minute's workers rarely overlap the next's (an overlap is harmless: consumer groups).
WORKER_WINDOW_S = 55


@traced
@logger.inject_lambda_context
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict, context: LambdaContext) -> dict:
    flusher, settings = container.flusher, container.settings
    if event.get("task") == "sweep":
        listed = flusher.sweep()
        metrics.add_metric(name="SweptTenants", unit=MetricUnit.Count, value=len(listed))
        logger.info("swept", extra={"listed": len(listed)})
        return {"listed": len(listed)}
    # A Redis that cannot be read raises here: no lag is published, which the alarm treats as breaching.
    plan = flusher.plan(max_workers=settings.flush_workers_max,
                        events_per_worker=settings.flush_worker_events_per_minute)
    started = container.flush_workers.start(plan.workers, until=time.time() + WORKER_WINDOW_S) if plan.workers else 0
    metrics.add_metric(name="FlusherLagSeconds", unit=MetricUnit.Seconds, value=plan.oldest_unflushed_age_s)
    metrics.add_metric(name="UnflushedEvents", unit=MetricUnit.Count, value=plan.unflushed)
    metrics.add_metric(name="ActiveTenants", unit=MetricUnit.Count, value=plan.active)
    metrics.add_metric(name="FlushWorkers", unit=MetricUnit.Count, value=started)
    logger.info("dispatched", extra={"active": plan.active, "unflushed": plan.unflushed,
                                     "lag_s": round(plan.oldest_unflushed_age_s, 3),
                                     "flushed_last_minute": plan.flushed_last_interval, "workers": started})
    if started < plan.workers:
        raise RuntimeError(f"{plan.workers - started} flush worker(s) not started")
    return {"active": plan.active, "unflushed": plan.unflushed, "workers": started}
