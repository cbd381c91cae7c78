"""Admin operations: plans, tenants, keys, credit, budgets, and the audit trail of every change.

DynamoDB holds the records; Redis holds a projection of what the admission script reads on
every request (key states and limits, tenant status, money settings, credit grants).

Every change commits its records, its audit entry, a projection mark (the outbox) and, with an
``Idempotency-Key``, its answer, in ONE DynamoDB transaction, conditional on what was read
(concurrent admin calls never lose one another). Then Redis gets the change and the mark is
cleared. So a call either completes, or answers 503 with nothing changed (Redis or DynamoDB
unreachable before the commit), or answers 503 after the commit (Redis lost right then): the
projector then projects the tenant from DynamoDB, and a retry with the same Idempotency-Key
returns the first answer.

Collaborators come grouped by purpose (``BillingStores``: where a change is written;
``Projection``: how the limiter is kept current, through the ``TenantProjection`` port of
gateway/domain/admission.py, never a concrete limiter); gateway/wiring.py builds them.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from gateway.adapters.dynamo import Accounts, AuditLog, Credits, Outbox
from gateway.adapters.dynamo.table import Write
from gateway.adapters.outages import is_outage
from gateway.domain.admission import AdmissionUnavailable, Grant, KeySettings, MoneyReading, TenantProjection
from gateway.domain.events import Event, EventType, event_id
from gateway.domain.keys import hash_key, new_key
from gateway.domain.money import fmt, fmt_nano, to_nano
from gateway.domain.plans import BillingMode, LimitOverrides, Plan
from gateway.errors import RETRY_SOON, ConflictError, InvalidRequestError, NotFoundError, ServiceUnavailableError
from gateway.models.api import CreateCredit, CreateKey, CreateTenant, RotateKey, UpdateKey, UpdateTenant
from gateway.models.records import CreditGrant, KeyRecord, TenantRecord, budget_view, rfc3339, utcnow
from gateway.services.billing_views import amount_of, budget_of, grant_view, key_view, plan_view, tenant_view
from gateway.services.calls import Call, IdempotentCalls, audit_entry
from gateway.services.limits import LimitsResolver
from gateway.services.seeding import Seeder, month_bounds

T = TypeVar("T")
_RETRIES = 5  # optimistic-concurrency attempts before a 409

AUDIT_FIELDS = ("id", "timestamp", "actor_key_id", "actor_tenant_id", "action", "target", "request_id", "details")


class EventWrites(Protocol):
    """Where business events go in the same transaction as their cause (gateway EventLog)."""

    def event_write(self, event: Event) -> Write: ...


def _retrying(attempt: Callable[[], T]) -> T:
    for _ in range(_RETRIES - 1):
        try:
            return attempt()
        except ConflictError:
            continue
    return attempt()


@dataclass(frozen=True, slots=True)
class BillingStores:
    """Where a change is written, records, audit entry and outbox mark in one transaction."""

    accounts: Accounts
    audit: AuditLog
    credits: Credits
    outbox: Outbox  # the tenants whose change the limiter may not have yet
    events: EventWrites | None = None  # business events, written with their cause


@dataclass(frozen=True, slots=True)
class Projection:
    """How the limiter comes to say what the stores say: its tenant state (a port), and the
    seeder that rebuilds a tenant's whole state from the stores."""

    limiter: TenantProjection
    seeder: Seeder


class BillingService:
    def __init__(self, *, stores: BillingStores, projection: Projection, calls: IdempotentCalls,
                 limits: LimitsResolver, pepper: bytes) -> None:
        self.stores = stores
        self.projection = projection
        self.calls = calls
        self.limits = limits
        self.pepper = pepper

    # -- views ---------------------------------------------------------------------------
    def tenant_view(self, tenant: TenantRecord) -> dict[str, Any]:
        return tenant_view(tenant, self.limits)

    # -- plans ---------------------------------------------------------------------------
    def list_plans(self) -> list[dict[str, Any]]:
        return [plan_view(plan) for plan in self.stores.accounts.list_plans()]

    def _require_plan(self, name: str) -> Plan:
        plan = self.stores.accounts.get_plan(name)
        if plan is None:
            raise InvalidRequestError(f"Unknown plan '{name[:64]}'.", param="plan", code="unknown_plan")
        return plan

    # -- tenants -------------------------------------------------------------------------
    def create_tenant(self, body: CreateTenant, call: Call) -> dict[str, Any]:
        def run(call: Call) -> tuple[dict[str, Any], Callable[[], None]]:
            self._require_plan(body.plan)
            tenant = TenantRecord(id=f"ten_{secrets.token_hex(8)}", name=body.name, plan=body.plan,
                                  created_at=rfc3339(utcnow()))
            view = self.tenant_view(tenant)
            project = self._projector(tenant.id)
            self._commit(call, [self.stores.accounts.new_tenant_write(tenant)], tenant.id, "tenant.create", tenant.id,
                         {"name": body.name, "plan": body.plan}, answer=view, project=project)
            return view, project

        return self._idempotent(call, "tenant.create", "", body, run)

    def list_tenants(self, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        tenants, next_cursor = self.stores.accounts.list_tenants(cursor=cursor, limit=limit)
        return [self.tenant_view(t) for t in tenants], next_cursor

    def get_tenant(self, tenant_id: str) -> TenantRecord:
        tenant = self.stores.accounts.get_tenant(tenant_id, consistent=True)
        if tenant is None:
            raise NotFoundError(f"No tenant '{tenant_id}'.", param="tenant_id", code="tenant_not_found")
        return tenant

    def update_tenant(self, tenant_id: str, body: UpdateTenant, call: Call) -> dict[str, Any]:
        if body.plan is not None:
            self._require_plan(body.plan)
        if body.status == "suspended" and tenant_id == call.actor.tenant.id:
            raise InvalidRequestError("An admin key cannot suspend its own tenant.", param="status",
                                      code="cannot_suspend_self")
        details = body.model_dump(mode="json", exclude_unset=True)

        def attempt() -> TenantRecord:
            tenant = self.get_tenant(tenant_id)
            currency = self.limits.plan(body.plan or tenant.plan).currency
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
            if body.billing is not None:
                billing = tenant.billing.model_dump()
                if "mode" in body.billing.model_fields_set and body.billing.mode is not None:
                    billing["mode"] = body.billing.mode
                if "low_balance_alert" in body.billing.model_fields_set:
                    low = body.billing.low_balance_alert
                    billing["low_balance_alert"] = (None if low is None else amount_of(
                        low, field="billing.low_balance_alert", currency=currency))
                changes["billing"] = BillingMode(**billing)
            if "budget" in body.model_fields_set:
                changes["budget"] = None if body.budget is None else budget_of(body.budget, "budget", currency)
            updated = tenant.model_copy(update=changes)
            writes = [self.stores.accounts.tenant_write(updated, expected=tenant)]
            if body.status == "suspended" and tenant.status != "suspended" and self.stores.events is not None:
                writes.append(self.stores.events.event_write(Event(
                    id=event_id(tenant_id, "tenant.suspended", updated.updated_at or ""),
                    type=EventType.TENANT_SUSPENDED, created=int(utcnow().timestamp()), tenant_id=tenant_id,
                    data={"tenant_id": tenant_id})))
            self._commit(call, writes, tenant_id, "tenant.update", tenant_id, details,
                         project=self._projector(tenant_id))
            return updated

        return self.tenant_view(_retrying(attempt))

    # -- keys ----------------------------------------------------------------------------
    def create_key(self, tenant_id: str, body: CreateKey, call: Call) -> dict[str, Any]:
        def run(call: Call) -> tuple[dict[str, Any], Callable[[], None]]:
            tenant = self.get_tenant(tenant_id)
            currency = self.limits.plan(tenant.plan).currency
            expires_at = rfc3339(body.expires_at) if body.expires_at else None
            record, plaintext = self._new_key(tenant.id, body.name, [s.value for s in body.scopes], expires_at)
            record = record.model_copy(update={
                "limits": body.limits or LimitOverrides(),
                "budget": budget_of(body.budget, "budget", currency) if body.budget else None})
            answer = key_view(record) | {"key": plaintext}  # the plaintext leaves exactly once, in this answer
            writes = [self.stores.accounts.new_key_write(record)]
            if (index := self.stores.accounts.expiry_index_write(record)) is not None:
                writes.append(index)
            project = self._projector(tenant.id)
            self._commit(call, writes, tenant.id, "key.create", record.id,
                         {"tenant_id": tenant.id, "name": body.name, "scopes": record.scopes, "expires_at": expires_at,
                          "limits": record.limits.model_dump(exclude_none=True),
                          "budget": record.budget.model_dump(mode="json") if record.budget else None},
                         answer=answer, project=project)
            return answer, project

        return self._idempotent(call, "key.create", tenant_id, body, run)

    def _new_key(self, tenant_id: str, name: str | None, scopes: list[str],
                 expires_at: str | None) -> tuple[KeyRecord, str]:
        parsed = new_key()
        record = KeyRecord(id=parsed.key_id, tenant_id=tenant_id, name=name, scopes=scopes,
                           key_hash=hash_key(parsed.plaintext, self.pepper),
                           created_at=rfc3339(utcnow()), expires_at=expires_at)
        return record, parsed.plaintext

    def list_keys(self, tenant_id: str, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        self.get_tenant(tenant_id)
        keys, next_cursor = self.stores.accounts.list_keys(tenant_id, cursor=cursor, limit=limit)
        now = utcnow()
        return [key_view(key, now) for key in keys], next_cursor

    def _require_key(self, key_id: str) -> KeyRecord:
        key = self.stores.accounts.get_key(key_id, consistent=True)
        if key is None:
            raise NotFoundError(f"No key '{key_id}'.", param="key_id", code="key_not_found")
        return key

    def update_key(self, key_id: str, body: UpdateKey, call: Call) -> dict[str, Any]:
        details = body.model_dump(mode="json", exclude_unset=True)

        def attempt() -> KeyRecord:
            key = self._require_key(key_id)
            tenant = self.get_tenant(key.tenant_id)
            changes: dict[str, Any] = {}
            if "name" in body.model_fields_set:
                changes["name"] = body.name
            if body.limits is not None:
                merged = key.limits.model_dump(exclude_none=True) | body.limits.model_dump(
                    include=body.limits.model_fields_set)
                changes["limits"] = LimitOverrides(**{k: v for k, v in merged.items() if v is not None})
            if "budget" in body.model_fields_set:
                changes["budget"] = (None if body.budget is None else
                                     budget_of(body.budget, "budget", self.limits.plan(tenant.plan).currency))
            updated = key.model_copy(update=changes)
            self._commit(call, [self.stores.accounts.key_write(updated, expected=key)], key.tenant_id, "key.update",
                         key.id, details, project=self._projector(key.tenant_id))
            return updated

        return key_view(_retrying(attempt))

    def revoke_key(self, key_id: str, call: Call) -> None:
        def attempt() -> KeyRecord:
            key = self._require_key(key_id)
            if key.revoked_at is None:
                revoked = key.model_copy(update={"revoked_at": rfc3339(utcnow())})
                writes = [self.stores.accounts.key_write(revoked, expected=key)]
                if self.stores.events is not None:
                    writes.append(self.stores.events.event_write(Event(
                        id=event_id(key.tenant_id, "key.revoked", key.id), type=EventType.KEY_REVOKED,
                        created=int(utcnow().timestamp()), tenant_id=key.tenant_id, data={"key_id": key.id})))
                self._commit(call, writes, key.tenant_id, "key.revoke", key.id, {"tenant_id": key.tenant_id},
                             project=self._projector(key.tenant_id))
            return key

        key = _retrying(attempt)
        # Already revoked: make sure Redis says so too.
        self._project(lambda: self.projection.limiter.revoke_key(key.tenant_id, key.id))

    def rotate_key(self, key_id: str, body: RotateKey, call: Call) -> dict[str, Any]:
        def run(call: Call) -> tuple[dict[str, Any], Callable[[], None]]:
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
            # the scopes, its own limits and budget, and the key's own expiry (never the grace of
            # the key it replaces).
            record, plaintext = self._new_key(old.tenant_id, old.name, old.scopes, old.expires_at)
            record = record.model_copy(update={"limits": old.limits, "budget": old.budget})
            rotated = old.model_copy(update={"grace_until": rfc3339(grace_end), "rotated_to": record.id})
            accounts = self.stores.accounts
            writes = [accounts.new_key_write(record), accounts.key_write(rotated, expected=old)]
            writes += [w for w in (accounts.expiry_index_write(record), accounts.expiry_index_write(rotated))
                       if w is not None]
            answer = key_view(record) | {"key": plaintext, "rotated_from": old.id}
            project = self._projector(old.tenant_id)
            self._commit(call, writes, old.tenant_id, "key.rotate", old.id,
                         {"tenant_id": old.tenant_id, "new_key_id": record.id, "grace_seconds": body.grace_seconds,
                          "old_key_expires_at": rfc3339(grace_end)}, answer=answer, project=project,
                         conflict="The key changed while it was being rotated; nothing was rotated.")
            return answer, project

        return self._idempotent(call, "key.rotate", key_id, body, run)

    # -- credit and balances ---------------------------------------------------------------
    def grant_credits(self, tenant_id: str, body: CreateCredit, call: Call) -> dict[str, Any]:
        def run(call: Call) -> tuple[dict[str, Any], Callable[[], None]]:
            tenant = self.get_tenant(tenant_id)
            currency = self.limits.plan(tenant.plan).currency
            amount = amount_of(body.amount, field="amount", currency=currency)
            grant = CreditGrant(id=f"cr_{secrets.token_hex(10)}", tenant_id=tenant.id, amount=amount,
                                currency=currency, expires_at=rfc3339(body.expires_at) if body.expires_at else None,
                                note=body.note, created_at=rfc3339(utcnow()))
            answer = grant_view(grant, None)
            project = self._projector(tenant.id)
            self._commit(call, [self.stores.credits.grant_write(grant)], tenant.id, "credits.grant", grant.id,
                         {"tenant_id": tenant.id, "amount": fmt(amount), "currency": currency,
                          "expires_at": grant.expires_at, "note": grant.note}, answer=answer, project=project)
            return answer, project

        return self._idempotent(call, "credits.grant", tenant_id, body, run)

    def list_credits(self, tenant_id: str) -> list[dict[str, Any]]:
        self.get_tenant(tenant_id)
        state = self._money_state(tenant_id)
        left = {g.id: g.remaining_nano for g in state.grants} if state else {}
        return [grant_view(g, left.get(g.id)) for g in reversed(self.stores.credits.grants(tenant_id, consistent=True))]

    def balance(self, tenant_id: str) -> dict[str, Any]:
        """What the tenant has left and spent this month, live from the admission state."""
        tenant = self.get_tenant(tenant_id)
        currency = self.limits.plan(tenant.plan).currency
        state = self._money_state(tenant_id)
        if state is None:
            raise ServiceUnavailableError("This tenant's balance cannot be read right now; retry shortly.",
                                          headers=RETRY_SOON)
        now_ms = int(utcnow().timestamp() * 1000)
        left = {g.id: g.remaining_nano for g in state.grants}
        grants = [grant_view(g, left.get(g.id, 0)) | {"expired": bool(g.expires_ms() and g.expires_ms() <= now_ms)}
                  for g in self.stores.credits.grants(tenant_id, consistent=True)]
        return {"object": "balance", "tenant_id": tenant.id, "currency": currency, "mode": tenant.billing.mode,
                "credits_remaining": fmt_nano(state.credits_remaining(now_ms)),
                "month_to_date_cost": fmt_nano(state.month_charged_nano), "budget": budget_view(tenant.budget),
                "low_balance_alert": (fmt(tenant.billing.low_balance_alert)
                                      if tenant.billing.low_balance_alert is not None else None),
                "grants": grants}

    def _money_state(self, tenant_id: str) -> MoneyReading | None:
        month = utcnow().strftime("%Y-%m")
        try:
            state = self.projection.limiter.money_state(tenant_id, month)
            if state is None:
                self.projection.seeder.seed(tenant_id)
                state = self.projection.limiter.money_state(tenant_id, month)
        except AdmissionUnavailable as error:
            raise ServiceUnavailableError("The balance cannot be read right now; retry shortly.",
                                          headers=RETRY_SOON) from error
        return state

    # -- the Redis projection --------------------------------------------------------------
    def _projector(self, tenant_id: str) -> Callable[[], None]:
        return lambda: self.project_tenant(tenant_id)

    def project_tenant(self, tenant_id: str) -> None:
        """Make Redis say what DynamoDB says about the tenant (read back consistently, so the
        last writer's state wins whatever order concurrent calls land in): status, each key's
        state, limits and budget, money settings, grants. A tenant Redis does not hold yet is
        seeded whole instead."""
        state = self.projection.seeder.state(tenant_id)
        if state is None:
            return
        _, _, start_ms, end_ms = month_bounds(utcnow())
        if self.projection.limiter.seed(state, month_start_ms=start_ms, month_end_ms=end_ms):
            return
        self.projection.limiter.set_tenant_status(tenant_id, "suspended" if state.suspended else "active")
        for key_id, expiry in state.key_states.items():
            if expiry == 0:
                self.projection.limiter.revoke_key(tenant_id, key_id)
            else:
                self.projection.limiter.set_key_expiry(tenant_id, key_id, expiry)
        self.projection.limiter.set_money(tenant_id, state.money)
        for key_id in state.key_ids:
            self.projection.limiter.set_key_settings(tenant_id, key_id, state.key_settings.get(key_id, KeySettings()))
        for grant in self.stores.credits.grants(tenant_id, consistent=True):
            self.projection.limiter.add_grant(tenant_id, Grant(grant.id, grant.expires_ms(), to_nano(grant.amount)))

    def repair_projections(self, limit: int = 100) -> int:
        """The projector: project every tenant whose change is not in Redis yet; returns how many."""
        done = 0
        for tenant_id, change in self.stores.outbox.pending(limit):
            try:
                self.project_tenant(tenant_id)
            except AdmissionUnavailable:
                return done  # Redis still away: the marks stay for the next run
            self.stores.outbox.clear(tenant_id, change)
            done += 1
        return done

    @staticmethod
    def _project(write: Callable[[], None]) -> None:
        try:
            write()
        except AdmissionUnavailable as error:
            raise ServiceUnavailableError("The change is saved but not yet in effect; retry shortly.",
                                          headers=RETRY_SOON) from error

    # -- one change: records + audit + outbox mark (+ answer), one transaction ---------------
    def _commit(self, call: Call, writes: list[Write], tenant_id: str, action: str, target: str,
                details: dict[str, Any], *, project: Callable[[], None], answer: dict[str, Any] | None = None,
                conflict: str = "The record changed concurrently; retry.") -> None:
        try:
            self.projection.limiter.ping()  # Redis away: refuse now, with nothing changed
        except AdmissionUnavailable as error:
            raise ServiceUnavailableError("Changes cannot be applied right now; retry shortly.",
                                          headers=RETRY_SOON) from error
        change = uuid.uuid4().hex
        writes = [*writes, self.stores.audit.entry_write(audit_entry(call, action, target, details)),
                  self.stores.outbox.mark_write(tenant_id, change)]
        if answer is not None and (kept := self.calls.answer_write(call, answer)) is not None:
            writes.append(kept)
        try:
            self.stores.accounts.table.transact(writes, conflict=conflict)
        except (ConflictError, InvalidRequestError):
            raise
        except Exception as error:
            if is_outage(error):
                raise ServiceUnavailableError("Changes cannot be applied right now; retry shortly.",
                                              headers=RETRY_SOON) from error
            raise
        self._project(project)
        self.stores.outbox.clear(tenant_id, change)

    def _idempotent(self, call: Call, operation: str, target: str, body: BaseModel,
                    run: Callable[[Call], tuple[dict[str, Any], Callable[[], None]]]) -> dict[str, Any]:
        return self.calls.run(call, operation, target, body, lambda c: run(c)[0], on_replay=self._replayed)

    def _replayed(self, answer: dict[str, Any]) -> None:
        """A retried call: the first may have stopped before Redis had its change."""
        tenant_id = str(answer.get("tenant_id") or answer.get("id") or "")
        if tenant_id.startswith("ten_"):
            self._project(self._projector(tenant_id))

    def list_audit(self, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        page = self.stores.audit.list(cursor=cursor, limit=limit)
        return [{k: item.get(k) for k in AUDIT_FIELDS} for item in page.items], page.next_cursor
