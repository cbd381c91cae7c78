"""Who is calling: key verification, scope and tenant checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.domain.keys import parse_key, verify_key
from gateway.domain.scopes import Scope, grants
from gateway.errors import AuthenticationError, PermissionDeniedError
from gateway.models.records import KeyRecord, TenantRecord, utcnow
from gateway.services.cache import TtlCache

if TYPE_CHECKING:  # boto3 loads when the container builds the repositories, not at import
    from gateway.adapters.dynamo import Accounts

INVALID_KEY = "Incorrect API key provided."
_NO_HASH = "0" * 64
# Unknown key ids remembered per container: anyone can make well-formed keys (the checksum is
# public, for secret scanners), so a forged id must not cost a store read each time.
MAX_UNKNOWN_KEY_IDS = 100_000


@dataclass(frozen=True, slots=True)
class Principal:
    key: KeyRecord
    tenant: TenantRecord


class Authenticator:
    def __init__(self, accounts: Accounts, pepper: bytes, *, key_ttl_s: float, tenant_ttl_s: float) -> None:
        self.accounts = accounts
        self.pepper = pepper
        self.keys: TtlCache[str, KeyRecord] = TtlCache(key_ttl_s, self._load_key, max_misses=MAX_UNKNOWN_KEY_IDS)
        self.tenants: TtlCache[str, TenantRecord] = TtlCache(tenant_ttl_s, accounts.get_tenant)

    def _load_key(self, key_id: str) -> KeyRecord | None:
        # A miss is confirmed by a strongly consistent read before it is remembered: a key
        # created a moment ago is never cached as unknown (ids are random: none comes later).
        return self.accounts.get_key(key_id) or self.accounts.get_key(key_id, consistent=True)

    def authenticate(self, credential: str, scope: Scope | None, *, fresh: bool) -> Principal:
        """``fresh`` reads the records with strongly consistent reads (admin, finance and
        usage routes); the hot path uses the caches, and the admission script re-checks
        revocation, expiry and suspension in Redis on every request. ``scope=None``: any
        valid key (``GET /v1/me``)."""
        parsed = parse_key(credential)
        if parsed is None:
            raise AuthenticationError(INVALID_KEY)
        if self.keys.known_missing(parsed.key_id):
            key = None
        elif fresh:
            key = self.keys.put(parsed.key_id, self.accounts.get_key(parsed.key_id, consistent=True))
        else:
            key = self.keys.get(parsed.key_id)
        # An unknown id costs the same HMAC as a wrong secret, and is cached like a known one:
        # timing tells nothing.
        if not verify_key(parsed.plaintext, key.key_hash if key else _NO_HASH, self.pepper) or key is None:
            raise AuthenticationError(INVALID_KEY)
        if not key.is_usable(utcnow()):
            raise AuthenticationError("This API key has been revoked or has expired.", code="key_inactive")
        tenant = (self.accounts.get_tenant(key.tenant_id, consistent=True) if fresh
                  else self.tenants.get(key.tenant_id))
        if tenant is None:
            raise AuthenticationError(INVALID_KEY)
        if scope is not None and not grants(key.scopes, scope):
            raise PermissionDeniedError(f"This API key lacks the '{scope}' scope.")
        if tenant.status != "active":
            raise PermissionDeniedError("This tenant is suspended.", code="tenant_suspended")
        return Principal(key=key, tenant=tenant)
