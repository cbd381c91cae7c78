"""Admin operations: plans, tenants, keys, and the audit trail of every change."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.adapters.dynamo import Store
from gateway.adapters.redis_store import RedisLimiter
from gateway.domain.keys import hash_key, new_key
from gateway.domain.plans import LimitOverrides, Plan
from gateway.errors import InvalidRequestError, NotFoundError
from gateway.models.api import CreateKey, CreateTenant, RotateKey, UpdateTenant
from gateway.models.records import KeyRecord, TenantRecord, rfc3339, utcnow
from gateway.services.auth import Principal
from gateway.services.limits import LimitsResolver


def plan_view(plan: Plan) -> dict[str, Any]:
    return {
        "id": plan.name,
        "object": "plan",
        "description": plan.description,
        "currency": plan.currency,
        "limits": plan.limits.model_dump(),
        "price_per_1k_tokens": {model: format(price, "f") for model, price in plan.price_per_1k_tokens.items()},
    }


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
        }

    # -- plans ---------------------------------------------------------------------------
    def list_plans(self) -> list[dict[str, Any]]:
        return [plan_view(plan) for plan in self.store.list_plans()]

    def _require_plan(self, name: str) -> Plan:
        plan = self.store.get_plan(name)
        if plan is None:
            raise InvalidRequestError(f"Unknown plan '{name}'.", param="plan", code="unknown_plan")
        return plan

    # -- tenants -------------------------------------------------------------------------
    def create_tenant(self, body: CreateTenant, actor: Principal, request_id: str) -> dict[str, Any]:
        self._require_plan(body.plan)
        tenant = TenantRecord(id=f"ten_{secrets.token_hex(8)}", name=body.name, plan=body.plan,
                              created_at=rfc3339(utcnow()))
        self.store.create_tenant(tenant)
        self.limiter.set_tenant_status(tenant.id, tenant.status)
        self._audit(actor, "tenant.create", tenant.id, request_id, {"plan": body.plan})
        return self.tenant_view(tenant)

    def get_tenant(self, tenant_id: str) -> TenantRecord:
        tenant = self.store.get_tenant(tenant_id, consistent=True)
        if tenant is None:
            raise NotFoundError(f"No tenant '{tenant_id}'.", param="tenant_id", code="tenant_not_found")
        return tenant

    def update_tenant(self, tenant_id: str, body: UpdateTenant, actor: Principal, request_id: str) -> dict[str, Any]:
        tenant = self.get_tenant(tenant_id)
        changes: dict[str, Any] = {}
        if body.plan is not None:
            self._require_plan(body.plan)
            changes["plan"] = body.plan
        if body.status is not None:
            changes["status"] = body.status
        if body.limits is not None:
            merged = tenant.limit_overrides.model_dump(exclude_none=True) | body.limits.model_dump(exclude_none=True)
            changes["limit_overrides"] = LimitOverrides(**merged)
        updated = tenant.model_copy(update=changes | {"updated_at": rfc3339(utcnow())})
        self.store.put_tenant(updated)
        if body.status is not None:
            # Redis is what admission reads: suspension bites on the very next request.
            self.limiter.set_tenant_status(tenant.id, body.status)
        self._audit(actor, "tenant.update", tenant.id, request_id,
                    body.model_dump(mode="json", exclude_none=True))
        return self.tenant_view(updated)

    # -- keys ----------------------------------------------------------------------------
    def create_key(self, tenant_id: str, body: CreateKey, actor: Principal, request_id: str) -> dict[str, Any]:
        tenant = self.get_tenant(tenant_id)
        expires_at = rfc3339(body.expires_at) if body.expires_at else None
        issued = self._issue(tenant.id, body.name, [s.value for s in body.scopes], expires_at)
        self._audit(actor, "key.create", issued["id"], request_id, {"tenant_id": tenant.id, "scopes": issued["scopes"]})
        return issued

    def _issue(self, tenant_id: str, name: str | None, scopes: list[str], expires_at: str | None) -> dict[str, Any]:
        parsed = new_key()
        record = KeyRecord(id=parsed.key_id, tenant_id=tenant_id, name=name, scopes=scopes,
                           key_hash=hash_key(parsed.plaintext, self.pepper),
                           created_at=rfc3339(utcnow()), expires_at=expires_at)
        self.store.create_key(record)
        # The plaintext leaves exactly once, in this response.
        return record.public() | {"key": parsed.plaintext}

    def list_keys(self, tenant_id: str, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        self.get_tenant(tenant_id)
        keys, next_cursor = self.store.list_keys(tenant_id, cursor=cursor)
        return [key.public() for key in keys], next_cursor

    def _require_key(self, key_id: str) -> KeyRecord:
        key = self.store.get_key(key_id, consistent=True)
        if key is None:
            raise NotFoundError(f"No key '{key_id}'.", param="key_id", code="key_not_found")
        return key

    def revoke_key(self, key_id: str, actor: Principal, request_id: str) -> None:
        key = self._require_key(key_id)
        if key.revoked_at is None:
            self.store.put_key(key.model_copy(update={"revoked_at": rfc3339(utcnow())}))
        self.limiter.revoke_key(key.tenant_id, key.id)
        self._audit(actor, "key.revoke", key.id, request_id, {"tenant_id": key.tenant_id})

    def rotate_key(self, key_id: str, body: RotateKey, actor: Principal, request_id: str) -> dict[str, Any]:
        old = self._require_key(key_id)
        if not old.is_usable(utcnow()):
            raise InvalidRequestError("Only an active key can be rotated.", param="key_id", code="key_inactive")
        issued = self._issue(old.tenant_id, old.name, old.scopes, old.expires_at)
        grace_end = datetime.now(UTC) + timedelta(seconds=body.grace_seconds)
        if old.expires_at is not None:
            grace_end = min(grace_end, datetime.fromisoformat(old.expires_at))
        self.store.put_key(old.model_copy(update={"expires_at": rfc3339(grace_end), "rotated_to": issued["id"]}))
        if body.grace_seconds == 0:
            self.limiter.revoke_key(old.tenant_id, old.id)
        else:
            self.limiter.set_key_expiry(old.tenant_id, old.id, int(grace_end.timestamp() * 1000))
        self._audit(actor, "key.rotate", old.id, request_id,
                    {"tenant_id": old.tenant_id, "new_key_id": issued["id"], "grace_seconds": body.grace_seconds})
        return issued

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

    def list_audit(self, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        page = self.store.list_audit(cursor=cursor)
        fields = ("id", "timestamp", "actor_key_id", "actor_tenant_id", "action", "target", "request_id", "details")
        return [{k: item.get(k) for k in fields} for item in page.items], page.next_cursor
