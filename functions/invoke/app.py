"""Tenant API: POST /v1/embeddings, GET /v1/models, GET /v1/usage, GET /health."""

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from gateway.http.resolver import build_resolver
from gateway.http.routes import tenant_api
from gateway.telemetry import logger, metrics, traced
from gateway.wiring import Container

container = Container()
app = build_resolver(container, tenant_api.router)


@traced
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
