"""Tenant API (OpenAI-compatible): embeddings, models, own usage and balance, health; who the
key is (``/v1/me``) and the tenant's own keys (``/v1/keys``), which the web console reads."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from gateway.domain.scopes import Scope
from gateway.http.embeddings_route import embeddings_answer
from gateway.http.resolver import as_response, container_of, metered_caller, query, request_id
from gateway.http.responses import json_response, list_body

router = Router()


@router.post("/v1/embeddings")
def create_embeddings() -> Response:
    """functions/invoke answers this on its thin path (gateway/http/embeddings_route.py) and
    never routes it here; the resolver keeps the route, built by the same function, so that
    its route table stays the function's (the template and OpenAPI tests read it) and the
    two paths can be compared (tests/functional/test_embeddings_route.py)."""
    return as_response(embeddings_answer(container_of(router), router.current_event.raw_event, router.lambda_context,
                                         request_id(router)))


@router.get("/v1/models")
def list_models() -> Response:
    """The catalogued models the caller's plan includes (loaded here: the hot path's module)."""
    from gateway.services.embeddings import list_models as plan_models

    caller = metered_caller(router, Scope.INFERENCE)
    return json_response(list_body(plan_models(container_of(router).limits.plan(caller.tenant.plan))))


@router.get("/v1/usage")
def own_usage() -> Response:
    caller = metered_caller(router, Scope.USAGE_READ)
    rows = container_of(router).reports.usage(start=query(router, "start"), end=query(router, "end"),
                                              tenant_id=caller.tenant.id, group_by=query(router, "group_by"))
    return json_response(list_body(rows))


@router.get("/v1/balance")
def own_balance() -> Response:
    caller = metered_caller(router, Scope.USAGE_READ)
    return json_response(container_of(router).billing.balance(caller.tenant.id))


@router.get("/v1/me")
def me() -> Response:
    """Any valid key, whatever its scopes: the console learns from it what to show."""
    caller = metered_caller(router, None)
    return json_response({"object": "principal", "key_id": caller.key.id, "tenant_id": caller.tenant.id,
                          "tenant_name": caller.tenant.name, "scopes": caller.key.scopes})


@router.get("/v1/keys")
def own_keys() -> Response:
    """The caller's own tenant's keys, as admins see them (never a secret or a hash)."""
    caller = metered_caller(router, Scope.USAGE_READ)
    keys, cursor = container_of(router).billing.list_keys(caller.tenant.id, query(router, "cursor", max_length=1024),
                                                          100)
    return json_response(list_body(keys, cursor))


@router.get("/health")
def health() -> Response:
    """200 once every part answers: Redis, DynamoDB, the inference service."""
    c = container_of(router)
    checks = {}
    probes: dict[str, Callable[[], Any]] = {
        "redis": lambda: c.redis.ping(),
        "dynamodb": lambda: c.accounts.get_plan("__health__") or True,
        "inference": lambda: c.inference.ready(),
    }
    for name, probe in probes.items():
        try:
            checks[name] = "ok" if probe() else "unavailable"
        except Exception:  # a health check reports, it never raises
            checks[name] = "unavailable"
    ready = all(state == "ok" for state in checks.values())
    result: dict[str, Any] = {"status": "ok" if ready else "unavailable", "checks": checks}
    if c.settings.local_status_file:
        result["services"] = _local_services(c.settings.local_status_file)
    return json_response(result, status=200 if ready else 503)


def _local_services(path: str) -> dict[str, Any]:
    """The local stack's supervisor's view: each service's state and restarts (infra/local/supervisor.py)."""
    try:
        with open(path, encoding="utf-8") as status_file:
            return {name: {k: v for k, v in service.items() if k != "pids"}
                    for name, service in json.load(status_file)["services"].items()}
    except (KeyError, OSError, ValueError, AttributeError):  # not published yet
        return {}
