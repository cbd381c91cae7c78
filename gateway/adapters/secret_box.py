"""Secrets at rest that we must read back (webhook signing secrets): sealed with AES-256-GCM
under a key derived (HKDF-SHA256) from the key pepper, so read access to the table alone
reveals nothing; the pepper lives in SSM (AWS) or the local state dir.

Each sealed value is bound to a context (the webhook's id, as associated data): copied onto
another item it does not open. Format: ``v1.<base64url(12-byte nonce + ciphertext + tag)>``;
the version names the derivation, so a later key (a rotated pepper, KMS) can sit beside it."""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = "v1"
_INFO = b"maas-gateway/webhook-secrets/v1"
_NONCE_BYTES = 12


class SealedSecretError(Exception):
    """A sealed value that does not open: tampered with, moved, or sealed under another pepper."""


class SecretBox:
    def __init__(self, pepper: bytes) -> None:
        key = HKDF(algorithm=SHA256(), length=32, salt=None, info=_INFO).derive(pepper)
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, *, context: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{_VERSION}.{base64.urlsafe_b64encode(sealed).decode()}"

    def open(self, sealed: str, *, context: str) -> str:
        version, _, payload = sealed.partition(".")
        if version != _VERSION:
            raise SealedSecretError(f"unknown sealing version {version!r}")
        try:
            raw = base64.urlsafe_b64decode(payload)
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode()).decode()
        except (InvalidTag, ValueError) as error:
            raise SealedSecretError("the sealed secret does not open with this pepper and context") from error
