"""Scheduled: drains the usage streams into the DynamoDB ledger and rollups."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from gateway.telemetry import MetricUnit, logger, metrics
from gateway.wiring import container


@logger.inject_lambda_context
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict, context: LambdaContext) -> dict:
    result = container().flusher.flush()
    metrics.add_metric(name="FlushedEvents", unit=MetricUnit.Count, value=result.written)
    metrics.add_metric(name="FlusherLagSeconds", unit=MetricUnit.Seconds, value=result.oldest_unflushed_age_s)
    logger.info("flushed", extra={"streams": result.streams, "read": result.read, "written": result.written,
                                  "errors": result.errors})
    if result.errors:
        # Failing the invocation surfaces in the Errors alarm; the entries stay pending.
        raise RuntimeError(f"{len(result.errors)} stream(s) failed to flush")
    return {"read": result.read, "written": result.written}
