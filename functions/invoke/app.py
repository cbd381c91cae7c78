"""Tenant API: POST /v1/embeddings, GET /v1/models, GET /v1/usage, GET /health.

POST /v1/embeddings, nearly every request this function serves, takes the thin route
(gateway/http/embeddings_route.py): no resolver, the decorators' work done by hand
(gateway/telemetry.py). Every other request goes to the Powertools resolver, built at the
first one, with the usual decorators; both answer through the same rendering and errors."""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools.logging import correlation_paths

from gateway.http import embeddings_route
from gateway.telemetry import begin_invocation, logger, metrics, publish_metrics, traced
from gateway.wiring import Container

container = Container()


@functools.cache
def resolver() -> Any:
    """The resolver for the other routes (its import is most of the handler's cold import)."""
    from gateway.http.resolver import build_resolver
    from gateway.http.routes import batch_api, tenant_api

    return build_resolver(container, tenant_api.router, batch_api.router)


@traced
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics(capture_cold_start_metric=True)
def _resolve(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return resolver().resolve(event, context)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if embeddings_route.is_embeddings(event):
        begin_invocation(event["requestContext"]["requestId"], context)
        try:
            return embeddings_route.handle(container, event, context)
        finally:
            publish_metrics(context)
    return _resolve(event, context)


def __getattr__(name: str) -> Any:
    # ``app``, the resolver, as every entry module has it (tests read its routes).
    if name == "app":
        return resolver()
    raise AttributeError(name)
