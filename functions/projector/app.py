"""The projector in AWS: admin changes committed to DynamoDB that Redis (MemoryDB) missed are
projected again (gateway/services/projections.py). An admin change writes a projection mark
in its own transaction and clears it once Redis has the change; a mark left behind means
Redis went away in between.

- DynamoDB stream, filtered to marks being written: woken seconds after a change. Usually the
  billing API has projected it and cleared the mark already, and there is nothing to do.
- Schedule, every minute: whatever is still marked (Redis was away when the stream woke it).

Every trigger runs the same pass over all the marks, so a lost or failed invocation is made
good by the next one. In the VPC: it writes MemoryDB."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from gateway.services.projections import repair_all
from gateway.telemetry import MetricUnit, logger, metrics, traced
from gateway.wiring import Container

container = Container()


@traced
@logger.inject_lambda_context
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict, context: LambdaContext) -> dict:
    run = repair_all(container.billing)
    metrics.add_metric(name="ProjectionsRepaired", unit=MetricUnit.Count, value=run.repaired)
    metrics.add_metric(name="ProjectionsPending", unit=MetricUnit.Count, value=run.pending)
    logger.info("projections", extra={"repaired": run.repaired, "pending": run.pending,
                                      "trigger": "stream" if "Records" in event else "schedule"})
    return {"repaired": run.repaired, "pending": run.pending}
