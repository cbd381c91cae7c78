"""Builds the clients and services once per container (Lambda reuses them across
invocations). Everything is lazy: a function builds only what its routes use."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from gateway.config import Settings, get_settings


class Container:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()

    # -- clients -------------------------------------------------------------------------
    @cached_property
    def boto_session(self) -> Any:
        import boto3

        return boto3.session.Session(region_name=self.settings.aws_region)

    @cached_property
    def dynamodb(self) -> Any:
        from botocore.config import Config

        config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=2, read_timeout=5)
        return self.boto_session.client("dynamodb", endpoint_url=self.settings.dynamodb_endpoint, config=config)

    @cached_property
    def redis(self) -> Any:
        from gateway.adapters.redis_client import connect

        password = None
        if self.settings.redis_password_secret_arn:
            secrets = self.boto_session.client("secretsmanager")
            password = secrets.get_secret_value(SecretId=self.settings.redis_password_secret_arn)["SecretString"]
        return connect(self.settings.redis_url, cluster=self.settings.redis_cluster,
                       username=self.settings.redis_username, password=password,
                       timeout_s=self.settings.redis_timeout_s,
                       tls_check_hostname=self.settings.redis_tls_check_hostname)

    @cached_property
    def pepper(self) -> bytes:
        if self.settings.key_pepper:
            return self.settings.key_pepper.encode()
        if self.settings.key_pepper_param:
            ssm = self.boto_session.client("ssm")
            value = ssm.get_parameter(Name=self.settings.key_pepper_param, WithDecryption=True)
            return value["Parameter"]["Value"].encode()
        raise RuntimeError("MAAS_KEY_PEPPER or MAAS_KEY_PEPPER_PARAM must be set")

    @cached_property
    def inference(self) -> Any:
        from gateway.adapters import inference

        if self.settings.sagemaker_endpoint:
            from botocore.config import Config

            # One attempt ("max_attempts": 1 meant one retry: 2 x 20 s, past API Gateway's 29 s);
            # connect + read stay under the function's timeout with time left to refund.
            config = Config(read_timeout=self.settings.inference_timeout_s, connect_timeout=2,
                            retries={"total_max_attempts": 1, "mode": "standard"})
            client = self.boto_session.client("sagemaker-runtime", config=config)
            return inference.SageMakerInferenceClient(self.settings.sagemaker_endpoint, client=client)
        if not self.settings.inference_url:
            raise RuntimeError("MAAS_SAGEMAKER_ENDPOINT or MAAS_INFERENCE_URL must be set")
        return inference.HttpInferenceClient(self.settings.inference_url,
                                             timeout_s=self.settings.inference_timeout_s)

    # -- adapters and services -------------------------------------------------------------
    @cached_property
    def store(self) -> Any:
        from gateway.adapters.dynamo import Store

        return Store(self.dynamodb, self.settings.table_name)

    @cached_property
    def limiter(self) -> Any:
        from gateway.adapters.redis_store import RedisLimiter

        return RedisLimiter(self.redis, lease_ms=self.settings.lease_ms)

    @cached_property
    def limits(self) -> Any:
        from gateway.services.limits import LimitsResolver

        return LimitsResolver(self.store)

    @cached_property
    def authenticator(self) -> Any:
        from gateway.services.auth import Authenticator

        return Authenticator(self.store, self.pepper, key_ttl_s=self.settings.key_cache_ttl_s,
                             tenant_ttl_s=self.settings.tenant_cache_ttl_s)

    @cached_property
    def embeddings(self) -> Any:
        from gateway.adapters.local_limits import LocalLimiter
        from gateway.adapters.tokenizer import ModelTokenizer
        from gateway.domain.registry import MINILM
        from gateway.services.embeddings import EmbeddingsService

        fallback = LocalLimiter() if self.settings.quota_on_redis_failure == "open" else None
        return EmbeddingsService(tokenizers={MINILM.id: ModelTokenizer(MINILM)}, limiter=self.limiter,
                                 inference=self.inference, store=self.store, limits=self.limits,
                                 fallback=fallback)

    @cached_property
    def billing(self) -> Any:
        from gateway.services.billing import BillingService

        return BillingService(store=self.store, limiter=self.limiter, limits=self.limits, pepper=self.pepper)

    @cached_property
    def reports(self) -> Any:
        from gateway.services.reports import ReportsService

        return ReportsService(store=self.store, limits=self.limits)

    @cached_property
    def flusher(self) -> Any:
        from gateway.services.metering import Flusher

        return Flusher(redis_client=self.redis, store=self.store)


_container: Container | None = None


def container() -> Container:
    """The process-wide container: one per Lambda execution environment."""
    global _container
    if _container is None:
        _container = Container()
    return _container
