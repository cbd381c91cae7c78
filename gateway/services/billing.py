"""Admin operations: plans, tenants, keys, and the audit trail of every change.

DynamoDB holds the records; Redis holds the state the admission script reads on every
request (key revoked or expiring, tenant suspended). Every change writes DynamoDB first
(conditionally, so concurrent admin changes never lose one another), then Redis, then
re-derives the Redis state from a consistent read: whatever order two concurrent admin
calls land in, Redis ends up saying what DynamoDB says, and a revocation is never undone.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from gateway.adapters.dynamo import Store
from gateway.adapters.redis_store import RedisLimiter
from gateway.domain.keys import hash_key, new_key
from gateway.domain.plans import LimitOverrides, Plan
from gateway.errors import ConflictError, InvalidRequestError, NotFoundError
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
    now = now or utcnow()
    if key.revoked_at is not None:
        status = "revoked"
    elif key.expires_at is not None and now >= datetime.fromisoformat(key.expires_at):
        status = "expired"
    else:
        status = "active"
    return key.public() | {"status": status, "rotated_to": key.rotated_to}


def _retrying(attempt: Callable[[], T]) -> T:
    for _ in range(_RETRIES - 1):
        try:
            return attempt()
        except ConflictError:
            continue
    return attempt()


class BillingService:
    def __init__(self, *, store: Store, limiter: RedisLimiter, limits: LimitsResolver, pepper: bytes) -> None:
        self.store = store
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
        return [plan_view(plan) for plan in self.store.list_plans()]

    def _require_plan(self, name: str) -> Plan:
        plan = self.store.get_plan(name)
        if plan is None:
            raise InvalidRequestError(f"Unknown plan '{name[:64]}'.", param="plan", code="unknown_plan")
        return plan

    # -- tenants -------------------------------------------------------------------------
    def create_tenant(self, body: CreateTenant, actor: Principal, request_id: str) -> dict[str, Any]:
        self._require_plan(body.plan)
        tenant = TenantRecord(id=f"ten_{secrets.token_hex(8)}", name=body.name, plan=body.plan,
                              created_at=rfc3339(utcnow()))
        self.store.create_tenant(tenant)
        self.limiter.set_tenant_status(tenant.id, tenant.status)
        self._audit(actor, "tenant.create", tenant.id, request_id, {"name": body.name, "plan": body.plan})
        return self.tenant_view(tenant)

    def list_tenants(self, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        tenants, next_cursor = self.store.list_tenants(cursor=cursor, limit=limit)
        return [self.tenant_view(t) for t in tenants], next_cursor

    def get_tenant(self, tenant_id: str) -> TenantRecord:
        tenant = self.store.get_tenant(tenant_id, consistent=True)
        if tenant is None:
            raise NotFoundError(f"No tenant '{tenant_id}'.", param="tenant_id", code="tenant_not_found")
        return tenant

    def update_tenant(self, tenant_id: str, body: UpdateTenant, actor: Principal, request_id: str) -> dict[str, Any]:
        if body.plan is not None:
            self._require_plan(body.plan)
        if body.status == "suspended" and tenant_id == actor.tenant.id:
            raise InvalidRequestError("An admin key cannot suspend its own tenant.", param="status",
                                      code="cannot_suspend_self")

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
            self.store.put_tenant(updated, expected=tenant)
            return updated

        updated = _retrying(attempt)
        if body.status is not None:
            # Redis is what admission reads: suspension bites on the very next request.
            self.limiter.set_tenant_status(tenant_id, body.status)
            self._sync_tenant_status(tenant_id)
        self._audit(actor, "tenant.update", tenant_id, request_id, body.model_dump(mode="json", exclude_unset=True))
        return self.tenant_view(updated)

    def _sync_tenant_status(self, tenant_id: str) -> None:
        tenant = self.store.get_tenant(tenant_id, consistent=True)
        if tenant is not None:
            self.limiter.set_tenant_status(tenant_id, tenant.status)

    # -- keys ----------------------------------------------------------------------------
    def create_key(self, tenant_id: str, body: CreateKey, actor: Principal, request_id: str) -> dict[str, Any]:
        tenant = self.get_tenant(tenant_id)
        expires_at = rfc3339(body.expires_at) if body.expires_at else None
        issued = self._issue(tenant.id, body.name, [s.value for s in body.scopes], expires_at)
        self._audit(actor, "key.create", issued["id"], request_id,
                    {"tenant_id": tenant.id, "name": body.name, "scopes": issued["scopes"], "expires_at": expires_at})
        return issued

    def _issue(self, tenant_id: str, name: str | None, scopes: list[str], expires_at: str | None) -> dict[str, Any]:
        parsed = new_key()
        record = KeyRecord(id=parsed.key_id, tenant_id=tenant_id, name=name, scopes=scopes,
                           key_hash=hash_key(parsed.plaintext, self.pepper),
                           created_at=rfc3339(utcnow()), expires_at=expires_at)
        self.store.create_key(record)
        # The plaintext leaves exactly once, in this response.
        return key_view(record) | {"key": parsed.plaintext}

    def list_keys(self, tenant_id: str, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        self.get_tenant(tenant_id)
        keys, next_cursor = self.store.list_keys(tenant_id, cursor=cursor, limit=limit)
        now = utcnow()
        return [key_view(key, now) for key in keys], next_cursor

    def _require_key(self, key_id: str) -> KeyRecord:
        key = self.store.get_key(key_id, consistent=True)
        if key is None:
            raise NotFoundError(f"No key '{key_id}'.", param="key_id", code="key_not_found")
        return key

    def revoke_key(self, key_id: str, actor: Principal, request_id: str) -> None:
        def attempt() -> KeyRecord:
            key = self._require_key(key_id)
            if key.revoked_at is None:
                self.store.put_key(key.model_copy(update={"revoked_at": rfc3339(utcnow())}), expected=key)
            return key

        key = _retrying(attempt)
        self.limiter.revoke_key(key.tenant_id, key.id)
        self._audit(actor, "key.revoke", key.id, request_id, {"tenant_id": key.tenant_id})

    def rotate_key(self, key_id: str, body: RotateKey, actor: Principal, request_id: str) -> dict[str, Any]:
        old = self._require_key(key_id)
        if not old.is_usable(utcnow()):
            raise InvalidRequestError("Only an active key can be rotated.", param="key_id", code="key_inactive")
        grace_end = datetime.now(UTC) + timedelta(seconds=body.grace_seconds)
        if old.expires_at is not None:
            grace_end = min(grace_end, datetime.fromisoformat(old.expires_at))
        # The successor keeps the tenant (so its limits, quota and usage history), the name,
        # the scopes and the expiry of the key it replaces.
        issued = self._issue(old.tenant_id, old.name, old.scopes, old.expires_at)
        try:
            self.store.put_key(old.model_copy(update={"expires_at": rfc3339(grace_end), "rotated_to": issued["id"]}),
                               expected=old)
        except ConflictError:
            # The old key changed under us (revoked, rotated): the new key must not outlive it.
            self.store.put_key(self._require_key(issued["id"]).model_copy(update={"revoked_at": rfc3339(utcnow())}))
            self.limiter.revoke_key(old.tenant_id, issued["id"])
            raise ConflictError("The key changed while it was being rotated; nothing was rotated.",
                                param="key_id", code="concurrent_update") from None
        self.limiter.set_key_expiry(old.tenant_id, old.id, int(grace_end.timestamp() * 1000))
        self._sync_key_state(old.id)
        self._audit(actor, "key.rotate", old.id, request_id,
                    {"tenant_id": old.tenant_id, "new_key_id": issued["id"], "grace_seconds": body.grace_seconds,
                     "old_key_expires_at": rfc3339(grace_end)})
        return issued | {"rotated_from": old.id}

    def _sync_key_state(self, key_id: str) -> None:
        """Re-derive the admission state of a key from its record: a revocation that landed
        between our write and our Redis update wins."""
        key = self.store.get_key(key_id, consistent=True)
        if key is not None and key.revoked_at is not None:
            self.limiter.revoke_key(key.tenant_id, key.id)

    # -- audit ---------------------------------------------------------------------------
    def _audit(self, actor: Principal, action: str, target: str, request_id: str, details: dict[str, Any]) -> None:
        self.store.put_audit({
            "id": uuid.uuid4().hex,
            "timestamp": rfc3339(utcnow()),
            "actor_key_id": actor.key.id,
            "actor_tenant_id": actor.tenant.id,
            "action": action,
            "target": target,
            "request_id": request_id,
            "details": details,
        })

    def list_audit(self, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        page = self.store.list_audit(cursor=cursor, limit=limit)
        return [{k: item.get(k) for k in AUDIT_FIELDS} for item in page.items], page.next_cursor
