"""Powertools Logger, Metrics and Tracer: one of each per execution environment.

Entry modules stack Powertools' decorators (``traced``, ``inject_lambda_context``,
``log_metrics``). The invoke function's POST /v1/embeddings path does what they give it by
hand, cheaply (``begin_invocation``, ``publish_metrics``): per request that is a few keys
on the logger and one EMF line."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.logger import _is_cold_start
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider import cold_start

SERVICE = "maas-gateway"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace="MaasGateway", service=SERVICE)

Handler = Callable[[dict[str, Any], Any], Any]


@functools.cache
def tracer() -> Any:
    """Powertools Tracer, built at the first invocation: the X-Ray SDK imports botocore, which
    the import budget keeps off the cold-start import path (the first request loads it for its
    clients anyway). Built, it patches botocore and http.client, so in Lambda the AWS calls and
    the inference hop are subsegments of the invocation's trace. Outside Lambda it is a no-op."""
    from aws_lambda_powertools import Tracer

    return Tracer(service=SERVICE)


def traced(handler: Handler) -> Handler:
    """Powertools Tracer's ``capture_lambda_handler`` (a ``## handler`` subsegment with the
    cold start and the response), built at the first invocation."""
    captured: Handler | None = None

    @functools.wraps(handler)
    def wrapper(event: dict[str, Any], context: Any) -> Any:
        nonlocal captured
        if captured is None:
            captured = tracer().capture_lambda_handler(handler)
        return captured(event, context)

    return wrapper


def begin_invocation(correlation_id: str, context: Any) -> None:
    """What ``inject_lambda_context(correlation_id_path=API_GATEWAY_REST)`` puts on every log
    line, by hand: the context's fields, cold start, and API Gateway's request id as the
    correlation id. Tracing stays with the X-Ray SDK's patches (``tracer``): the handler
    subsegment is left out, since it would serialise every answer (a vector list) into the trace."""
    tracer()
    logger.append_keys(cold_start=_is_cold_start(), function_name=context.function_name,
                       function_memory_size=context.memory_limit_in_mb, function_arn=context.invoked_function_arn,
                       function_request_id=context.aws_request_id, correlation_id=correlation_id)


def publish_metrics(context: Any) -> None:
    """What ``log_metrics(capture_cold_start_metric=True)`` does after a handler, by hand: the
    ColdStart metric once per execution environment (the flag Powertools' decorator reads, so
    the two paths of one function count it once), then this invocation's metrics as one EMF
    line (none: nothing printed, and no warning raised per request)."""
    if cold_start.is_cold_start:
        cold_start.is_cold_start = False
        metrics.provider.add_cold_start_metric(context=context)
    if metrics.provider.metric_set:
        metrics.flush_metrics()


__all__ = ["MetricUnit", "begin_invocation", "logger", "metrics", "publish_metrics", "traced", "tracer"]
