"""Scheduled, every minute: the Batch API's worker answers the lines of the batches in
progress, a chunk at a time (gateway/services/batch_worker.py), starting chunks for 50 s; the
next minute's run resumes where it stopped (a chunk two runs take at once is settled once)."""

import time

from aws_lambda_powertools.utilities.typing import LambdaContext

from gateway.telemetry import logger, metrics, traced
from gateway.wiring import Container

container = Container()
WINDOW_S = 50  # of the function's 120 s: a chunk's calls have 20 s each, and the next run starts at 60 s


@traced
@logger.inject_lambda_context
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict, context: LambdaContext) -> dict:
    until = time.time() + min(WINDOW_S, context.get_remaining_time_in_millis() / 1000 - 60)
    passes = 0
    while time.time() < until and container.batch_worker.run_once(until=until):
        passes += 1
    logger.info("batch passes", extra={"passes": passes})
    return {"passes": passes}
