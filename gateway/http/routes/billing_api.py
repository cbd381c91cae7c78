"""Billing API (scope admin): plans, tenants, keys, credit, balances, audit, webhooks; and the
event listing (scope finance, which admin implies).

Every route authenticates and checks the scope first, before it looks at the path, the
query or the body: a caller without ``admin`` learns nothing, not even whether a tenant or
a key exists."""

from __future__ import annotations

import re

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from gateway.domain.events import EventType
from gateway.domain.keys import is_key_id
from gateway.domain.scopes import Scope
from gateway.errors import InvalidRequestError, NotFoundError
from gateway.http.resolver import body, container_of, header, principal, query, request_id
from gateway.http.responses import json_response, list_body
from gateway.models.api import CreateCredit, CreateKey, CreateTenant, RotateKey, UpdateKey, UpdateTenant
from gateway.models.webhooks import CreateWebhook
from gateway.services.auth import Principal
from gateway.services.calls import Call

router = Router()


def _admin() -> Principal:
    return principal(router, Scope.ADMIN)


_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def _call() -> Call:
    """The admin caller, this request's id and its Idempotency-Key (checked after the
    credential, before anything else)."""
    actor = _admin()
    key = header(router, "Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise InvalidRequestError("'Idempotency-Key' is 1 to 255 printable ASCII characters.",
                                  param="Idempotency-Key")
    return Call(actor=actor, request_id=request_id(router), idempotency_key=key)


_TENANT_ID = re.compile(r"^ten_[0-9A-Za-z_]{1,64}$")
_WEBHOOK_ID = re.compile(r"^wh_[0-9a-f]{24}$")
MAX_PAGE = 100


def _key_id(value: str) -> str:
    if not is_key_id(value):
        raise NotFoundError("No such key.", param="key_id", code="key_not_found")
    return value


def _tenant_id(value: str) -> str:
    # Ids the store can never hold are a 404 at once, without a DynamoDB call.
    if not _TENANT_ID.match(value):
        raise NotFoundError("No such tenant.", param="tenant_id", code="tenant_not_found")
    return value


def _page() -> tuple[str | None, int]:
    """``cursor`` and ``limit`` (1..100, default 100) of a paginated list."""
    raw = query(router, "limit")
    if raw is None:
        limit = MAX_PAGE
    elif raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_PAGE:
        limit = int(raw)
    else:
        raise InvalidRequestError(f"'limit' is an integer from 1 to {MAX_PAGE}.", param="limit")
    return query(router, "cursor", max_length=1024), limit


@router.get("/billing/plans")
def list_plans() -> Response:
    _admin()
    return json_response(list_body(container_of(router).billing.list_plans()))


@router.post("/billing/tenants")
def create_tenant() -> Response:
    call = _call()
    return json_response(container_of(router).billing.create_tenant(body(router, CreateTenant), call), status=201)


@router.get("/billing/tenants")
def list_tenants() -> Response:
    _admin()
    tenants, cursor = container_of(router).billing.list_tenants(*_page())
    return json_response(list_body(tenants, cursor))


@router.get("/billing/tenants/<tenant_id>")
def get_tenant(tenant_id: str) -> Response:
    _admin()
    billing = container_of(router).billing
    return json_response(billing.tenant_view(billing.get_tenant(_tenant_id(tenant_id))))


@router.patch("/billing/tenants/<tenant_id>")
def update_tenant(tenant_id: str) -> Response:
    call = _call()
    update = body(router, UpdateTenant)
    return json_response(container_of(router).billing.update_tenant(_tenant_id(tenant_id), update, call))


@router.post("/billing/tenants/<tenant_id>/keys")
def create_key(tenant_id: str) -> Response:
    call = _call()
    request = body(router, CreateKey)
    return json_response(container_of(router).billing.create_key(_tenant_id(tenant_id), request, call), status=201)


@router.get("/billing/tenants/<tenant_id>/keys")
def list_keys(tenant_id: str) -> Response:
    _admin()
    keys, cursor = container_of(router).billing.list_keys(_tenant_id(tenant_id), *_page())
    return json_response(list_body(keys, cursor))


@router.patch("/billing/keys/<key_id>")
def update_key(key_id: str) -> Response:
    call = _call()
    update = body(router, UpdateKey)
    return json_response(container_of(router).billing.update_key(_key_id(key_id), update, call))


@router.delete("/billing/keys/<key_id>")
def revoke_key(key_id: str) -> Response:
    call = _call()
    container_of(router).billing.revoke_key(_key_id(key_id), call)
    return Response(status_code=204, body=None)


@router.post("/billing/keys/<key_id>/rotate")
def rotate_key(key_id: str) -> Response:
    call = _call()
    request = body(router, RotateKey)
    return json_response(container_of(router).billing.rotate_key(_key_id(key_id), request, call), status=201)


@router.post("/billing/tenants/<tenant_id>/credits")
def grant_credits(tenant_id: str) -> Response:
    call = _call()
    request = body(router, CreateCredit)
    return json_response(container_of(router).billing.grant_credits(_tenant_id(tenant_id), request, call),
                         status=201)


@router.get("/billing/tenants/<tenant_id>/credits")
def list_credits(tenant_id: str) -> Response:
    _admin()
    return json_response(list_body(container_of(router).billing.list_credits(_tenant_id(tenant_id))))


@router.get("/billing/tenants/<tenant_id>/balance")
def tenant_balance(tenant_id: str) -> Response:
    _admin()
    return json_response(container_of(router).billing.balance(_tenant_id(tenant_id)))


@router.get("/billing/audit")
def list_audit() -> Response:
    _admin()
    entries, cursor = container_of(router).billing.list_audit(*_page())
    return json_response(list_body(entries, cursor))


# -- webhooks and events (CONTRACT.md §8) ----------------------------------------------------
def _webhook_id(value: str) -> str:
    if not _WEBHOOK_ID.match(value):
        raise NotFoundError("No such webhook.", param="webhook_id", code="webhook_not_found")
    return value


@router.post("/billing/webhooks")
def create_webhook() -> Response:
    call = _call()
    request = body(router, CreateWebhook)
    return json_response(container_of(router).webhook_service.create(request, call), status=201)


@router.get("/billing/webhooks")
def list_webhooks() -> Response:
    _admin()
    return json_response(list_body(container_of(router).webhook_service.list_webhooks()))


@router.delete("/billing/webhooks/<webhook_id>")
def delete_webhook(webhook_id: str) -> Response:
    call = _call()
    container_of(router).webhook_service.delete(_webhook_id(webhook_id), call)
    return Response(status_code=204, body=None)


@router.get("/billing/webhooks/<webhook_id>/deliveries")
def list_deliveries(webhook_id: str) -> Response:
    _admin()
    deliveries, cursor = container_of(router).webhook_service.list_deliveries(_webhook_id(webhook_id), *_page())
    return json_response(list_body(deliveries, cursor))


@router.get("/billing/events")
def list_events() -> Response:
    principal(router, Scope.FINANCE)
    kind = query(router, "type")
    if kind is not None and kind not in EventType._value2member_map_:
        raise InvalidRequestError(f"Unknown event type; one of: {', '.join(EventType)}.", param="type",
                                  code="unknown_event_type")
    tenant_id = query(router, "tenant_id")
    if tenant_id is not None and not _TENANT_ID.match(tenant_id):
        raise InvalidRequestError("'tenant_id' is not a tenant id (ten_...).", param="tenant_id")
    cursor, limit = _page()
    events, next_cursor = container_of(router).webhook_service.list_events(
        type=EventType(kind) if kind else None, tenant_id=tenant_id, cursor=cursor, limit=limit)
    return json_response(list_body(events, next_cursor))
