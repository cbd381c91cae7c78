"""Tenant API (OpenAI-compatible): embeddings, models, own usage, health."""

from __future__ import annotations

import json
import os

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
    result = {"status": "ok" if ready else "unavailable", "checks": checks}
    try:  # the local stack's supervisor: each service's state and restarts (infra/local/supervisor.py)
        with open(os.environ["MAAS_LOCAL_STATUS_FILE"], encoding="utf-8") as status_file:
            result["services"] = {name: {k: v for k, v in service.items() if k != "pids"}
                                  for name, service in json.load(status_file)["services"].items()}
    except (KeyError, OSError, ValueError, AttributeError):  # not on the local stack, or not published yet
        pass
    return json_response(result, status=200 if ready else 503)
