"""Admin operations: plans, tenants, keys, and the audit trail of every change.

DynamoDB holds the records; Redis holds a projection of the state the admission script
reads on every request (key revoked or expiring, tenant suspended).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from gateway.adapters.dynamo import Accounts, AuditLog
from gateway.adapters.dynamo.table import Write
from gateway.adapters.redis_store import RedisLimiter
from gateway.domain.admission import AdmissionUnavailable
from gateway.domain.keys import hash_key, new_key
from gateway.domain.plans import LimitOverrides, Plan
from gateway.errors import ConflictError, InvalidRequestError, NotFoundError, ServiceUnavailableError
from gateway.models.api import CreateKey, CreateTenant, RotateKey, UpdateTenant
from gateway.models.records import KeyRecord, TenantRecord, rfc3339, utcnow
from gateway.services.auth import Principal
from gateway.services.limits import LimitsResolver

T = TypeVar("T")
_RETRIES = 5  # optimistic-concurrency attempts before a 409

AUDIT_FIELDS = ("id", "timestamp", "actor_key_id", "actor_tenant_id", "action", "target", "request_id", "details")


def plan_view(plan: Plan) -> dict[str, Any]:
    return {
        "id": plan.name,
        "object": "plan",
        "description": plan.description,
        "currency": plan.currency,
        "limits": plan.limits.model_dump(),
        "price_per_1k_tokens": {model: format(price, "f") for model, price in plan.price_per_1k_tokens.items()},
    }


def key_view(key: KeyRecord, now: datetime | None = None) -> dict[str, Any]:
    """A key as admins see it: never its hash nor its secret."""
    return key.public(now or utcnow())


def _retrying(attempt: Callable[[], T]) -> T:
    for _ in range(_RETRIES - 1):
        try:
            return attempt()
        except ConflictError:
            continue
    return attempt()


class BillingService:
    """Every change commits its records and its audit entry in one DynamoDB transaction
    (conditional on what was read, so concurrent admin calls never lose one another), then
    projects the state admission reads into Redis. Redis unreachable before the commit: 503,
    nothing changed; after it: 503 as well, and the change is projected by the next call
    that reads it back (and by the projector)."""

    def __init__(self, *, accounts: Accounts, audit: AuditLog, limiter: RedisLimiter, limits: LimitsResolver,
                 pepper: bytes) -> None:
        self.accounts = accounts
        self.audit = audit
        self.limiter = limiter
        self.limits = limits
        self.pepper = pepper

    # -- views ---------------------------------------------------------------------------
    def tenant_view(self, tenant: TenantRecord) -> dict[str, Any]:
        return {
            "id": tenant.id,
            "object": "tenant",
            "name": tenant.name,
            "plan": tenant.plan,
            "status": tenant.status,
            "limits": self.limits.for_tenant(tenant).model_dump(),
            "limit_overrides": tenant.limit_overrides.model_dump(exclude_none=True),
            "created_at": tenant.created_at,
            "updated_at": tenant.updated_at,
        }

    # -- plans ---------------------------------------------------------------------------
    def list_plans(self) -> list[dict[str, Any]]:
        return [plan_view(plan) for plan in self.accounts.list_plans()]

    def _require_plan(self, name: str) -> Plan:
        plan = self.accounts.get_plan(name)
        if plan is None:
            raise InvalidRequestError(f"Unknown plan '{name[:64]}'.", param="plan", code="unknown_plan")
        return plan

    # -- tenants -------------------------------------------------------------------------
    def create_tenant(self, body: CreateTenant, actor: Principal, request_id: str) -> dict[str, Any]:
        self._require_plan(body.plan)
        tenant = TenantRecord(id=f"ten_{secrets.token_hex(8)}", name=body.name, plan=body.plan,
                              created_at=rfc3339(utcnow()))
        self._commit([self.accounts.new_tenant_write(tenant)],
                     self._entry(actor, "tenant.create", tenant.id, request_id, {"name": body.name, "plan": body.plan}))
        return self.tenant_view(tenant)

    def list_tenants(self, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        tenants, next_cursor = self.accounts.list_tenants(cursor=cursor, limit=limit)
        return [self.tenant_view(t) for t in tenants], next_cursor

    def get_tenant(self, tenant_id: str) -> TenantRecord:
        tenant = self.accounts.get_tenant(tenant_id, consistent=True)
        if tenant is None:
            raise NotFoundError(f"No tenant '{tenant_id}'.", param="tenant_id", code="tenant_not_found")
        return tenant

    def update_tenant(self, tenant_id: str, body: UpdateTenant, actor: Principal, request_id: str) -> dict[str, Any]:
        if body.plan is not None:
            self._require_plan(body.plan)
        if body.status == "suspended" and tenant_id == actor.tenant.id:
            raise InvalidRequestError("An admin key cannot suspend its own tenant.", param="status",
                                      code="cannot_suspend_self")
        details = body.model_dump(mode="json", exclude_unset=True)

        def attempt() -> TenantRecord:
            tenant = self.get_tenant(tenant_id)
            changes: dict[str, Any] = {"updated_at": rfc3339(utcnow())}
            if body.plan is not None:
                changes["plan"] = body.plan
            if body.status is not None:
                changes["status"] = body.status
            if body.limits is not None:
                # Fields sent as null drop their override; absent fields keep theirs.
                merged = tenant.limit_overrides.model_dump(exclude_none=True) | body.limits.model_dump(
                    include=body.limits.model_fields_set)
                changes["limit_overrides"] = LimitOverrides(**{k: v for k, v in merged.items() if v is not None})
            updated = tenant.model_copy(update=changes)
            self._commit([self.accounts.tenant_write(updated, expected=tenant)],
                         self._entry(actor, "tenant.update", tenant_id, request_id, details))
            return updated

        updated = _retrying(attempt)
        if body.status is not None:
            self._project_tenant(tenant_id)
        return self.tenant_view(updated)

    # -- keys ----------------------------------------------------------------------------
    def create_key(self, tenant_id: str, body: CreateKey, actor: Principal, request_id: str) -> dict[str, Any]:
        tenant = self.get_tenant(tenant_id)
        expires_at = rfc3339(body.expires_at) if body.expires_at else None
        record, plaintext = self._new_key(tenant.id, body.name, [s.value for s in body.scopes], expires_at)
        self._commit([self.accounts.new_key_write(record)],
                     self._entry(actor, "key.create", record.id, request_id,
                                 {"tenant_id": tenant.id, "name": body.name, "scopes": record.scopes,
                                  "expires_at": expires_at}))
        # The plaintext leaves exactly once, in this response.
        return key_view(record) | {"key": plaintext}

    def _new_key(self, tenant_id: str, name: str | None, scopes: list[str],
                 expires_at: str | None) -> tuple[KeyRecord, str]:
        parsed = new_key()
        record = KeyRecord(id=parsed.key_id, tenant_id=tenant_id, name=name, scopes=scopes,
                           key_hash=hash_key(parsed.plaintext, self.pepper),
                           created_at=rfc3339(utcnow()), expires_at=expires_at)
        return record, parsed.plaintext

    def list_keys(self, tenant_id: str, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        self.get_tenant(tenant_id)
        keys, next_cursor = self.accounts.list_keys(tenant_id, cursor=cursor, limit=limit)
        now = utcnow()
        return [key_view(key, now) for key in keys], next_cursor

    def _require_key(self, key_id: str) -> KeyRecord:
        key = self.accounts.get_key(key_id, consistent=True)
        if key is None:
            raise NotFoundError(f"No key '{key_id}'.", param="key_id", code="key_not_found")
        return key

    def revoke_key(self, key_id: str, actor: Principal, request_id: str) -> None:
        def attempt() -> KeyRecord:
            key = self._require_key(key_id)
            if key.revoked_at is None:
                self._commit([self.accounts.key_write(key.model_copy(update={"revoked_at": rfc3339(utcnow())}),
                                                      expected=key)],
                             self._entry(actor, "key.revoke", key.id, request_id, {"tenant_id": key.tenant_id}))
            return key

        key = _retrying(attempt)
        self._project_key(key.id)

    def rotate_key(self, key_id: str, body: RotateKey, actor: Principal, request_id: str) -> dict[str, Any]:
        old = self._require_key(key_id)
        now = utcnow()
        if not old.is_usable(now):
            raise InvalidRequestError("Only an active key can be rotated.", param="key_id", code="key_inactive")
        if old.rotated_to is not None:
            # A second successor would leave the first one dangling: rotate the successor instead.
            raise ConflictError(f"This key was already rotated to '{old.rotated_to}'; rotate that key instead.",
                                param="key_id", code="already_rotated")
        grace_end = now + timedelta(seconds=body.grace_seconds)
        # The successor keeps the tenant (so its limits, quota and usage history), the name,
        # the scopes and the key's own expiry (never the grace of the key it replaces).
        record, plaintext = self._new_key(old.tenant_id, old.name, old.scopes, old.expires_at)
        rotated = old.model_copy(update={"grace_until": rfc3339(grace_end), "rotated_to": record.id})
        self._commit([self.accounts.new_key_write(record), self.accounts.key_write(rotated, expected=old)],
                     self._entry(actor, "key.rotate", old.id, request_id,
                                 {"tenant_id": old.tenant_id, "new_key_id": record.id,
                                  "grace_seconds": body.grace_seconds, "old_key_expires_at": rfc3339(grace_end)}),
                     conflict="The key changed while it was being rotated; nothing was rotated.")
        self._project_key(old.id)
        return key_view(record) | {"key": plaintext, "rotated_from": old.id}

    # -- the Redis projection --------------------------------------------------------------
    def _project_tenant(self, tenant_id: str) -> None:
        """Redis says what DynamoDB says (read back consistently, so the last writer's state
        wins whatever order concurrent calls land in): suspension bites on the next request."""
        tenant = self.accounts.get_tenant(tenant_id, consistent=True)
        if tenant is not None:
            self._project(lambda: self.limiter.set_tenant_status(tenant_id, tenant.status))

    def _project_key(self, key_id: str) -> None:
        key = self.accounts.get_key(key_id, consistent=True)
        if key is None:
            return
        if key.revoked_at is not None:
            self._project(lambda: self.limiter.revoke_key(key.tenant_id, key.id))
        elif key.expires_ms():
            self._project(lambda: self.limiter.set_key_expiry(key.tenant_id, key.id, key.expires_ms()))

    @staticmethod
    def _project(write: Callable[[], None]) -> None:
        try:
            write()
        except AdmissionUnavailable as error:
            raise ServiceUnavailableError("The change is saved but not yet in effect; retry shortly.",
                                          headers={"Retry-After": "1"}) from error

    # -- audit ---------------------------------------------------------------------------
    def _commit(self, writes: list[Write], entry: dict[str, Any], *,
                conflict: str = "The record changed concurrently; retry.") -> None:
        """The change and its audit entry, together or not at all."""
        self.accounts.table.transact([*writes, self.audit.entry_write(entry)], conflict=conflict)

    @staticmethod
    def _entry(actor: Principal, action: str, target: str, request_id: str, details: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex,
            "timestamp": rfc3339(utcnow()),
            "actor_key_id": actor.key.id,
            "actor_tenant_id": actor.tenant.id,
            "action": action,
            "target": target,
            "request_id": request_id,
            "details": details,
        }

    def list_audit(self, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        page = self.audit.list(cursor=cursor, limit=limit)
        return [{k: item.get(k) for k in AUDIT_FIELDS} for item in page.items], page.next_cursor
