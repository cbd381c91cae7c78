"""Business events (CONTRACT.md §8): what happened to a tenant's money or keys, emitted exactly
once per cause and delivered at least once to the matching webhooks.

An event's id is derived from its cause (``event_id``), so a cause seen twice (a retried
write, a replayed stream entry, a re-emission after Redis lost its flags) yields the same id
and is stored, and delivered, once."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    BUDGET_THRESHOLD_CROSSED = "budget.threshold_crossed"
    CREDITS_LOW = "credits.low"
    CREDITS_EXHAUSTED = "credits.exhausted"
    KEY_REVOKED = "key.revoked"
    KEY_EXPIRING = "key.expiring"
    TENANT_SUSPENDED = "tenant.suspended"


@dataclass(frozen=True, slots=True)
class Event:
    id: str  # "evt_" + 24 hex digits, derived from the cause
    type: EventType
    created: int  # unix seconds
    tenant_id: str
    data: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The event as the API lists it and webhooks receive it."""
        return {"id": self.id, "object": "event", "type": str(self.type), "created": self.created,
                "tenant_id": self.tenant_id, "data": self.data}


def event_id(*cause: str) -> str:
    """The id of the event this cause produces: the same cause, the same id. The admission
    scripts compute the same digest in Lua (``redis.sha1hex`` of the parts joined by "|")."""
    return "evt_" + hashlib.sha1("|".join(cause).encode()).hexdigest()[:24]
