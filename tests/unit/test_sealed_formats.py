"""What is already sealed at rest still opens: webhook signing secrets and idempotent answers,
both sealed by the one AEAD box (gateway/adapters/secret_box.py), each in the format it had
before the box was shared. The values below were sealed by the code of before (two classes,
each with its own AES-GCM) and are kept verbatim: if the derivation, the associated data or
the layout changes, these stop opening."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from gateway.adapters.dynamo.idempotency import Idempotency
from gateway.adapters.secret_box import SealedSecretError, SecretBox
from gateway.errors import ConflictError

PEPPER = b"pepper-legacy"
# SecretBox(PEPPER).seal("whsec_legacy-secret", context="wh_legacy"), before the box was shared
LEGACY_WEBHOOK_SECRET = "v1.JFxakgKlR1Aq7sZiHLYeSjH6pFSKCyqudOF-lRIhNaR41ji1lFroQXGJL9wepQY="
# Idempotency(table, PEPPER).record_write("tenant:t_legacy", "idem-key-1", "hash-1", 201,
#   {"id": "k_1", "secret": "sk-legacy"})'s "answer" (raw bytes: nonce + ciphertext + tag)
LEGACY_ANSWER = base64.b64decode(
    "KdILIlecg3ErBxikEVseI0kz6NXsxTN2VUgQ7d3AfNGKHuffvJAcSdDM0kne8JY3aBQ7J1CjLATT3qTY0smsXUYymiscaFbyiG"
    "dBxnzmRDe1/qcWpC7xxRU=")
LEGACY_PK = "IDEMPOTENCY#tenant:t_legacy#idem-key-1"


class OneItemTable:
    """The one item Idempotency.get reads (pk, sk, consistent read)."""

    def __init__(self, item: dict[str, Any] | None) -> None:
        self.item = item
        self.reads: list[tuple[str, str, bool]] = []

    def get(self, pk: str, sk: str, *, consistent: bool = False) -> dict[str, Any] | None:
        self.reads.append((pk, sk, consistent))
        return self.item


def test_a_webhook_secret_sealed_before_the_box_was_shared_still_opens():
    assert SecretBox.for_webhook_secrets(PEPPER).open(LEGACY_WEBHOOK_SECRET, context="wh_legacy") == \
        "whsec_legacy-secret"
    with pytest.raises(SealedSecretError):
        SecretBox.for_webhook_secrets(PEPPER).open(LEGACY_WEBHOOK_SECRET, context="wh_other")


def test_an_idempotent_answer_sealed_before_the_box_was_shared_still_opens():
    table = OneItemTable({"pk": LEGACY_PK, "sk": "IDEMPOTENCY", "request_hash": "hash-1", "answer": LEGACY_ANSWER})
    stored = Idempotency(table, PEPPER).get("tenant:t_legacy", "idem-key-1")  # type: ignore[arg-type]
    assert table.reads == [(LEGACY_PK, "IDEMPOTENCY", True)]
    assert stored is not None
    assert (stored.request_hash, stored.status, stored.body) == ("hash-1", 201, {"id": "k_1", "secret": "sk-legacy"})


def test_an_answer_written_now_is_in_the_same_layout_as_before():
    # GIVEN an answer recorded by today's code
    write = Idempotency(OneItemTable(None), PEPPER).record_write(  # type: ignore[arg-type]
        "tenant:t_legacy", "idem-key-1", "hash-1", 201, {"id": "k_1"})
    blob = write["Put"]["Item"]["answer"]["B"]
    # THEN it is raw bytes, 12-byte nonce + ciphertext + 16-byte tag, and it opens again
    assert isinstance(blob, bytes) and len(blob) == 12 + len(b'{"status": 201, "body": {"id": "k_1"}}') + 16
    table = OneItemTable({"request_hash": "hash-1", "answer": blob})
    stored = Idempotency(table, PEPPER).get("tenant:t_legacy", "idem-key-1")  # type: ignore[arg-type]
    assert stored is not None and stored.body == {"id": "k_1"}


def test_the_two_uses_of_the_box_are_keyed_apart():
    # An answer's blob does not open as a webhook secret, nor under another pepper or key.
    as_secret = "v1." + base64.urlsafe_b64encode(LEGACY_ANSWER).decode()
    with pytest.raises(SealedSecretError):
        SecretBox.for_webhook_secrets(PEPPER).open(as_secret, context=LEGACY_PK)
    for pepper, key in ((b"pepper-rotated", "idem-key-1"), (PEPPER, "idem-key-2")):
        table = OneItemTable({"request_hash": "hash-1", "answer": LEGACY_ANSWER})
        with pytest.raises(ConflictError):
            Idempotency(table, pepper).get("tenant:t_legacy", key)  # type: ignore[arg-type]
