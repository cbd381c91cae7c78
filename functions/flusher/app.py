"""A flush worker: drains its share of the active tenants' usage streams into the DynamoDB
ledger and rollups. Started by the dispatcher (functions/flush_dispatcher/app.py) each minute
with ``{"part", "parts", "until"}`` and visits its tenants again until then; any other event
(a manual invoke) is one pass over every active tenant."""

import time

from aws_lambda_powertools.utilities.typing import LambdaContext

from gateway.telemetry import MetricUnit, logger, metrics, traced
from gateway.wiring import Container

container = Container()

# Stop starting new batches this long before the function's timeout.
_SAFETY_MARGIN_MS = 10_000


@traced
@logger.inject_lambda_context
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict, context: LambdaContext) -> dict:
    flusher = container.flusher
    remaining_ms = context.get_remaining_time_in_millis() if context else 60_000
    deadline = flusher.clock() + max(remaining_ms - _SAFETY_MARGIN_MS, 1_000) / 1000
    started = time.perf_counter()
    if "part" in event:
        result = flusher.run(part=int(event["part"]), parts=int(event["parts"]), until=float(event["until"]),
                             deadline=deadline, idle_s=container.settings.flusher_idle_s)
    else:
        result = flusher.flush(deadline=deadline)
    metrics.add_metric(name="FlushedEvents", unit=MetricUnit.Count, value=result.written)
    if result.lag_known:  # unknown (Redis unreachable): no datapoint, which the lag alarm treats as breaching
        metrics.add_metric(name="FlusherLagSeconds", unit=MetricUnit.Seconds, value=result.oldest_unflushed_age_s)
        metrics.add_metric(name="UnflushedEvents", unit=MetricUnit.Count, value=result.unflushed)
    metrics.add_metric(name="FlusherErrors", unit=MetricUnit.Count, value=len(result.errors))
    logger.info("flushed", extra={"part": event.get("part"), "parts": event.get("parts"), "streams": result.streams,
                                  "batches": result.batches, "read": result.read, "written": result.written,
                                  "unflushed": result.unflushed, "lag_s": round(result.oldest_unflushed_age_s, 3),
                                  "errors": result.errors,
                                  "duration_ms": round((time.perf_counter() - started) * 1000)})
    if result.errors:
        # Failing the invocation surfaces in the Errors alarm; the entries stay pending.
        raise RuntimeError(f"{len(result.errors)} stream(s) failed to flush")
    return {"read": result.read, "written": result.written, "unflushed": result.unflushed}
