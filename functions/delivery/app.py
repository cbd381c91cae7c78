"""Webhook delivery (AWS), outside the VPC so receivers on the internet are reachable.

- DynamoDB stream (filtered to events entering the outbox): publish them to the bus.
- EventBridge rule on the bus: deliver one event to its webhooks.
- Schedule, every minute (``{"task": "retry"}``): what the stream missed, and due retries.
- Schedule, daily (``{"task": "sweep"}``): ``key.expiring`` events.

Each invocation waits for the attempts it started; their results become metrics."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from gateway.adapters.dynamo.events import event_from_body, event_from_item
from gateway.adapters.dynamo.table import load
from gateway.adapters.event_bus import SOURCE
from gateway.services.webhook_delivery import AttemptResult
from gateway.telemetry import MetricUnit, logger, metrics, traced
from gateway.wiring import Container

container = Container()

# Stop waiting for attempts this long before the function's timeout.
_SAFETY_MARGIN_MS = 5_000


def _run(event: dict[str, Any]) -> dict[str, int]:
    if event.get("source") == SOURCE and isinstance(event.get("detail"), dict):
        return {"started": container.deliverer.deliver(event_from_body(event["detail"]), container.delivery_pool)}
    if "Records" in event:
        stored = [event_from_item(load(record["dynamodb"]["NewImage"])) for record in event["Records"]
                  if record.get("eventSource") == "aws:dynamodb" and "NewImage" in record.get("dynamodb", {})]
        return {"dispatched": container.dispatcher.dispatch(stored)}
    task = event.get("task")
    if task == "retry":
        return {"dispatched": container.dispatcher.dispatch_pending(),
                "started": container.deliverer.retry_due(container.delivery_pool)}
    if task == "sweep":
        return {"expiring": len(container.key_expiry_sweeper.sweep())}
    raise ValueError(f"unexpected event: {sorted(event)[:10]}")


@traced
@logger.inject_lambda_context
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict, context: LambdaContext) -> dict:
    done = _run(event)
    remaining_ms = context.get_remaining_time_in_millis() if context else 60_000
    results = container.delivery_pool.drain(timeout_s=max(remaining_ms - _SAFETY_MARGIN_MS, 1_000) / 1000)
    counts = {result: results.count(result) for result in AttemptResult}
    metrics.add_metric(name="WebhookDeliveries", unit=MetricUnit.Count, value=counts[AttemptResult.DELIVERED])
    metrics.add_metric(name="WebhookDeliveryFailures", unit=MetricUnit.Count, value=counts[AttemptResult.FAILED])
    metrics.add_metric(name="WebhookAttemptErrors", unit=MetricUnit.Count,
                       value=counts[AttemptResult.RETRYING] + counts[AttemptResult.ERROR])
    logger.info("webhooks", extra=done | {str(k): v for k, v in counts.items() if v})
    return done | {str(k): v for k, v in counts.items() if v}
