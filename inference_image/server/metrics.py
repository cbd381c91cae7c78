"""Prometheus metrics, in a registry of their own (one per app)."""

from __future__ import annotations

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

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
