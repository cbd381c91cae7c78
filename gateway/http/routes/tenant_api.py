"""Tenant API (OpenAI-compatible): embeddings, models, own usage, health; who the key is
(``/v1/me``) and the tenant's own keys (``/v1/keys``), which the web console reads."""

from __future__ import annotations

from aws_lambda_powertools.event_handler.api_gateway import Router

from gateway.domain.registry import MINILM
from gateway.domain.scopes import Scope
from gateway.http.resolver import body, principal, query, request_id
from gateway.http.responses import json_response, list_body
from gateway.models.api import EmbeddingsRequest
from gateway.wiring import container

router = Router()


@router.post("/v1/embeddings")
def create_embeddings():  # type: ignore[no-untyped-def]
    caller = principal(router, Scope.INFERENCE, fresh=False)
    request = body(router, EmbeddingsRequest)
    result, headers = container().embeddings.create(request, caller, request_id(router))
    return json_response(result, headers=headers)


@router.get("/v1/models")
def list_models():  # type: ignore[no-untyped-def]
    # No admission check runs here, so the key is read fresh: revocation bites at once.
    principal(router, Scope.INFERENCE)
    return json_response(list_body([
        {"id": MINILM.id, "object": "model", "created": 0, "owned_by": MINILM.owned_by}
    ]))


@router.get("/v1/usage")
def own_usage():  # type: ignore[no-untyped-def]
    caller = principal(router, Scope.USAGE_READ)
    rows = container().reports.usage(start=query(router, "start"), end=query(router, "end"),
                                     tenant_id=caller.tenant.id, group_by=query(router, "group_by"))
    return json_response(list_body(rows))


@router.get("/v1/me")
def me():  # type: ignore[no-untyped-def]
    """Any valid key, whatever its scopes: the console learns from it what to show."""
    caller = principal(router, None)
    return json_response({"object": "principal", "key_id": caller.key.id, "tenant_id": caller.tenant.id,
                          "tenant_name": caller.tenant.name, "scopes": caller.key.scopes})


@router.get("/v1/keys")
def own_keys():  # type: ignore[no-untyped-def]
    """The caller's own tenant's keys, as admins see them (never a secret or a hash)."""
    caller = principal(router, Scope.USAGE_READ)
    keys, cursor = container().billing.list_keys(caller.tenant.id, query(router, "cursor", max_length=1024), 100)
    return json_response(list_body(keys, cursor))


@router.get("/health")
def health():  # type: ignore[no-untyped-def]
    """200 once every part answers: Redis, DynamoDB, the inference service."""
    c = container()
    checks = {}
    for name, probe in (
        ("redis", lambda: c.redis.ping()),
        ("dynamodb", lambda: c.store.get_plan("__health__") or True),
        ("inference", lambda: c.inference.ready()),
    ):
        try:
            checks[name] = "ok" if probe() else "unavailable"
        except Exception:  # a health check reports, it never raises
            checks[name] = "unavailable"
    ready = all(state == "ok" for state in checks.values())
    return json_response({"status": "ok" if ready else "unavailable", "checks": checks},
                         status=200 if ready else 503)
