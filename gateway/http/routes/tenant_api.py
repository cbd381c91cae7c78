"""Tenant API (OpenAI-compatible): embeddings, models, own usage and balance, health; who the
key is (``/v1/me``) and the tenant's own keys (``/v1/keys``), which the web console reads."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from gateway.domain.registry import MINILM
from gateway.domain.scopes import Scope
from gateway.http.ratelimit_headers import ratelimit_headers
from gateway.http.resolver import body, body_size, container_of, metered_caller, principal, query, request_id
from gateway.http.responses import json_response, list_body
from gateway.models.api import EmbeddingsRequest

if TYPE_CHECKING:  # the hot path's clients load with the container, at the first request
    from gateway.services.embeddings import EmbeddingsResult

router = Router()


def render_embeddings(result: EmbeddingsResult) -> dict[str, Any]:
    """OpenAI's response body: float lists, or base64 of the little-endian float32 bytes."""
    vectors = result.embeddings
    encode: Callable[[int], Any] = (
        (lambda i: base64.b64encode(vectors.raw(i)).decode()) if result.encoding_format == "base64"
        else vectors.vector
    )
    data = [{"object": "embedding", "index": i, "embedding": encode(i)} for i in range(vectors.count)]
    return {"object": "list", "model": result.model, "data": data,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens, "cost": result.cost}}


@router.post("/v1/embeddings")
def create_embeddings() -> Response:
    caller = principal(router, Scope.INFERENCE, fresh=False)
    context = router.lambda_context
    time_left_s = context.get_remaining_time_in_millis() / 1000 if context is not None else None
    result = container_of(router).embeddings.create_from_body(
        lambda: body(router, EmbeddingsRequest), caller, request_id(router),
        body_bytes=body_size(router), time_left_s=time_left_s)
    return json_response(render_embeddings(result),
                         headers=ratelimit_headers(result.limits, result.decision, result.key_limits))


@router.get("/v1/models")
def list_models() -> Response:
    metered_caller(router, Scope.INFERENCE)
    return json_response(list_body([
        {"id": MINILM.id, "object": "model", "created": 0, "owned_by": MINILM.owned_by}
    ]))


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
