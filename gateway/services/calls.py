"""Admin calls: who asks and under which request id (``Call``), the audit entry every change
writes (``audit_entry``), and idempotency: a POST that carries an ``Idempotency-Key`` runs once. Its answer is
written in the same DynamoDB transaction as the change it answers (``answer_write``), so a
retry with the same key and body gets the first answer back and changes nothing, whatever
happened in between (a timeout, a 503, a lost reply); the same key with another body is a 409."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from gateway.adapters.dynamo import Idempotency
from gateway.adapters.dynamo.table import Write
from gateway.errors import ConflictError
from gateway.models.records import rfc3339, utcnow
from gateway.services.auth import Principal

Answer = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Call:
    """Who asks, under which request id, and the Idempotency-Key they sent (if any)."""

    actor: Principal
    request_id: str
    idempotency_key: str | None = None
    request_hash: str = ""  # of the operation and its body, set when an Idempotency-Key is given

    @property
    def scope(self) -> str:
        """Idempotency keys are the caller's own: one admin's key never answers another tenant's call."""
        return self.actor.tenant.id


def audit_entry(call: Call, action: str, target: str, details: dict[str, Any]) -> dict[str, Any]:
    """The audit entry of one change, written in the change's own transaction."""
    return {"id": uuid.uuid4().hex, "timestamp": rfc3339(utcnow()), "actor_key_id": call.actor.key.id,
            "actor_tenant_id": call.actor.tenant.id, "action": action, "target": target,
            "request_id": call.request_id,
            # as the request said it (JSON numbers as exact decimals: DynamoDB takes no floats)
            "details": json.loads(json.dumps(details, default=str), parse_float=Decimal)}


def _request_hash(operation: str, target: str, body: BaseModel | None) -> str:
    text = json.dumps([operation, target, body.model_dump(mode="json") if body else None], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class IdempotentCalls:
    def __init__(self, records: Idempotency) -> None:
        self.records = records

    def run(self, call: Call, operation: str, target: str, body: BaseModel, first: Callable[[Call], Answer], *,
            on_replay: Callable[[Answer], None] | None = None) -> Answer:
        """``first(call)`` once per Idempotency-Key (it must put ``answer_write`` in its
        transaction); a retry gets the stored answer, after ``on_replay`` (e.g. making sure the
        first call's change reached Redis)."""
        key = call.idempotency_key
        if not key:
            return first(call)
        call = dataclasses.replace(call, request_hash=_request_hash(operation, target, body))
        stored = self.records.get(call.scope, key)
        if stored is None:
            try:
                return first(call)
            except ConflictError:
                stored = self.records.get(call.scope, key)  # a concurrent twin won
                if stored is None:
                    raise
        if stored.request_hash != call.request_hash:
            raise ConflictError("This Idempotency-Key was used with another request.", param="Idempotency-Key",
                                code="idempotency_conflict")
        if on_replay is not None:
            on_replay(stored.body)
        return stored.body

    def answer_write(self, call: Call, answer: Answer, status: int = 201) -> Write | None:
        """The answer to keep with the change (None without an Idempotency-Key)."""
        if not call.idempotency_key:
            return None
        return self.records.record_write(call.scope, call.idempotency_key, call.request_hash, status, answer)
