"""Settings, read once from the environment (the same names in Lambda and locally).

Every field ``x`` is read from ``MAAS_X``; pydantic validates and converts them."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PREFIX = "MAAS_"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str = "local"
    table_name: str = "maas-local"
    # Only set locally (moto's server); in AWS boto3 finds DynamoDB itself.
    dynamodb_endpoint: str | None = None
    aws_region: str = "us-east-1"

    redis_url: str = "redis://127.0.0.1:6380/0"
    redis_cluster: bool = False
    redis_username: str | None = None
    redis_password_secret_arn: str | None = None
    redis_password: str | None = None  # only locally (the stack's generated one); AWS uses the secret
    redis_timeout_s: float = 0.5
    # rediss:// always verifies the CA; MemoryDB cluster discovery may name nodes by IP, which
    # its certificates do not cover (gateway/adapters/redis_client.py).
    redis_tls_check_hostname: bool = True

    # Local inference server, or a SageMaker endpoint name in AWS.
    inference_url: str | None = "http://127.0.0.1:8080"
    sagemaker_endpoint: str | None = None
    # Below API Gateway's 29 s integration timeout.
    inference_timeout_s: float = 20.0

    # Keyed hash of API keys: the pepper itself locally, an SSM parameter name in AWS.
    key_pepper: str | None = None
    key_pepper_param: str | None = None

    # When Redis is unreachable: the quota fails closed (503, nothing charged) by default;
    # "open" admits on the in-process rate limiter alone and meters straight to DynamoDB.
    quota_on_redis_failure: Literal["closed", "open"] = "closed"

    max_body_bytes: int = 2 * 1024 * 1024
    # This endpoint's largest request in tokens, on top of each plan's own: what the inference
    # hardware completes well inside the deadline (docs/BENCHMARKS.md: 8,192 on a CPU that
    # other tenants share, the API's own 524,288 on a GPU).
    max_request_tokens: int = Field(default=524_288, ge=1, le=524_288)
    # A concurrency slot is a lease: it expires if a Lambda dies mid-request.
    lease_ms: int = 60_000
    key_cache_ttl_s: float = 60.0
    tenant_cache_ttl_s: float = 2.0

    # The flusher (usage streams -> ledger). A batch of 99 is one transaction and one rollup
    # write per tenant x day x model; entries a crashed flusher left pending are claimed back
    # once idle this long; concurrency is streams flushed at once (moto's server fails
    # concurrent transactions, so 1 locally).
    flusher_batch_size: int = Field(default=99, ge=1, le=99)
    flusher_claim_idle_ms: int = Field(default=30_000, ge=0)
    flusher_max_batches: int = Field(default=50, ge=1)
    flusher_concurrency: int = Field(default=1, ge=1, le=64)
    # Batches read at once from a stream, and transactions of distinct ledger shards committed
    # at once (a hot tenant's drain rate); 1 locally. The dispatcher starts enough workers for
    # the backlog at flush_worker_events_per_minute each (measured: docs/SCALE.md), at most
    # flush_workers_max, by invoking flush_worker_function (AWS) asynchronously; a worker pauses
    # flusher_idle_s when a pass over its tenants found nothing.
    flusher_lanes: int = Field(default=1, ge=1, le=16)
    flush_workers_max: int = Field(default=8, ge=1, le=256)
    flush_worker_events_per_minute: int = Field(default=80_000, ge=1)
    flush_worker_function: str | None = None
    flusher_idle_s: float = Field(default=1.0, gt=0, le=30)

    # Locally only: the stack supervisor's status file, shown by GET /health.
    local_status_file: str | None = None

    # Webhooks. In AWS only https to public addresses; the local stack also delivers to
    # http://127.0.0.1 and http://localhost (loopback passes its address check). Each attempt
    # waits at most webhook_timeout_s. event_bus_name: the EventBridge bus stored events are
    # published to (AWS); unset, the webhook worker delivers them itself (local).
    webhook_allow_local_http: bool = False
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=30)
    event_bus_name: str | None = None

    # The Batch API's files: an S3 bucket in AWS (files_bucket), a folder locally (files_dir);
    # the worker's pass interval is the local loop's (AWS runs it on a schedule).
    files_bucket: str | None = None
    files_dir: str | None = None
    # Locally: where infra/local/file_server.py serves files_dir by signed URL (S3 presigns its own).
    files_url: str | None = None

    def to_env(self) -> dict[str, str]:
        """The environment that ``from_env`` reads back as these settings (what the local
        stack and the tests give the handlers)."""
        env = {}
        for name, value in self.model_dump().items():
            if value is not None:
                env[PREFIX + name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, str] = {}
        for name in cls.model_fields:
            value = environ.get(PREFIX + name.upper())
            if value not in (None, ""):
                values[name] = value
        region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
        if region and "aws_region" not in values:
            values["aws_region"] = region
        return cls.model_validate(values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
