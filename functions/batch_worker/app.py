"""Scheduled, every minute: the Batch API's worker answers the lines of the batches in
progress, a chunk at a time (gateway/services/batch_worker.py), and starts no chunk in the
last two minutes of its time; the next minute's run resumes where it stopped."""

import time

from aws_lambda_powertools.utilities.typing import LambdaContext

from gateway.telemetry import logger, metrics, traced
from gateway.wiring import Container

container = Container()
MARGIN_S = 120  # a chunk's worst case (64 lines, each up to the inference timeout) is well under this


@traced
@logger.inject_lambda_context
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict, context: LambdaContext) -> dict:
    until = time.time() + context.get_remaining_time_in_millis() / 1000 - MARGIN_S
    passes = 0
    while time.time() < until and container.batch_worker.run_once(until=until):
        passes += 1
    logger.info("batch passes", extra={"passes": passes})
    return {"passes": passes}
