"""Publishing stored events to an EventBridge bus (AWS): a rule on the bus invokes the
delivery function with each one. ``Source`` is ``maas.gateway``, ``DetailType`` the event
type, ``Detail`` the event exactly as webhooks receive it."""

from __future__ import annotations

from typing import Any, Protocol

from gateway.adapters.dynamo.events import event_json
from gateway.domain.events import Event

SOURCE = "maas.gateway"
_BATCH = 10  # PutEvents takes at most 10 entries


class EventBridgeClient(Protocol):
    def put_events(self, **kwargs: Any) -> dict[str, Any]: ...


class EventBridgePublisher:
    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self.client = client
        self.bus_name = bus_name

    def publish(self, events: list[Event]) -> list[Event]:
        """Returns the events the bus accepted; the others stay in the outbox for the next run."""
        accepted: list[Event] = []
        for start in range(0, len(events), _BATCH):
            batch = events[start:start + _BATCH]
            response = self.client.put_events(Entries=[
                {"EventBusName": self.bus_name, "Source": SOURCE, "DetailType": str(event.type),
                 "Detail": event_json(event), "Resources": []} for event in batch])
            results = response.get("Entries", [])
            accepted += [event for event, result in zip(batch, results, strict=False) if result.get("EventId")]
        return accepted
