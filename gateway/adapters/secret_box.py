"""Secrets at rest that we must read back, sealed with AES-256-GCM under a key derived
(HKDF-SHA256) from the key pepper, so read access to the table alone reveals nothing; the
pepper lives in SSM (AWS) or the local state dir. ``SecretBox`` is the one place AES-GCM is
written; each use derives its own key (``info``), so a value sealed for one never opens as
another's.

Each sealed value is bound to a context (associated data): copied onto another item it does
not open. Two layouts, both kept as they were first written, so what is stored still opens:

- text (``seal``/``open``; webhook signing secrets, the context is the webhook's id):
  ``v1.<base64url(12-byte nonce + ciphertext + tag)>``; the version names the derivation, so
  a later key (a rotated pepper, KMS) can sit beside it;
- bytes (``seal_bytes``/``open_bytes``; idempotent answers, the context is the record's key):
  ``12-byte nonce + ciphertext + tag``, stored as a DynamoDB binary.

tests/unit/test_sealed_formats.py opens values sealed before the two shared this class."""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = "v1"
_NONCE_BYTES = 12
# The HKDF info of each use: changing one makes everything sealed for it unreadable.
WEBHOOK_SECRETS = b"maas-gateway/webhook-secrets/v1"
IDEMPOTENT_ANSWERS = b"maas idempotency v1"


class SealedSecretError(Exception):
    """A sealed value that does not open: tampered with, moved, or sealed under another pepper."""


class SecretBox:
    def __init__(self, pepper: bytes, *, info: bytes) -> None:
        key = HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(pepper)
        self._aead = AESGCM(key)

    @classmethod
    def for_webhook_secrets(cls, pepper: bytes) -> SecretBox:
        return cls(pepper, info=WEBHOOK_SECRETS)

    @classmethod
    def for_idempotent_answers(cls, pepper: bytes) -> SecretBox:
        return cls(pepper, info=IDEMPOTENT_ANSWERS)

    def seal_bytes(self, plaintext: bytes, *, context: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open_bytes(self, sealed: bytes, *, context: str) -> bytes:
        try:
            return self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], context.encode())
        except (InvalidTag, ValueError) as error:
            raise SealedSecretError("the sealed value does not open with this pepper and context") from error

    def seal(self, plaintext: str, *, context: str) -> str:
        sealed = self.seal_bytes(plaintext.encode(), context=context)
        return f"{_VERSION}.{base64.urlsafe_b64encode(sealed).decode()}"

    def open(self, sealed: str, *, context: str) -> str:
        version, _, payload = sealed.partition(".")
        if version != _VERSION:
            raise SealedSecretError(f"unknown sealing version {version!r}")
        try:
            raw = base64.urlsafe_b64decode(payload)
        except ValueError as error:
            raise SealedSecretError("the sealed secret is not base64url") from error
        try:
            return self.open_bytes(raw, context=context).decode()
        except UnicodeDecodeError as error:  # cannot happen for what seal wrote: the tag holds
            raise SealedSecretError("the sealed secret is not text") from error
