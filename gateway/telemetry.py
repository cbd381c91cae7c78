"""Powertools Logger and Metrics, one instance each per container."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger(service="maas-gateway")
metrics = Metrics(namespace="MaasGateway", service="maas-gateway")

__all__ = ["MetricUnit", "logger", "metrics"]
