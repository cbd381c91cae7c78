"""Billing API (scope admin): plans, tenants, keys, audit."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from gateway.domain.keys import is_key_id
from gateway.domain.scopes import Scope
from gateway.errors import NotFoundError
from gateway.http.resolver import body, principal, query, request_id
from gateway.http.responses import json_response, list_body
from gateway.models.api import CreateKey, CreateTenant, RotateKey, UpdateTenant
from gateway.wiring import container

router = Router()


def _admin():  # type: ignore[no-untyped-def]
    return principal(router, Scope.ADMIN)


def _key_id(value: str) -> str:
    if not is_key_id(value):
        raise NotFoundError(f"No key '{value[:64]}'.", param="key_id", code="key_not_found")
    return value


@router.get("/billing/plans")
def list_plans():  # type: ignore[no-untyped-def]
    _admin()
    return json_response(list_body(container().billing.list_plans()))


@router.post("/billing/tenants")
def create_tenant():  # type: ignore[no-untyped-def]
    actor = _admin()
    tenant = container().billing.create_tenant(body(router, CreateTenant), actor, request_id(router))
    return json_response(tenant, status=201)


@router.get("/billing/tenants")
def list_tenants():  # type: ignore[no-untyped-def]
    _admin()
    billing = container().billing
    tenants, cursor = billing.store.list_tenants(cursor=query(router, "cursor"))
    return json_response(list_body([billing.tenant_view(t) for t in tenants], cursor))


@router.get("/billing/tenants/<tenant_id>")
def get_tenant(tenant_id: str):  # type: ignore[no-untyped-def]
    _admin()
    billing = container().billing
    return json_response(billing.tenant_view(billing.get_tenant(tenant_id)))


@router.patch("/billing/tenants/<tenant_id>")
def update_tenant(tenant_id: str):  # type: ignore[no-untyped-def]
    actor = _admin()
    update = body(router, UpdateTenant)
    return json_response(container().billing.update_tenant(tenant_id, update, actor, request_id(router)))


@router.post("/billing/tenants/<tenant_id>/keys")
def create_key(tenant_id: str):  # type: ignore[no-untyped-def]
    actor = _admin()
    request = body(router, CreateKey)
    return json_response(container().billing.create_key(tenant_id, request, actor, request_id(router)),
                         status=201)


@router.get("/billing/tenants/<tenant_id>/keys")
def list_keys(tenant_id: str):  # type: ignore[no-untyped-def]
    _admin()
    keys, cursor = container().billing.list_keys(tenant_id, query(router, "cursor"))
    return json_response(list_body(keys, cursor))


@router.delete("/billing/keys/<key_id>")
def revoke_key(key_id: str):  # type: ignore[no-untyped-def]
    actor = _admin()
    container().billing.revoke_key(_key_id(key_id), actor, request_id(router))
    return Response(status_code=204, body=None)


@router.post("/billing/keys/<key_id>/rotate")
def rotate_key(key_id: str):  # type: ignore[no-untyped-def]
    actor = _admin()
    request = body(router, RotateKey)
    return json_response(container().billing.rotate_key(_key_id(key_id), request, actor, request_id(router)),
                         status=201)


@router.get("/billing/audit")
def list_audit():  # type: ignore[no-untyped-def]
    _admin()
    entries, cursor = container().billing.list_audit(query(router, "cursor"))
    return json_response(list_body(entries, cursor))
