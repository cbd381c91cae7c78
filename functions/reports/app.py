"""Finance API (scope finance): usage, ledger, invoices."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from gateway.http.resolver import build_resolver
from gateway.http.responses import with_request_id
from gateway.http.routes import reports_api
from gateway.telemetry import logger, metrics

app = build_resolver()
app.include_router(reports_api.router)


@with_request_id
@logger.inject_lambda_context
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
