"""API key format, generation and hashing.

A key looks like ``maas_<key id: 16 base62>_<secret: 32 base62><checksum: 6 base62>``
(GitHub's token format is the model): the fixed prefix lets secret scanners find leaked
keys, the public key id locates the record without revealing the secret, and the CRC32
checksum rejects a mistyped key before any store is touched. The secret carries
32 * log2(62) ~ 190 random bits. At rest only an HMAC-SHA256 of the whole key under a
server-side pepper is kept, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass

PREFIX = "maas_"
KEY_ID_PREFIX = "key_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_LEN, _SECRET_LEN, _CHECKSUM_LEN = 16, 32, 6
_KEY_RE = re.compile(
    rf"^{PREFIX}([0-9A-Za-z]{{{_ID_LEN}}})_([0-9A-Za-z]{{{_SECRET_LEN}}})([0-9A-Za-z]{{{_CHECKSUM_LEN}}})$"
)
_KEY_ID_RE = re.compile(rf"^{KEY_ID_PREFIX}[0-9A-Za-z]{{{_ID_LEN}}}$")


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        digits.append(_ALPHABET[rem])
    return "".join(reversed(digits))


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_LEN)


@dataclass(frozen=True, slots=True)
class ParsedKey:
    key_id: str  # public, e.g. "key_3kT9..."
    plaintext: str

    def __repr__(self) -> str:  # never let a secret reach a log line through repr()
        return f"ParsedKey(key_id={self.key_id!r})"


def new_key() -> ParsedKey:
    raw_id, secret = _random_base62(_ID_LEN), _random_base62(_SECRET_LEN)
    body = f"{PREFIX}{raw_id}_{secret}"
    return ParsedKey(key_id=KEY_ID_PREFIX + raw_id, plaintext=body + _checksum(body))


def parse_key(candidate: str) -> ParsedKey | None:
    """The key's id if ``candidate`` is well formed with a valid checksum, else None.
    Pure: no I/O, so malformed or mistyped keys cost nothing."""
    match = _KEY_RE.match(candidate)
    if match is None:
        return None
    raw_id, secret, checksum = match.groups()
    if not hmac.compare_digest(_checksum(f"{PREFIX}{raw_id}_{secret}"), checksum):
        return None
    return ParsedKey(key_id=KEY_ID_PREFIX + raw_id, plaintext=candidate)


def is_key_id(value: str) -> bool:
    return bool(_KEY_ID_RE.match(value))


def hash_key(plaintext: str, pepper: bytes) -> str:
    return hmac.new(pepper, plaintext.encode(), hashlib.sha256).hexdigest()


def verify_key(plaintext: str, stored_hash: str, pepper: bytes) -> bool:
    return hmac.compare_digest(hash_key(plaintext, pepper), stored_hash)
