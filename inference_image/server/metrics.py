"""Prometheus metrics, in a registry of their own (one per app), and the one CloudWatch metric
the container emits itself (Embedded Metric Format on stdout)."""

from __future__ import annotations

import json
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_P = "maas_inference"
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.ready = Gauge(f"{_P}_ready", "1 when the model is loaded and warm", registry=r)
        self.provider = Gauge(f"{_P}_provider", "execution provider in use", ["provider"],
                              registry=r)
        self.queue_depth = Gauge(f"{_P}_queue_depth", "requests waiting for compute",
                                 registry=r)
        self.in_flight = Gauge(f"{_P}_requests_in_flight", "requests admitted, not finished",
                               registry=r)
        self.requests = Counter(f"{_P}_requests", "HTTP requests", ["route", "status"],
                                registry=r)
        self.errors = Counter(f"{_P}_errors", "errors by type", ["type"], registry=r)
        self.batch_items = Histogram(
            f"{_P}_batch_items", "items per model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r)
        self.batch_tokens = Histogram(
            f"{_P}_batch_tokens", "real (unpadded) tokens per model call",
            buckets=(16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536), registry=r)
        self.batch_requests = Histogram(
            f"{_P}_batch_requests", "requests served together by one scheduling round",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.padding_ratio = Histogram(
            f"{_P}_batch_padding_ratio", "padding slots / all slots per model call",
            buckets=(0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0), registry=r)
        self.tokens = Counter(f"{_P}_tokens", "real tokens computed (rate() = tokens/s)",
                              registry=r)
        self.padded_tokens = Counter(f"{_P}_padded_tokens", "token slots computed, padding "
                                     "included", registry=r)
        self.items = Counter(f"{_P}_items", "items (sequences) embedded", registry=r)
        self.stage_seconds = Histogram(
            f"{_P}_stage_seconds", "latency per stage", ["stage"], buckets=_LATENCY, registry=r)

        self._children: dict[tuple[str, ...], object] = {}

    def _child(self, metric: object, *labels: str) -> object:
        """labels() resolves through a lock and a dict of tuples; cache it per label set."""
        key = (id(metric), *labels)
        child = self._children.get(key)  # type: ignore[call-overload]
        if child is None:
            child = self._children[key] = metric.labels(*labels)  # type: ignore[attr-defined]
        return child

    def observe_stage(self, stage: str, seconds: float) -> None:
        self._child(self.stage_seconds, stage).observe(seconds)  # type: ignore[attr-defined]

    def observe_request(self, route: str, total_s: float, queue_s: float,
                        compute_s: float) -> None:
        self._child(self.requests, route, "200").inc()  # type: ignore[attr-defined]
        self.observe_stage(f"total_{route}", total_s)
        self.observe_stage("queue", queue_s)
        self.observe_stage("compute", compute_s)

    def count_error(self, code: str, route: str, status: int) -> None:
        self._child(self.errors, code).inc()  # type: ignore[attr-defined]
        self._child(self.requests, route, str(status)).inc()  # type: ignore[attr-defined]

    def render(self) -> bytes:
        return generate_latest(self.registry)


EMF_NAMESPACE = "MaasGateway"
EMF_SERVICE = "maas-inference"
GPU_ACTIVE_METRIC = "InferenceGpuActive"


def gpu_active_line(provider: str | None, gpu_active: bool) -> str:
    """One EMF line: ``InferenceGpuActive`` 1 on a GPU provider, 0 on the CPU (or none), in
    namespace ``MaasGateway`` with the dimension ``service=maas-inference``."""
    return json.dumps({
        "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [{
            "Namespace": EMF_NAMESPACE, "Dimensions": [["service"]],
            "Metrics": [{"Name": GPU_ACTIVE_METRIC, "Unit": "None"}]}]},
        "service": EMF_SERVICE,
        GPU_ACTIVE_METRIC: 1 if gpu_active else 0,
        "provider": provider or "none",
    }, separators=(",", ":"))
