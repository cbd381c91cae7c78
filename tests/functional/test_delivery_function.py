"""The delivery function driven by its recorded events (events/delivery/), as in AWS: the
table's stream publishes to an EventBridge bus (moto's), a rule on the bus forwards the
event (to an SQS queue here, standing in for the function's own target), and that very
envelope, given to the function, reaches a real receiver on 127.0.0.1, signed."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import boto3

from gateway.adapters.dynamo.events import event_from_item
from gateway.adapters.dynamo.table import load
from gateway.domain.events import Event, EventType, event_id
from gateway.domain.scopes import Scope
from gateway.domain.webhooks import Attempt
from gateway.models.webhooks import CreateWebhook
from gateway.services.calls import Call
from gateway.wiring import Container
from tests.integration.conftest import make_principal
from tests.lambdas import configure, context_for, emf_metrics, handler_for
from tests.webhook_receiver import Receiver

EVENTS = Path(__file__).resolve().parents[2] / "events" / "delivery"


def recorded(name: str) -> dict:
    return json.loads((EVENTS / f"{name}.json").read_text())


def test_stream_bus_rule_and_delivery(container, moto, monkeypatch):
    endpoint = f"http://127.0.0.1:{moto.port}"
    bridge, sqs = boto3.client("events", endpoint_url=endpoint), boto3.client("sqs", endpoint_url=endpoint)
    bus = f"maas-test-{uuid.uuid4().hex[:8]}"
    bridge.create_event_bus(Name=bus)
    queue = sqs.create_queue(QueueName=bus)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bridge.put_rule(Name="to-delivery", EventBusName=bus, EventPattern=json.dumps({"source": ["maas.gateway"]}))
    bridge.put_targets(Rule="to-delivery", EventBusName=bus, Targets=[{"Id": "delivery", "Arn": queue_arn}])
    settings = container.settings.model_copy(
        update={"event_bus_name": bus, "webhook_allow_local_http": True, "webhook_timeout_s": 2.0}
    )
    configure(monkeypatch, settings)
    container = Container(settings, dynamodb=container.dynamodb, redis=container.redis)
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", endpoint)
    receiver = Receiver()
    try:
        admin = make_principal(container, scopes=(Scope.ADMIN,))[0]
        webhook = container.webhook_service.create(
            CreateWebhook(url=receiver.url, events=["key.revoked"]), Call(admin, "req")
        )
        receiver.secret = webhook["secret"]
        handler, context = handler_for("delivery"), context_for("delivery")

        # GIVEN an event stored, as the table's stream reports it
        stream = recorded("stream")
        stored = event_from_item(load(stream["Records"][0]["dynamodb"]["NewImage"]))
        container.event_log.record([stored])
        # WHEN the stream batch reaches the function THEN it is on the bus and out of the outbox
        assert handler(stream, context)["dispatched"] == 1
        assert container.event_log.undispatched() == []
        messages = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages", [])
        (envelope,) = [json.loads(m["Body"]) for m in messages]
        assert (envelope["source"], envelope["detail-type"], envelope["detail"]) == (
            "maas.gateway",
            "key.revoked",
            stored.body(),
        )

        # WHEN the rule hands that envelope to the function THEN the receiver has it, signed
        result = handler(envelope, context)
        assert (result["started"], result["delivered"]) == (1, 1)
        (request,) = receiver.wait_for(1)
        assert request.verified is True and request.event == stored.body()
        # AND the bus delivering it again (EventBridge retries) sends nothing twice
        assert handler(envelope, context) == {"started": 0}

        # The recorded bus event (another type) starts nothing here; the schedules run clean.
        assert handler(recorded("eventbridge"), context) == {"started": 0}
        assert handler(recorded("retry"), context) == {"dispatched": 0, "started": 0}
        assert handler(recorded("sweep"), context) == {"expiring": 0}
        assert len(receiver.received) == 1
    finally:
        receiver.close()


def test_a_delivery_given_up_is_counted_in_webhook_delivery_failures(container, monkeypatch, capsys):
    settings = container.settings.model_copy(update={"webhook_allow_local_http": True, "webhook_timeout_s": 2.0})
    configure(monkeypatch, settings)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    container = Container(settings, dynamodb=container.dynamodb, redis=container.redis)
    receiver = Receiver(statuses=[500])
    try:
        admin = make_principal(container, scopes=(Scope.ADMIN,))[0]
        webhook = container.webhook_service.create(
            CreateWebhook(url=receiver.url, events=["credits.low"]), Call(admin, "req")
        )
        # GIVEN a delivery that has failed since more than a day ago, due again now
        event = Event(
            id=event_id("metric", webhook["id"]),
            type=EventType.CREDITS_LOW,
            created=int(time.time()),
            tenant_id="ten_a",
        )
        container.event_log.record([event])
        container.event_log.mark_dispatched([event])
        now_ms = int(time.time() * 1000)
        opened = container.deliveries.open(webhook["id"], event, now_ms=now_ms - 2 * 86_400_000)
        claimed = container.deliveries.claim(opened, until_ms=now_ms)
        long_ago = Attempt(at_ms=now_ms - 2 * 86_400_000, status_code=500, error="HTTP 500", duration_ms=3)
        assert container.deliveries.record(claimed, long_ago, next_attempt_ms=now_ms - 1, delivered=False)
        capsys.readouterr()
        # WHEN the every-minute schedule retries it and the receiver fails again
        result = handler_for("delivery")(recorded("retry"), context_for("delivery"))
        # THEN it is given up, and the metric counts it
        assert result == {"dispatched": 0, "started": 1, "failed": 1}
        assert emf_metrics(capsys.readouterr().out)["WebhookDeliveryFailures"] == 1
        log = container.deliveries.get(webhook["id"], event.id)
        assert log is not None and (log.status, log.attempts) == ("failed", 2)
    finally:
        receiver.close()


def test_an_event_the_bus_loses_is_delivered_by_the_every_minute_pass(container, moto, monkeypatch):
    # GIVEN a bus with no rule: it accepts events and they go nowhere (as when the rule's
    # invocations of the function keep failing until EventBridge gives up)
    endpoint = f"http://127.0.0.1:{moto.port}"
    bus = f"maas-void-{uuid.uuid4().hex[:8]}"
    boto3.client("events", endpoint_url=endpoint).create_event_bus(Name=bus)
    settings = container.settings.model_copy(
        update={"event_bus_name": bus, "webhook_allow_local_http": True, "webhook_timeout_s": 2.0}
    )
    configure(monkeypatch, settings)
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", endpoint)
    container = Container(settings, dynamodb=container.dynamodb, redis=container.redis)
    receiver = Receiver()
    try:
        admin = make_principal(container, scopes=(Scope.ADMIN,))[0]
        receiver.secret = container.webhook_service.create(
            CreateWebhook(url=receiver.url, events=["credits.exhausted"]), Call(admin, "req")
        )["secret"]
        event = Event(
            id=event_id("void", bus),
            type=EventType.CREDITS_EXHAUSTED,
            created=int(time.time()),
            tenant_id="ten_a",
            data={"credits_remaining": "0"},
        )
        container.event_log.record([event])
        # WHEN the every-minute pass runs: it publishes (into the void), and the delivery it
        # opened before publishing is due
        result = handler_for("delivery")(recorded("retry"), context_for("delivery"))
        # THEN the receiver has the event all the same, once
        assert result == {"dispatched": 1, "started": 1, "delivered": 1}
        (request,) = receiver.wait_for(1)
        assert request.verified is True and request.event == event.body()
        assert container.event_log.undispatched() == []
    finally:
        receiver.close()
