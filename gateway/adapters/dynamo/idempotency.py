"""Idempotency records: the first answer to a POST that carried an ``Idempotency-Key``,
written in the same transaction as the change it answers, so a retry (after a timeout, a 503,
a lost reply) gets that answer back and changes nothing, whatever happened in between.

A stored answer can hold a secret (a key created, a webhook's signing secret), so it is kept
encrypted (AES-GCM, with a key derived from the pepper), and it expires after a day
(DynamoDB's TTL on ``expires``)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.adapters.dynamo.table import Table, Write, item_key
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
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"maas idempotency v1").derive(pepper)
        self._aead = AESGCM(key)

    @staticmethod
    def _pk(scope: str, key: str) -> str:
        return item_key("IDEMPOTENCY", scope, key)

    def get(self, scope: str, key: str) -> Stored | None:
        item = self.table.get(self._pk(scope, key), "IDEMPOTENCY", consistent=True)
        if item is None:
            return None
        blob = bytes(item["answer"])
        try:
            answer = json.loads(self._aead.decrypt(blob[:12], blob[12:], self._pk(scope, key).encode()))
        except InvalidTag:  # sealed under another pepper (rotated since): it cannot be replayed
            raise ConflictError("This Idempotency-Key was used before the service's keys were rotated; its answer "
                                "cannot be replayed. Send the call with a new key.", param="Idempotency-Key",
                                code="idempotency_key_unreadable") from None
        return Stored(request_hash=str(item["request_hash"]), status=int(answer["status"]), body=answer["body"])

    def record_write(self, scope: str, key: str, request_hash: str, status: int, body: dict[str, Any]) -> Write:
        nonce = os.urandom(12)
        answer = json.dumps({"status": status, "body": body}, default=str).encode()
        sealed = nonce + self._aead.encrypt(nonce, answer, self._pk(scope, key).encode())
        return Table.new_write({"pk": self._pk(scope, key), "sk": "IDEMPOTENCY", "request_hash": request_hash,
                                "answer": sealed, "expires": int(time.time()) + RETENTION_S})
