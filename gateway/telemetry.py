"""Powertools Logger, Metrics and Tracer: one of each per execution environment."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = "maas-gateway"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace="MaasGateway", service=SERVICE)

Handler = Callable[[dict[str, Any], Any], Any]


def traced(handler: Handler) -> Handler:
    """Powertools Tracer's ``capture_lambda_handler``, built at the first invocation: the X-Ray
    SDK imports botocore, which the import budget keeps off the cold-start import path (the
    first request loads it for its clients anyway). Outside Lambda the Tracer is a no-op."""
    captured: Handler | None = None

    @functools.wraps(handler)
    def wrapper(event: dict[str, Any], context: Any) -> Any:
        nonlocal captured
        if captured is None:
            from aws_lambda_powertools import Tracer

            captured = Tracer(service=SERVICE).capture_lambda_handler(handler)
        return captured(event, context)

    return wrapper


__all__ = ["MetricUnit", "logger", "metrics", "traced"]
