"""Idempotency records: the first answer to a POST that carried an ``Idempotency-Key``,
written in the same transaction as the change it answers, so a retry (after a timeout, a 503,
a lost reply) gets that answer back and changes nothing, whatever happened in between.

A stored answer can hold a secret (a key created, a webhook's signing secret), so it is kept
encrypted (``SecretBox``: AES-GCM, with a key of its own derived from the pepper), and it
expires after a day (DynamoDB's TTL on ``expires``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from gateway.adapters.dynamo.table import Table, Write, item_key
from gateway.adapters.secret_box import SealedSecretError, SecretBox
from gateway.errors import ConflictError

RETENTION_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class Stored:
    request_hash: str
    status: int
    body: dict[str, Any]


class Idempotency:
    def __init__(self, table: Table, pepper: bytes) -> None:
        self.table = table
        self._box = SecretBox.for_idempotent_answers(pepper)

    @staticmethod
    def _pk(scope: str, key: str) -> str:
        return item_key("IDEMPOTENCY", scope, key)

    def get(self, scope: str, key: str) -> Stored | None:
        item = self.table.get(self._pk(scope, key), "IDEMPOTENCY", consistent=True)
        if item is None:
            return None
        blob = bytes(item["answer"])
        try:
            answer = json.loads(self._box.open_bytes(blob, context=self._pk(scope, key)))
        except SealedSecretError:  # sealed under another pepper (rotated since): it cannot be replayed
            raise ConflictError("This Idempotency-Key was used before the service's keys were rotated; its answer "
                                "cannot be replayed. Send the call with a new key.", param="Idempotency-Key",
                                code="idempotency_key_unreadable") from None
        return Stored(request_hash=str(item["request_hash"]), status=int(answer["status"]), body=answer["body"])

    def record_write(self, scope: str, key: str, request_hash: str, status: int, body: dict[str, Any]) -> Write:
        answer = json.dumps({"status": status, "body": body}, default=str).encode()
        sealed = self._box.seal_bytes(answer, context=self._pk(scope, key))
        return Table.new_write({"pk": self._pk(scope, key), "sk": "IDEMPOTENCY", "request_hash": request_hash,
                                "answer": sealed, "expires": int(time.time()) + RETENTION_S})
